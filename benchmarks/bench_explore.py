"""How long a control change of the explorer takes to redraw on the sample (tables and PNG charts).

Each change is timed from setting the control's value to the end of the redraw (Explorer.refresh, run
by the widget callback), bootstrap intervals off (they run in the background and never block).
Timings depend on the machine's load.

    python benchmarks/bench_explore.py [data folder]
"""

from __future__ import annotations

import sys
import time

import closedloop_nb as cl
from closedloop_nb.explorer import Explorer, Settings

CHANGES = [("models", ("first_touch", "linear", "markov")), ("models", ("last_touch", "shapley")),
           ("channel", "Email"), ("half_life_days", 3.0), ("lookback_days", 30), ("drop_direct", True),
           ("segment", "SMB"), ("level", "campaign"), ("lookback_days", 90)]


def main(folder: str = "data/sample") -> None:
    tables = cl.load_dataset(folder).tables
    start = time.perf_counter()
    app = Explorer(tables, Settings(models=("first_touch", "last_touch")), background=False)
    app._start_intervals = lambda s: None  # intervals are background work: not part of a redraw
    print(f"first draw: {time.perf_counter() - start:.2f} s")
    for name, value in CHANGES:
        start = time.perf_counter()
        app.controls[name].value = value
        print(f"{name} -> {value}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
