"""Rule-based attribution: first, last, last non-direct, linear, position-based family.

Weights follow HubSpot's attribution reports (Marketo Measure uses the same positions): first / last
interaction 100% to one touch; linear equal shares; U-shaped 40% first, 40% last (the lead-creation
touch, when the path ends at lead creation), 20% spread over the touches between; J-shaped 20 / 60
with 20% between; inverse J 60 / 20 with 20% between. When a journey has fewer touches than
positions, the positions' weights fall on the touches that exist (renormalised): two touches under
U-shaped get 50% each.

All of these work on path tables. Time decay and the W- and Z-shaped models need touch timestamps
and lead/opportunity markers: they take journey tables (issue 3).

Examples
--------
>>> import pandas as pd
>>> paths = pd.DataFrame({"path": ["A > B > C"], "total_conversions": [10]})
>>> PositionBased().fit(paths).credits_.conversions.round(6).tolist()
[4.0, 2.0, 4.0]
"""

from __future__ import annotations

import numpy as np

from closedloop_nb.attribution.base import AttributionModel
from closedloop_nb.attribution.paths import PathTable

__all__ = ["FirstTouch", "JShaped", "InverseJShaped", "LastNonDirect", "LastTouch", "Linear",
           "PositionBased", "PositionWeights"]


class PositionWeights(AttributionModel):
    """Custom position weights: ``first`` to the first touch, ``last`` to the last, the rest of the
    credit spread evenly over the touches between.

    Parameters
    ----------
    first, last
        Shares of the first and last touch; ``first + last <= 1``. With no touch between, the two
        share the credit in proportion to ``first`` and ``last``; a single touch gets all of it.
    """

    name = "position_weights"
    rule_based = True

    def __init__(self, first: float = 0.4, last: float = 0.4):
        self.first = first
        self.last = last

    def weights(self, length: int) -> np.ndarray:
        """Credit of each position in a path of ``length`` touches (sums to 1)."""
        return self._weights_at(np.arange(length), np.full(length, length))

    def _weights_at(self, pos: np.ndarray, length: np.ndarray) -> np.ndarray:
        """The rule, for touches at positions ``pos`` of paths of ``length`` touches."""
        if not (0 <= self.first and 0 <= self.last and self.first + self.last <= 1 + 1e-12):
            raise ValueError(f"first={self.first} and last={self.last} must be >= 0 and add up to <= 1")
        ends = self.first + self.last
        # two touches: first and last share the credit in proportion (equally if both are 0)
        two = np.where(pos == 0, self.first, self.last) / ends if ends > 0 else np.full(len(pos), 0.5)
        middle = (1 - ends) / np.maximum(length - 2, 1)
        many = np.where(pos == 0, self.first, np.where(pos == length - 1, self.last, middle))
        return np.where(length == 1, 1.0, np.where(length == 2, two, many))

    def _touch_weights(self, paths: PathTable) -> np.ndarray:
        return self._weights_at(paths.position, paths.lengths[paths.path_index])

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        # per path: the middle weight repeated over all its touches (no per-touch gathers), then
        # the first and last touches corrected to theirs
        lengths = paths.lengths
        first, last, middle = self._path_weights(lengths)
        n = len(paths.channels)
        first_code, last_code = paths.codes[paths.offsets[:-1]], paths.codes[paths.offsets[1:] - 1]
        out = []
        for x in (paths.conversions, paths.value):
            credit = np.bincount(paths.codes, weights=np.repeat(x * middle, lengths), minlength=n)
            credit += np.bincount(first_code, weights=x * (first - middle), minlength=n)
            credit += np.bincount(last_code, weights=x * (last - middle), minlength=n)
            out.append(credit)
        return out[0], out[1]

    def _path_weights(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weight of the first, the last and each middle touch of paths of ``lengths`` touches
        (a single touch counts as first), as :meth:`_weights_at` gives them."""
        first_of_two, last_of_two = self._weights_at(np.array([0, 1]), np.array([2, 2]))  # checks too
        lengths = np.asarray(lengths)
        two = lengths == 2
        middle = np.where(lengths > 2, (1 - (self.first + self.last)) / np.maximum(lengths - 2, 1), 0.0)
        return (np.where(lengths == 1, 1.0, np.where(two, first_of_two, self.first)),
                np.where(lengths == 1, 0.0, np.where(two, last_of_two, self.last)), middle)


def _credit_one_touch(paths: PathTable, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    chosen = paths.codes[index]
    n = len(paths.channels)
    return (np.bincount(chosen, weights=paths.conversions, minlength=n),
            np.bincount(chosen, weights=paths.value, minlength=n))


def _one_touch_weights(paths: PathTable, index: np.ndarray) -> np.ndarray:
    w = np.zeros(len(paths.codes))
    w[index] = 1.0
    return w


class FirstTouch(PositionWeights):
    """All credit to the first touch."""

    name = "first_touch"

    def __init__(self):
        super().__init__(first=1.0, last=0.0)

    def _params(self) -> dict:
        return {}

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        return _credit_one_touch(paths, paths.offsets[:-1])

    def _touch_weights(self, paths: PathTable) -> np.ndarray:
        return _one_touch_weights(paths, paths.offsets[:-1])


class LastTouch(PositionWeights):
    """All credit to the last touch."""

    name = "last_touch"

    def __init__(self):
        super().__init__(first=0.0, last=1.0)

    def _params(self) -> dict:
        return {}

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        return _credit_one_touch(paths, paths.offsets[1:] - 1)

    def _touch_weights(self, paths: PathTable) -> np.ndarray:
        return _one_touch_weights(paths, paths.offsets[1:] - 1)


class Linear(AttributionModel):
    """Equal credit to every touch."""

    name = "linear"
    rule_based = True

    def _touch_weights(self, paths: PathTable) -> np.ndarray:
        return 1.0 / paths.lengths[paths.path_index]

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        # one weight per path, repeated over its touches: no per-touch gathers
        n, lengths = len(paths.channels), paths.lengths
        share = 1.0 / np.maximum(lengths, 1)
        return tuple(np.bincount(paths.codes, weights=np.repeat(x * share, lengths), minlength=n)
                     for x in (paths.conversions, paths.value))


class PositionBased(PositionWeights):
    """U-shaped: 40% first touch, 40% last touch, 20% spread over the touches between."""

    name = "position_based"


class JShaped(PositionWeights):
    """J-shaped: 20% first, 60% last, 20% between."""

    name = "j_shaped"

    def __init__(self, first: float = 0.2, last: float = 0.6):
        super().__init__(first, last)


class InverseJShaped(PositionWeights):
    """Inverse J: 60% first, 20% last, 20% between."""

    name = "inverse_j_shaped"

    def __init__(self, first: float = 0.6, last: float = 0.2):
        super().__init__(first, last)


class LastNonDirect(AttributionModel):
    """All credit to the last touch that is not direct; all-direct paths keep their last touch.

    Parameters
    ----------
    direct
        Name of the direct channel.
    """

    name = "last_non_direct"
    rule_based = True

    def __init__(self, direct: str = "Direct"):
        self.direct = direct

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        return _credit_one_touch(paths, self._chosen(paths))

    def _touch_weights(self, paths: PathTable) -> np.ndarray:
        return _one_touch_weights(paths, self._chosen(paths))

    def _chosen(self, paths: PathTable) -> np.ndarray:
        direct = paths.channels.index(self.direct) if self.direct in paths.channels else -1
        pidx = paths.path_index
        candidate = paths.codes != direct
        # index of the last non-direct touch per path (or -1), else the last touch
        idx = np.where(candidate, np.arange(len(paths.codes)), -1)
        last_nd = np.full(paths.n_paths, -1)
        np.maximum.at(last_nd, pidx, idx)
        return np.where(last_nd >= 0, last_nd, paths.offsets[1:] - 1)
