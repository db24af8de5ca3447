"""Benchmark: notebook 03's expensive calls on a run workspace, each timed (CPU and wall seconds, the
load average beside them: the machine may be shared), their results pickled so that two versions of
the package can be compared result for result (issue 13).

The calls are the notebook's, with the sample's parameters: ``compare_models(paths, MODELS,
ci=True, n_boot=100)``, ``recommend(holdout_log_loss(paths))``, ``revenue_by_model(ws, MODELS,
nonnegative=True)``, ``deal_credits(ws, MODELS[-1])`` and the negative-credit loop (``deal_credits``,
``negative_credit`` and ``nonnegative_credits`` per model). The workspace and its journeys are opened
first, untimed; run once to build them (``CLOSEDLOOP_WORKSPACE_DIR`` says where they are cached).

    CLOSEDLOOP_WORKSPACE_DIR=/tmp/ws .venv/bin/python benchmarks/bench_notebook03.py DATA_DIR out.pkl
    .venv/bin/python benchmarks/bench_notebook03.py --compare a.pkl b.pkl   # the same results?
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import time
from typing import Any

MODELS = ["first_touch", "last_touch", "linear", "position_based", "markov", "shapley", "shapley_model",
          "shapley_adjusted"]


def run(data_dir: str, out: str, only: list[str] | None) -> None:
    import closedloop_nb as cl
    import closedloop_nb.metrics as m
    from closedloop_nb.attribution.compare import compare_models
    from closedloop_nb.attribution.scorecard import holdout_log_loss, recommend
    from closedloop_nb.metrics.policy import negative_credit, nonnegative_credits
    from closedloop_nb.money import one_currency

    ws = one_currency(cl.open_workspace(data_dir)).tables
    paths = ws.journeys(conversion="lead", lookback_days=90).paths

    def loop() -> tuple[list, dict]:
        negative, adjusted = [], {}
        for name in MODELS:
            credits = m.deal_credits(ws, name, lookback_days=90)
            found = negative_credit(credits, ws["deals"])
            if len(found):
                negative.append(found.assign(model=name))
                adjusted[name] = nonnegative_credits(credits).attrs["adjusted_deals"]
        return negative, adjusted

    calls = {
        "compare": lambda: compare_models(paths, MODELS, ci=True, n_boot=100, progress=False),
        "holdout": lambda: recommend(holdout_log_loss(paths)).table,
        "revenue": lambda: m.revenue_by_model(ws, MODELS, lookback_days=90, nonnegative=True),
        "deal": lambda: m.deal_credits(ws, MODELS[-1], lookback_days=90),
        "loop": loop,
    }
    times, results = {}, {}
    for name, call in calls.items():
        if only and name not in only:
            continue
        cpu, wall = time.process_time(), time.perf_counter()
        results[name] = call()
        times[name] = (time.process_time() - cpu, time.perf_counter() - wall, os.getloadavg()[0])
        print(f"{name:8s} cpu {times[name][0]:7.2f} s  wall {times[name][1]:7.2f} s  "
              f"load {times[name][2]:.2f}", flush=True)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(f"process: {ru.ru_utime + ru.ru_stime:.1f} CPU s, peak {ru.ru_maxrss / 2**20:.2f} GiB")
    with open(out, "wb") as f:
        pickle.dump({"times": times, "results": results}, f)


def compare(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        x, y = pickle.load(fa)["results"], pickle.load(fb)["results"]
    same = True
    for name in x.keys() & y.keys():
        if name == "loop":
            eq = x[name][1] == y[name][1] and len(x[name][0]) == len(y[name][0]) and all(
                p.equals(q) for p, q in zip(x[name][0], y[name][0], strict=True))
        else:
            eq = x[name].equals(y[name])
        print(f"{name:8s} {'the same' if eq else 'DIFFERENT'}")
        same &= bool(eq)
    return same


def main(argv: Any = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("args", nargs=2, help="DATA_DIR OUT.pkl, or with --compare two pickles")
    ap.add_argument("--compare", action="store_true", help="compare two runs' results")
    ap.add_argument("--only", default="", help="comma-separated calls to time (default: all)")
    a = ap.parse_args(argv)
    if a.compare:
        raise SystemExit(0 if compare(*a.args) else 1)
    run(a.args[0], a.args[1], [s for s in a.only.split(",") if s] or None)


if __name__ == "__main__":
    main()
