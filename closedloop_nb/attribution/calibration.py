"""Calibrate a model's channel credits to experiments (lift tests, geo holdouts).

An experiment says how many conversions (or how much revenue) a channel caused over a period, with an
interval. A model's credit for the channel is an estimate of the same thing from observational
journeys, right only as far as its assumptions are. :func:`calibrate` combines the two:

1. A model credits every conversion, including those that would have happened anyway; an experiment
   measures only the incremental ones. The model's credits are first put on the incremental scale by
   the tested channels' pooled ratio, ``scale = sum of experiments / sum of their channels' credits``
   (assuming the model overstates the untested channels alike); the conversions no channel caused
   are reported in a ``(not incremental)`` row.
2. Each tested channel is then shrunk by precision weighting (normal-normal Bayes):
   ``calibrated = (m / s_m^2 + e / s_e^2) / (1 / s_m^2 + 1 / s_e^2)``, with ``m`` the rescaled credit,
   ``s_e`` the experiment's standard error (from its interval) and ``s_m = model_error * m``. The
   model's error is its *structural* error, not its sampling error (which alone would let a
   confounded model outvote every experiment): given, or estimated from how far the experiments fall
   from the credits beyond their own noise (``tau^2 = mean(((e - m)^2 - s_e^2) / m^2)``, a
   method-of-moments estimate as in random-effects meta-analysis).

Several experiments of one channel are pooled first (precision-weighted). An experiment covering part
of the model's data (``coverage``, e.g. one region's holdout, a month of a quarter) is scaled up to
all of it. Shares are over the channels.

Assumptions: the experiment measures the same conversions as the model (same conversion event,
window, population, or ``coverage`` says which part); errors are roughly normal; the untested channels
are over- or under-credited like the tested ones on average. Where they are not (channels that
capture intent, such as Direct, that no experiment can hold out) calibration cannot correct them: on
the scorecard's confounded regime, experiments on the paid channels leave most of the error where it
was (benchmarks/RESULTS.md).

Examples
--------
>>> import pandas as pd
>>> credits = pd.DataFrame({"channel": ["A", "B"], "conversions": [60.0, 40.0]})
>>> experiments = pd.DataFrame({"channel": ["A"], "period": ["2024-Q1"], "incremental": [30.0],
...                             "lower": [20.2], "upper": [39.8]})
>>> table = calibrate(credits, experiments)
>>> table.set_index("channel")["calibrated"].round(1).to_dict()
{'A': 30.0, 'B': 20.0, '(not incremental)': 50.0}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from closedloop_nb.attribution.base import AttributionModel

__all__ = ["EXPERIMENT_COLUMNS", "calibrate", "model_baseline", "plot_calibration", "simulate_experiments"]

#: Columns of an experiments table (``metric`` and ``coverage`` are optional).
EXPERIMENT_COLUMNS = ("channel", "period", "incremental", "lower", "upper", "metric", "coverage")
NOT_INCREMENTAL = "(not incremental)"


def _credits(model: AttributionModel | pd.DataFrame, metric: str) -> pd.Series:
    frame = model.credits_ if isinstance(model, AttributionModel) else model
    if "channel" not in frame or metric not in frame:
        raise ValueError(f"credits need columns 'channel' and {metric!r}; got {list(frame.columns)}")
    return frame.set_index("channel")[metric].astype(float)


def _experiments(experiments: pd.DataFrame, metric: str, level: float) -> pd.DataFrame:
    missing = [c for c in ("channel", "incremental", "lower", "upper") if c not in experiments]
    if missing:
        raise ValueError(f"experiments lack column(s) {missing}; expected {', '.join(EXPERIMENT_COLUMNS)}")
    e = experiments.copy()
    if "metric" in e:
        e = e[e["metric"].fillna("conversions") == metric]
    elif metric != "conversions":
        e = e.iloc[0:0]
    coverage = e["coverage"].astype(float) if "coverage" in e else pd.Series(1.0, index=e.index)
    bad = (e["upper"] < e["lower"]) | ~((coverage > 0) & (coverage <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise ValueError(f"experiments row {row}: the interval must have lower <= upper and coverage must be "
                         "in (0, 1]")
    z = norm.ppf(0.5 + level / 2)
    se = ((e["upper"] - e["lower"]) / (2 * z) / coverage).clip(lower=1e-12)
    est = e["incremental"] / coverage
    w = 1 / se**2
    pooled = pd.DataFrame({"channel": e["channel"], "w": w, "wx": w * est}).groupby("channel").sum()
    return pd.DataFrame({"experiment": pooled["wx"] / pooled["w"], "experiment_se": pooled["w"] ** -0.5})


def calibrate(model: AttributionModel | pd.DataFrame, experiments: pd.DataFrame, metric: str = "conversions",
              model_error: float | str = "estimate", level: float = 0.95, untested: str = "scale",
              baseline: float | None = None) -> pd.DataFrame:
    """A model's channel credits next to the same credits calibrated to experiments.

    Parameters
    ----------
    model
        A fitted attribution model, or its ``credits_`` (``channel`` and ``metric`` columns).
    experiments
        One row per experiment: ``channel``, ``period`` (a label), ``incremental`` (conversions or
        value the channel caused), ``lower``, ``upper`` (its interval at ``level``), optionally
        ``metric`` (``"conversions"`` or ``"value"``; rows of the other metric are ignored) and
        ``coverage`` (share of the model's data the experiment covers, default 1).
    metric
        ``"conversions"`` or ``"value"``.
    model_error
        The model's standard error as a share of its (rescaled) credit, or ``"estimate"``: from the
        experiments' disagreement with the model beyond their own noise (a method-of-moments
        estimate, at least 0.05; 0.5 with fewer than two tested channels).
    level
        Level of the experiments' intervals and of the calibrated ones.
    untested
        How the untested channels follow: ``"scale"`` (by the tested channels' pooled ratio of
        experiment to credit, step 1 above) or ``"residual"``: the total is fixed and what the
        calibrated tested channels do not account for, ``total - sum(calibrated tested)``, is shared
        by the baseline and the untested channels in proportion to the model's view of them (its
        baseline and its credits on the incremental scale; Notes below).
    baseline
        With ``untested="residual"``: the model's estimate of the conversions (or value) no channel
        caused, in the metric's unit. Default: the fitted model's own (:func:`model_baseline`; the
        logistic value functions ``shapley_model`` and ``shapley_adjusted`` have one), else an error.

    Returns
    -------
    pandas.DataFrame
        One row per channel plus ``(not incremental)``: ``credit``, ``share`` (uncalibrated),
        ``experiment``, ``experiment_lower``, ``experiment_upper`` (pooled, NaN if untested),
        ``experiment_weight`` (0 to 1), ``calibrated``, ``calibrated_lower``, ``calibrated_upper``,
        ``calibrated_share``, ``tested``; ``attrs["scale"]``, ``attrs["model_error"]`` and
        ``attrs["untested"]`` say what was used.

    Notes
    -----
    The residual (``untested="residual"``). The total ``N`` is observed; an experiment measures the
    conversions its channel caused; so ``N - sum of the tested channels' incremental conversions`` is
    what the baseline and the untested channels caused together, and no experiment says how it
    splits. The model's view decides: its baseline ``B`` and its credits scaled to the incremental
    total (``prior = credit (N - B) / N``). The tested channels are shrunk as above, the residual
    ``R = N - sum(calibrated tested)`` goes to the baseline and the untested channels in proportion to
    ``B`` and their priors, so the calibrated credits and the ``(not incremental)`` row add up to
    ``N`` exactly. An untested channel's standard error adds its part of the tested channels'
    posterior variance, ``(w_u / W)^2 sum(se_t^2)`` (a tested channel that caused less leaves more for
    the rest), to the model's own error ``model_error * credit``. Assumptions: an experiment's
    incremental conversions are the channel's credit (true where effects add up; where channels
    reinforce each other a holdout's lift exceeds the Shapley credit and the residual is too small),
    and the model is right about the untested channels *relative to one another and to the baseline*.
    The second is where confounded capture breaks it: a model that gives Direct intent's conversions
    keeps that proportion, whatever the paid experiments say (benchmarks/RESULTS.md: even the tested
    channels' exact credits and the true residual, shared in the model's proportions, leave 0.77-0.83
    of the distance on the scorecard's confounded regime, and with holdout lifts, 1.5-1.75 times the
    Shapley credits there, the residual scheme does worse than the default).
    """
    credit = _credits(model, metric)
    exp = _experiments(experiments, metric, level)
    unknown = sorted(set(exp.index) - set(credit.index))
    if unknown:
        raise ValueError(f"experiments on channels the model does not credit: {unknown}")
    z = norm.ppf(0.5 + level / 2)
    out = pd.DataFrame({"credit": credit})
    out["share"] = credit / credit.sum() if credit.sum() else 0.0
    out = out.join(exp)
    if untested not in ("scale", "residual"):
        raise ValueError(f"untested must be 'scale' or 'residual', got {untested!r}")
    tested = out["experiment"].notna()
    total = float(credit.sum())
    if untested == "residual":
        base = model_baseline(model, metric) if baseline is None else float(baseline)
        if base is None:
            raise ValueError("untested='residual' needs the model's baseline (conversions no channel "
                             "caused): pass baseline=..., or a fitted model that has one (shapley_model, "
                             "shapley_adjusted)")
        if not 0 <= base < total:
            raise ValueError(f"baseline must be in [0, total credit {total:g}), got {base:g}")
        # the model's own incremental scale: what it says the channels caused
        scale = (total - base) / total
    else:
        base = np.nan
        # the model's credits on the incremental scale: the tested channels' pooled ratio
        scale = out.loc[tested, "experiment"].sum() / out.loc[tested, "credit"].sum() if tested.any() else 1.0
    prior = out["credit"] * scale
    error = _model_error(model_error, prior[tested], out.loc[tested, "experiment"],
                         out.loc[tested, "experiment_se"])
    s_m = (error * prior.abs()).clip(lower=1e-12)
    prec_m, prec_e = s_m**-2, (out["experiment_se"] ** -2).fillna(0.0)
    weight = prec_e / (prec_m + prec_e)
    post = (1 - weight) * prior + weight * out["experiment"].fillna(0.0)
    post_se = (prec_m + prec_e) ** -0.5
    rest_calibrated = total - post.sum()
    if untested == "residual":
        residual = total - post[tested].sum()
        w = prior.where(~tested, 0.0).clip(lower=0.0)
        w_all = w.sum() + base
        part = w / w_all if w_all > 0 else w * 0.0
        share_of_tested_var = float((post_se[tested] ** 2).sum())
        post = post.where(tested, residual * part)
        post_se = post_se.where(tested, np.sqrt(part**2 * share_of_tested_var + (error * post.abs()) ** 2))
        rest_calibrated = residual * base / w_all if w_all > 0 else residual
    out["experiment_lower"] = out["experiment"] - z * out["experiment_se"]
    out["experiment_upper"] = out["experiment"] + z * out["experiment_se"]
    out["experiment_weight"] = weight
    out["calibrated"] = post
    out["calibrated_lower"] = post - z * post_se
    out["calibrated_upper"] = post + z * post_se
    out["calibrated_share"] = post / post.sum() if post.sum() else np.nan
    out["tested"] = tested
    rest = {"credit": 0.0, "share": np.nan, "experiment_weight": np.nan,
            "calibrated": rest_calibrated, "calibrated_share": np.nan, "tested": False}
    out.loc[NOT_INCREMENTAL] = pd.Series(rest)
    cols = ["credit", "share", "experiment", "experiment_lower", "experiment_upper", "experiment_weight",
            "calibrated", "calibrated_lower", "calibrated_upper", "calibrated_share", "tested"]
    out = out[cols]
    out["tested"] = out["tested"].astype(bool)
    out.index.name = "channel"
    out = out.reset_index()
    out.attrs.update(scale=float(scale), model_error=float(error), untested=untested)
    return out


def model_baseline(model: AttributionModel | pd.DataFrame, metric: str = "conversions") -> float | None:
    """A fitted model's estimate of the conversions (or value) of its journeys that no channel caused,
    or None for models without one.

    ``shapley_adjusted`` has ``baseline_`` (each path's journeys times its no-channel probability,
    the covariates held); ``shapley_model`` predicts the empty coalition's rate from its regression
    (times every journey; an extrapolation, as no journey has no touch). Value is the conversions'
    baseline share of the credited value.
    """
    if not isinstance(model, AttributionModel) or not hasattr(model, "paths_"):
        return None
    paths = model.paths_
    if hasattr(model, "baseline_"):
        conv = float(model.baseline_)
    elif getattr(model, "value", None) == "model" and hasattr(model, "value_model_"):
        p0 = float(model._predict(np.zeros(1, np.int64), len(paths.channels))[0])
        conv = p0 * float((paths.conversions + paths.nulls).sum())
    else:
        return None
    if metric == "conversions":
        return conv
    n = float(paths.conversions.sum())
    return conv / n * float(paths.value.sum()) if n else 0.0


def _model_error(model_error: float | str, prior: pd.Series, experiment: pd.Series, se: pd.Series) -> float:
    """The model's relative error: given, or estimated from how far the experiments fall from the
    rescaled credits beyond their own variance (mean of ((e - m)^2 - s_e^2) / m^2, floored)."""
    if model_error != "estimate":
        if not (isinstance(model_error, int | float) and model_error > 0):
            raise ValueError(f"model_error must be a positive number or 'estimate', got {model_error!r}")
        return float(model_error)
    if len(prior) < 2:
        return 0.5
    ok = prior.abs() > 0
    tau2 = (((experiment - prior) ** 2 - se**2) / prior**2)[ok].mean()
    return float(max(np.sqrt(max(tau2, 0.0)), 0.05))


def plot_calibration(table: pd.DataFrame, ax: Any = None) -> Any:
    """Each channel's share before and after calibration (tested channels marked); returns the Axes."""
    import matplotlib.pyplot as plt

    t = table[table["channel"] != NOT_INCREMENTAL].sort_values("calibrated_share")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.4 * len(t) + 1.5))
    y = np.arange(len(t))
    ax.barh(y - 0.2, t["share"], height=0.4, label="model")
    ax.barh(y + 0.2, t["calibrated_share"], height=0.4, label="calibrated to experiments")
    ax.set_yticks(y, [f"{c} *" if k else c for c, k in zip(t["channel"], t["tested"], strict=True)])
    ax.set_xlabel("share of incremental conversions (* tested)")
    ax.legend(loc="lower right", fontsize="small")
    return ax


def simulate_experiments(data: Any, channels: list[str], holdout_share: float = 0.3, level: float = 0.95,
                         random_state: int | None = 0) -> pd.DataFrame:
    """Run a randomised holdout test of each channel on synthetic data's truth.

    For each channel, a random ``holdout_share`` of the visitors exposed to it are held out: each
    converts with probability ``f_i(S_i without c)`` instead of ``f_i(S_i)`` (the generating model,
    :attr:`closedloop_nb.synth.SyntheticData.visitor_truth`); the conversions the channel caused among
    all exposed visitors are estimated from the difference in conversion rates, with a normal
    interval from the two binomial variances.

    Parameters
    ----------
    data
        :class:`~closedloop_nb.synth.SyntheticData` of a regime other than additive.
    channels
        Channels to test.
    holdout_share, level, random_state
        The holdout's size, the interval's level, the seed.

    Returns
    -------
    pandas.DataFrame
        An experiments table for :func:`calibrate` (``period`` is the data's, ``metric`` conversions),
        plus ``true_incremental`` (the expected lift over the exposed visitors).
    """
    from closedloop_nb.synth import CHANNELS

    vt = data.visitor_truth
    if vt is None:
        raise ValueError("simulate_experiments needs data of a regime other than additive (visitor_truth)")
    names = [c.name for c in CHANNELS]
    ex = data.exposures
    rng = np.random.default_rng(random_state)
    z = norm.ppf(0.5 + level / 2)
    period = f"{data.parameters['period']['start'][:10]}/{data.parameters['period']['end'][:10]}"
    rows = []
    for ch in channels:
        c = names.index(ch)
        exposed = np.flatnonzero(ex[ch].to_numpy())
        held = rng.random(len(exposed)) < holdout_share
        p_on, lift = vt["p"][exposed], vt["lift"][exposed, c]
        y = rng.random(len(exposed)) < np.where(held, p_on - lift, p_on)
        r1, r0 = y[~held].mean(), y[held].mean()
        n1, n0 = (~held).sum(), held.sum()
        se = np.sqrt(r1 * (1 - r1) / n1 + r0 * (1 - r0) / n0) * len(exposed)
        est = (r1 - r0) * len(exposed)
        rows.append({"channel": ch, "period": period, "incremental": est, "lower": est - z * se,
                     "upper": est + z * se, "metric": "conversions", "coverage": 1.0,
                     "true_incremental": float(lift.sum())})
    return pd.DataFrame(rows)
