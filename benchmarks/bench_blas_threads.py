"""Benchmark: the logistic value functions' fits with BLAS on one thread (as shipped:
``closedloop_nb.attribution.shapley.one_blas_thread``) against the same fits on every BLAS thread
(the same methods without the limit), interleaved, on lead journeys of the confounded regime.

    .venv/bin/python benchmarks/bench_blas_threads.py [--visitors 40000 300000] [--repeats 5]

Prints the median wall and CPU seconds per fit and the largest gap between the two fits' credits.
Wall times depend on what else the machine runs: the gap is widest when the cores are busy.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from closedloop_nb.attribution import MODELS
from closedloop_nb.attribution.adjusted import AdjustedShapley
from closedloop_nb.attribution.scorecard import regime_paths
from closedloop_nb.attribution.shapley import ShapleyValue

#: The shipped method and the same without the limit.
UNLIMITED = {"shapley_model": (ShapleyValue, "_credit_coalitions", ShapleyValue._credit_coalitions_threads),
             "shapley_adjusted": (AdjustedShapley, "_credit", AdjustedShapley._credit.__wrapped__)}


def timed(name: str, paths: object) -> tuple[float, float, object]:
    t, c = time.perf_counter(), time.process_time()
    out = MODELS[name]().fit(paths)
    return time.perf_counter() - t, time.process_time() - c, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, nargs="+", default=[40_000, 300_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from threadpoolctl import threadpool_info

    blas = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    print(f"BLAS threads available: {blas}\n")
    print("| visitors | paths | model | BLAS threads | wall s (median) | CPU s (median) | max credit gap |")
    print("|---|---|---|---|---|---|---|")
    for n in args.visitors:
        paths, _ = regime_paths("confounded", 21, n)
        for name, (owner, attr, unlimited) in UNLIMITED.items():
            shipped = getattr(owner, attr)
            runs: dict[str, list] = {"1 (shipped)": [], f"{blas} (unlimited)": []}
            for _ in range(args.repeats + 1):  # the first round warms up, not counted
                for label in runs:
                    setattr(owner, attr, shipped if label.endswith("(shipped)") else unlimited)
                    try:
                        runs[label].append(timed(name, paths))
                    finally:
                        setattr(owner, attr, shipped)
            credits = [np.array([r[2].credits_["conversions"].to_numpy() for r in v[1:]])
                       for v in runs.values()]
            gap = float(np.abs(credits[0] - credits[1]).max())
            for label, v in runs.items():
                wall, cpu = np.median([r[0] for r in v[1:]]), np.median([r[1] for r in v[1:]])
                print(f"| {n:,} | {paths.n_paths:,} | {name} | {label} | {wall:.2f} | {cpu:.2f} "
                      f"| {gap:.1e} |")


if __name__ == "__main__":
    main()
