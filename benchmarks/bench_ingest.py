"""Benchmark: building the run workspace (``open_workspace`` on a fresh cache folder: read, validate,
publish), the cell that dominates notebook 01, with its report and tables fingerprinted.

Prints the build's wall and CPU time (the process's, all threads) and writes a JSON file with the
validation report (every problem: file, column, reason, severity, rows, money), the counts, each
table's column types and a fingerprint of its rows in order (count and a sum of row hashes), so that
two builds can be compared: run it once with each code tree's interpreter, back to back, and
``--compare`` the two files. Peak memory: run it under ``/usr/bin/time -v``.

    /usr/bin/time -v .venv/bin/python benchmarks/bench_ingest.py DATA_DIR --out new.json
    /usr/bin/time -v ../main/.venv/bin/python benchmarks/bench_ingest.py DATA_DIR --out old.json
    .venv/bin/python benchmarks/bench_ingest.py --compare old.json new.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time


def build(data_dir: str, out: str, timezone: str | None = None) -> None:
    import closedloop_nb as cl

    folder = tempfile.mkdtemp(prefix="ingest-ws-")
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        ws = cl.open_workspace(data_dir, cache_dir=folder, timezone=timezone)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        print(f"{cl.__file__}: build {wall:.1f} s wall, {cpu:.1f} s CPU, database {size / 2**20:.0f} MB, "
              f"load average {os.getloadavg()[0]:.1f}")
        tables = {}
        for name in sorted(ws):
            n, fingerprint = ws.con.execute(
                f'SELECT COUNT(*), SUM(hash(t, n)) FROM (SELECT t, row_number() OVER () AS n FROM "{name}" t)'
            ).fetchall()[0]
            tables[name] = {"rows": n, "fingerprint": str(fingerprint),
                            "columns": [r[:2] for r in ws.con.execute(f'DESCRIBE "{name}"').fetchall()]}
        report = {"problems": [[p.table, p.file, p.column, p.reason, p.severity, p.n_rows, list(p.rows),
                                p.value] for p in ws.report.problems],
                  "counts": ws.report.counts, "tables": tables, "wall_s": wall, "cpu_s": cpu}
        with open(out, "w") as f:
            json.dump(report, f, indent=1, default=str)
        ws.con.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def compare(a: str, b: str) -> int:
    with open(a) as f:
        old = json.load(f)
    with open(b) as f:
        new = json.load(f)
    same = True
    for part in ("problems", "counts", "tables"):
        equal = old[part] == new[part]
        same &= equal
        print(f"{part}: {'identical' if equal else 'DIFFERENT'}")
    print(f"build: {old['wall_s']:.1f} -> {new['wall_s']:.1f} s wall, "
          f"{old['cpu_s']:.1f} -> {new['cpu_s']:.1f} s CPU")
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", nargs="?")
    ap.add_argument("--out", default="ingest.json")
    ap.add_argument("--timezone")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if not args.data_dir:
        ap.error("give a data folder (or --compare OLD NEW)")
    build(args.data_dir, args.out, args.timezone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
