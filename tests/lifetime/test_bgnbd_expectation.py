"""BG/NBD expected purchases where Eq. 7 of Fader, Hardie & Lee (2005) is 0/0 (a = 1) or has poles.

The truth here is a simulation of the model itself: while active a customer buys at a Poisson rate
lambda ~ Gamma(r, alpha) and after each purchase drops out with probability p ~ Beta(a, b), so
X(t) = min(N(t), K) with N(t) ~ Poisson(lambda t) and K ~ Geometric(p) on 1, 2, ...
"""

from __future__ import annotations

import numpy as np
import pytest

from closedloop_nb.lifetime import BGNBD
from closedloop_nb.lifetime.bgnbd import _expected_count


def _simulated(r, alpha, a, b, t, n=400_000, seed=0):
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    x = np.minimum(rng.poisson(lam * t), rng.geometric(p))
    return x.mean(), x.std() / np.sqrt(n)


def _model(r, alpha, a, b):
    m = BGNBD()
    m.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    return m


@pytest.mark.parametrize("a,b", [(1.0, 2.5), (1.0, 0.4), (0.3, 0.5), (2.0, 3.0)])
def test_expected_purchases_match_a_simulation_of_the_model(a, b):
    r, alpha, t = 0.8, 4.0, 10.0
    mean, se = _simulated(r, alpha, a, b, t)
    got = float(_model(r, alpha, a, b).expected_purchases(t))
    assert got == pytest.approx(mean, abs=4 * se)
    assert got <= r * t / alpha  # never more than the purchases of customers who never leave


def test_a_equal_to_one_is_the_limit_of_its_neighbours():
    t = np.array([0.0, 1.0, 13.0, 52.0])
    below = _model(0.5, 3.0, 1 - 2e-3, 1.5).expected_purchases(t)
    above = _model(0.5, 3.0, 1 + 2e-3, 1.5).expected_purchases(t)
    at = _model(0.5, 3.0, 1.0, 1.5).expected_purchases(t)
    assert np.all(np.isfinite(at)) and at[0] == 0
    np.testing.assert_allclose(at, (below + above) / 2, rtol=1e-5)


def test_the_integral_agrees_with_eq_7_where_both_apply():
    t = np.array([0.5, 5.0, 39.0])
    closed = _expected_count(0.24, 4.41, 0.79, 2.43, t)  # the CDNOW estimates of [1]
    np.testing.assert_allclose(_expected_count(0.24, 4.41, 0.79, 2.43, t, method="integral"), closed,
                               rtol=1e-8)


def test_conditional_expectation_at_a_equal_to_one_is_finite_and_ordered():
    m = _model(0.5, 3.0, 1.0, 1.5)
    got = m.conditional_expected_purchases(10.0, [0, 2, 5], [0.0, 20.0, 30.0], [30.0, 30.0, 30.0])
    assert np.all(np.isfinite(got))
    assert got[0] < got[1] < got[2]  # more recent repeat buying, more expected purchases
    near = _model(0.5, 3.0, 1 + 1e-3, 1.5).conditional_expected_purchases(
        10.0, [0, 2, 5], [0.0, 20.0, 30.0], [30.0, 30.0, 30.0])
    np.testing.assert_allclose(got, near, rtol=2e-3)
