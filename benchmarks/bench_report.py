"""Benchmark: wall time and peak memory of the report batch (issues 7 and 13).

Every case runs ``closedloop report`` as a whole process (parameter checks, papermill, kernels,
nbconvert, index) into a temporary folder, and reports its wall time, the peak resident memory of
the largest process of its tree (``wait4``'s ``ru_maxrss`` covers the process and every descendant
it waited for: papermill, kernels, the runner's workers), the CPU time of the whole tree (less
sensitive than wall time to other work on a shared machine) and each notebook's time (papermill's
own record in the executed notebooks).

Cases (``--cases``, default ``sample rerun 1m``):

``sample``
    ``make report``'s batch: every parameter file in ``parameters/`` on the bundled sample data.
``rerun``
    The same batch again on unchanged inputs, with the workspaces the first one left: the runner
    reuses every notebook whose inputs are unchanged.
``rerun-forced``
    The same again with ``--force``: every notebook executed, on the warm workspaces.
``1m``, ``10m``, ``50m``
    One run (``--jobs 1``, the sample's parameters) on ``closedloop synth`` data of about 1, 10 or
    50 million touchpoints (400k, 4M, 20M visitors; generated once into ``benchmarks/data/``).
``monthly``
    Twelve monthly runs (``report_month`` 2024-01 ... 2024-12, one series) with ``--jobs 2``.

Workspaces go to a fresh folder per invocation (``CLOSEDLOOP_WORKSPACE_DIR``), so the first run of
each data set is a cold ingest and ``rerun`` the warm one.

    .venv/bin/python benchmarks/bench_report.py [--cases sample rerun 1m 10m] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from closedloop_nb.config import PROJECT_DIR

DATA = PROJECT_DIR / "benchmarks" / "data"
SIZES = {"1m": 400_000, "10m": 4_000_000, "50m": 20_000_000}
CLOSEDLOOP = str(Path(sys.executable).with_name("closedloop"))


def synth(visitors: int) -> Path:
    """``closedloop synth`` data of ``visitors`` visitors (seed 1), generated once."""
    out = DATA / f"report_{visitors}"
    if not (out / "touchpoints.parquet").is_file():
        subprocess.run([CLOSEDLOOP, "synth", "--visitors", str(visitors), "--seed", "1", "--out", str(out)],
                       check=True)
    return out


def run(files: list[Path], out: Path, jobs: int, env: dict[str, str], force: bool = False,
        limits: tuple[str, ...] = ()) -> dict:
    """One ``closedloop report`` process: wall seconds, peak GiB of its largest process, per-run and
    per-notebook seconds (the runner's own, from each run's manifest; a notebook reused on
    unchanged inputs is marked ``reused``)."""
    start = time.perf_counter()
    proc = subprocess.Popen([CLOSEDLOOP, "report", *map(str, files), "--jobs", str(jobs), "--out", str(out),
                             *(["--force"] if force else []), *limits],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else ""
    runs = {}
    for manifest in sorted(out.glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        notebooks = {nb["notebook"][:2]: f"{float(nb.get('seconds') or 0):.1f} s"
                     + (" reused" if nb.get("reused") else "") for nb in m["notebooks"]}
        runs[m["run"]] = {"status": m["status"], "seconds": m["seconds"], "notebooks": notebooks}
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_gib": round(usage.ru_maxrss / 2**20, 2), "exit": proc.returncode,
            "runs": runs, "stderr": err.strip().splitlines()[-3:] if proc.returncode else []}


def show(case: str, result: dict) -> None:
    print(f"{case}: {result['wall_s']:.0f} s wall, {result['cpu_s']:.0f} s CPU (all processes), "
          f"largest process {result['peak_gib']:.2f} GiB, exit {result['exit']}")
    for run_name, r in result["runs"].items():
        per_nb = ", ".join(f"{k} {v}" for k, v in r["notebooks"].items())
        print(f"  {run_name}: {r['status']}, {r['seconds']:.0f} s ({per_nb})")
    for line in result["stderr"]:
        print(f"  ! {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["sample", "rerun", "1m"],
                        choices=["sample", "rerun", "rerun-forced", "1m", "10m", "50m", "monthly"])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once for the sample batch")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "CLOSEDLOOP_WORKSPACE_DIR": str(root / "workspaces")}
        base = yaml.safe_load((PROJECT_DIR / "parameters" / "sample.yaml").read_text())
        sample_files = sorted((PROJECT_DIR / "parameters").glob("*.yaml"))
        for case in args.cases:
            if case in ("sample", "rerun", "rerun-forced"):
                result = run(sample_files, root / "sample", args.jobs, env, force=case == "rerun-forced")
            elif case == "monthly":
                files = []
                for month in range(1, 13):
                    p = root / f"month_{month:02d}.yaml"
                    p.write_text(yaml.safe_dump({**base, "run": f"sample_2024-{month:02d}", "series": "bench",
                                                 "report_month": f"2024-{month:02d}"}))
                    files.append(p)
                result = run(files, root / "monthly", 2, env)
            else:
                data = synth(SIZES[case])
                p = root / f"{case}.yaml"
                p.write_text(yaml.safe_dump({**base, "run": f"synth_{case}", "data_dir": str(data)}))
                # a cell of the big runs (the ingest of 50M rows) may take longer than the default 10 min
                result = run([p], root / case, 1, env,
                             limits=("--cell-timeout", "5400", "--run-timeout", "9000"))
            show(case, result)
            results[case] = result
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
