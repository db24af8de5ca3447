"""Benchmark: attribution models on a ~700k-unique-path table over 20 channels (~2.4M journeys),
beside ChannelAttribution's `markov_model` (orders 1-3) and `heuristic_models` in the same run.

Targets (issue 4): every model under 2 GiB; exact Markov orders 1-3 at least 5x faster than
ChannelAttribution's simulated `markov_model`; rule-based models at least 5x faster than its
`heuristic_models`; exact Shapley for 20 channels under 10 s. It also reports how far the peer's
simulated Markov credits are from the exact ones.

    bash benchmarks/peers.sh            # once: the peer's own environment
    .venv/bin/python benchmarks/bench_attribution.py [--peer-python benchmarks/.venv-peers/bin/python]

Each model runs in a fresh process, so its peak memory (ru_maxrss) is its own; the table is read
inside that process and the read time is reported separately.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "paths_700k.csv.gz"


def make_paths(path: Path, journeys: int = 2_400_000, seed: int = 0) -> None:
    """Journeys over 20 channels (Zipf-like popularity, geometric lengths, additive conversion
    probability), aggregated to unique paths in ChannelAttribution's format."""
    rng = np.random.default_rng(seed)
    n_ch = 20
    names = np.array([f"ch{i:02d}" for i in range(n_ch)])
    pop = 1 / np.arange(1, n_ch + 1) ** 0.8
    pop /= pop.sum()
    lengths = np.minimum(rng.geometric(0.26, journeys), 25)
    codes = rng.choice(n_ch, size=int(lengths.sum()), p=pop)
    effect = rng.uniform(0.001, 0.03, n_ch)
    owner = np.repeat(np.arange(journeys), lengths)
    p = 0.01 + np.bincount(owner, weights=effect[codes], minlength=journeys)
    conv = rng.random(journeys) < np.minimum(p, 0.9)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    steps = names[codes]
    text = [" > ".join(steps[offsets[i]:offsets[i + 1]]) for i in range(journeys)]
    df = pd.DataFrame({"path": text, "c": conv.astype(int), "v": conv * rng.gamma(2.0, 50.0, journeys)})
    g = df.groupby("path", sort=False).agg(total_conversions=("c", "sum"),
                                           total_conversion_value=("v", "sum"), n=("c", "size"))
    g["total_null"] = g.pop("n") - g["total_conversions"]
    path.parent.mkdir(parents=True, exist_ok=True)
    g.reset_index().to_csv(path, index=False)


OURS = r"""
import json, resource, sys, time
import pandas as pd
from closedloop_nb.attribution import MODELS, MarkovChain, PathTable
name, src = sys.argv[1], sys.argv[2]
df = pd.read_csv(src)  # not timed, as for the peer
t = time.perf_counter(); table = PathTable.from_frame(df); parse = time.perf_counter() - t
model = MarkovChain(order=int(name[-1])) if name.startswith("markov") else MODELS[name]()
t = time.perf_counter(); model.fit(table); fit = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
t = time.perf_counter(); model.fit(table); warm = time.perf_counter() - t
c = model.credits_
print(json.dumps({"parse_s": parse, "fit_s": fit, "warm_s": warm, "peak_gib": peak,
                  "credits": dict(zip(c.channel, c.conversions))}))
"""

PEER = r"""
import json, resource, sys, time
import pandas as pd
import ChannelAttribution as ca
name, src = sys.argv[1], sys.argv[2]
df = pd.read_csv(src)
t = time.perf_counter()
if name == "heuristic":
    res = ca.heuristic_models(df, "path", "total_conversions", var_value="total_conversion_value",
                              flg_pro=False)
    credits = dict(zip(res["channel_name"], res["linear_touch_conversions"]))
else:
    res = ca.markov_model(df, "path", "total_conversions", var_value="total_conversion_value",
                          var_null="total_null", order=int(name[-1]), verbose=False, flg_pro=False)
    credits = dict(zip(res["channel_name"], res["total_conversions"]))
fit = time.perf_counter() - t
print(json.dumps({"fit_s": fit, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "credits": credits}))
"""


def run(python: str, code: str, name: str, repeat: int = 1) -> dict:
    """Run ``code`` for ``name`` in ``repeat`` fresh processes; timings and memory are medians
    (this machine's timings of the same process vary by up to 2x from run to run)."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([python, "-c", code, name, str(DATA)], capture_output=True, text=True,
                             timeout=3600)
        if out.returncode:
            raise RuntimeError(f"{name}: {out.stderr[-2000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = dict(runs[0])
    for key in ("parse_s", "fit_s", "warm_s", "peak_gib"):
        if key in result:
            result[key] = float(np.median([r[key] for r in runs]))
    if "parse_s" in result:  # cold = parse + first fit of the same process
        result["cold_s"] = float(np.median([r["parse_s"] + r["fit_s"] for r in runs]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default=str(HERE / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per model (median)")
    args = parser.parse_args()
    if not DATA.exists():
        make_paths(DATA)
    info = run(sys.executable, OURS, "linear")
    table = pd.read_csv(DATA, usecols=["total_conversions", "total_null"])
    print(f"{len(table):,} unique paths, {int(table.sum().sum()):,} journeys, "
          f"{int(table.total_conversions.sum()):,} conversions; parsing paths: {info['parse_s']:.2f} s")
    rows = []
    rule_based = ["first_touch", "last_touch", "linear", "position_based", "last_non_direct"]
    for name in [*rule_based, "simplified_shapley", "shapley", "markov1", "markov2", "markov3"]:
        r = run(sys.executable, OURS, name, args.repeat)
        rows.append({"model": name, "ours_s": r["cold_s"], "fit_s": r["fit_s"],
                     "warm_s": r["warm_s"], "ours_gib": r["peak_gib"], "ours": r["credits"]})
    peer = {}
    if not args.skip_peer:
        for name in ["heuristic", "markov1", "markov2", "markov3"]:
            peer[name] = run(args.peer_python, PEER, name, args.repeat)
    print(f"\n{'model':<20}{'warm fit':>9}{'cold fit':>9}{'+parse':>8}{'peak GiB':>9}{'peer s':>8}"
          f"{'peer GiB':>9}{'cold x':>8}{'warm x':>8}{'max |peer-exact|/exact':>24}")
    for r in rows:
        key = "heuristic" if r["model"] in rule_based else r["model"]
        p = peer.get(key)
        line = (f"{r['model']:<20}{r['warm_s']:>9.2f}{r['fit_s']:>9.2f}{r['ours_s']:>8.2f}"
                f"{r['ours_gib']:>9.2f}")
        if p:
            line += (f"{p['fit_s']:>8.2f}{p['peak_gib']:>9.2f}{p['fit_s'] / r['ours_s']:>7.1f}x"
                     f"{p['fit_s'] / r['warm_s']:>7.1f}x")
            if r["model"].startswith("markov") or r["model"] == "linear":
                err = max(abs(p["credits"][c] - v) / max(v, 1e-9) for c, v in r["ours"].items())
                line += f"{err:>24.2%}"
        print(line)
    print("\ncold x = peer time / our parse + first fit in a fresh process (the peer's call parses the"
          "\npath strings too); warm x = peer time / a further fit on the parsed table (several models"
          "\non one table in a notebook). heuristic_models computes first, last and linear in one call.")


if __name__ == "__main__":
    main()
