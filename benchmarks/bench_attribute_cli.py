"""Benchmark: `closedloop attribute --models markov` as a whole process against ChannelAttribution as a
whole process (`pd.read_csv` + `markov_model` + `to_csv`), Markov orders 1-3, on the ~700k-path table
of `bench_attribution.py` (issue 13: at least 5x faster at every order).

Both sides are timed from outside (`/usr/bin/time`: wall seconds and peak resident memory of the
process), start-up, imports, reading the gzipped CSV, fitting and writing included. Runs alternate
ours / peer, several fresh processes each; medians are reported, and the ratio of each pair too (the
pairing keeps the ratio meaningful when the machine's speed drifts).

    bash benchmarks/peers.sh            # once: the peer's own environment
    .venv/bin/python benchmarks/bench_attribute_cli.py [--repeat 5] [--orders 1,2,3]
"""

from __future__ import annotations

import argparse
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


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak MiB of one fresh process, measured by /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as log:
        out = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", log.name, *cmd],
                             capture_output=True, text=True, timeout=3600)
        if out.returncode:
            raise RuntimeError(f"{cmd[:3]}: {out.stderr[-2000:]}")
        wall, kib = log.read().split()[-2:]
    return float(wall), float(kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default=str(HERE / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per side and order")
    parser.add_argument("--orders", default="1,2,3")
    args = parser.parse_args()
    if not DATA.exists():
        make_paths(DATA)
    ours_cmd = str(Path(sys.executable).parent / "closedloop")
    tmp = Path(tempfile.mkdtemp())
    print(f"{'order':>5}{'ours s':>9}{'ours MiB':>10}{'peer s':>9}{'peer MiB':>10}{'x (medians)':>13}"
          f"{'x (pairs)':>11}  ours runs / peer runs")
    for order in [int(o) for o in args.orders.split(",")]:
        ours, peer = [], []
        for _ in range(args.repeat):
            ours.append(timed([ours_cmd, "attribute", str(DATA), "--models", "markov", "--order", str(order),
                               "--out", str(tmp / "ours.csv")]))
            peer.append(timed([args.peer_python, "-c", PEER, str(DATA), str(order), str(tmp / "peer.csv")]))
        o = statistics.median(w for w, _ in ours)
        p = statistics.median(w for w, _ in peer)
        pairs = statistics.median(pw / ow for (ow, _), (pw, _) in zip(ours, peer, strict=True))
        print(f"{order:>5}{o:>9.2f}{statistics.median(m for _, m in ours):>10.0f}{p:>9.2f}"
              f"{statistics.median(m for _, m in peer):>10.0f}{p / o:>12.1f}x{pairs:>10.1f}x  "
              f"{' '.join(f'{w:.2f}' for w, _ in ours)} / {' '.join(f'{w:.2f}' for w, _ in peer)}")


if __name__ == "__main__":
    main()
