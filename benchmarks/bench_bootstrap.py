"""Benchmark: the cost of bootstrap intervals (issue 4, item 7; issue 13 at 10M touchpoints).

``bootstrap`` refits a model on resampled journey counts; none of the peers offers intervals, so
this is a budget for analysts rather than a race. Two measurements:

* per model (default): the point fit, the work replicates share (a rule's weights per path, a
  Markov chain's states, Shapley's coalitions) and the cost of a replicate when a chunk of them is
  credited at once (``_for_draws``), on the ~700k-unique-path table of ``bench_attribution.py``;
* ``--compare``: notebook 03's call, ``compare_models(paths, MODELS, ci=True, n_boot=100)``, timed as
  a whole (wall and CPU seconds: the machine may be shared), and with ``--check`` against the
  per-replicate loop it replaced (one draw and one ``_for_counts`` credit per model and replicate,
  each model with its own generator), whose intervals it must equal.

The paths come from the default table, from ``--data-dir`` (a folder of canonical tables, e.g. a
``closedloop synth`` output; its workspace is cached in ``--cache-dir``) or from ``--paths`` (a
ChannelAttribution-style CSV).

    .venv/bin/python benchmarks/bench_attribution.py     # once: writes the table
    .venv/bin/python benchmarks/bench_bootstrap.py [--replicates 10]
    .venv/bin/python benchmarks/bench_bootstrap.py --compare --check --data-dir data/sample
    .venv/bin/python benchmarks/bench_bootstrap.py --compare --data-dir DIR --cache-dir /tmp/ws
"""

from __future__ import annotations

import argparse
import copy
import resource
import time
import warnings

import numpy as np
import pandas as pd
from bench_attribution import DATA, make_paths

from closedloop_nb.attribution import MODELS, MarkovChain, PathTable
from closedloop_nb.attribution.uncertainty import _draw, _intervals, chunk_size, resample

MODELS_TIMED = ("last_touch", "linear", "position_based", "markov1", "markov2", "markov3", "shapley",
                "shapley_model", "shapley_adjusted")
#: notebook 03's models
NOTEBOOK_MODELS = ("first_touch", "last_touch", "linear", "position_based", "markov", "shapley",
                   "shapley_model", "shapley_adjusted")


def _model(name: str):
    return MarkovChain(order=int(name[-1])) if name.startswith("markov") and name[-1].isdigit() \
        else MODELS[name]()


def replicate_times(name: str, table: PathTable, replicates: int,
                    seed: int = 0) -> tuple[float, float, float]:
    """CPU seconds of the point fit, of the set-up (the work replicates share) and of one replicate
    credited in a chunk of ``replicates``, as ``bootstrap`` runs them."""
    model = _model(name)
    t = time.process_time()
    copy.deepcopy(model).fit(table)
    point = time.process_time() - t
    worker = copy.deepcopy(model)
    t = time.process_time()
    prepared = worker._prepare(table)
    credit = worker._for_draws(prepared)
    setup = time.process_time() - t
    draws = _draw(prepared, np.random.default_rng(seed), replicates)
    credit(*(d[:1] for d in draws))  # first-use imports out of the timing
    t = time.process_time()
    credit(*draws)
    return point, setup, (time.process_time() - t) / replicates


def loop_bootstrap(models: list, table: PathTable, n_boot: int, seed: int) -> pd.DataFrame:
    """The per-replicate loop ``compare_models(ci=True)`` ran before: per model, its own generator,
    one draw and one credit per replicate."""
    frames = []
    for model in models:
        point = copy.deepcopy(model).fit(table).credits_
        worker = copy.deepcopy(model)
        prepared = worker._prepare(table)
        credit = worker._for_counts(prepared)
        rng = np.random.default_rng(seed)
        conv = np.empty((n_boot, len(table.channels)))
        value = np.empty_like(conv)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for b in range(n_boot):
                conv[b], value[b] = credit(resample(prepared, rng))
        frames.append(_intervals(model.name, table.channels, point, conv, value, 0.95))
    return pd.concat(frames, ignore_index=True)


def _timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    out = function()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _load(args: argparse.Namespace) -> PathTable:
    if args.paths:
        return PathTable.from_frame(pd.read_csv(args.paths))
    if args.data_dir:
        import closedloop_nb as cl
        from closedloop_nb.attribution.base import as_path_table

        ws = cl.open_workspace(args.data_dir, cache_dir=args.cache_dir)
        return as_path_table(ws.journeys(conversion="lead", lookback_days=90).paths)
    if not DATA.exists():
        make_paths(DATA)
    return PathTable.from_frame(pd.read_csv(DATA))


def compare(table: PathTable, n_boot: int, check: bool) -> None:
    from closedloop_nb.attribution.compare import compare_models

    models = list(NOTEBOOK_MODELS)
    print(f"compare_models(ci=True, n_boot={n_boot}) over {len(models)} models "
          f"(chunks of {chunk_size(table.n_paths)} replicates)")
    print("| model | point fit (CPU) | set-up (CPU) | per replicate (CPU) |")
    print("|---|---:|---:|---:|")
    _, _, draw = _timed(lambda: _draw(table, np.random.default_rng(0), 10))
    print(f"| (one draw, shared) | | | {draw / 10:.4f} s |")
    for name in models:
        point, setup, each = replicate_times(name, table, min(n_boot, chunk_size(table.n_paths)))
        print(f"| {name} | {point:.3f} s | {setup:.3f} s | {each:.4f} s |", flush=True)
    fast, wall, cpu = _timed(lambda: compare_models(table, models, ci=True, n_boot=n_boot, progress=False))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"compare_models(ci=True): wall {wall:.1f} s, CPU {cpu:.1f} s, peak RSS so far {peak:.2f} GiB")
    if check:
        slow, wall, cpu = _timed(lambda: loop_bootstrap([MODELS[m]() for m in models], table, n_boot, 0))
        print(f"per-replicate loop: wall {wall:.1f} s, CPU {cpu:.1f} s")
        num = [c for c in fast.columns if c not in ("model", "channel")]
        rel = (np.abs(fast[num].to_numpy(float) - slow[num].to_numpy(float))
               / np.maximum(np.abs(slow[num].to_numpy(float)), 1e-300))
        print(f"largest relative difference of any interval: {rel.max():.2e}")
        assert (fast[["model", "channel"]].to_numpy() == slow[["model", "channel"]].to_numpy()).all()
        assert rel.max() <= 1e-9, rel.max()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=10, help="replicates per model timed")
    parser.add_argument("--compare", action="store_true", help="time notebook 03's compare_models call")
    parser.add_argument("--check", action="store_true", help="with --compare: against the per-replicate loop")
    parser.add_argument("--n-boot", type=int, default=100)
    parser.add_argument("--paths", help="a path table CSV (ChannelAttribution's format)")
    parser.add_argument("--data-dir", help="a folder of canonical tables: lead journeys, 90-day lookback")
    parser.add_argument("--cache-dir", help="workspace cache for --data-dir")
    args = parser.parse_args()
    table = _load(args)
    print(f"{table.n_paths:,} paths, {len(table.channels)} channels, "
          f"{table.conversions.sum():,.0f} conversions, {table.nulls.sum():,.0f} nulls")
    if args.compare:
        compare(table, args.n_boot, args.check)
        return
    rng = np.random.default_rng(1)
    t = time.process_time()
    for _ in range(args.replicates):
        resample(table, rng)
    draw = (time.process_time() - t) / args.replicates
    print(f"one resample of the journey counts: {draw:.3f} CPU s")
    print("| model | point fit | shared set-up | per replicate (in a chunk) | 200 replicates (projected) |")
    print("|---|---|---|---|---|")
    for name in MODELS_TIMED:
        point, setup, each = replicate_times(name, table, args.replicates)
        total = point + setup + 200 * (each + draw)
        print(f"| {name} | {point:.2f} s | {setup:.2f} s | {each:.3f} s | {total:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
