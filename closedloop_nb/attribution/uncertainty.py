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

import contextlib
import copy
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.attribution.base import AttributionModel, as_path_table
from closedloop_nb.attribution.paths import PathTable

__all__ = ["bootstrap", "bootstrap_models", "resample"]

#: Bytes of replicate counts held at once (a chunk of replicates is drawn, then credited by every
#: model in one batch: :meth:`~closedloop_nb.attribution.base.AttributionModel._for_draws`).
CHUNK_BYTES = 96 * 2**20

#: Threads crediting a chunk's replicates in :func:`bootstrap_models` (the draws of the next chunk run
#: on a worker thread of their own either way). More than one credits the models side by side, the
#: same numbers, but their many small NumPy steps contend for the GIL: at 10M touchpoints no faster, so
#: one. The results never depend on it.
THREADS = 1


def resample(paths: PathTable, rng: np.random.Generator) -> PathTable:
    """One bootstrap replicate: as many journeys as ``paths`` holds, drawn with replacement.

    A path's conversion value is resampled with its conversions (its mean value per conversion).
    """
    conv, value, nulls = _draw(paths, rng, 1)
    return PathTable(paths.channels, paths.codes, paths.offsets, conv[0], value[0], nulls[0])


def _draw(paths: PathTable, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` replicates' conversions, value and nulls (replicates x paths), drawn one after another
    exactly as ``n`` calls of :func:`resample` draw them."""
    cells = np.concatenate([paths.conversions, paths.nulls])
    total = cells.sum()
    journeys, pvals = int(round(total)), cells / total
    conv, nulls = np.empty((n, paths.n_paths)), np.empty((n, paths.n_paths))
    for i in range(n):
        draw = rng.multinomial(journeys, pvals)
        conv[i], nulls[i] = draw[: paths.n_paths], draw[paths.n_paths:]
    per_conv = np.divide(paths.value, paths.conversions, out=np.zeros(paths.n_paths),
                         where=paths.conversions > 0)
    return conv, conv * per_conv, nulls


def chunk_size(n_paths: int, budget: int | None = None) -> int:
    """Replicates drawn and credited together: their conversions, value and nulls (and a model's
    products of them, about as much again) within ``budget`` bytes (default :data:`CHUNK_BYTES`)."""
    return max(1, int((CHUNK_BYTES if budget is None else budget) // (6 * 8 * max(n_paths, 1))))


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
    return bootstrap_models([model], paths, n_boot=n_boot, ci=ci, random_state=random_state,
                            progress=progress)[0]


def bootstrap_models(models: Sequence[AttributionModel], paths: Any, n_boot: int = 200, ci: float = 0.95,
                     random_state: int | None = None, progress: bool = True) -> list[pd.DataFrame]:
    """:func:`bootstrap` of several models on the same replicates: each model's intervals are the
    ones ``bootstrap(model, paths, n_boot, ci, random_state)`` gives (the same draws, in the same
    order), but a replicate is drawn once for all the models whose fits see the same counts (so
    with ``random_state=None`` those models are compared on the same unseeded replicates).

    Replicates are drawn in chunks (:data:`CHUNK_BYTES` of counts at a time) and every model credits
    a whole chunk at once (:meth:`~closedloop_nb.attribution.base.AttributionModel._for_draws`: a
    rule's credits are one product of the chunk's counts with its per-path weights, a chain's or a
    coalition game's counts are sums of them over its transitions or coalitions). The next chunk is
    drawn on a worker thread while this one is credited (:data:`THREADS`).

    Returns
    -------
    list of pandas.DataFrame
        One per model, as :func:`bootstrap` returns it.

    Examples
    --------
    >>> import pandas as pd
    >>> from closedloop_nb.attribution import FirstTouch, LastTouch
    >>> paths = pd.DataFrame({"path": ["A > B", "B"], "total_conversions": [30, 10],
    ...                       "total_null": [70, 90]})
    >>> first, last = bootstrap_models([FirstTouch(), LastTouch()], paths, n_boot=50, random_state=0,
    ...                                progress=False)
    >>> first.equals(bootstrap(FirstTouch(), paths, n_boot=50, random_state=0, progress=False))
    True
    """
    table = as_path_table(paths)
    points = [copy.deepcopy(model).fit(table).credits_ for model in models]
    n = len(table.channels)
    conv = [np.empty((n_boot, n)) for _ in models]
    value = [np.empty((n_boot, n)) for _ in models]
    # models whose fits see the same counts share their draws (one generator per group, seeded
    # as each model's own would be): the models of one group, with their batched credit functions
    groups: list[tuple[PathTable, list[tuple[int, Any]]]] = []
    for i, model in enumerate(models):
        worker = copy.deepcopy(model)
        prepared = worker._prepare(table)
        credit = worker._for_draws(prepared)
        for counts, members in groups:
            if _same_counts(counts, prepared):
                members.append((i, credit))
                break
        else:
            groups.append((prepared, [(i, credit)]))
    from closedloop_nb.progress import bar

    names = ", ".join(dict.fromkeys(m.name for m in models))
    chunk = chunk_size(table.n_paths)
    steps = [(g, start, min(start + chunk, n_boot)) for g in range(len(groups))
             for start in range(0, n_boot, chunk)]
    rngs = [np.random.default_rng(random_state) for _ in groups]

    def draw(step: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g, start, stop = step
        return _draw(groups[g][0], rngs[g], stop - start)

    took = np.zeros(len(models))  # seconds each model took on the last chunk: the slowest start first

    def timed(i: int, credit: Any, draws: tuple) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        out = credit(*draws)
        took[i] = time.perf_counter() - t0
        return out

    with warnings.catch_warnings(), _threads(1) as ahead_pool, _threads(THREADS - 1) as pool:
        warnings.simplefilter("ignore")  # a replicate's warnings repeat the point fit's, once per replicate
        # the draws, one after another from each group's generator as before, run one chunk ahead of
        # the crediting on a worker thread (NumPy's multinomial leaves the GIL while it draws); with
        # THREADS > 1 the models also credit a chunk side by side. Each model's numbers are what it
        # computes alone: only the waiting overlaps
        ahead = ahead_pool.submit(draw, steps[0]) if steps else None
        for k in bar(range(len(steps)), desc=f"bootstrap {names}", enabled=progress):
            g, start, stop = steps[k]
            draws = ahead.result()
            ahead = ahead_pool.submit(draw, steps[k + 1]) if k + 1 < len(steps) else None
            members = sorted(groups[g][1], key=lambda m: -took[m[0]])
            jobs = [(i, pool.submit(timed, i, credit, draws)) for i, credit in members[1:]] if pool else []
            for i, credit in members[: 1 if pool else None]:  # this thread's share
                conv[i][start:stop], value[i][start:stop] = timed(i, credit, draws)
            for i, job in jobs:
                conv[i][start:stop], value[i][start:stop] = job.result()
    return [_intervals(model.name, table.channels, point, c, v, ci)
            for model, point, c, v in zip(models, points, conv, value, strict=True)]


@contextlib.contextmanager
def _threads(n: int) -> Iterator[Any]:
    """A pool of ``n`` worker threads (None for none), with BLAS on one thread while it lives: the
    regressions run it on one thread anyway (:func:`~closedloop_nb.attribution.shapley.blas_limit`),
    and one model entering and leaving that limit while another multiplies must not change the
    other's threads."""
    from concurrent.futures import ThreadPoolExecutor

    from closedloop_nb.attribution.shapley import blas_limit

    if n < 1:
        yield None
        return
    with blas_limit(), ThreadPoolExecutor(max_workers=n, thread_name_prefix="bootstrap") as pool:
        yield pool


def _same_counts(a: PathTable, b: PathTable) -> bool:
    """Whether replicates of ``a`` and ``b`` are the same draws."""
    return a is b or all(np.array_equal(x, y) for x, y in ((a.conversions, b.conversions),
                                                         (a.nulls, b.nulls), (a.value, b.value)))


def _intervals(name: str, channels: Sequence[str], point: pd.DataFrame, conv: np.ndarray, value: np.ndarray,
               ci: float) -> pd.DataFrame:
    """Percentile intervals of the replicates' credits (replicates x channels), shares and ranks."""
    totals = conv.sum(axis=1, keepdims=True)
    share = np.divide(conv, totals, out=np.zeros_like(conv), where=totals > 0)
    ranks = (-conv).argsort(axis=1).argsort(axis=1) + 1
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    point_rank = (-point["conversions"].to_numpy()).argsort().argsort() + 1
    return pd.DataFrame({
        "model": name,
        "channel": list(channels),
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
