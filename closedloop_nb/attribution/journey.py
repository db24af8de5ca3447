"""Rule-based models that need touch timestamps or milestone markers: time decay, W-shaped, full path.

They take a tidy touch-level journey table, one row per touch:

=================  ==========================================================================
``journey_id``     the journey (a person's touches before one conversion)
``channel``        the touch's channel (any touch attribute works: campaign, keyword, ...)
``timestamp``      when the touch happened (UTC)
``conversion_at``  when the journey converted (empty if it did not)
``conversions``    the journey's conversions (repeated on each of its touches)
``value``          the journey's conversion value (repeated on each of its touches)
``lead_touch``     optional: True on the touch that created the lead
``opportunity_touch``  optional: True on the touch that created the opportunity (deal)
``won_touch``      optional: True on the touch closest before the deal was won
=================  ==========================================================================

Weights follow HubSpot's documentation: time decay halves a touch's weight every ``half_life_days``
before the conversion; W-shaped gives 30% each to the first touch, the lead-creation touch and the
opportunity-creation touch and 10% to the others; full path (Z-shaped) 22.5% each to first touch,
lead creation, opportunity creation and closed won, 10% to the others. Positions that coincide (the
first touch also created the lead) add up on that touch; positions a journey lacks fall on the
touches that exist (the weights are renormalised).

Every fitted model keeps ``touch_credits_``: the input touches with the conversions and value each
was credited, so any channel total can be traced to journeys, touches and the rule.

Examples
--------
>>> import pandas as pd
>>> t = pd.Timestamp("2024-03-15", tz="UTC")
>>> touches = pd.DataFrame({"journey_id": [1, 1], "channel": ["Email", "Paid Search"],
...     "timestamp": [t - pd.Timedelta(days=14), t], "conversion_at": [t, t],
...     "conversions": [1, 1], "value": [100.0, 100.0]})
>>> TimeDecay(half_life_days=7).fit(touches).credits_.conversions.round(3).tolist()
[0.2, 0.8]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from closedloop_nb.attribution.base import ConservationError, NotFittedError

__all__ = ["FullPath", "JourneyModel", "TimeDecay", "WShaped"]

REQUIRED = ("journey_id", "channel", "timestamp", "conversion_at", "conversions", "value")


class JourneyModel:
    """Base class for touch-level rule-based models; subclasses give each touch a raw weight.

    Attributes
    ----------
    credits_
        Per channel: ``conversions``, ``value``, ``share``.
    touch_credits_
        The converting journeys' touches with ``weight`` (share of their journey) and credited
        ``credit_conversions`` and ``credit_value``.
    """

    name = "journey_model"
    key = "channel"

    def _weights(self, t: pd.DataFrame) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def fit(self, touches: pd.DataFrame) -> JourneyModel:
        """Credit each converting journey's conversions and value to its touches; returns self."""
        missing = [c for c in REQUIRED if c not in touches]
        if missing:
            raise KeyError(f"journey table misses column(s) {missing}; needs {', '.join(REQUIRED)}")
        t = touches[touches["conversions"] > 0].sort_values(["journey_id", "timestamp"], kind="stable")
        t = t.reset_index(drop=True)
        raw = self._weights(t)
        total = pd.Series(raw).groupby(t["journey_id"].to_numpy()).transform("sum").to_numpy()
        n = t.groupby("journey_id")["journey_id"].transform("size").to_numpy()
        weight = np.where(total > 0, raw / np.where(total > 0, total, 1), 1.0 / n)
        t = t.assign(weight=weight, credit_conversions=weight * t["conversions"],
                     credit_value=weight * t["value"])
        g = t.groupby(self.key, sort=True)[["credit_conversions", "credit_value"]].sum()
        journeys = t.drop_duplicates("journey_id")
        for got, want, what in ((g["credit_conversions"].sum(), journeys["conversions"].sum(), "conversions"),
                                (g["credit_value"].sum(), journeys["value"].sum(), "value")):
            if not np.isclose(got, want, rtol=1e-9, atol=1e-9):
                raise ConservationError(f"{type(self).__name__} credited {got} {what}, {want} went in")
        total_conv = g["credit_conversions"].sum()
        self.credits_ = pd.DataFrame({
            "channel": g.index.astype(str), "conversions": g["credit_conversions"].to_numpy(),
            "value": g["credit_value"].to_numpy(),
            "share": g["credit_conversions"].to_numpy() / total_conv if total_conv else 0.0,
        })
        self.touch_credits_ = t
        return self

    @property
    def summary(self) -> pd.DataFrame:
        """Credits per channel, largest first, with the model's name."""
        if not hasattr(self, "credits_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(touches) first.")
        out = self.credits_.sort_values("conversions", ascending=False, kind="stable").assign(model=self.name)
        return out[["model", "channel", "conversions", "value", "share"]].reset_index(drop=True)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({args})"


class TimeDecay(JourneyModel):
    """Weight halves every ``half_life_days`` before the conversion (HubSpot: 7 days)."""

    name = "time_decay"

    def __init__(self, half_life_days: float = 7.0):
        self.half_life_days = half_life_days

    def _weights(self, t: pd.DataFrame) -> np.ndarray:
        if self.half_life_days <= 0:
            raise ValueError(f"half_life_days must be positive, got {self.half_life_days}")
        age = (t["conversion_at"] - t["timestamp"]).dt.total_seconds().to_numpy() / 86_400
        return np.power(0.5, np.clip(age, 0, None) / self.half_life_days)


class _Milestones(JourneyModel):
    """Fixed shares at milestone touches, the rest spread over the other touches."""

    positions: tuple[tuple[str, float], ...] = ()
    rest = 0.1

    def _weights(self, t: pd.DataFrame) -> np.ndarray:
        jid = t["journey_id"].to_numpy()
        first = np.ones(len(t), dtype=bool)
        first[1:] = jid[1:] != jid[:-1]
        w = np.zeros(len(t))
        at_position = np.zeros(len(t), dtype=bool)
        for marker, share in self.positions:
            mask = first if marker == "first" else (
                t[marker].fillna(False).to_numpy(bool) if marker in t else np.zeros(len(t), bool))
            w += share * mask
            at_position |= mask
        others = pd.Series(~at_position).groupby(jid).transform("sum").to_numpy()
        w += np.where(~at_position & (others > 0), self.rest / np.maximum(others, 1), 0.0)
        return w


class WShaped(_Milestones):
    """W-shaped: 30% first touch, 30% lead creation, 30% opportunity creation, 10% the rest."""

    name = "w_shaped"
    positions = (("first", 0.3), ("lead_touch", 0.3), ("opportunity_touch", 0.3))


class FullPath(_Milestones):
    """Full path (Z-shaped): 22.5% each to first touch, lead creation, opportunity creation and
    closed won; 10% the rest."""

    name = "full_path"
    positions = (("first", 0.225), ("lead_touch", 0.225), ("opportunity_touch", 0.225),
                 ("won_touch", 0.225))
