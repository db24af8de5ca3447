"""Benchmark: `closedloop synth` at 10M touchpoints (target: under 60 s, peak memory under 4 GiB).

Each size runs in a fresh process so peak memory (ru_maxrss) is its own.

    .venv/bin/python benchmarks/bench_synth.py [--visitors 4000000] [--out benchmarks/data/synth]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from closedloop_nb.synth import generate
n, out = int(sys.argv[1]), sys.argv[2]
t = time.perf_counter(); data = generate(n, seed=1); gen = time.perf_counter() - t
t = time.perf_counter(); data.write(out); write = time.perf_counter() - t
print(json.dumps({"visitors": n, "touchpoints": data.tables["touchpoints"].num_rows,
                  "generate_s": gen, "write_s": write,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--visitors", type=int, nargs="+", default=[400_000, 4_000_000])
    args = parser.parse_args()
    heads = [("visitors", 10), ("touchpoints", 12), ("generate s", 10), ("write s", 8), ("total s", 8),
             ("peak GiB", 8)]
    print(" ".join(f"{h:>{w}}" for h, w in heads))
    for n in args.visitors:
        with tempfile.TemporaryDirectory() as out:
            res = subprocess.run([sys.executable, "-c", CHILD, str(n), out], capture_output=True,
                                 text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        total = r["generate_s"] + r["write_s"]
        print(f"{r['visitors']:>10,} {r['touchpoints']:>12,} {r['generate_s']:>10.1f} {r['write_s']:>8.1f}"
              f" {total:>8.1f} {r['peak_gib']:>8.2f}")


if __name__ == "__main__":
    main()
