"""Where each attribution model can be trusted: scores against known truth, and a model chosen in the open.

The scorecard fits every model on the lead journeys of synthetic data drawn under every regime of
truth (:data:`closedloop_nb.synth.REGIMES`: additive, synergies, confounded capture, recency,
saturation, zero-effect channels) for a few seeds, and scores each model's channel shares against the
true ones (the exact Shapley credit of the generating model): total variation distance (TVD, half the
summed absolute gaps: the share of credit in the wrong place, 0 to 1) and Spearman rank correlation.
Intervals come from resampling journeys (each path's conversions and nulls redrawn as Poisson counts,
the truth held at the sample's): they show how much a score moves with the data, not with the seed.

On real data there is no truth to score against. :func:`holdout_log_loss` measures how well each
model that predicts conversion does so on held-out journeys, and :func:`recommend` combines both: among
the models that predict held-out journeys about as well as the best one, the one closest to the truth
on average over the scorecard's regimes, with the reason in a sentence.

Examples
--------
>>> paths, truth = regime_paths("additive", seed=3, n_visitors=3_000)
>>> from closedloop_nb.attribution import MODELS
>>> score = tvd(MODELS["linear"]().fit(paths).credits_.set_index("channel")["share"], truth)
>>> 0 <= score <= 1
True
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.attribution.base import AttributionModel, as_path_table
from closedloop_nb.attribution.paths import PathTable

__all__ = ["SCORECARD_SEEDS", "Recommendation", "choose_model", "conversion_probability", "holdout_log_loss",
           "load_scorecard", "rank_correlation", "recommend", "regime_paths", "scorecard", "summarise", "tvd"]

#: Seeds of the published scorecard (the adjusted model was designed on seed 1: these are others).
SCORECARD_SEEDS = (11, 12, 13)
AVERAGE = "(average)"


def tvd(shares: pd.Series, truth: pd.Series) -> float:
    """Total variation distance between a model's channel shares and the true ones (channels missing
    from either side count as 0)."""
    index = truth.index.union(shares.index)
    return float(0.5 * (shares.reindex(index).fillna(0.0) - truth.reindex(index).fillna(0.0)).abs().sum())


def rank_correlation(shares: pd.Series, truth: pd.Series) -> float:
    """Spearman correlation of a model's channel shares with the true ones (over the truth's channels)."""
    from scipy.stats import spearmanr

    got = shares.reindex(truth.index).fillna(0.0)
    return float(spearmanr(got.to_numpy(), truth.to_numpy()).statistic)


def regime_paths(regime: str, seed: int, n_visitors: int = 20_000) -> tuple[PathTable, pd.Series]:
    """Lead journeys of synthetic data drawn under ``regime`` (through validation and journey building,
    as real data go) and the true channel shares of its leads.

    Returns
    -------
    paths, truth
        The :class:`PathTable` and ``lead_share`` per channel from the ground truth.
    """
    from closedloop_nb.journeys import lead_paths_reference
    from closedloop_nb.synth import generate
    from closedloop_nb.validation import validate_tables

    data = generate(n_visitors, seed=seed, regime=regime, dirty_share=0.0)
    paths = lead_paths_reference(validate_tables(data.frames()).tables)
    gt = data.ground_truth.set_index("channel")
    return as_path_table(paths), gt.loc[~gt.index.str.startswith("("), "lead_share"]


def _make(model: str | AttributionModel) -> AttributionModel:
    from closedloop_nb.attribution import MODELS

    if isinstance(model, AttributionModel):
        return copy.deepcopy(model)
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    return MODELS[model]()


def _with_counts(table: PathTable, conv: np.ndarray, nulls: np.ndarray) -> PathTable:
    per = np.divide(table.value, table.conversions, out=np.zeros(table.n_paths), where=table.conversions > 0)
    return dataclasses.replace(table, conversions=conv.astype(float), nulls=nulls.astype(float),
                               value=per * conv)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Many small regressions run far faster on one BLAS thread than on several contending ones."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        yield
        return
    with threadpool_limits(limits=1):
        yield


def score_models(paths: PathTable, truth: pd.Series, models: Sequence[str | AttributionModel],
                 n_boot: int = 0, random_state: int | None = 0) -> pd.DataFrame:
    """Each model's TVD and rank correlation on ``paths`` (replicate 0) and on ``n_boot`` resamples of
    its journeys (replicates 1...): ``model, replicate, tvd, rank_corr``."""
    rng = np.random.default_rng(random_state)
    tables = [paths] + [_with_counts(paths, rng.poisson(paths.conversions), rng.poisson(paths.nulls))
                        for _ in range(n_boot)]
    rows = []
    with _one_thread():
        for m in models:
            for b, table in enumerate(tables):
                model = _make(m)
                share = model.fit(table).credits_.set_index("channel")["share"]
                rows.append({"model": model.name, "replicate": b, "tvd": tvd(share, truth),
                             "rank_corr": rank_correlation(share, truth)})
    return pd.DataFrame(rows)


def scorecard(regimes: Sequence[str] | None = None, models: Sequence[str | AttributionModel] | None = None,
              seeds: Sequence[int] = SCORECARD_SEEDS, n_visitors: int = 20_000, n_boot: int = 20,
              random_state: int | None = 0, progress: bool = False) -> pd.DataFrame:
    """Every model x every regime x every seed, scored against the truth.

    Parameters
    ----------
    regimes
        Regimes of :func:`closedloop_nb.synth.generate` (default: all).
    models
        Model names or instances (default: every path-table model in
        :data:`closedloop_nb.attribution.MODELS`).
    seeds
        Seeds of the synthetic data.
    n_visitors
        Visitors per dataset.
    n_boot
        Resamples of the journeys per dataset and model, for the intervals.
    random_state
        Seed of the resampling.
    progress
        Print a line per dataset.

    Returns
    -------
    pandas.DataFrame
        ``regime, seed, model, replicate, tvd, rank_corr`` (replicate 0: the data themselves);
        :func:`summarise` turns it into scores with intervals.
    """
    from closedloop_nb.attribution import MODELS
    from closedloop_nb.synth import REGIMES

    regimes = REGIMES if regimes is None else tuple(regimes)
    models = tuple(MODELS) if models is None else tuple(models)
    frames = []
    for regime in regimes:
        for seed in seeds:
            paths, truth = regime_paths(regime, seed, n_visitors)
            scores = score_models(paths, truth, models, n_boot, random_state)
            frames.append(scores.assign(regime=regime, seed=seed))
            if progress:
                print(f"{regime} seed {seed}: {paths.conversions.sum():,.0f} leads", flush=True)
    cols = ["regime", "seed", "model", "replicate", "tvd", "rank_corr"]
    return pd.concat(frames, ignore_index=True)[cols]


def summarise(card: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Scores per model and regime (mean over seeds) with percentile intervals over the resamples,
    plus each model's average over the regimes (``regime == "(average)"``).

    Returns
    -------
    pandas.DataFrame
        ``model, regime, tvd, tvd_lower, tvd_upper, rank_corr, rank_corr_lower, rank_corr_upper,
        seeds``, sorted by model and regime.
    """
    by_rep = card.groupby(["model", "regime", "replicate"], as_index=False)[["tvd", "rank_corr"]].mean()
    avg = by_rep.groupby(["model", "replicate"], as_index=False)[["tvd", "rank_corr"]].mean()
    by_rep = pd.concat([by_rep, avg.assign(regime=AVERAGE)], ignore_index=True)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    point = by_rep[by_rep["replicate"] == 0].set_index(["model", "regime"])[["tvd", "rank_corr"]]
    boot = by_rep[by_rep["replicate"] > 0].groupby(["model", "regime"])[["tvd", "rank_corr"]]
    out = point.join(boot.quantile(lo).add_suffix("_lower")).join(boot.quantile(hi).add_suffix("_upper"))
    seeds = card.groupby("model")["seed"].nunique()
    out["seeds"] = seeds.reindex(out.index.get_level_values("model")).to_numpy()
    cols = ["tvd", "tvd_lower", "tvd_upper", "rank_corr", "rank_corr_lower", "rank_corr_upper", "seeds"]
    return out.reindex(columns=cols).reset_index().sort_values(["model", "regime"]).reset_index(drop=True)


def load_scorecard() -> pd.DataFrame:
    """The published scorecard summary (``benchmarks/bench_scorecard.py`` writes it; see
    ``benchmarks/RESULTS.md``), as :func:`summarise` returns it."""
    text = resources.files("closedloop_nb.attribution").joinpath("data/scorecard.csv").read_text("utf-8")
    from io import StringIO

    return pd.read_csv(StringIO(text))


# --- predictive score on the data at hand --------------------------------------------------------


def conversion_probability(model: AttributionModel, paths: PathTable) -> np.ndarray | None:
    """P(conversion) of each path's journeys as the fitted ``model`` predicts it, or None for models
    that do not model conversion (the rules, simplified Shapley).

    Models with a ``predict_proba`` method (the Shapley value functions) use it; a Markov chain of
    order ``k`` predicts the training conversion rate of the state a journey ends in (its last ``k``
    channels; add-one smoothing towards the overall rate, as ``MarkovChain.select_order`` does).
    """
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(paths), float)
    order = getattr(model, "order", None)
    if order is None or not hasattr(model, "removal_effects_"):
        return None
    train = model.paths_
    key_train, key_test = _ending_state(train, order), _ending_state(paths, order)
    overall = train.conversions.sum() / max(train.conversions.sum() + train.nulls.sum(), 1)
    frame = pd.DataFrame({"key": key_train, "c": train.conversions, "n": train.conversions + train.nulls})
    g = frame.groupby("key")[["c", "n"]].sum()
    rate = (g["c"] + overall) / (g["n"] + 1)
    return rate.reindex(key_test).fillna(overall).to_numpy()


def _ending_state(paths: PathTable, order: int) -> np.ndarray:
    """The last ``order`` channels of each path, as one integer."""
    base = np.int64(len(paths.channels) + 1)
    key = np.zeros(paths.n_paths, dtype=np.int64)
    end = paths.offsets[1:]
    for j in range(1, order + 1):
        pos = end - j
        ok = pos >= paths.offsets[:-1]
        code = paths.codes[np.clip(pos, 0, max(len(paths.codes) - 1, 0))].astype(np.int64)
        digit = np.where(ok, code + 1, 0)
        key = key * base + digit
    return key


def holdout_log_loss(paths: Any, models: Sequence[str | AttributionModel] | None = None,
                     test_share: float = 0.3, random_state: int | None = 0) -> pd.DataFrame:
    """Each model's log-loss at predicting whether held-out journeys convert.

    Journeys are split at random into training and test (binomial thinning of every path's
    conversions and nulls, as ``MarkovChain.select_order`` does); each model is fitted on the training
    journeys and predicts the test ones. Lower is better; compare with ``baseline_log_loss``, the
    loss of predicting the overall training rate for every journey.

    Parameters
    ----------
    paths
        A path table or a DataFrame in ChannelAttribution's format.
    models
        Model names or instances (default: every path-table model).
    test_share
        Share of journeys held out.
    random_state
        Seed of the split.

    Returns
    -------
    pandas.DataFrame
        ``model, log_loss`` (NaN for models that do not predict conversion), ``baseline_log_loss``,
        ``test_journeys``.
    """
    from closedloop_nb.attribution import MODELS

    table = as_path_table(paths)
    models = tuple(MODELS) if models is None else tuple(models)
    rng = np.random.default_rng(random_state)
    test_c = rng.binomial(table.conversions.astype(np.int64), test_share).astype(float)
    test_n = rng.binomial(table.nulls.astype(np.int64), test_share).astype(float)
    train = _with_counts(table, table.conversions - test_c, table.nulls - test_n)
    test = _with_counts(table, test_c, test_n)
    n_test = (test_c + test_n).sum()
    overall = train.conversions.sum() / max(train.conversions.sum() + train.nulls.sum(), 1)

    def loss(p: np.ndarray) -> float:
        p = np.clip(p, 1e-12, 1 - 1e-12)
        return float(-(test_c * np.log(p) + test_n * np.log1p(-p)).sum() / n_test)

    rows = []
    with _one_thread():
        for m in models:
            model = _make(m).fit(train)
            p = conversion_probability(model, test)
            rows.append({"model": model.name, "log_loss": np.nan if p is None else loss(p)})
    out = pd.DataFrame(rows)
    out["baseline_log_loss"] = loss(np.full(table.n_paths, overall))
    out["test_journeys"] = int(n_test)
    return out


# --- the recommendation --------------------------------------------------------------------------


@dataclasses.dataclass
class Recommendation:
    """The model to report with, why, and the table it was chosen from.

    Attributes
    ----------
    model
        The recommended model's name (a key of :data:`closedloop_nb.attribution.MODELS`).
    reason
        One sentence saying why.
    table
        One row per model: ``log_loss``, ``scorecard_tvd`` (average over the regimes),
        ``scorecard_worst_tvd``, ``eligible`` (predicts held-out journeys within the tolerance of the
        best) and ``recommended``.
    """

    model: str
    reason: str
    table: pd.DataFrame

    def __str__(self) -> str:
        return self.reason


def recommend(log_loss: pd.DataFrame | None = None, summary: pd.DataFrame | None = None,
              tolerance: float = 0.01) -> Recommendation:
    """The model to report with: among the models that predict held-out journeys within
    ``tolerance`` (relative) of the best log-loss, the one with the lowest average TVD on the scorecard.

    Parameters
    ----------
    log_loss
        :func:`holdout_log_loss` on the data at hand (without it, the scorecard alone decides).
    summary
        A scorecard summary (:func:`summarise`; default: :func:`load_scorecard`).
    tolerance
        How much worse than the best held-out log-loss a model may predict and still be chosen.

    Returns
    -------
    Recommendation
    """
    summary = load_scorecard() if summary is None else summary
    avg = summary[summary["regime"] == AVERAGE].set_index("model")["tvd"]
    worst = summary[summary["regime"] != AVERAGE].groupby("model")["tvd"].max()
    table = pd.DataFrame({"scorecard_tvd": avg, "scorecard_worst_tvd": worst.reindex(avg.index)})
    if log_loss is not None:
        ll = log_loss.set_index("model")["log_loss"]
        table = table.join(ll, how="outer")
        predictive = table["log_loss"].notna() & table["scorecard_tvd"].notna()
        if not predictive.any():
            raise ValueError("no model both predicts conversion and is on the scorecard")
        best_ll = table.loc[predictive, "log_loss"].min()
        table["eligible"] = predictive & (table["log_loss"] <= best_ll * (1 + tolerance))
    else:
        table["log_loss"] = np.nan
        table["eligible"] = table["scorecard_tvd"].notna()
    table = table[["log_loss", "scorecard_tvd", "scorecard_worst_tvd", "eligible"]]
    table.index.name = "model"
    chosen = table.loc[table["eligible"], "scorecard_tvd"].idxmin()
    table["recommended"] = table.index == chosen
    table = table.sort_values(["eligible", "scorecard_tvd"], ascending=[False, True])
    reason = _reason(chosen, table, tolerance, log_loss is not None)
    return Recommendation(chosen, reason, table.reset_index())


def _reason(chosen: str, table: pd.DataFrame, tolerance: float, with_loss: bool) -> str:
    row = table.loc[chosen]
    n_models = int(table["scorecard_tvd"].notna().sum())
    ranked = table["scorecard_tvd"].dropna().sort_values()
    text = (f"{chosen}: on the scorecard's synthetic truths it is {row['scorecard_tvd']:.3f} TVD from the "
            f"true channel shares on average (worst regime {row['scorecard_worst_tvd']:.3f})")
    others = ranked.drop(chosen)
    if ranked.index[0] == chosen and len(others):
        text += f", the closest of {n_models} models (next: {others.index[0]}, {others.iloc[0]:.3f})"
    if with_loss:
        best = table["log_loss"].dropna()
        text += (f", and it predicts conversion on held-out journeys of these data with log-loss "
                 f"{row['log_loss']:.4f}, within {tolerance:.0%} of the best "
                 f"({best.idxmin()}, {best.min():.4f})")
        better = ranked[ranked < row["scorecard_tvd"]].index
        if len(better):
            text += (f"; {', '.join(better)} scored better on the scorecard but predict these journeys worse "
                     "or not at all")
    return text + "."


def choose_model(model: str | None, paths: Any, random_state: int | None = 0) -> Recommendation:
    """The model a report should use: ``model`` if a parameter fixes it, else the recommendation.

    Parameters
    ----------
    model
        A model name (any that :func:`closedloop_nb.metrics.deal_credits` takes), or ``None`` /
        ``"recommended"`` to follow :func:`recommend` on ``paths``.
    paths
        The journeys the recommendation's held-out log-loss is measured on.
    random_state
        Seed of the held-out split.

    Returns
    -------
    Recommendation
        With ``reason`` saying the parameter fixed the model, or why it was recommended.
    """
    if model not in (None, "recommended"):  # any name the report's crediting takes (lead_source, w_shaped...)
        rec = recommend(summary=load_scorecard())
        table = rec.table.assign(recommended=rec.table["model"] == model)
        return Recommendation(model, f"{model}: fixed by the report's model parameter (the scorecard "
                                     f"recommends {rec.model}).", table)
    return recommend(holdout_log_loss(paths, random_state=random_state))
