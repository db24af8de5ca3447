"""What every attribution model shares: fitting on a path table, conservation, summary, plot.

A concrete model implements :meth:`AttributionModel._touch_weights` (a rule: the share of its path's
conversion each touch gets) or :meth:`AttributionModel._credit` (a global model: conversions and value
credited to each channel). The base class checks that the totals are conserved (every conversion and
every unit of value credited exactly once), and presents the result.

Every fitted model can also say how much of *each* conversion went to each channel
(:meth:`AttributionModel.touch_weights`, :meth:`AttributionModel.path_credits`), which is what
per-deal reports need (:mod:`closedloop_nb.credits`). Rules give that directly. A global model
(Markov, Shapley) gives channel totals only; its per-conversion shares are the allocation of each
path's conversions over the channels *on that path*, seeded in proportion to the model's channel
credits and balanced by iterative proportional fitting so that the channel totals equal the model's
(the maximum-entropy allocation with both margins; exact where one exists).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop_nb.errors import NotFittedError
from closedloop_nb.path_table import PathTable

if TYPE_CHECKING:  # pandas is imported where a DataFrame is made: crediting itself needs numpy only
    import pandas as pd

__all__ = ["AttributionModel", "ConservationError", "NotFittedError", "as_path_table", "disaggregate",
           "group_sums"]

#: Relative tolerance of the conservation check.
CONSERVATION_RTOL = 1e-9



class ConservationError(AssertionError):
    """A model credited more or less than the conversions or value that went in."""


def as_path_table(data: Any) -> PathTable:
    """A :class:`PathTable` from a PathTable or a DataFrame in ChannelAttribution's format."""
    if isinstance(data, PathTable):
        return data
    import pandas as pd

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
    #: the credits are fixed touch weights times each path's counts (a rule that learns nothing from
    #: the counts): bootstrap replicates then reuse the weights instead of refitting
    rule_based = False

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
        import pandas as pd

        table = as_path_table(paths)
        conv, value = self.credit(table)
        total = conv.sum()
        self.paths_ = table
        self.credits_ = pd.DataFrame({
            "channel": list(table.channels),
            "conversions": conv,
            "value": value,
            "share": conv / total if total else np.zeros(len(conv)),
        })
        return self

    def credit(self, paths: PathTable | pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Conversions and value credited to each of ``paths.channels``, as arrays, conservation
        checked: what :meth:`fit` tabulates in ``credits_``, without fitting the model or making a
        DataFrame (``closedloop attribute`` writes these straight out, without importing pandas).

        Examples
        --------
        >>> from closedloop_nb.attribution import LastTouch
        >>> t = PathTable.from_sequences([["A", "B"], ["A"]], conversions=[2, 1])
        >>> [x.tolist() for x in LastTouch().credit(t)]
        [[1.0, 2.0], [0.0, 0.0]]
        """
        table = as_path_table(paths)
        conv, value = self._credit(self._prepare(table))
        _check_conservation(self, table, conv, value)
        return conv, value

    def _prepare(self, paths: PathTable) -> PathTable:
        """Reshape the table once before crediting (bootstrap replicates reuse the result)."""
        return paths

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        """Conversions and value per channel; by default from the rule's touch weights."""
        pidx = paths.path_index
        w = self._touch_weights(paths)
        n = len(paths.channels)
        return (np.bincount(paths.codes, weights=w * paths.conversions[pidx], minlength=n),
                np.bincount(paths.codes, weights=w * paths.value[pidx], minlength=n))

    def _for_counts(self, paths: PathTable) -> Callable[[PathTable], tuple[np.ndarray, np.ndarray]]:
        """``_credit`` for tables with ``paths``' journeys and other counts (bootstrap replicates):
        work that depends on the journeys alone is done once, here."""
        if not self.rule_based:
            return self._credit
        # a rule: its touch weights summed per channel and path once, one sparse product per table
        import scipy.sparse as sp

        weights = sp.csr_matrix((self._touch_weights(paths), (paths.codes, paths.path_index)),
                                shape=(len(paths.channels), paths.n_paths))
        weights.eliminate_zeros()  # touches a rule gives nothing (all but one, for last touch)
        return lambda table: (weights @ table.conversions, weights @ table.value)

    def _for_draws(self, paths: PathTable) -> Callable[[np.ndarray, np.ndarray, np.ndarray],
                                                       tuple[np.ndarray, np.ndarray]]:
        """:meth:`_for_counts` for many tables at once: ``credit(conversions, value, nulls)``, each a
        (tables x paths) array of counts of ``paths``' journeys, gives the conversions and value
        credited per table and channel (tables x channels), each row what ``_for_counts`` gives
        that table. Rules: one sparse product of all the tables' counts with the weights; other
        models credit table by table unless they batch more of the work."""
        if self.rule_based:
            import scipy.sparse as sp

            weights = sp.csr_matrix((self._touch_weights(paths), (paths.codes, paths.path_index)),
                                    shape=(len(paths.channels), paths.n_paths))
            weights.eliminate_zeros()
            # the same sums, in the same order, as one product per table (a row of the counts)
            return lambda conv, value, nulls: ((weights @ conv.T).T, (weights @ value.T).T)
        one = self._for_counts(paths)

        def credit(conv: np.ndarray, value: np.ndarray, nulls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = [one(PathTable(paths.channels, paths.codes, paths.offsets, c, v, k))
                   for c, v, k in zip(conv, value, nulls, strict=True)]
            return np.array([o[0] for o in out]), np.array([o[1] for o in out])

        return credit

    def _touch_weights(self, paths: PathTable) -> np.ndarray:
        """Share of its path's conversion each touch gets; global models disaggregate ``credits_``."""
        return disaggregate(paths, self.credits_.set_index("channel")["conversions"])

    def touch_weights(self, paths: PathTable | pd.DataFrame | None = None) -> np.ndarray:
        """Share of its path's conversion credited to each touch (aligned with ``paths.codes``).

        Parameters
        ----------
        paths
            Paths to split (default: the fitted ones). Giving one path per journey yields each
            journey's split, which is how per-deal credit is computed.

        Returns
        -------
        numpy.ndarray
            One weight per touch; the weights of each path add up to 1.
        """
        self._check_fitted()
        return self._touch_weights(self.paths_ if paths is None else as_path_table(paths))

    def position_credits(self, max_position: int | None = None) -> pd.DataFrame:
        """Conversions and value credited per channel and touch position (1 = first touch).

        Parameters
        ----------
        max_position
            Positions beyond this are added up in the last one.

        Returns
        -------
        pandas.DataFrame
            ``channel``, ``position``, ``conversions``, ``value`` (adding up to ``credits_``).
        """
        import pandas as pd

        self._check_fitted()
        t = self.paths_
        w = self.touch_weights(t)
        pos = t.position + 1
        if max_position is not None:
            pos = np.minimum(pos, max_position)
        pidx = t.path_index
        df = pd.DataFrame({"channel": np.array(t.channels, dtype=object)[t.codes], "position": pos,
                           "conversions": w * t.conversions[pidx], "value": w * t.value[pidx]})
        return df.groupby(["channel", "position"], as_index=False)[["conversions", "value"]].sum()

    def path_credits(self) -> pd.DataFrame:
        """Conversions and value credited per fitted path and channel (they add up to ``credits_``).

        Returns
        -------
        pandas.DataFrame
            ``path``, ``channel``, ``share`` (of each of the path's conversions), ``conversions``,
            ``value``.
        """
        import pandas as pd

        self._check_fitted()
        t = self.paths_
        pidx = t.path_index
        df = pd.DataFrame({"p": pidx, "code": t.codes, "share": self.touch_weights(t)})
        df = df.groupby(["p", "code"], sort=True, as_index=False)["share"].sum()
        names = np.array([" > ".join(t.path(p)) for p in range(t.n_paths)], dtype=object)
        return pd.DataFrame({
            "path": names[df["p"]], "channel": np.array(t.channels, dtype=object)[df["code"]],
            "share": df["share"].to_numpy(), "conversions": df["share"].to_numpy() * t.conversions[df["p"]],
            "value": df["share"].to_numpy() * t.value[df["p"]]})

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


def group_sums(groups: np.ndarray, n_groups: int) -> Any:
    """A sparse (groups x items) matrix of ones: times a (items x k) array, the sums of each column
    over the items of each group, added in item order, as ``np.bincount(groups, weights=column)``
    adds them (so to the last bit).

    Examples
    --------
    >>> (group_sums(np.array([1, 0, 1]), 2) @ np.array([[1.0], [2.0], [4.0]])).ravel().tolist()
    [2.0, 5.0]
    """
    import scipy.sparse as sp

    groups = np.asarray(groups, dtype=np.int64)
    items = np.arange(len(groups))
    order = np.argsort(groups, kind="stable")  # CSR rows holding their items in ascending order
    counts = np.bincount(groups, minlength=n_groups)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((np.ones(len(groups)), items[order], indptr), shape=(n_groups, len(groups)))


def disaggregate(paths: PathTable, totals: pd.Series, tol: float = 1e-10,
                 max_iter: int = 2_000) -> np.ndarray:
    """Split each path's conversions over its own channels so that channel totals match ``totals``.

    Iterative proportional fitting (Deming & Stephan 1940) of the path x channel table restricted to
    the channels on each path, seeded with ``totals`` (clipped at a tiny positive number). Rows
    (paths) always add up exactly; columns match ``totals`` (rescaled to the paths' conversions)
    when such an allocation exists; otherwise (a negative Shapley credit, say) they come as close as
    the paths allow and a warning gives the largest gap. Credit of a channel on no converting path
    (Markov can credit a channel whose visitors never convert on it but move on to channels that
    do) cannot be in any conversion's split: a warning names it, and the other channels share it
    in proportion to their own credit.

    Parameters
    ----------
    paths
        The paths to split; ``paths.conversions`` are the row totals.
    totals
        Conversions credited per channel name (a model's ``credits_``).

    Returns
    -------
    numpy.ndarray
        A weight per touch (aligned with ``paths.codes``), adding up to 1 within each path; repeats
        of a channel in a path share its weight equally.

    Examples
    --------
    >>> import pandas as pd
    >>> t = PathTable.from_sequences([["A"], ["A", "B"]], conversions=[1, 1])
    >>> disaggregate(t, pd.Series({"A": 1.5, "B": 0.5})).round(6).tolist()
    [1.0, 0.5, 0.5]
    """
    pidx = paths.path_index.astype(np.int64)
    n = len(paths.channels)
    key = pidx * n + paths.codes
    pairs, inverse, repeats = np.unique(key, return_inverse=True, return_counts=True)
    row, col = pairs // n, pairs % n
    target = totals.reindex(list(paths.channels)).fillna(0.0).to_numpy(float)
    rows = paths.conversions.astype(float)
    if rows.sum() <= 0:  # nothing converted: split by the seed alone
        rows = np.ones(paths.n_paths)
    tiny = 1e-12 * max(target.max(initial=0.0), 1.0)
    live = rows[row] > 0  # paths without conversions keep the seed's split and take no part
    on_path = np.bincount(col[live], minlength=n) > 0
    target = np.clip(target, 0.0, None)
    # credit of channels on no converting path (Markov credits a channel that only ever leads to
    # converting channels) cannot go to any conversion: the channels on the paths share it
    off = (target > 0) & ~on_path
    if off.any():
        names = ", ".join(f"{paths.channels[c]} ({target[c]:.4g})" for c in np.flatnonzero(off)[:5])
        warnings.warn(f"credited by the model but on no converting path, so in no conversion's split: "
                      f"{names}; the channels on the paths share that credit in proportion", stacklevel=3)
        target[off] = 0.0
    target = target / target.sum() * rows.sum() if target.sum() > 0 else np.zeros(n)
    x = np.clip(target[col], tiny, None)
    rx, cx, xl = row[live], col[live], x[live]
    gap = 0.0
    for _ in range(max_iter):
        xl *= rows[rx] / np.bincount(rx, weights=xl, minlength=paths.n_paths)[rx]
        got = np.bincount(cx, weights=xl, minlength=n)
        gap = np.abs(got - target)[on_path].max(initial=0.0)
        if gap <= tol * rows.sum():
            break
        scale = np.where(got > 0, target / np.where(got > 0, got, 1.0), 1.0)
        xl *= np.clip(scale[cx], tiny, None)
    x[live] = xl
    if gap > 1e-6 * rows.sum():
        warnings.warn(
            f"per-conversion shares cannot reproduce the model's channel totals exactly (largest gap "
            f"{gap:.4g} conversions: negative or zero credits, or a channel credited less than the paths "
            "where it is the only channel): every conversion is still split in full", stacklevel=3)
    share = x / np.bincount(row, weights=x, minlength=paths.n_paths)[row]
    return (share / repeats)[inverse]


def _check_conservation(model: AttributionModel, paths: PathTable, conv: np.ndarray,
                        value: np.ndarray) -> None:
    for got, want, what in ((conv.sum(), paths.conversions.sum(), "conversions"),
                            (value.sum(), paths.value.sum(), "value")):
        if not np.isclose(got, want, rtol=CONSERVATION_RTOL, atol=1e-9):
            raise ConservationError(f"{type(model).__name__} credited {got!r} {what} but {want!r} went in")
