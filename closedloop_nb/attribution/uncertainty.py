"""Bootstrap confidence intervals for any attribution model, by resampling journeys.

A path table of ``N`` journeys is a sample: every journey is one draw of (path, converted or not).
A bootstrap replicate draws ``N`` journeys with replacement (a multinomial over the path × outcome
cells), refits the model, and records each channel's credited conversions, value, share and rank.
Percentile intervals over the replicates say how much of a channel's credit is noise: small channels
with a handful of conversions get wide intervals instead of confident-looking point estimates.

Examples
--------
>>> import pandas as pd
>>> from closedloop_nb.attribution import LastTouch
>>> paths = pd.DataFrame({"path": ["A", "B"], "total_conversions": [30, 10], "total_null": [70, 90]})
>>> ci = bootstrap(LastTouch(), paths, n_boot=200, random_state=0, progress=False)
>>> bool((ci["lower"] < ci["conversions"]).all() and (ci["conversions"] < ci["upper"]).all())
True
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.attribution.base import AttributionModel, as_path_table
from closedloop_nb.attribution.paths import PathTable

__all__ = ["bootstrap", "resample"]


def resample(paths: PathTable, rng: np.random.Generator) -> PathTable:
    """One bootstrap replicate: as many journeys as ``paths`` holds, drawn with replacement.

    A path's conversion value is resampled with its conversions (its mean value per conversion).
    """
    cells = np.concatenate([paths.conversions, paths.nulls])
    total = cells.sum()
    draw = rng.multinomial(int(round(total)), cells / total).astype(float)
    conv, nulls = draw[: paths.n_paths], draw[paths.n_paths:]
    per_conv = np.divide(paths.value, paths.conversions, out=np.zeros(paths.n_paths),
                         where=paths.conversions > 0)
    return PathTable(paths.channels, paths.codes, paths.offsets, conv, conv * per_conv, nulls)


def bootstrap(model: AttributionModel, paths: Any, n_boot: int = 200, ci: float = 0.95,
              random_state: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Percentile bootstrap intervals of a model's credits, shares and ranks.

    Parameters
    ----------
    model
        An attribution model (unfitted settings are used; the model itself is not changed).
    paths
        A :class:`PathTable` or a DataFrame in ChannelAttribution's format.
    n_boot
        Replicates.
    ci
        Coverage of the intervals.
    random_state
        Seed, for reproducible intervals.
    progress
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per channel: ``conversions``, ``lower``, ``upper``, ``value``, ``value_lower``,
        ``value_upper``, ``share``, ``share_lower``, ``share_upper``, ``rank`` (1 = most credited)
        and ``rank_lower``, ``rank_upper``.
    """
    table = as_path_table(paths)
    point = copy.deepcopy(model).fit(table).credits_
    rng = np.random.default_rng(random_state)
    n = len(table.channels)
    conv = np.empty((n_boot, n))
    value = np.empty((n_boot, n))
    from closedloop_nb.progress import bar

    iterator = bar(range(n_boot), desc=f"bootstrap {model.name}", enabled=progress)
    worker = copy.deepcopy(model)
    table = worker._prepare(table)
    credit = worker._for_counts(table)
    with warnings.catch_warnings():  # a replicate's warnings repeat the point fit's, once per replicate
        warnings.simplefilter("ignore")
        for b in iterator:
            conv[b], value[b] = credit(resample(table, rng))  # arrays only: no tables per replicate
    totals = conv.sum(axis=1, keepdims=True)
    share = np.divide(conv, totals, out=np.zeros_like(conv), where=totals > 0)
    ranks = (-conv).argsort(axis=1).argsort(axis=1) + 1
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    point_rank = (-point["conversions"].to_numpy()).argsort().argsort() + 1
    return pd.DataFrame({
        "model": model.name,
        "channel": list(table.channels),
        "conversions": point["conversions"].to_numpy(),
        "lower": np.percentile(conv, lo, axis=0),
        "upper": np.percentile(conv, hi, axis=0),
        "value": point["value"].to_numpy(),
        "value_lower": np.percentile(value, lo, axis=0),
        "value_upper": np.percentile(value, hi, axis=0),
        "share": point["share"].to_numpy(),
        "share_lower": np.percentile(share, lo, axis=0),
        "share_upper": np.percentile(share, hi, axis=0),
        "rank": point_rank,
        "rank_lower": np.percentile(ranks, lo, axis=0, method="lower").astype(int),
        "rank_upper": np.percentile(ranks, hi, axis=0, method="higher").astype(int),
    })
