"""MBG/NBD: recovery of known parameters from its own process, and its expectations against the
integrals they stand for."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from closedloop_nb.lifetime import BGNBD, MBGNBD
from closedloop_nb.lifetime.simulate import simulate_bgnbd

TRUTH = {"r": 0.5, "alpha": 6.0, "a": 0.9, "b": 3.0}


def simulate(n, r, alpha, a, b, T, seed):
    """The MBG/NBD process: after the first purchase (time 0) and after each repeat, leave w.p. p."""
    return simulate_bgnbd(n, r, alpha, a, b, T, seed, leave_at_first=True)


def test_recovers_known_parameters_within_their_standard_errors():
    m = MBGNBD().fit(simulate(30_000, **TRUTH, T=52.0, seed=3))
    for k, v in TRUTH.items():
        assert abs(m.params_[k] - v) < 3.5 * m.standard_errors_[k], (k, m.params_[k], m.standard_errors_[k])
    # its own data are more likely under MBG/NBD than under BG/NBD
    data = simulate(30_000, **TRUTH, T=52.0, seed=4)
    assert MBGNBD().fit(data).log_likelihood_ > BGNBD().fit(data).log_likelihood_


def test_expectations_equal_their_integrals():
    m = MBGNBD()
    m.params_ = dict(TRUTH)
    r, alpha, a, b = TRUTH.values()
    u, w = special.roots_legendre(1500)
    q, w = (u + 1) / 2, w / 2
    lam = stats.gamma(r, scale=1 / alpha).ppf(q)[:, None]
    p = stats.beta(a, b).ppf(q)[None, :]
    weight = w[:, None] * w[None, :]
    t = 26.0
    # a new customer survives the first chance with 1 - p, then buys like BG/NBD:
    # (1 - p) / p (1 - exp(-lam p t))
    new = np.sum(weight * (1 - p) / p * (1 - np.exp(-lam * p * t)))
    assert m.expected_purchases(t) == pytest.approx(new, rel=1e-5)
    for x, tx, T in [(0, 0.0, 40.0), (3, 30.0, 40.0), (6, 10.0, 40.0)]:
        alive = (1 - p) ** (x + 1) * lam ** x * np.exp(-lam * T)
        left = p * (1 - p) ** x * lam ** x * np.exp(-lam * tx)
        norm = np.sum(weight * (alive + left))
        assert m.probability_alive(x, tx, T) == pytest.approx(np.sum(weight * alive) / norm, rel=1e-5)
        future = 1 / p * (1 - np.exp(-lam * p * t))
        cond = np.sum(weight * future * alive) / norm
        assert m.conditional_expected_purchases(t, x, tx, T) == pytest.approx(cond, rel=1e-5)


def test_expected_purchases_match_the_simulated_process():
    m = MBGNBD()
    m.params_ = dict(TRUTH)
    sim = simulate(200_000, **TRUTH, T=30.0, seed=5)
    se = sim["frequency"].std() / np.sqrt(len(sim))
    assert abs(sim["frequency"].mean() - m.expected_purchases(30.0)) < 4 * se
