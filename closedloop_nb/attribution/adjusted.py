"""Shapley attribution with a value function adjusted for what the path reveals about intent.

The conversion-rate value functions (:class:`~closedloop_nb.attribution.shapley.ShapleyValue`,
:class:`~closedloop_nb.attribution.shapley.ModelShapley`) take a coalition's observed conversion rate
as what its channels caused. Where visitors who already meant to buy come back by Direct, a brand
search or an e-mail before converting ("confounded capture"), those channels' rates are inflated by
the intent, not by anything the touch did.

:class:`AdjustedShapley` fits a regularised logistic regression of conversion on the channels present
(and their pairs, as ``ModelShapley`` does) *and* on covariates observable in the path that proxy
intent, by default the number of consecutive touches of the capture channels (Direct, E-mail, Paid
Search) at the end of the path; optionally the journey's length and the channel of the last touch.
Each path's game is then ``v_i(T) = expit(a + z_i'theta + sum_{c in T} b_c + sum_{pairs in T} d_cd)`` over
the subsets ``T`` of its channels, with the covariates ``z_i`` held at the path's own values, and the
path's conversions (and value) are split over its channels in proportion to their Shapley values in
the game ``v_i(T) - v_i(empty)`` (computed exactly, :func:`~closedloop_nb.attribution.games.exact_shapley`;
negative values count as zero in the split). Unlike ``ModelShapley``, whose coalition values start from
0 so that its split shares the baseline among the channels, the baseline ``v_i(empty)``, and with it
whatever the covariates explain, is no channel's: a tail of capture touches that signals intent
raises the path's baseline, not its capture channels' share.

Assumptions (where they fail, so does the adjustment):

- the covariates are *proxies of intent, not effects of the channels*: the tail of capture touches
  (and the last channel, the length, if used) are taken to reflect who the visitor already was. Where
  a late capture touch really does more (recency effects), the adjustment moves part of that effect
  to baseline; where journeys are long because channels work (repeat touches), ``"length"`` does;
- given the covariates, which channels a journey has is as good as random (no unobserved confounding
  beyond what the proxies capture);
- the effects are additive on the log-odds scale with pairwise interactions (the logistic model).

Experiments calibrate what these assumptions cannot fix
(:func:`closedloop_nb.attribution.calibration.calibrate`); the scorecard
(:mod:`closedloop_nb.attribution.scorecard`) measures every model on regimes where each assumption
holds or fails. The model was designed on those regimes. On an independent simulation (funnel-stage
journeys, per-touch lifts, brand queries by organic search too; benchmarks/RESULTS.md) the trailing
capture touches do not separate intent from the end of an ordinary journey, and it is no closer to
the truth than linear: check the proxy on your own journeys before trusting the adjustment.

Examples
--------
>>> import pandas as pd
>>> paths = pd.DataFrame({"path": ["A > Direct", "A", "B", "B > A", "Direct"],
...                       "total_conversions": [30, 10, 5, 12, 2], "total_null": [20, 90, 95, 60, 98]})
>>> model = AdjustedShapley().fit(paths)
>>> round(float(model.credits_["conversions"].sum()), 6)
59.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from closedloop_nb.attribution.base import AttributionModel, group_sums
from closedloop_nb.attribution.games import exact_shapley
from closedloop_nb.attribution.paths import PathTable
from closedloop_nb.attribution.shapley import blas_limit, coalitions, one_blas_thread, value_regression

__all__ = ["CAPTURE_CHANNELS", "AdjustedShapley"]

#: Channels whose touches at the end of a journey are taken as a sign of intent (navigational visits).
CAPTURE_CHANNELS = ("Direct", "Email", "Paid Search")

#: Covariates :class:`AdjustedShapley` can hold fixed.
COVARIATES = ("length", "last", "tail")


class AdjustedShapley(AttributionModel):
    """Shapley value of a logistic value function adjusted for intent proxies in the path.

    Parameters
    ----------
    covariates
        Any of ``"length"`` (log of touches), ``"last"`` (the last touch's channel) and ``"tail"`` (the
        number of consecutive touches of ``capture_channels`` at the end of the path, log(1 + n)).
    capture_channels
        Channels whose trailing touches form ``"tail"``; those absent from the paths are ignored.
    C
        Inverse regularisation strength of the logistic regression.
    interactions
        Include every pair of channels in the regression (and so in the game).

    Attributes
    ----------
    value_model_
        The fitted ``sklearn.linear_model.LogisticRegression``.
    coefficients_
        Its coefficients by term (``channel``, ``A + B``, ``length``, ``last: A``, ``tail``).
    path_shapley_
        Each path's Shapley values in its game ``v_i(T) - v_i(empty)`` (paths x channels).
    path_shares_
        The split of each path's conversions over channels (paths x channels, rows adding up to 1).
    baseline_
        Expected conversions of the fitted journeys with no channel (each path's journeys times
        ``v_i(empty)``); :func:`~closedloop_nb.attribution.calibration.calibrate` uses it with
        ``untested="residual"``.
    """

    name = "shapley_adjusted"

    def __init__(self, covariates: tuple[str, ...] = ("tail",),
                 capture_channels: tuple[str, ...] = CAPTURE_CHANNELS, C: float = 1.0,
                 interactions: bool = True):
        self.covariates = covariates
        self.capture_channels = capture_channels
        self.C = C
        self.interactions = interactions

    def _sources(self, paths: PathTable) -> dict[str, np.ndarray]:
        """The integers each chosen covariate is made of, per path: touches (``length``), the last
        touch's channel code (``last``, -1 for an empty path) and the trailing run of capture touches
        (``tail``)."""
        bad = set(self.covariates) - set(COVARIATES)
        if bad:
            raise ValueError(f"unknown covariates {sorted(bad)}; choose from {', '.join(COVARIATES)}")
        lengths = paths.lengths
        out: dict[str, np.ndarray] = {}
        if "length" in self.covariates:
            out["length"] = lengths.astype(np.int64)
        if "last" in self.covariates:
            touched = lengths > 0
            last = np.full(paths.n_paths, -1, dtype=np.int64)
            last[touched] = paths.codes[(paths.offsets[1:] - 1)[touched]]
            out["last"] = last
        if "tail" in self.covariates:
            capture = np.isin(np.array(paths.channels, dtype=object),
                              np.array(self.capture_channels, dtype=object))[paths.codes]
            # trailing run of capture touches: position from the end of the first non-capture touch
            from_end = (paths.offsets[1:][paths.path_index] - 1) - np.arange(len(paths.codes))
            breaks = np.where(~capture, from_end, np.iinfo(np.int64).max)
            first_break = np.full(paths.n_paths, np.iinfo(np.int64).max)
            np.minimum.at(first_break, paths.path_index, breaks)
            tail = np.where(first_break == np.iinfo(np.int64).max, lengths, first_break)
            out["tail"] = tail.astype(np.int64)
        return out

    @staticmethod
    def _matrix(sources: dict[str, np.ndarray], channels: tuple[str, ...], rows: int
                ) -> tuple[np.ndarray, list[str]]:
        """The covariate columns of the regression from their integer sources."""
        cols, names = [], []
        if "length" in sources:
            cols.append(np.log(np.maximum(sources["length"], 1))[:, None])
            names.append("length")
        if "last" in sources:
            last = np.zeros((rows, len(channels)))
            touched = np.flatnonzero(sources["last"] >= 0)
            last[touched, sources["last"][touched]] = 1.0
            cols.append(last)
            names += [f"last: {c}" for c in channels]
        if "tail" in sources:
            cols.append(np.log1p(sources["tail"])[:, None])
            names.append("tail")
        return (np.hstack(cols) if cols else np.zeros((rows, 0))), names

    def _covariates(self, paths: PathTable) -> tuple[np.ndarray, list[str]]:
        return self._matrix(self._sources(paths), tuple(paths.channels), paths.n_paths)

    def _design(self, paths: PathTable) -> _Design:
        """The regression's distinct design rows: paths with the same channels and covariates share one
        row (and one game), so the fit and the exact Shapley values cost what the distinct rows cost,
        not what the paths do."""
        n = len(paths.channels)
        masks = coalitions(paths)
        sources = self._sources(paths)
        group = _group_ids([masks, *sources.values()])
        n_groups = int(group.max()) + 1 if len(group) else 0
        first = np.full(n_groups, len(group), dtype=np.int64)
        np.minimum.at(first, group, np.arange(len(group)))
        bits = ((masks[first][:, None] >> np.arange(n)) & 1).astype(float)
        pairs = np.triu_indices(n, 1) if self.interactions else (np.array([], int), np.array([], int))
        z, znames = self._matrix({k: v[first] for k, v in sources.items()}, tuple(paths.channels), len(first))
        X = np.hstack([bits, bits[:, pairs[0]] * bits[:, pairs[1]], z])
        return _Design(group=group, bits=bits, z=z, X=X, pairs=pairs, znames=znames)

    @one_blas_thread
    def _solve(self, design: _Design, n: int, conv: np.ndarray, nulls: np.ndarray, start: Any = None
               ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """Fit the value function to one set of counts; each design row's Shapley values, split and
        baseline log-odds (``start``: as :meth:`_solve_rows`)."""
        n_rows = len(design.X)
        return self._solve_rows(design, n, np.bincount(design.group, weights=conv, minlength=n_rows),
                                np.bincount(design.group, weights=nulls, minlength=n_rows), start)

    def _solve_rows(self, design: _Design, n: int, c: np.ndarray, k: np.ndarray, start: Any = None
                    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_solve` given each design row's conversions ``c`` and nulls ``k`` (BLAS threads as
        the caller has them); ``start``: as :func:`~closedloop_nb.attribution.shapley.value_regression`."""
        keep_c, keep_n = c > 0, k > 0
        y = np.r_[np.ones(keep_c.sum()), np.zeros(keep_n.sum())]
        if len(np.unique(y)) < 2:
            raise ValueError("AdjustedShapley needs journeys that converted and journeys that did not")
        X = np.vstack([design.X[keep_c], design.X[keep_n]])
        model = value_regression(self.C, start).fit(X, y, sample_weight=np.r_[c[keep_c], k[keep_n]])
        coef = model.coef_[0]
        pairs = design.pairs
        b, d, theta = coef[:n], coef[n:n + len(pairs[0])], coef[n + len(pairs[0]):]
        delta = np.zeros((n, n))
        delta[pairs] = d
        delta = delta + delta.T
        eta = model.intercept_[0] + design.z @ theta
        present = design.bits.astype(bool)
        credit, _, _, _ = exact_shapley(eta, np.where(present, b, 0.0), present, delta)
        return model, credit, _split(credit, design.bits), eta

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        n = len(paths.channels)
        design = self._design(paths)
        model, credit, share, eta = self._solve(design, n, paths.conversions.astype(float),
                                                paths.nulls.astype(float))
        self.value_model_ = model
        pairs = design.pairs
        names = list(paths.channels) + [f"{paths.channels[i]} + {paths.channels[j]}" for i, j in zip(*pairs,
                                                                                                      strict=True)]
        self.coefficients_ = pd.Series(np.r_[model.coef_[0], model.intercept_[0]],
                                       index=names + design.znames + ["intercept"])
        self.path_shapley_ = credit[design.group]
        self.path_shares_ = share[design.group]
        journeys = np.bincount(design.group, weights=paths.conversions + paths.nulls, minlength=len(eta))
        self.baseline_ = float(journeys @ expit(eta))
        return _per_channel(design, share, paths.conversions, paths.value)

    def _for_counts(self, paths: PathTable) -> Callable[[PathTable], tuple[np.ndarray, np.ndarray]]:
        """Bootstrap replicates: the distinct design rows are found once; each replicate refits the
        regression on its counts and solves the distinct games again."""
        design = self._design(paths)
        n = len(paths.channels)
        start = self._start(design, n, paths)

        def credit(table: PathTable) -> tuple[np.ndarray, np.ndarray]:
            _, _, share, _ = self._solve(design, n, table.conversions.astype(float),
                                         table.nulls.astype(float), start)
            return _per_channel(design, share, table.conversions, table.value)

        return credit

    def _start(self, design: _Design, n: int, paths: PathTable) -> Any:
        """The regression on ``paths``' own counts, where replicates of it start their fits: the
        fitted one when ``paths`` is the fitted table, else fitted here."""
        if paths is getattr(self, "paths_", None) and hasattr(self, "value_model_"):
            return self.value_model_
        return self._solve(design, n, paths.conversions.astype(float), paths.nulls.astype(float))[0]

    def _for_draws(self, paths: PathTable) -> Callable[[np.ndarray, np.ndarray, np.ndarray],
                                                       tuple[np.ndarray, np.ndarray]]:
        """Many tables at once: the counts of every design row in all of them are one sparse product
        (sums over the row's paths); each table's regression and games are then solved as a fit
        solves them, with BLAS on one thread for the whole batch."""
        design = self._design(paths)
        n = len(paths.channels)
        rows = group_sums(design.group, len(design.X))
        start = self._start(design, n, paths)

        def credit(conv: np.ndarray, value: np.ndarray, nulls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            c, k, v = (rows @ np.ascontiguousarray(x.T) for x in (conv, nulls, value))
            out_conv, out_value = np.empty((len(conv), n)), np.empty((len(conv), n))
            with blas_limit():
                for i in range(len(conv)):
                    share = self._solve_rows(design, n, c[:, i], k[:, i], start)[2]
                    out_conv[i] = np.ascontiguousarray(c[:, i]) @ share
                    out_value[i] = np.ascontiguousarray(v[:, i]) @ share
            return out_conv, out_value

        return credit

    def _touch_weights(self, paths: PathTable) -> np.ndarray:
        """The fitted paths' own splits (repeats of a channel share its part); other tables are
        disaggregated from the channel totals."""
        if paths is not self.paths_:
            return super()._touch_weights(paths)
        key = paths.path_index.astype(np.int64) * (len(paths.channels) + 1) + paths.codes
        _, inverse, repeats = np.unique(key, return_inverse=True, return_counts=True)
        return self.path_shares_[paths.path_index, paths.codes] / repeats[inverse]

    @one_blas_thread
    def predict_proba(self, paths: PathTable | pd.DataFrame) -> np.ndarray:
        """P(conversion) of each path's journeys under the fitted value function (paths must use the
        fitted table's channels)."""
        from closedloop_nb.attribution.base import as_path_table

        self._check_fitted()
        return _predict(self, as_path_table(paths))


def _predict(model: AdjustedShapley, paths: PathTable) -> np.ndarray:
    """Each path's P(conversion), predicted once per distinct design row (paths with the same channels
    and covariates share one): a row per path at 50M touchpoints (1.3M paths, ~120 columns) took
    2.6 GB."""
    if paths.channels != model.paths_.channels:
        raise ValueError("paths must use the channels the model was fitted on")
    design = model._design(paths)
    return model.value_model_.predict_proba(design.X)[:, 1][design.group]


@dataclass(frozen=True)
class _Design:
    """Distinct design rows of the regression (``X``, their channel bits and covariates) and the row
    of each path (``group``)."""

    group: np.ndarray
    bits: np.ndarray
    z: np.ndarray
    X: np.ndarray
    pairs: tuple[np.ndarray, np.ndarray]
    znames: list[str]


def _group_ids(columns: list[np.ndarray]) -> np.ndarray:
    """One id per distinct combination of the integer columns' values (0 .. groups - 1)."""
    ids = np.zeros(len(columns[0]), dtype=np.int64)
    for col in columns:
        _, codes = np.unique(col, return_inverse=True)
        codes = np.asarray(codes, dtype=np.int64).ravel()
        ids = ids * (int(codes.max()) + 1 if len(codes) else 1) + codes
        _, ids = np.unique(ids, return_inverse=True)
        ids = np.asarray(ids, dtype=np.int64).ravel()
    return ids


def _per_channel(design: _Design, share: np.ndarray, conversions: np.ndarray, value: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Conversions and value credited per channel: each path's counts split by its design row's
    shares."""
    n_rows = len(share)
    conv = np.bincount(design.group, weights=np.asarray(conversions, float), minlength=n_rows)
    val = np.bincount(design.group, weights=np.asarray(value, float), minlength=n_rows)
    return conv @ share, val @ share


def _split(credit: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Each row's shares: its positive Shapley values normalised (equal shares over the row's
    channels where none is positive)."""
    pos = np.clip(credit, 0.0, None)
    total = pos.sum(axis=1, keepdims=True)
    share = np.divide(pos, total, out=np.zeros_like(pos), where=total > 0)
    none = total[:, 0] <= 0
    share[none] = present[none] / np.maximum(present[none].sum(axis=1, keepdims=True), 1)
    return share
