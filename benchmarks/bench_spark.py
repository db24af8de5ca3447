"""Benchmark: the run workspace on Spark (local mode) against DuckDB, phase by phase, at growing sizes,
to measure how each phase scales (the basis of the paper estimate for 1B touchpoints in RESULTS.md).

For each size, synthetic data (``closedloop synth``'s generator, seed 1) are written as Parquet, then
one process per engine times, in order: the ingest (``open_workspace``: validation into the
workspace), the deal journeys (``ws.journeys("opportunity")``), deal credits by ``linear`` and by
``shapley_model`` on them, and the funnel (``funnel_rates`` with the lead sources). The Spark process
also reports its session start-up. Wall times from ``time.perf_counter``; CPU seconds per phase (the
process, and on Spark the JVM with the Python workers it forks, from ``/proc``: the machine may be
shared, and CPU time says what the work costs where wall time also says how busy the machine was);
peak resident memory of the Python process (``resource``) and, on Spark, of the JVM and of its
largest Python worker (``VmHWM`` in ``/proc``); the load average at the start and the end.

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
import json, os, resource, sys, tempfile, time, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[4])
engine, folder, master = sys.argv[1], sys.argv[2], sys.argv[3]
import closedloop_nb.metrics as m
from closedloop_nb.workspace import open_workspace
TICK = os.sysconf("SC_CLK_TCK")

def tree(root):
    # the process tree under root (the JVM and the Python workers it forks), from /proc
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out

def usage(root):
    # CPU seconds of the tree (live processes and the children they reaped) and peak RSS (GiB) of
    # root and of its largest descendant
    cpu, hwm = 0.0, {}
    for p in tree(root):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            cpu += sum(int(x) for x in f[11:15]) / TICK
            st = open(f"/proc/{p}/status").read()
            hwm[p] = int(next(x for x in st.splitlines() if x.startswith("VmHWM")).split()[1]) / 2**20
        except (OSError, StopIteration):
            continue
    return cpu, hwm.get(root, 0.0), max([v for k, v in hwm.items() if k != root] or [0.0])

def own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

out, cpu = {}, {}
t = time.perf_counter()
spark, jvm = None, None
if engine == "spark":
    from closedloop_nb.spark_sql import spark_session
    spark = spark_session(master)
    jvm = spark.sparkContext._gateway.proc.pid
    out["session start"] = time.perf_counter() - t
peaks = {"jvm": 0.0, "workers": 0.0}

def step(name, fn):
    t0, c0 = time.perf_counter(), own_cpu() + (usage(jvm)[0] if jvm else 0.0)
    value = fn()
    out[name] = time.perf_counter() - t0
    c1 = own_cpu()
    if jvm:
        used, peak_jvm, peak_workers = usage(jvm)
        c1 += used
        peaks["jvm"], peaks["workers"] = max(peaks["jvm"], peak_jvm), max(peaks["workers"], peak_workers)
    cpu[name] = c1 - c0
    print(f"# {name}: {out[name]:.1f} s, {cpu[name]:.1f} CPU s, load {os.getloadavg()[0]:.1f}", flush=True)
    return value

out["load average at start"] = os.getloadavg()[0]
ws = step("ingest", lambda: open_workspace(folder, cache_dir=tempfile.mkdtemp(), engine=engine, spark=spark))
step("deal journeys", lambda: ws.journeys("opportunity", 90))
step("deal credits linear", lambda: m.deal_credits(ws, "linear"))
step("deal credits shapley_model", lambda: m.deal_credits(ws, "shapley_model"))
step("funnel", lambda: m.funnel_rates(ws, m.acquisition_channel(ws, 90)))
out["load average at end"] = os.getloadavg()[0]
out["cpu seconds"] = cpu
out["touchpoints"] = ws.rows("touchpoints")
out["peak_rss_gib_python"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
if jvm:
    out["peak_rss_gib_jvm"] = peaks["jvm"]
    out["peak_rss_gib_python_worker"] = peaks["workers"]
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
            with tempfile.TemporaryFile("w+") as err:
                command = [sys.executable, "-c", CHILD, engine, folder, args.master, str(ROOT)]
                child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
                lines = []
                for line in child.stdout:  # each phase as it ends, then the result
                    lines.append(line.strip())
                    if line.startswith("#"):
                        print(f"{engine} {line.strip()}", flush=True)
                if child.wait():  # a failed phase is a result too: its error, not a traceback here
                    err.seek(0)
                    text = err.read().splitlines()
                    errors = [ln for ln in text if "Error" in ln or "Exception" in ln]
                    result = {"failed": (errors or text or ["no output"])[-1][:500]}
                else:
                    result = json.loads(lines[-1])
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
