"""Benchmark: every metric function of the closed-loop report, the engine path against the pandas path
it replaced, on synthetic data (``closedloop synth``, seed 1, no unusable rows).

* *old*: the tables read into pandas, the metric as it was before issue 13 (``tests/metrics/reference.py``
  for the functions that changed, the package's own for the rest); every call builds its own journeys.
* *new*: the tables as a run workspace: a DuckDB connection with Parquet views, small tables read
  into pandas on demand, journeys built once per argument set (a stand-in for
  ``closedloop_nb.workspace`` with the same contract); the metric from the package.

Each function runs in a fresh process, so peak memory (maximum resident set) is its own; the time is
the call's wall time, loading untimed; each call runs twice in its process, and the second time
(*again*) is what every call after a run's first costs on a workspace, whose journeys are built by
then (the old path has nothing to reuse: it rebuilds them). Targets (issue 13): the whole report
at 10M touchpoints within 3 minutes, every process under 3 GiB.

    .venv/bin/python benchmarks/bench_metrics.py [--visitors 400000 4000000] [--old-up-to 400000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: name -> the call, with ``t`` the tables (or workspace), ``M`` the metrics, ``R`` the reference
CALLS = {
    "deal_credits": "M.deal_credits(t, 'shapley_model')",
    "deal_credits campaign": "M.deal_credits(t, 'shapley_model', level='campaign')",
    "deal_credits w_shaped": "M.deal_credits(t, 'w_shaped')",
    "lead_credits": "M.lead_credits(t, 'linear')",
    "acquisition_channel": "M.acquisition_channel(t)",
    "revenue_by_model (7 models)": "M.revenue_by_model(t, SEVEN)",
    "sensitivity": "S(t, models=('linear', 'shapley'))",
    "channel_performance": "M.channel_performance(t, C, period=MONTH)",
    "month_over_month": "M.month_over_month(t, C, MONTH)",
    "pipeline_by_stage": "M.pipeline_by_stage(t, C)",
    "sales_cycle": "M.sales_cycle(t, C)",
    "funnel_rates": "M.funnel_rates(t, M.acquisition_channel(t))",
    "mrr_by_source": "M.mrr_by_source(t, C)",
}

CHILD = r"""
import json, resource, sys, time, warnings
from collections.abc import Mapping
sys.path.insert(0, sys.argv[4])
warnings.filterwarnings("ignore")
import duckdb
import pandas as pd
mode, folder, call = sys.argv[1], sys.argv[2], sys.argv[3]
SEVEN = ["first_touch", "last_touch", "linear", "position_based", "markov", "shapley", "shapley_model"]
MONTH = "2024-12"
NAMES = ("touchpoints", "identities", "leads", "deals", "stage_history", "spend", "subscriptions", "orders")

class Workspace(Mapping):
    def __init__(self, folder):
        from pathlib import Path
        self.folder = Path(folder)
        self.names = [n for n in NAMES if (self.folder / f"{n}.parquet").exists()]
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        for n in self.names:
            self.con.execute(f"CREATE VIEW {n} AS SELECT * FROM read_parquet('{self.folder / n}.parquet')")
        self._frames, self._journeys = {}, {}
    def __getitem__(self, n):
        if n not in self.names:
            raise KeyError(n)
        if n not in self._frames:
            self._frames[n] = pd.read_parquet(self.folder / f"{n}.parquet")
        return self._frames[n]
    def __contains__(self, n):
        return n in self.names
    def __iter__(self):
        return iter(self.names)
    def __len__(self):
        return len(self.names)
    def journeys(self, conversion="lead", lookback_days=90, level="channel", **options):
        from closedloop_nb.journeys import build_journeys
        key = (conversion, lookback_days, level, tuple(sorted(options.items())))
        if key not in self._journeys:
            self._journeys[key] = build_journeys(str(self.folder), conversion=conversion,
                                                 lookback_days=lookback_days, level=level, progress=False,
                                                 **options)
        return self._journeys[key]

import closedloop_nb.metrics as M
if mode == "old":
    import reference as R
    from types import SimpleNamespace
    from closedloop_nb.metrics import funnel, pipeline
    pipeline.first_touch_at = R.first_touch_at  # the functions as they were
    funnel._visitors = R.visitors
    M = SimpleNamespace(**{k: getattr(M, k) for k in dir(M) if not k.startswith("_")})
    for k in ("deal_credits", "lead_credits", "acquisition_channel", "revenue_by_model"):
        setattr(M, k, getattr(R, k))
    from closedloop_nb.metrics import credits, revenue
    credits.lead_credits = R.lead_credits
    credits.acquisition_channel = R.acquisition_channel
    S = R.sensitivity
    t = {n: pd.read_parquet(f"{folder}/{n}.parquet") for n in NAMES}
else:
    from closedloop_nb.attribution.compare import sensitivity as S
    t = Workspace(folder)
C = None
if "C," in call or "C)" in call:
    C = M.deal_credits(t, "shapley_model")  # untimed: the credits the report passes on
start = time.perf_counter()
eval(call)
secs = time.perf_counter() - start
start = time.perf_counter()
eval(call)  # again: on a workspace its journeys are built by now, as for every call after a run's first
warm = time.perf_counter() - start
print(json.dumps({"s": secs, "warm_s": warm,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def run(mode: str, folder: Path, call: str) -> dict:
    reference = str(ROOT / "tests" / "metrics")
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder), call, reference],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(r: dict) -> str:
    if "s" not in r:
        return f"{r.get('error', 'not run'):>26}"
    return f"{r['s']:7.1f} s (again {r['warm_s']:6.1f} s) {r['peak_gib']:5.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, nargs="+", default=[400_000, 4_000_000])
    parser.add_argument("--old-up-to", type=int, default=400_000,
                        help="run the old (pandas) path only up to this many visitors")
    parser.add_argument("--only", nargs="*", help="names of the functions to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    import pyarrow.parquet as pq

    rows = []
    for n in args.visitors:
        folder = HERE / "data" / f"synth_{n}"
        if not (folder / "touchpoints.parquet").exists():
            from closedloop_nb.synth import generate

            generate(n, seed=1, dirty_share=0.0).write(folder)
        touches = pq.ParquetFile(folder / "touchpoints.parquet").metadata.num_rows
        for name, call in CALLS.items():
            if args.only and name not in args.only:
                continue
            new = run("new", folder, call)
            old = run("old", folder, call) if n <= args.old_up_to else {}
            row = {"touchpoints": touches, "function": name, "new": new, "old": old}
            rows.append(row)
            speed = f"{old['s'] / new['s']:6.1f}x" if "s" in old and "s" in new else ""
            print(f"{touches:>11,}  {name:<28} new {_fmt(new)}   old {_fmt(old)}  {speed}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
