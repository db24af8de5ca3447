"""Benchmark: the cost of bootstrap intervals (issue 4, item 7) on the ~700k-unique-path table.

``bootstrap`` refits a model on resampled journey counts; none of the peers offers intervals, so
this is a budget for analysts rather than a race: how long ``ci=True`` (200 replicates by default)
takes per model on a large table. Each model is timed over a few replicates after its point fit
and the work its replicates share (a rule's weights per path, a Markov chain's states), in one
process, and the time for 200 replicates is projected from the per-replicate median.

    .venv/bin/python benchmarks/bench_attribution.py     # once: writes the table
    .venv/bin/python benchmarks/bench_bootstrap.py [--replicates 10]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import pandas as pd
from bench_attribution import DATA, make_paths

from closedloop_nb.attribution import MODELS, MarkovChain, PathTable
from closedloop_nb.attribution.uncertainty import resample

MODELS_TIMED = ("last_touch", "linear", "position_based", "markov1", "markov2", "markov3", "shapley",
                "shapley_model")


def replicate_times(name: str, table: PathTable, replicates: int,
                    seed: int = 0) -> tuple[float, float, list[float]]:
    """Point-fit time, set-up time (the work replicates share) and the time of each replicate, as
    :func:`~closedloop_nb.attribution.uncertainty.bootstrap` runs them."""
    model = MarkovChain(order=int(name[-1])) if name.startswith("markov") else MODELS[name]()
    t = time.perf_counter()
    model.fit(table)
    point = time.perf_counter() - t
    worker = copy.deepcopy(model)
    t = time.perf_counter()
    prepared = worker._prepare(table)
    credit = worker._for_counts(prepared)
    setup = time.perf_counter() - t
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(replicates):
        t = time.perf_counter()
        credit(resample(prepared, rng))
        times.append(time.perf_counter() - t)
    return point, setup, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=10)
    args = parser.parse_args()
    if not DATA.exists():
        make_paths(DATA)
    table = PathTable.from_frame(pd.read_csv(DATA))
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    for _ in range(args.replicates):
        resample(table, rng)
    draw = (time.perf_counter() - t) / args.replicates
    print(f"{table.n_paths:,} paths, {len(table.channels)} channels; one resample of the journey counts: "
          f"{draw:.3f} s")
    print("| model | point fit | shared set-up | per replicate (median) | 200 replicates (projected) |")
    print("|---|---|---|---|---|")
    for name in MODELS_TIMED:
        point, setup, times = replicate_times(name, table, args.replicates)
        each = float(np.median(times))
        total = point + setup + 200 * each
        print(f"| {name} | {point:.2f} s | {setup:.2f} s | {each:.3f} s | {total:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
