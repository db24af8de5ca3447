"""Lifetime models reproduce the published results (figures in ../shared/REFERENCES.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.lifetime import BGBB, BGNBD, GammaGamma, ParetoNBD, ShiftedBetaGeometric, rfm_summary

from .conftest import DATA


@pytest.fixture(scope="module")
def cdnow(cdnow_transactions) -> pd.DataFrame:
    raw = cdnow_transactions
    # 39-week calibration (1997-01-01 .. 1997-09-30), holdout weeks 40-78
    return rfm_summary(raw, calibration_end="1997-09-30", holdout_end="1998-06-30", unit="W")


def test_cdnow_rfm_matches_the_paper(cdnow):
    assert len(cdnow) == 2357
    assert (cdnow["frequency"] > 0).sum() == 946
    assert cdnow["frequency_holdout"].sum() == 1882
    assert cdnow["T"].max() == pytest.approx(272 / 7)  # first purchase on 1 January


def test_bgnbd_reproduces_fader_hardie_lee_2005(cdnow):
    m = BGNBD().fit(cdnow)
    p = m.params_
    assert p["r"] == pytest.approx(0.243, abs=5e-4)
    assert p["alpha"] == pytest.approx(4.414, abs=5e-3)
    assert p["a"] == pytest.approx(0.793, abs=5e-4)
    assert p["b"] == pytest.approx(2.426, abs=5e-3)
    assert m.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)
    assert all(se > 0 for se in m.standard_errors_.values())


def test_bgnbd_derived_quantities_match_hardies_spreadsheet(cdnow):
    """Hardie's values come from the full-precision estimates (the rounded parameters shift them by
    ~0.2%), so they are computed at the fitted parameters."""
    m = BGNBD().fit(cdnow)
    got = m.expected_purchases([1, 3, 32, 78])
    assert got == pytest.approx([0.0532, 0.1506, 1.0437, 1.8576], abs=5e-4)
    assert m.conditional_expected_purchases(39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=1e-3)
    # P(alive) is 1 without repeat purchases and falls as the last purchase recedes
    alive = m.probability_alive([0, 2, 2], [0.0, 30.43, 5.0], [38.86, 38.86, 38.86])
    assert alive[0] == 1.0 and alive[1] > alive[2]


def test_gamma_gamma_reproduces_fader_hardie_lee_2005(cdnow):
    repeat = cdnow[cdnow["frequency"] > 0]["monetary_value"]
    assert repeat.mean() == pytest.approx(35, abs=0.5) and repeat.median() == pytest.approx(27.5, abs=0.1)
    m = GammaGamma().fit(cdnow)
    assert m.params_["p"] == pytest.approx(6.25, abs=0.01)
    assert m.params_["q"] == pytest.approx(3.74, abs=0.01)
    assert m.params_["gamma"] == pytest.approx(15.44, abs=0.02)
    assert m.log_likelihood_ == pytest.approx(-4055.9, abs=0.05)
    assert m.n_customers_ == 946


def test_gamma_gamma_leaves_out_zero_spend_repeat_buyers_with_a_warning(cdnow):
    rfm = cdnow.copy()
    rfm.iloc[:3, rfm.columns.get_loc("frequency")] = 2
    rfm.iloc[:3, rfm.columns.get_loc("monetary_value")] = 0.0
    with pytest.warns(UserWarning, match="3 repeat buyers with zero"):
        m = GammaGamma().fit(rfm)
    assert m.n_excluded_ == 3


@pytest.mark.parametrize("cohort,active,alpha,beta,holdout", [
    ("regular", [1000, 631, 468, 382, 326, 289, 262, 241], 0.704, 1.182, [22.0, 20.4, 19.1, 18.0, 17.0]),
    ("high end", [1000, 869, 743, 653, 593, 551, 517, 491], 0.668, 3.806, [46.0, 43.6, 41.4, 39.5, 37.8]),
])
def test_sbg_reproduces_fader_hardie_2007(cohort, active, alpha, beta, holdout):
    m = ShiftedBetaGeometric().fit(active)
    assert m.params_["alpha"] == pytest.approx(alpha, abs=1e-3)
    assert m.params_["beta"] == pytest.approx(beta, abs=2e-3)
    assert 100 * m.survival(np.arange(8, 13)) == pytest.approx(holdout, abs=0.05)


def test_sbg_discounted_lifetime_against_constant_churn():
    m = ShiftedBetaGeometric().fit([1000, 631, 468, 382, 326, 289, 262, 241])
    assert m.discounted_expected_lifetime(0.10) == pytest.approx(3.7, abs=0.05)
    # a constant-churn model with the first year's retention undervalues a new customer badly
    r = 0.631
    assert 1 / (1 - r / 1.10) == pytest.approx(2.3, abs=0.05)


def test_pareto_nbd_reproduces_the_published_fit(cdnow):
    m = ParetoNBD().fit(cdnow)
    p = m.params_
    assert p["r"] == pytest.approx(0.553, abs=1e-3)
    assert p["alpha"] == pytest.approx(10.578, abs=0.01)
    assert p["s"] == pytest.approx(0.606, abs=1e-3)
    assert p["beta"] == pytest.approx(11.667, abs=0.02)
    assert m.log_likelihood_ == pytest.approx(-9595.0, abs=0.05)
    assert all(np.isfinite(v) and v > 0 for v in m.standard_errors_.values())
    # deterministic: the same fit twice
    assert ParetoNBD().fit(cdnow).params_ == p
    # intervals of positive parameters stay positive
    assert (m.summary["lower_95"] > 0).all()


def test_bgbb_reproduces_fader_hardie_shang_2010():
    donations = pd.read_csv(DATA / "donations.csv")
    m = BGBB().fit(donations)
    assert m.n_customers_ == 11_104
    p = m.params_
    assert p["alpha"] == pytest.approx(1.204, abs=2e-3)
    assert p["beta"] == pytest.approx(0.750, abs=2e-3)
    assert p["gamma"] == pytest.approx(0.657, abs=2e-3)
    assert p["delta"] == pytest.approx(2.783, abs=5e-3)


def _pareto_integrals(params, x, tx, T, t, nodes=1500):
    """P(alive), E[Y(t) | x, t_x, T] and E[X(t)] by integrating the individual-level Pareto/NBD over
    the gamma mixing distributions: Gauss-Legendre quadrature on the quantile scale of each."""
    from scipy import special, stats

    r, alpha, s, beta = params
    u, w = special.roots_legendre(nodes)
    p, w = (u + 1) / 2, w / 2
    lam = stats.gamma(r, scale=1 / alpha).ppf(p)[:, None]
    mu = stats.gamma(s, scale=1 / beta).ppf(p)[None, :]
    weight = w[:, None] * w[None, :]
    alive = lam ** x * np.exp(-(lam + mu) * T)
    died = lam ** x * mu / (lam + mu) * (np.exp(-(lam + mu) * tx) - np.exp(-(lam + mu) * T))
    future = lam / mu * (1 - np.exp(-mu * t))
    norm = np.sum(weight * (alive + died))
    return (np.sum(weight * alive) / norm, np.sum(weight * future * alive) / norm, np.sum(weight * future))


@pytest.mark.parametrize("x,tx,T", [(0, 0.0, 38.0), (2, 30.43, 38.86), (7, 12.0, 38.0)])
def test_pareto_nbd_expectations_equal_the_integrals_they_stand_for(x, tx, T):
    model = ParetoNBD()
    model.params_ = {"r": 0.55, "alpha": 10.58, "s": 0.61, "beta": 11.67}  # the published CDNOW fit
    alive, cond, new = _pareto_integrals((0.55, 10.58, 0.61, 11.67), x, tx, T, t=39.0)
    assert model.probability_alive(x, tx, T) == pytest.approx(alive, rel=1e-5)
    assert model.conditional_expected_purchases(39.0, x, tx, T) == pytest.approx(cond, rel=1e-5)
    assert model.expected_purchases(39.0) == pytest.approx(new, rel=1e-5)
