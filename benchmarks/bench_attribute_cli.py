"""Benchmark: `closedloop attribute --models markov` as a whole process against ChannelAttribution as a
whole process (`pd.read_csv` + `markov_model` + `to_csv`), Markov orders 1-3, on the ~700k-path table
of `bench_attribution.py` (issue 13: at least 5x faster at every order).

Both sides are timed from outside (`/usr/bin/time`: wall seconds, CPU seconds (user + system) and
peak resident memory of the process), start-up, imports, reading the gzipped CSV, fitting and writing
included. Runs alternate ours / peer, several fresh processes each; medians are reported, and the
ratio of each pair too (the pairing keeps the ratio meaningful when the machine's speed drifts). On a
machine shared with other work the CPU-time ratio moves less than the wall-time one. The last column
is the largest relative difference between our credited conversions and the peer's (its Markov model
simulates journeys, ours solves the chain exactly, so a small difference is expected).

The package's bytecode is compiled first, as ``pip install`` compiles an installed package's (and the
peer's): an editable install under ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile every module
of ours from source in every run (0.04-0.07 s of CPU time), which no installed copy does.

    bash benchmarks/peers.sh            # once: the peer's own environment
    .venv/bin/python benchmarks/bench_attribute_cli.py [--repeat 5] [--orders 1,2,3]
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_attribution import DATA, make_paths  # noqa: E402

PEER = r"""
import sys
import pandas as pd
import ChannelAttribution as ca
src, order, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
df = pd.read_csv(src)
res = ca.markov_model(df, "path", "total_conversions", var_value="total_conversion_value",
                      var_null="total_null", order=order, verbose=False, flg_pro=False)
res.to_csv(out, index=False)
"""


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak MiB of one fresh process, measured by /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as log:
        out = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", log.name, *cmd],
                             capture_output=True, text=True, timeout=3600)
        if out.returncode:
            raise RuntimeError(f"{cmd[:3]}: {out.stderr[-2000:]}")
        wall, user, system, kib = log.read().split()[-4:]
    return float(wall), float(user) + float(system), float(kib) / 1024


def max_gap(ours: Path, peer: Path) -> float:
    """Largest relative difference between the two sides' credited conversions per channel."""
    import csv

    with open(ours, newline="") as f:
        a = {r["channel"]: float(r["conversions"]) for r in csv.DictReader(f)}
    with open(peer, newline="") as f:
        b = {r["channel_name"]: float(r["total_conversions"]) for r in csv.DictReader(f)}
    return max(abs(a[c] - b[c]) / b[c] for c in b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default=str(HERE / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per side and order")
    parser.add_argument("--orders", default="1,2,3")
    args = parser.parse_args()
    if not DATA.exists():
        make_paths(DATA)
    import closedloop_nb

    compileall.compile_dir(Path(closedloop_nb.__file__).parent, quiet=1)  # as an installed copy has it
    ours_cmd = str(Path(sys.executable).parent / "closedloop")
    tmp = Path(tempfile.mkdtemp())
    print(f"{'order':>5}{'ours s':>8}{'CPU s':>7}{'MiB':>6}{'peer s':>8}{'CPU s':>7}{'MiB':>6}"
          f"{'x (medians)':>12}{'x (pairs)':>10}{'x CPU':>7}{'gap':>7}  ours runs / peer runs")
    for order in [int(o) for o in args.orders.split(",")]:
        ours, peer = [], []
        for _ in range(args.repeat):
            ours.append(timed([ours_cmd, "attribute", str(DATA), "--models", "markov", "--order", str(order),
                               "--out", str(tmp / "ours.csv")]))
            peer.append(timed([args.peer_python, "-c", PEER, str(DATA), str(order), str(tmp / "peer.csv")]))
        o, p = (statistics.median(r[0] for r in side) for side in (ours, peer))
        oc, pc = (statistics.median(r[1] for r in side) for side in (ours, peer))
        om, pm = (statistics.median(r[2] for r in side) for side in (ours, peer))
        pairs = statistics.median(pr[0] / orr[0] for orr, pr in zip(ours, peer, strict=True))
        gap = max_gap(tmp / "ours.csv", tmp / "peer.csv")
        print(f"{order:>5}{o:>8.2f}{oc:>7.2f}{om:>6.0f}{p:>8.2f}{pc:>7.2f}{pm:>6.0f}{p / o:>11.1f}x"
              f"{pairs:>9.1f}x{pc / oc:>6.1f}x{gap:>7.1%}  "
              f"{' '.join(f'{r[0]:.2f}' for r in ours)} / {' '.join(f'{r[0]:.2f}' for r in peer)}",
              flush=True)


if __name__ == "__main__":
    main()
