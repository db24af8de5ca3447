"""Benchmark: ``closedloop import ga4`` on a synthetic GA4 BigQuery export (newline-delimited JSON).

Writes ``--sessions`` sessions of five events each (session_start with collected and last-click traffic
sources, four page views; event parameters as BigQuery's repeated key/value record) to a temporary
``events_20240101.json``, then imports it in a fresh process and reports wall and CPU seconds and peak
memory (ru_maxrss of that process).

    .venv/bin/python benchmarks/bench_ga4_import.py --sessions 200000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_US = 1_704_067_200_000_000


def write_export(path: Path, sessions: int) -> int:
    """Write the export; returns the number of events."""
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for v in range(sessions):
            sid = 1_704_067_200 + v
            for k in range(5):
                source = {"manual_source": "google", "manual_medium": "cpc",
                          "manual_campaign_name": f"c{v % 50}"}
                row = {
                    "event_date": "20240101", "event_timestamp": BASE_US + v * 1_000_000 + k * 1_000,
                    "event_name": "session_start" if k == 0 else "page_view",
                    "user_pseudo_id": f"{v}.1700000000", "user_id": None,
                    "event_params": [
                        {"key": "ga_session_id", "value": {"int_value": sid}},
                        {"key": "page_location", "value": {"string_value": f"https://acme.example/p{k}?x={v}"}},
                        {"key": "engagement_time_msec", "value": {"int_value": 100}},
                    ],
                    "traffic_source": {"name": "(direct)", "medium": "(none)", "source": "(direct)"},
                    "collected_traffic_source": source if k == 0 else None,
                    "session_traffic_source_last_click": {"manual_campaign": {
                        "source": "google", "medium": "cpc", "campaign_name": f"c{v % 50}"}},
                    "device": {"category": "desktop"}, "geo": {"country": "DE"},
                }
                fh.write(json.dumps(row) + "\n")
                n += 1
    return n


def _child(folder: str, out: str) -> None:
    from closedloop_nb.imports import import_source

    t = time.perf_counter()
    cpu = time.process_time()
    result = import_source("ga4", folder, out)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(json.dumps({"touches": len(result.tables["touchpoints"]), "wall_s": wall, "cpu_s": cpu,
                      "peak_gib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ga4"
        folder.mkdir()
        events = write_export(folder / "events_20240101.json", args.sessions)
        size = (folder / "events_20240101.json").stat().st_size / 1024 ** 2
        done = subprocess.run([sys.executable, __file__, "--child", str(folder), str(Path(tmp) / "out")],
                              capture_output=True, text=True, check=True)
        stats = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{events:,} events ({size:,.0f} MiB JSON) -> {stats['touches']:,} touches: "
          f"{stats['wall_s']:.1f} s wall, {stats['cpu_s']:.1f} s CPU, peak {stats['peak_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
