"""What every attribution model shares: fitting on a path table, conservation, summary, plot.

A concrete model implements only :meth:`AttributionModel._credit`, returning conversions and value
credited to each channel; the base class checks that the totals are conserved (every conversion and
every unit of value credited exactly once), and presents the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.attribution.paths import PathTable
from closedloop_nb.errors import NotFittedError

__all__ = ["AttributionModel", "ConservationError", "NotFittedError", "as_path_table"]

#: Relative tolerance of the conservation check.
CONSERVATION_RTOL = 1e-9



class ConservationError(AssertionError):
    """A model credited more or less than the conversions or value that went in."""


def as_path_table(data: Any) -> PathTable:
    """A :class:`PathTable` from a PathTable or a DataFrame in ChannelAttribution's format."""
    if isinstance(data, PathTable):
        return data
    if isinstance(data, pd.DataFrame):
        return PathTable.from_frame(data)
    raise TypeError(f"expected a PathTable or a DataFrame of paths, got {type(data).__name__}")


class AttributionModel:
    """Base class: ``fit(paths)`` returns ``self``; results in ``credits_``.

    Attributes
    ----------
    credits_
        One row per channel: ``conversions`` and ``value`` credited, and ``share`` of conversions.
    paths_
        The :class:`PathTable` the model was fitted on.
    """

    name = "model"

    def fit(self, paths: PathTable | pd.DataFrame) -> AttributionModel:
        """Credit the conversions and value of ``paths`` to channels.

        Parameters
        ----------
        paths
            A :class:`PathTable`, or a DataFrame in ChannelAttribution's format.

        Returns
        -------
        self
        """
        table = as_path_table(paths)
        conv, value = self._credit(self._prepare(table))
        _check_conservation(self, table, conv, value)
        total = conv.sum()
        self.paths_ = table
        self.credits_ = pd.DataFrame({
            "channel": list(table.channels),
            "conversions": conv,
            "value": value,
            "share": conv / total if total else np.zeros(len(conv)),
        })
        return self

    def _prepare(self, paths: PathTable) -> PathTable:
        """Reshape the table once before crediting (bootstrap replicates reuse the result)."""
        return paths

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "credits_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(paths) first.")

    @property
    def summary(self) -> pd.DataFrame:
        """Credits per channel, largest first, with the model's name."""
        self._check_fitted()
        out = self.credits_.sort_values("conversions", ascending=False, kind="stable")
        return out.assign(model=self.name)[["model", "channel", "conversions", "value", "share"]].reset_index(
            drop=True)

    def plot(self, ax: Any = None, value: bool = False) -> Any:
        """Horizontal bars of credited conversions (or value) per channel; returns the Axes."""
        import matplotlib.pyplot as plt

        self._check_fitted()
        col = "value" if value else "conversions"
        data = self.credits_.sort_values(col)
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 0.35 * len(data) + 1))
        ax.barh(data["channel"], data[col])
        ax.set_xlabel(f"{col} credited")
        ax.set_title(self.name)
        return ax

    def _params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        fitted = f"; fitted on {self.paths_!r}" if hasattr(self, "paths_") else ""
        return f"{type(self).__name__}({args}){fitted}"


def _check_conservation(model: AttributionModel, paths: PathTable, conv: np.ndarray,
                        value: np.ndarray) -> None:
    for got, want, what in ((conv.sum(), paths.conversions.sum(), "conversions"),
                            (value.sum(), paths.value.sum(), "value")):
        if not np.isclose(got, want, rtol=CONSERVATION_RTOL, atol=1e-9):
            raise ConservationError(f"{type(model).__name__} credited {got!r} {what} but {want!r} went in")
