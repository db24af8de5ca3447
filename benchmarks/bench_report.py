"""Benchmark: wall time of the report batch (issue 7).

1. ``make report``'s batch: every parameter file in ``parameters/`` on the bundled sample data.
2. Twelve monthly runs (``report_month`` 2024-01 ... 2024-12, one series) with ``--jobs 2``.

Each is timed end to end through :func:`closedloop_nb.report.run_batch` (parameter checks, papermill,
nbconvert, index), into a temporary folder.

    .venv/bin/python benchmarks/bench_report.py [--skip-sample]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from closedloop_nb.config import PROJECT_DIR
from closedloop_nb.report import run_batch


def timed(files: list[Path], jobs: int, out: Path) -> tuple[float, list]:
    start = time.perf_counter()
    results = run_batch(files, jobs=jobs, out_dir=out, progress=False)
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-sample", action="store_true", help="only the twelve monthly runs")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.skip_sample:
            files = sorted((PROJECT_DIR / "parameters").glob("*.yaml"))
            secs, results = timed(files, args.jobs, root / "sample")
            per_run = ", ".join(f"{r.run} {r.seconds:.0f} s ({r.status})" for r in results)
            print(f"sample batch: {len(files)} runs, --jobs {args.jobs}: {secs:.0f} s wall ({per_run})")
        base = yaml.safe_load((PROJECT_DIR / "parameters" / "sample.yaml").read_text())
        files = []
        for month in range(1, 13):
            p = root / f"month_{month:02d}.yaml"
            p.write_text(yaml.safe_dump({**base, "run": f"sample_2024-{month:02d}", "series": "bench",
                                         "report_month": f"2024-{month:02d}"}))
            files.append(p)
        secs, results = timed(files, args.jobs, root / "monthly")
        ok = sum(r.status == "ok" for r in results)
        mean = sum(r.seconds for r in results) / len(results)
        print(f"12 monthly runs, --jobs {args.jobs}: {secs:.0f} s wall, {ok}/12 ok, "
              f"{mean:.0f} s per run on average, {secs / 12:.1f} s per run of wall time")


if __name__ == "__main__":
    main()
