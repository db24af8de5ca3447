"""Benchmark: every path-table model scored on an independent simulation (issue 18), written apart from
the regimes of `closedloop_nb.synth` that `shapley_adjusted` was designed on: journeys drawn by funnel
stage, channel lifts on the log-odds scale with a per-touch term, latent purchase intent that ends
intending buyers' journeys with Direct and brand-search touches that do nothing
(`tests/attribution/funnel_sim.py` documents the generating model). TVD of channel shares and
Spearman correlation against the exact Shapley shares of the true expected-conversion function, per
seed; then calibration to holdout tests of the paid channels on the same data.

    .venv/bin/python benchmarks/bench_funnel_sim.py [--visitors 100000] [--seeds 1 2 3 4 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import norm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from closedloop_nb.attribution import MODELS  # noqa: E402
from closedloop_nb.attribution.calibration import calibrate, model_baseline  # noqa: E402
from closedloop_nb.attribution.scorecard import score_models, tvd  # noqa: E402
from tests.attribution.funnel_sim import CHANNELS, PAID, simulate  # noqa: E402


def experiments(sim, noisy: bool, holdout_share: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """One holdout test per paid channel on the simulation's truth: the true incremental conversions
    of its exposed visitors, plus (``noisy``) the sampling error of a randomised holdout of
    ``holdout_share`` of them (normal approximation of the two binomial rates)."""
    rng = np.random.default_rng(seed)
    rows = []
    for ch in PAID:
        c = CHANNELS.index(ch)
        exposed = sim.present[:, c]
        n = exposed.sum()
        p1, lift = sim.p[exposed], sim.lift[exposed, c]
        p0 = p1 - lift
        se = np.sqrt(p1.mean() * (1 - p1.mean()) / ((1 - holdout_share) * n)
                     + p0.mean() * (1 - p0.mean()) / (holdout_share * n)) * n
        est = lift.sum() + (rng.normal(0, se) if noisy else 0.0)
        half = norm.ppf(0.975) * (se if noisy else 1e-6)
        rows.append({"channel": ch, "period": "sim", "incremental": est, "lower": est - half,
                     "upper": est + half, "true_incremental": lift.sum()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    scores, cal, truths = [], [], []
    for seed in args.seeds:
        sim = simulate(args.visitors, seed=seed)
        truths.append(sim.true_credits().assign(seed=seed))
        print(f"seed {seed}: {sim.paths.n_paths:,} paths, {sim.paths.conversions.sum():,.0f} conversions of "
              f"{args.visitors:,} visitors", flush=True)
        scores.append(score_models(sim.paths, sim.truth, list(MODELS)).assign(seed=seed))
        for m in ("shapley_model", "shapley_adjusted", "linear"):
            fit = MODELS[m]().fit(sim.paths)
            for noisy in (True, False):
                exps = experiments(sim, noisy, seed=seed)
                for untested in ("scale", "residual"):
                    if untested == "residual" and model_baseline(fit) is None:
                        continue
                    t = calibrate(fit, exps, untested=untested)
                    t = t[t["channel"] != "(not incremental)"].set_index("channel")
                    kind = "noisy" if noisy else "exact (no noise)"
                    cal.append({"seed": seed, "model": m, "experiments": kind, "untested": untested,
                                "uncalibrated": tvd(t["share"], sim.truth),
                                "calibrated": tvd(t["calibrated_share"], sim.truth)})
    card = pd.concat(scores, ignore_index=True)
    g = card.groupby("model").agg(tvd=("tvd", "mean"), tvd_min=("tvd", "min"), tvd_max=("tvd", "max"),
                                  rank_corr=("rank_corr", "mean")).sort_values("tvd")
    print(f"\n{len(args.seeds)} seeds x {args.visitors:,} visitors, {time.perf_counter() - t0:.0f} s\n")
    print("| model | TVD (mean over seeds) | [seeds' range] | Spearman (mean) |")
    print("|---|---|---|---|")
    for m, r in g.iterrows():
        print(f"| {m} | {r['tvd']:.3f} | [{r['tvd_min']:.3f}, {r['tvd_max']:.3f}] | {r['rank_corr']:.3f} |")
    last = truths[-1]
    print(f"\nseed {args.seeds[-1]}: true shares and three models' shares\n")
    print("| channel | true share | true lift / credit | shapley_adjusted | shapley_model | linear |")
    print("|---|---|---|---|---|---|")
    shares = {m: MODELS[m]().fit(sim.paths).credits_.set_index("channel")["share"]
              for m in ("shapley_adjusted", "shapley_model", "linear")}
    for ch, r in last.iterrows():
        print(f"| {ch} | {r['share']:.3f} | {r['lift'] / r['credit']:.2f} | " +
              " | ".join(f"{shares[m][ch]:.3f}" for m in shares) + " |")
    c = pd.DataFrame(cal)
    c["ratio"] = c["calibrated"] / c["uncalibrated"]
    a = c.groupby(["experiments", "untested", "model"], sort=False).agg(
        uncalibrated=("uncalibrated", "mean"), calibrated=("calibrated", "mean"),
        lo=("ratio", "min"), hi=("ratio", "max"))
    print("\ncalibration, one holdout per paid channel (mean over seeds)\n")
    print("| experiments | untested channels | model | uncalibrated TVD | calibrated TVD | "
          "ratio [seeds' range] |")
    print("|---|---|---|---|---|---|")
    for (e, u, m), r in a.iterrows():
        print(f"| {e} | {u} | {m} | {r['uncalibrated']:.3f} | {r['calibrated']:.3f} | "
              f"{r['calibrated'] / r['uncalibrated']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}] |")


if __name__ == "__main__":
    main()
