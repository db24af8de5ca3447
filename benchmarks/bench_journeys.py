"""Benchmark: touches -> path table (journeys ending at lead creation, 90-day lookback) with DuckDB,
beside the plain-pandas reference implementation of the same result, in the same run.

Targets (issue 3): 10M touchpoints in under 15 s with peak memory under 3 GiB; 50M completes; at
least 5x faster than pandas. Each measurement runs in a fresh process (its own peak memory).

    .venv/bin/python benchmarks/bench_journeys.py [--visitors 400000 4000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
import pandas as pd
engine, folder = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if engine == "duckdb":
    from closedloop_nb.journeys import build_journeys
    paths = build_journeys(folder).paths
else:
    from closedloop_nb.journeys import lead_paths_reference
    tables = {n: pd.read_parquet(f"{folder}/{n}.parquet") for n in ("touchpoints", "identities", "leads")}
    paths = lead_paths_reference(tables)
secs = time.perf_counter() - t
print(json.dumps({"s": secs, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "paths": len(paths), "conversions": int(paths.total_conversions.sum())}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, nargs="+", default=[400_000, 4_000_000])
    parser.add_argument("--skip-pandas-above", type=int, default=10_000_000,
                        help="skip the pandas reference for more visitors than this")
    args = parser.parse_args()
    print(f"{'visitors':>10} {'touches':>11} {'duckdb s':>9} {'GiB':>6} {'pandas s':>9} {'GiB':>6}"
          f" {'speed-up':>9}")
    for n in args.visitors:
        folder = HERE / "data" / f"synth_{n}"
        if not (folder / "touchpoints.parquet").exists():
            from closedloop_nb.synth import generate

            generate(n, seed=1, dirty_share=0.0).write(folder)
        import pyarrow.parquet as pq

        touches = pq.ParquetFile(folder / "touchpoints.parquet").metadata.num_rows
        res = {}
        for engine in ("duckdb", "pandas"):
            if engine == "pandas" and n > args.skip_pandas_above:
                continue
            out = subprocess.run([sys.executable, "-c", CHILD, engine, str(folder)], capture_output=True,
                                 text=True, check=True)
            res[engine] = json.loads(out.stdout.strip().splitlines()[-1])
        d, p = res["duckdb"], res.get("pandas")
        line = f"{n:>10,} {touches:>11,} {d['s']:>9.1f} {d['peak_gib']:>6.2f}"
        if p:
            assert p["conversions"] == d["conversions"] and p["paths"] == d["paths"], (p, d)
            line += f" {p['s']:>9.1f} {p['peak_gib']:>6.2f} {p['s'] / d['s']:>8.1f}x"
        print(line)


if __name__ == "__main__":
    main()
