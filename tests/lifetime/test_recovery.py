"""Parameter recovery on data simulated from known parameters: the simulator
(:mod:`closedloop_nb.lifetime.simulate`) plays the purchase process event by event and shares no code
with the likelihoods it checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.lifetime import BGNBD, GammaGamma, ShiftedBetaGeometric
from closedloop_nb.lifetime.simulate import simulate_bgnbd


def test_bgnbd_recovers_known_parameters_within_their_standard_errors():
    truth = {"r": 0.5, "alpha": 6.0, "a": 0.9, "b": 3.0}
    m = BGNBD().fit(simulate_bgnbd(20_000, **truth, T=52.0, seed=1))
    for k, v in truth.items():
        assert abs(m.params_[k] - v) < 3.5 * m.standard_errors_[k], (k, m.params_[k], m.standard_errors_[k])


def test_gamma_gamma_recovers_known_parameters():
    rng = np.random.default_rng(2)
    p, q, gamma = 4.0, 5.0, 60.0
    n = 8_000
    x = rng.integers(1, 8, n)
    nu = rng.gamma(q, 1 / gamma, n)
    mean = np.array([rng.gamma(p, 1 / nu[i], x[i]).mean() for i in range(n)])
    m = GammaGamma().fit(pd.DataFrame({"frequency": x, "monetary_value": mean}))
    for k, v in {"p": p, "q": q, "gamma": gamma}.items():
        assert abs(m.params_[k] - v) < 3.5 * m.standard_errors_[k], (k, m.params_[k])


def test_sbg_recovers_known_parameters():
    rng = np.random.default_rng(3)
    theta = rng.beta(0.8, 2.5, 50_000)
    lifetime = rng.geometric(theta)  # periods survived, >= 1
    active = [len(theta)] + [(lifetime > t).sum() for t in range(1, 8)]  # still there at period t
    m = ShiftedBetaGeometric().fit(active)
    assert m.params_["alpha"] == pytest.approx(0.8, abs=3.5 * m.standard_errors_["alpha"])
    assert m.params_["beta"] == pytest.approx(2.5, abs=3.5 * m.standard_errors_["beta"])


def test_unfitted_and_impossible_inputs_are_refused():
    with pytest.raises(RuntimeError, match="call fit"):
        BGNBD().expected_purchases(5)
    with pytest.raises(ValueError, match="impossible RFM rows"):
        BGNBD().fit(pd.DataFrame({"frequency": [0, 1], "recency": [3.0, 2.0], "T": [5.0, 5.0]}))
    with pytest.raises(ValueError, match="non-increasing"):
        ShiftedBetaGeometric().fit([100, 120])


@pytest.mark.filterwarnings("ignore:BGBB ran to the edge")  # three rows of data: a contract check only
def test_models_follow_the_fitting_contract():
    from closedloop_nb.lifetime import BGBB, ParetoNBD

    rfm = simulate_bgnbd(500, 0.5, 6.0, 0.9, 3.0, T=52.0, seed=4)
    cases = [(BGNBD(), rfm), (ParetoNBD(), rfm),
             (GammaGamma(), rfm[rfm.frequency > 0].assign(monetary_value=lambda d: 10 + d.recency)),
             (ShiftedBetaGeometric(), [100, 70, 55, 47]),
             (BGBB(), pd.DataFrame({"frequency": [0, 2, 5], "recency": [0, 4, 6], "periods": [6, 6, 6],
                                    "weights": [50, 30, 20]}))]
    for model, data in cases:
        settings = dict(vars(model))  # __init__ stores its settings only, as given
        assert not [k for k in settings if k.endswith("_")]
        assert model.fit(data) is model
        assert all(k.endswith("_") for k in set(vars(model)) - set(settings))
        assert set(model.params_) == set(model.param_names)
        assert list(model.summary.columns) == ["estimate", "std_error", "lower_95", "upper_95"]
        assert "log-likelihood" in repr(model) and "<table" in model._repr_html_()


def test_gamma_gamma_is_not_fooled_by_its_ridge():
    """Half-samples where one start slid along the p -> infinity ridge to a worse optimum (found when
    testing segment_lrt): the fit must be at least as likely as the true parameters' fit would be
    once the maximum is interior."""
    from closedloop_nb.lifetime.base import unique_rows

    rng = np.random.default_rng(11)
    for _ in range(9):
        nu = rng.gamma(4.0, 1 / 15.0, 300)
        x = rng.integers(1, 6, 300)
        spend = [rng.gamma(6.0, 1 / v, k).mean() for v, k in zip(nu, x, strict=True)]
        half = rng.choice(["A", "B"], 300) == "A"
    part = pd.DataFrame({"frequency": x, "monetary_value": spend})[half]
    data, weights = unique_rows(part, ["frequency", "monetary_value"])
    m = GammaGamma().fit(part)
    truth = float(np.dot(weights, m._loglik_rows(np.array([6.0, 4.0, 15.0]), data)))
    assert m.log_likelihood_ >= truth - 1e-6


def test_bgnbd_is_stable_with_frequencies_in_the_hundreds():
    """Heavy buyers (about 10 purchases a week for a year): log-space likelihood, no overflow."""
    n, T = 3_000, 52.0
    truth = {"r": 4.0, "alpha": 0.4, "a": 1.5, "b": 600.0}
    rfm = simulate_bgnbd(n, **truth, T=T, seed=8)
    assert rfm["frequency"].quantile(0.5) > 100
    m = BGNBD().fit(rfm)
    assert np.isfinite(m.log_likelihood_)
    for k, v in truth.items():
        assert abs(m.params_[k] - v) < 4 * m.standard_errors_[k], (k, m.params_[k], m.standard_errors_[k])
    assert np.isfinite(m.conditional_expected_purchases(10, rfm["frequency"], rfm["recency"], rfm["T"])).all()


def test_gamma_gamma_gradient_is_the_likelihoods_derivative():
    """The fit uses an exact gradient; it must equal finite differences of the likelihood."""
    from statsmodels.tools.numdiff import approx_fprime

    from closedloop_nb.lifetime.base import unique_rows

    rng = np.random.default_rng(3)
    rfm = pd.DataFrame({"frequency": rng.integers(1, 9, 300),
                        "monetary_value": rng.gamma(3.0, 12.0, 300).round(2)})
    data, _ = unique_rows(rfm, ["frequency", "monetary_value"])
    model = GammaGamma()
    for params in ([6.25, 3.74, 15.44], [0.8, 12.0, 3.0], [40.0, 1.5, 200.0]):
        params = np.array(params)
        numeric = approx_fprime(params, lambda p: model._loglik_rows(p, data), centered=True)
        np.testing.assert_allclose(model._gradient_rows(params, data), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("covariates", [None, ["paid", "age"]])
def test_bgnbd_gradient_is_the_likelihoods_derivative(covariates):
    from statsmodels.tools.numdiff import approx_fprime

    from closedloop_nb.lifetime.base import unique_rows

    rng = np.random.default_rng(5)
    rfm = simulate_bgnbd(300, 0.5, 6.0, 0.9, 3.0, T=40.0, seed=6)
    rfm["paid"] = rng.integers(0, 2, len(rfm)).astype(float)
    rfm["age"] = rng.normal(0, 1, len(rfm)).round(1)
    model = BGNBD(covariates=covariates)
    data, _ = unique_rows(rfm, ["frequency", "recency", "T", "paid", "age"])
    points = [[0.243, 4.414, 0.793, 2.426], [2.0, 30.0, 5.0, 0.7], [0.05, 0.5, 40.0, 90.0]]
    for point in points:
        params = np.array(point + ([0.3, -0.2, 0.4, 0.1, -0.5, 0.25] if covariates else []))
        numeric = approx_fprime(params, lambda p: model._loglik_rows(p, data), centered=True)
        np.testing.assert_allclose(np.column_stack(model._gradient_rows(params, data)), numeric, rtol=1e-5,
                                   atol=1e-6)
