"""Run several attribution models side by side and flag where they disagree.

Examples
--------
>>> import pandas as pd
>>> paths = pd.DataFrame({"path": ["A > B", "B", "A"], "total_conversions": [5, 1, 2],
...                       "total_null": [5, 9, 8]})
>>> table = compare_models(paths, ["first_touch", "last_touch"])
>>> table.pivot(index="channel", columns="model", values="conversions").round(1).to_dict()
{'first_touch': {'A': 7.0, 'B': 1.0}, 'last_touch': {'A': 2.0, 'B': 6.0}}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from closedloop_nb.attribution.base import AttributionModel, as_path_table
from closedloop_nb.attribution.uncertainty import bootstrap_models

__all__ = ["compare_models", "plot_comparison", "rank_flips", "sensitivity"]

DEFAULT_MODELS = ("first_touch", "last_touch", "linear", "position_based", "markov", "shapley")


def _make(model: str | AttributionModel) -> AttributionModel:
    from closedloop_nb.attribution import MODELS

    if isinstance(model, AttributionModel):
        return model
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    return MODELS[model]()


def compare_models(paths: Any, models: Sequence[str | AttributionModel] = DEFAULT_MODELS,
                   ci: bool = False, n_boot: int = 200, random_state: int | None = 0,
                   progress: bool = True) -> pd.DataFrame:
    """Fit each model on the same paths; one tidy row per (model, channel).

    Parameters
    ----------
    paths
        A path table or a DataFrame in ChannelAttribution's format.
    models
        Model names (see :data:`closedloop_nb.attribution.MODELS`) or model instances.
    ci
        Add bootstrap intervals (``lower``, ``upper``, ``share_lower``, ...); slower.
    n_boot, random_state, progress
        Passed to :func:`~closedloop_nb.attribution.uncertainty.bootstrap_models`: each model's
        intervals are the ones :func:`~closedloop_nb.attribution.uncertainty.bootstrap` gives it
        with the same seed, from replicates drawn once for all the models.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, channel, conversions, value, share, rank`` (and intervals with ``ci``).
    """
    table = as_path_table(paths)
    if ci:  # every model's intervals from one set of replicates, as bootstrap() on each would draw them
        return pd.concat(bootstrap_models([_make(m) for m in models], table, n_boot=n_boot,
                                          random_state=random_state, progress=progress), ignore_index=True)
    frames = []
    for m in models:
        model = _make(m)
        s = model.fit(table).credits_.assign(model=model.name)
        s["rank"] = s["conversions"].rank(ascending=False, method="min").astype(int)
        frames.append(s[["model", "channel", "conversions", "value", "share", "rank"]])
    return pd.concat(frames, ignore_index=True)


def rank_flips(comparison: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """Channels whose rank differs across models: best and worst rank and the models giving them.

    A channel that ranks 1st under one model and 5th under another is a question for the model, not
    an answer about the channel.
    """
    rows = []
    for ch, g in comparison.groupby("channel", sort=False):
        best, worst = g.loc[g["rank"].idxmin()], g.loc[g["rank"].idxmax()]
        rows.append({"channel": ch, "best_rank": int(best["rank"]), "best_model": best["model"],
                     "worst_rank": int(worst["rank"]), "worst_model": worst["model"],
                     "spread": int(worst["rank"] - best["rank"])})
    out = pd.DataFrame(rows).sort_values(["spread", "best_rank"], ascending=[False, True])
    out = out[out["spread"] > 0].reset_index(drop=True)
    return out.head(top) if top else out


def plot_comparison(comparison: pd.DataFrame, ax: Any = None, value: str = "share") -> Any:
    """Grouped bars: one group per channel, one bar per model; intervals if present."""
    import matplotlib.pyplot as plt
    import numpy as np

    wide = comparison.pivot(index="channel", columns="model", values=value)
    order = wide.mean(axis=1).sort_values().index
    wide = wide.loc[order]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.5 * len(wide) + 1.5))
    height = 0.8 / max(len(wide.columns), 1)
    y = np.arange(len(wide))
    for i, model in enumerate(wide.columns):
        xerr = None
        lo, hi = f"{value}_lower" if value != "conversions" else "lower", \
            f"{value}_upper" if value != "conversions" else "upper"
        if lo in comparison and hi in comparison:
            sub = comparison[comparison["model"] == model].set_index("channel").loc[order]
            xerr = np.vstack([sub[value] - sub[lo], sub[hi] - sub[value]]).clip(min=0)
        ax.barh(y + i * height, wide[model], height=height, label=model, xerr=xerr, capsize=2)
    ax.set_yticks(y + height * (len(wide.columns) - 1) / 2, wide.index)
    ax.set_xlabel(value)
    ax.legend(loc="lower right", fontsize="small")
    return ax


def sensitivity(source: Any, conversion: str = "lead", models: Sequence[str] = ("linear", "shapley"),
                lookbacks: Sequence[int] = (30, 60, 90, 180), half_lives: Sequence[float] = (1, 3, 7, 14, 30),
                lookback_days: int = 90, **journey_options: Any) -> pd.DataFrame:
    """How much the answer depends on the settings: credit by channel across lookback windows (for
    each of ``models``) and across time-decay half-lives (at ``lookback_days``).

    Feed the result to :func:`rank_flips` for the channels whose rank moves with a setting, or to
    :func:`plot_comparison`.

    Parameters
    ----------
    source
        A run workspace (its cached journey builds are used), or canonical tables or a folder of
        them (as :func:`closedloop_nb.journeys.build_journeys` takes). One build, at the longest
        lookback, serves every setting (shorter lookbacks leave out the older touches of each
        converting journey, in the engine); with ``collapse_repeats`` or ``max_touches``, which
        act on the kept touches, or on Spark, each lookback is built.
    conversion
        What journeys end at.
    models
        Path-table models re-fitted at every lookback.
    lookbacks, half_lives
        Settings tried.
    lookback_days
        Lookback of the half-life runs.
    **journey_options
        Passed to :func:`~closedloop_nb.journeys.build_journeys` (or the workspace's ``journeys``).

    Returns
    -------
    pandas.DataFrame
        As :func:`compare_models` (``model`` names the setting, e.g. ``"linear, lookback 30 d"``),
        plus ``lookback_days`` and ``half_life_days``.
    """
    from closedloop_nb.journeys import add_paths, null_paths
    from closedloop_nb.metrics._engine import journey_touches

    settings = sorted(set(lookbacks) | {lookback_days})
    # without options acting on the kept touches, a shorter lookback's journeys are the longest
    # one's with the older touches of converting journeys left out: one build serves every lookback
    derive = not (journey_options.get("collapse_repeats") or journey_options.get("max_touches")
                  or journey_options.get("engine", "duckdb") != "duckdb")
    if derive:
        longest = _journeys(source, conversion, settings[-1], journey_options)
        base = journey_touches(longest)
        # journeys that did not convert are the same at every lookback: the longest build's path
        # table counts them already (its total_null), no second pass over millions of journeys
        nulls = null_paths(longest.paths) if len(settings) > 1 else None
    frames = []
    for days in settings:
        if derive:
            touches = base if days == settings[-1] else base.within(days)
            paths = longest.paths if days == settings[-1] else add_paths(
                touches.paths(where="converted = 1"), nulls)
        else:
            journeys = _journeys(source, conversion, days, journey_options)
            touches, paths = journey_touches(journeys), journeys.paths
        if days in lookbacks:
            t = compare_models(paths, models, progress=False)
            t["model"] = t["model"] + f", lookback {days} d"
            frames.append(t.assign(lookback_days=days, half_life_days=float("nan")))
        if days == lookback_days:
            for h in half_lives:
                c = _time_decay_credits(touches, h).assign(
                    model=f"time_decay, half-life {h:g} d", lookback_days=days, half_life_days=float(h))
                c["rank"] = c["conversions"].rank(ascending=False, method="min").astype(int)
                frames.append(c)
    cols = ["model", "channel", "conversions", "value", "share", "rank", "lookback_days", "half_life_days"]
    return pd.concat(frames, ignore_index=True)[cols]


def _journeys(source: Any, conversion: str, lookback_days: int, options: dict[str, Any]) -> Any:
    """The journeys of ``source`` for one lookback: a workspace's cached build, else built here."""
    from closedloop_nb.metrics._engine import is_workspace

    if is_workspace(source):
        rest = {k: v for k, v in options.items() if k != "progress"}
        return source.journeys(conversion=conversion, lookback_days=lookback_days, **rest)
    from closedloop_nb.journeys import build_journeys

    return build_journeys(source, conversion=conversion, lookback_days=lookback_days,
                          **{"progress": False, **options})


def _time_decay_credits(touches: Any, half_life_days: float) -> pd.DataFrame:
    """:class:`~closedloop_nb.attribution.TimeDecay`'s ``credits_`` on the converting journeys,
    computed in the engine (the touch weights by SQL, summed per channel)."""
    from closedloop_nb.attribution.journey import TimeDecay
    from closedloop_nb.metrics.credits import journey_weights_sql

    sql = journey_weights_sql(TimeDecay(half_life_days=half_life_days), touches)
    out = touches.frame(f"SELECT CAST(step AS VARCHAR) AS channel, SUM(weight) AS conversions, "
                        f"SUM(weight * value) AS value FROM ({sql}) w GROUP BY step")
    out = out.sort_values("channel", kind="stable").reset_index(drop=True)
    total = out["conversions"].sum()
    out["share"] = out["conversions"] / total if total else 0.0
    return out
