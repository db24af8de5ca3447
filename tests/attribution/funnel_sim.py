"""An independent simulation to score attribution models on: journeys drawn by funnel stage, channel
lifts on the log-odds scale with a per-touch term, and latent purchase intent that puts Direct and
brand-search touches at the end of intending buyers' journeys while doing nothing.

Written from the description in issue 18, apart from :mod:`closedloop_nb.synth` (whose regimes
``shapley_adjusted`` was designed on) and with its own exact Shapley computation; nothing here was
tuned to any model's score. A test and benchmark helper, not part of the package.

Generating model, for visitor ``i``:

1. Intent ``u_i ~ Bernoulli(INTENT_SHARE)``.
2. The journey enters the funnel at a stage (:data:`ENTRY`) and moves on to the next stage with
   probability :data:`ADVANCE` (``ADVANCE_INTENT`` for intending visitors), ending at the last stage
   at the latest. Each stage visited adds ``1 + Poisson(TOUCHES_EXTRA_MEAN)`` touches, their channels
   drawn from the stage's mix (:data:`STAGE_MIX`), in stage order.
3. An intending visitor's journey then ends with ``1 + Poisson(CAPTURE_EXTRA_MEAN)`` *capture*
   touches: Direct, or a brand query through Paid Search or Organic Search (:data:`CAPTURE`). They
   do nothing.
4. ``P(convert | the journey keeps only the channels T) = f_i(T) = expit(a + L u_i + sum over c in T
   of (alpha_c [m_ic > 0] + kappa_c m_ic))``, ``m_ic`` the number of *non-capture* touches of ``c``
   (removing a channel removes all its touches): a presence lift ``alpha_c`` and a per-touch lift
   ``kappa_c`` on the log-odds scale (:data:`ALPHA`, :data:`KAPPA`).

The true credit of a channel is its Shapley value in the game ``f_i(T) - f_i(empty)`` over the
visitor's channels (computed here by enumerating every subset), summed over visitors; the true
shares are those credits over their total. The incremental lift ``f_i(S_i) - f_i(S_i without c)``
(what a holdout test of ``c`` measures) is given beside it.

Examples
--------
>>> sim = simulate(2_000, seed=1)
>>> round(float(sim.truth.sum()), 6), bool(sim.paths.conversions.sum() > 0)
(1.0, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from closedloop_nb.attribution.paths import PathTable

STAGES = ("awareness", "consideration", "decision")
#: Where journeys enter the funnel.
ENTRY = {"awareness": 0.55, "consideration": 0.35, "decision": 0.10}
#: Probability of moving on to the next stage (without, with purchase intent).
ADVANCE, ADVANCE_INTENT = 0.45, 0.85
TOUCHES_EXTRA_MEAN = 0.8
#: Channel mix of the touches of each stage.
STAGE_MIX = {
    "awareness": {"Display": 0.30, "Paid Social": 0.25, "Organic Social": 0.20, "Paid Video": 0.10,
                  "Organic Search": 0.15},
    "consideration": {"Organic Search": 0.30, "Paid Search": 0.20, "Referral": 0.15, "Email": 0.15,
                      "Affiliates": 0.10, "Paid Social": 0.10},
    "decision": {"Paid Search": 0.25, "Email": 0.25, "Direct": 0.25, "Referral": 0.10,
                 "Organic Search": 0.15},
}
#: Presence and per-touch lifts on the log-odds scale.
ALPHA = {"Display": 0.15, "Paid Social": 0.30, "Organic Social": 0.10, "Paid Video": 0.10,
         "Organic Search": 0.45, "Paid Search": 0.55, "Referral": 0.60, "Email": 0.35, "Affiliates": 0.25,
         "Direct": 0.05}
KAPPA = {"Display": 0.05, "Paid Social": 0.10, "Organic Social": 0.05, "Paid Video": 0.05,
         "Organic Search": 0.10, "Paid Search": 0.15, "Referral": 0.10, "Email": 0.12, "Affiliates": 0.05,
         "Direct": 0.02}
BASE_RATE = 0.012
INTENT_SHARE, INTENT_LOGODDS = 0.15, 2.2
#: Channels of the capture touches of intending visitors (brand queries come by paid or organic search).
CAPTURE = {"Direct": 0.55, "Paid Search": 0.25, "Organic Search": 0.20}
CAPTURE_EXTRA_MEAN = 0.6
CHANNELS = tuple(ALPHA)
#: Channels bought per click (one holdout test each, for calibration).
PAID = ("Display", "Paid Social", "Paid Video", "Paid Search", "Affiliates")


@dataclass
class FunnelSim:
    """A simulated dataset: the journeys as a path table, the true shares, and per visitor the
    channels' true Shapley credit and incremental lift (visitors x :data:`CHANNELS`)."""

    paths: PathTable
    truth: pd.Series
    credit: np.ndarray
    lift: np.ndarray
    baseline: np.ndarray
    p: np.ndarray
    present: np.ndarray

    def true_credits(self) -> pd.DataFrame:
        """Per channel: ``credit`` (expected conversions), ``lift`` (summed incremental lift), ``share``."""
        return pd.DataFrame({"credit": self.credit.sum(axis=0), "lift": self.lift.sum(axis=0)},
                            index=pd.Index(CHANNELS, name="channel")).assign(share=self.truth)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _journeys(rng: np.random.Generator, n: int,
              intent: np.ndarray) -> tuple[list[list[int]], list[list[bool]]]:
    index = {c: k for k, c in enumerate(CHANNELS)}
    mixes = [(np.array([index[c] for c in STAGE_MIX[s]]), np.array(list(STAGE_MIX[s].values())))
             for s in STAGES]
    cap_ch = np.array([index[c] for c in CAPTURE])
    cap_p = np.array(list(CAPTURE.values()))
    entry = rng.choice(len(STAGES), size=n, p=list(ENTRY.values()))
    channels, capture = [], []
    for i in range(n):
        seq: list[int] = []
        stage = int(entry[i])
        while True:
            codes, weights = mixes[stage]
            seq += list(rng.choice(codes, size=1 + rng.poisson(TOUCHES_EXTRA_MEAN), p=weights))
            if stage == len(STAGES) - 1 or rng.random() >= (ADVANCE_INTENT if intent[i] else ADVANCE):
                break
            stage += 1
        flags = [False] * len(seq)
        if intent[i]:
            k = 1 + rng.poisson(CAPTURE_EXTRA_MEAN)
            seq += list(rng.choice(cap_ch, size=k, p=cap_p))
            flags += [True] * k
        channels.append([int(c) for c in seq])
        capture.append(flags)
    return channels, capture


def shapley_by_subsets(eta: np.ndarray, w: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, ...]:
    """Exact Shapley values of ``f_i(T) = expit(eta_i + sum_{c in T} w_ic)`` over each row's present
    channels, by enumerating every subset: ``phi_ic = sum over T without c of |T|! (k - |T| - 1)! / k!
    (f_i(T + c) - f_i(T))``. Returns ``credit, lift, f_i(empty), f_i(S_i)``."""
    n, m = w.shape
    credit, lift = np.zeros((n, m)), np.zeros((n, m))
    expit = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    base, full = expit(eta), expit(eta + np.where(present, w, 0.0).sum(axis=1))
    k_of = present.sum(axis=1)
    for k in np.unique(k_of[k_of > 0]):
        rows = np.flatnonzero(k_of == k)
        members = np.array([np.flatnonzero(present[r]) for r in rows])            # rows x k
        wk = np.take_along_axis(w[rows], members, axis=1)
        subsets = ((np.arange(1 << k)[:, None] >> np.arange(k)) & 1).astype(bool)  # 2^k x k
        sizes = subsets.sum(axis=1)
        f = expit(eta[rows, None] + wk @ subsets.T.astype(float))                   # rows x 2^k
        for j in range(k):
            without = np.flatnonzero(~subsets[:, j])
            weight = np.array([math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k)
                               for s in sizes[without]])
            credit[rows, members[:, j]] = (f[:, without + (1 << j)] - f[:, without]) @ weight
            lift[rows, members[:, j]] = f[:, -1] - f[:, (1 << k) - 1 - (1 << j)]
    return credit, lift, base, full


def simulate(n_visitors: int = 100_000, seed: int = 0) -> FunnelSim:
    """Draw ``n_visitors`` journeys and their conversions; the truth from the generating function.

    Parameters
    ----------
    n_visitors
        Visitors (every one has at least one touch).
    seed
        Random seed.

    Returns
    -------
    FunnelSim
    """
    rng = np.random.default_rng([seed, 1818])
    intent = rng.random(n_visitors) < INTENT_SHARE
    channels, capture = _journeys(rng, n_visitors, intent)
    m = len(CHANNELS)
    present = np.zeros((n_visitors, m), bool)
    effective = np.zeros((n_visitors, m))
    for i, (seq, flags) in enumerate(zip(channels, capture, strict=True)):
        present[i, seq] = True
        for c, f in zip(seq, flags, strict=True):
            if not f:
                effective[i, c] += 1
    alpha, kappa = np.array([ALPHA[c] for c in CHANNELS]), np.array([KAPPA[c] for c in CHANNELS])
    w = np.where(effective > 0, alpha, 0.0) + kappa * effective
    eta = _logit(BASE_RATE) + INTENT_LOGODDS * intent
    credit, lift, base, full = shapley_by_subsets(eta, w, present)
    converted = rng.random(n_visitors) < full
    frame = pd.DataFrame({"path": [" > ".join(CHANNELS[c] for c in seq) for seq in channels],
                          "total_conversions": converted.astype(float),
                          "total_null": (~converted).astype(float)})
    frame = frame.groupby("path", as_index=False, sort=True).sum()
    total = credit.sum(axis=0)
    truth = pd.Series(total / total.sum(), index=pd.Index(CHANNELS, name="channel"), name="share")
    return FunnelSim(PathTable.from_frame(frame), truth, credit, lift, base, full, present)
