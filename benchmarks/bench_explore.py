"""How long a control change of the explorer takes to redraw (tables and PNG charts).

Each change is timed from setting the control's value to the end of the redraw (Explorer.refresh, run
by the widget callback), bootstrap intervals off (they run in the background and never block). Wall
and CPU seconds and the process's peak resident memory so far are printed per change. Journeys come
from one wide build per conversion made at the first draw; every later change derives its journeys
from it (closedloop_nb.journey_derive). Timings depend
on the machine's load: on a shared machine, CPU seconds are the fairer figure.

    python benchmarks/bench_explore.py                        # the sample, tables in pandas
    python benchmarks/bench_explore.py --workspace            # the sample through its run workspace
    python benchmarks/bench_explore.py --data benchmarks/data/report_4000000 --workspace \\
        --cache-dir /tmp/explore-ws                           # ~10M touchpoints (closedloop synth
                                                              # --visitors 4000000 --seed 1)

Only the views in sight are computed on a change (the credit tab, rank flips, top paths); pipeline
and ROI, and the drill-down, when their tab is shown: ``--tabs`` also times showing the Pipeline & ROI
tab after each change (the deal journeys, deal credits and lead sources of the new setting). Choosing a
channel shows the drill-down (timed with it); every change after is timed with the credit tab shown.

``--profile DIR`` writes a cProfile dump of each change to DIR (``python -m pstats DIR/07_...prof``).

With ``--workspace`` the data are opened with ``cl.open_workspace`` (built on the first run, reused
after; its time is printed apart) and the explorer works on it: journeys from the workspace's cache,
touch-level work in DuckDB, only people-sized tables in pandas.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import time
from pathlib import Path

import closedloop_nb as cl
from closedloop_nb.explorer import ROI_TAB, Explorer, Settings

CHANGES = [("models", ("first_touch", "linear", "markov")), ("models", ("last_touch", "shapley")),
           ("channel", "Email"), ("models", ("time_decay", "linear")), ("half_life_days", 3.0),
           ("lookback_days", 30), ("drop_direct", True), ("segment", "SMB"), ("level", "campaign"),
           ("lookback_days", 90), ("collapse_repeats", True), ("date_from", datetime.date(2024, 3, 1))]


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


_PROFILE: list[str] = []  # --profile DIR: a cProfile dump per change there


def _timed(label: str, action) -> None:
    profile = None
    if _PROFILE:
        import cProfile

        profile = cProfile.Profile()
    wall, cpu = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    action()
    if profile is not None:
        profile.disable()
    print(f"{label:<45} {time.perf_counter() - wall:7.2f} s wall {time.process_time() - cpu:7.2f} s cpu"
          f"   peak {_peak_gib():.2f} GiB", flush=True)
    if profile is not None:
        n = len(list(Path(_PROFILE[0]).glob("*.prof")))
        profile.dump_stats(Path(_PROFILE[0]) / f"{n:02d}_{label.split(' ')[0]}.prof")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/sample", help="folder of canonical tables (default the sample)")
    ap.add_argument("--workspace", action="store_true", help="explore the run workspace of --data")
    ap.add_argument("--cache-dir", help="workspace folder (default $CLOSEDLOOP_WORKSPACE_DIR or the user's)")
    ap.add_argument("--only", nargs="*", help="only the changes of these controls (e.g. segment)")
    ap.add_argument("--tabs", action="store_true", help="after each change, also time showing the "
                    "Pipeline & ROI tab (computed when shown), then the credit tab again")
    ap.add_argument("--profile", metavar="DIR", help="write a cProfile dump of each change to DIR "
                    "(read with python -m pstats; timings then include the profiler's overhead)")
    args = ap.parse_args(argv)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        _PROFILE.append(args.profile)
    holder: dict = {}
    if args.workspace:
        _timed("open workspace", lambda: holder.update(data=cl.open_workspace(args.data,
                                                                             cache_dir=args.cache_dir)))
        print(f"  ({'built' if holder['data'].built else 'reused'}; touchpoints "
              f"{holder['data'].rows('touchpoints'):,})")
    else:
        _timed("load tables", lambda: holder.update(data=cl.load_dataset(args.data).tables))

    Explorer._start_intervals = lambda self, s: None  # intervals are background work, not a redraw
    _timed("first draw", lambda: holder.update(app=Explorer(
        holder["data"], Settings(models=("first_touch", "last_touch")), background=False)))
    app = holder["app"]
    for name, value in CHANGES:
        if args.only and name not in args.only:
            continue
        _timed(f"{name} -> {value}", lambda n=name, v=value: setattr(app.controls[n], "value", v))
        if "Cannot" in app.status.value:
            print("  ", app.status.value)
        app.tabs.selected_index = 0  # choosing a channel shows the drill-down: back to the credit tab
        if args.tabs:
            _timed("  then Pipeline & ROI shown", lambda: setattr(app.tabs, "selected_index", ROI_TAB))
            app.tabs.selected_index = 0


if __name__ == "__main__":
    main()
