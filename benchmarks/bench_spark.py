"""Benchmark: the run workspace on Spark (local mode) against DuckDB, phase by phase, at growing sizes,
to measure how each phase scales (the basis of the paper estimate for 1B touchpoints in RESULTS.md).

For each size, synthetic data (``closedloop synth``'s generator, seed 1) are written as Parquet, then
one process per engine times, in order: the ingest (``open_workspace``: validation into the
workspace), the deal journeys (``ws.journeys("opportunity")``), deal credits by ``linear`` and by
``shapley_model`` on them, and the funnel (``funnel_rates`` with the lead sources). The Spark process
also reports its session start-up. Wall times from ``time.perf_counter``; peak resident memory of the
Python process from ``resource`` (the JVM's is not included: see ``/usr/bin/time -v`` for it).

    .venv/bin/python benchmarks/bench_spark.py [--visitors 40000 400000] [--master local[2]]
    .venv/bin/python benchmarks/bench_spark.py --data benchmarks/data/report_4000000   # data made once
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = r"""
import json, resource, sys, tempfile, time, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[4])
engine, folder, master = sys.argv[1], sys.argv[2], sys.argv[3]
import closedloop_nb.metrics as m
from closedloop_nb.workspace import open_workspace
out = {}
t = time.perf_counter()
spark = None
if engine == "spark":
    from closedloop_nb.spark_sql import spark_session
    spark = spark_session(master)
    out["session start"] = time.perf_counter() - t
def step(name, fn):
    t0 = time.perf_counter()
    value = fn()
    out[name] = time.perf_counter() - t0
    return value
ws = step("ingest", lambda: open_workspace(folder, cache_dir=tempfile.mkdtemp(), engine=engine, spark=spark))
step("deal journeys", lambda: ws.journeys("opportunity", 90))
step("deal credits linear", lambda: m.deal_credits(ws, "linear"))
step("deal credits shapley_model", lambda: m.deal_credits(ws, "shapley_model"))
step("funnel", lambda: m.funnel_rates(ws, m.acquisition_channel(ws, 90)))
out["touchpoints"] = ws.rows("touchpoints")
out["peak_rss_gib_python"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, nargs="+", default=[40_000, 400_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--engines", nargs="+", default=["duckdb", "spark"])
    parser.add_argument("--data", type=Path, nargs="+", default=[],
                        help="folders of canonical tables already written (instead of --visitors)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from closedloop_nb.synth import generate

    rows = []

    def measure(n: int | str, folder: str) -> None:
        for engine in args.engines:
            done = subprocess.run([sys.executable, "-c", CHILD, engine, folder, args.master, str(ROOT)],
                                  capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"visitors": n, "engine": engine, **result})
            print(json.dumps(rows[-1]), flush=True)

    for data in args.data:
        measure(data.name, str(data))
    for n in [] if args.data else args.visitors:
        with tempfile.TemporaryDirectory() as folder:
            generate(n, seed=1).write(folder)
            measure(n, folder)
    (HERE / "bench_spark.json").write_text(json.dumps(rows, indent=2), "utf-8")


if __name__ == "__main__":
    main()
