"""BG/NBD with time-invariant covariates (the acquisition channel): the likelihood is the plain
BG/NBD at each customer's parameters, effects are recovered from simulations with known truth, and
the likelihood-ratio test keeps its size when the channel does not matter."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.lifetime import BGNBD, covariate_lrt, segment_lrt
from closedloop_nb.lifetime.base import unique_rows
from closedloop_nb.lifetime.bgnbd import _digamma_step, _log_rising
from closedloop_nb.lifetime.simulate import simulate_bgnbd

BASE = {"r": 0.5, "alpha": 6.0, "a": 0.9, "b": 3.0}
EFFECT = {"purchase": 0.4, "dropout_a": 0.5, "dropout_b": -0.3}  # Paid Search against Email


def two_channels(n: int, effect: dict[str, float], seed: int) -> tuple[pd.DataFrame, pd.Series]:
    r, alpha, a, b = BASE.values()
    paid = dict(r=r, alpha=alpha * np.exp(-effect["purchase"]), a=a * np.exp(effect["dropout_a"]),
                b=b * np.exp(effect["dropout_b"]))
    rfm = pd.concat([simulate_bgnbd(n, r, alpha, a, b, T=52.0, seed=seed),
                     simulate_bgnbd(n, **paid, T=52.0, seed=seed + 1000)], ignore_index=True)
    return rfm, pd.Series(["Email"] * n + ["Paid Search"] * n, index=rfm.index, name="channel")


def test_the_likelihood_is_the_plain_bgnbd_at_each_customers_parameters():
    rng = np.random.default_rng(0)
    rfm = simulate_bgnbd(400, **BASE, T=40.0, seed=2)
    rfm["paid"] = rng.integers(0, 2, len(rfm)).astype(float)
    rfm["age"] = rng.normal(0, 1, len(rfm)).round(1)
    model = BGNBD(covariates=["paid", "age"])
    data, _ = unique_rows(rfm, ["frequency", "recency", "T", "paid", "age"])
    theta = np.array([0.7, 5.0, 1.1, 2.5, 0.3, -0.2, 0.4, 0.1, -0.5, 0.25])
    got = model._loglik_rows(theta, data)
    g = theta[4:].reshape(3, 2)
    z = np.column_stack([data["paid"], data["age"]])
    plain = BGNBD()
    for i in range(len(got)):
        alpha = 5.0 * np.exp(-z[i] @ g[0])
        a, b = 1.1 * np.exp(z[i] @ g[1]), 2.5 * np.exp(z[i] @ g[2])
        row = {k: data[k][i:i + 1] for k in ("frequency", "recency", "T")}
        assert got[i] == pytest.approx(plain._loglik_rows(np.array([0.7, alpha, a, b]), row)[0], rel=1e-12)
    # zero coefficients: exactly the model without covariates
    zero = np.concatenate([theta[:4], np.zeros(6)])
    np.testing.assert_allclose(model._loglik_rows(zero, data), plain._loglik_rows(theta[:4], data),
                               rtol=1e-13)


def test_channel_effects_are_recovered():
    rfm, channel = two_channels(15_000, EFFECT, seed=1)
    test = covariate_lrt(rfm, channel, reference="Email")
    assert test.attrs["df"] == 3 and test.attrs["p_value"] < 1e-6
    row = test.loc["Paid Search"]
    for kind, truth in EFFECT.items():  # within three standard errors of the truth
        assert abs(row[kind] - truth) < 3 * row[f"{kind}_se"], (kind, row[kind], truth)
    assert row["rate_ratio"] == pytest.approx(np.exp(row["purchase"]))
    true_p = BASE["a"] / (BASE["a"] + BASE["b"])
    a, b = BASE["a"] * np.exp(EFFECT["dropout_a"]), BASE["b"] * np.exp(EFFECT["dropout_b"])
    assert row["dropout_ratio"] == pytest.approx(a / (a + b) / true_p, rel=0.15)
    # nested models: pooled <= shared r with channel effects <= a separate fit per channel
    model = test.attrs["model"]
    separate = segment_lrt(BGNBD, rfm, channel)
    pooled = separate.loc["All", "log_likelihood"]
    total = separate.drop(index="All")["log_likelihood"].sum()
    assert pooled <= model.log_likelihood_ <= total + 1e-6
    # one channel's model: its parameters, and the baseline's covariance block unchanged
    email = model.at({})
    assert email.params_ == {k: model.params_[k] for k in ("r", "alpha", "a", "b")}
    block = model.covariance_.loc[["r", "alpha", "a", "b"], ["r", "alpha", "a", "b"]]
    np.testing.assert_allclose(email.covariance_.to_numpy(), block.to_numpy(), rtol=1e-10)
    paid = model.at({"Paid Search": 1})
    assert paid.params_["alpha"] == pytest.approx(model.params_["alpha"] * np.exp(-row["purchase"]))
    truth = BGNBD()  # Paid Search's true process: buys more often, and leaves more often
    truth.params_ = {"r": BASE["r"], "alpha": BASE["alpha"] * np.exp(-EFFECT["purchase"]), "a": a, "b": b}
    assert paid.expected_purchases(52.0) == pytest.approx(truth.expected_purchases(52.0), rel=0.05)


def test_the_test_keeps_its_size_when_channel_does_not_matter():
    """Both channels from the same process: at 5% the test rejects about 1 time in 20."""
    no_effect = dict.fromkeys(EFFECT, 0.0)
    p_values = [covariate_lrt(*two_channels(1500, no_effect, seed=s), reference="Email").attrs["p_value"]
                for s in range(20)]
    assert sum(p < 0.05 for p in p_values) <= 3
    assert np.median(p_values) > 0.2


def test_covariate_models_refuse_what_they_cannot_do():
    rfm, channel = two_channels(300, EFFECT, seed=3)
    rfm["paid"] = (channel == "Paid Search").astype(float)
    with pytest.raises(KeyError, match="covariate column"):
        BGNBD(covariates=["missing"]).fit(rfm)
    bad = rfm.copy()
    bad.loc[5, "paid"] = np.nan
    with pytest.raises(ValueError, match="'paid': not a finite number for customers \\[5\\]"):
        BGNBD(covariates=["paid"]).fit(bad)
    model = BGNBD(covariates=["paid"]).fit(rfm)
    with pytest.raises(ValueError, match="model.at"):
        model.expected_purchases(10.0)
    with pytest.raises(KeyError, match="unknown covariate"):
        model.at({"email": 1})
    with pytest.raises(KeyError, match="reference segment"):
        covariate_lrt(rfm, channel, reference="Display")
    assert set(model.summary.index) == set(model.param_names)
    assert (model.summary.loc["purchase:paid", "lower_95"] < model.params_["purchase:paid"]
            < model.summary.loc["purchase:paid", "upper_95"])


def test_the_covariate_likelihood_equals_clvtools():
    """CLVTools ties the two dropout coefficients (a and b move together); at its fitted parameters
    on its apparel data our likelihood of each customer equals CLVTools' (tests/data/lifetime)."""
    from pathlib import Path

    rows = pd.read_csv(Path(__file__).parent.parent / "data" / "lifetime" / "clvtools_bgnbd_staticcov.csv")
    data = {"frequency": rows["x"].to_numpy(float), "recency": rows["t_x"].to_numpy(float),
            "T": rows["T_cal"].to_numpy(float), "gender": rows["gender"].to_numpy(float),
            "channel": rows["channel"].to_numpy(float)}
    life = [-1.390294175239601, -7.7785055111844654]
    theta = np.array([0.66624310391411712, 38.190864634202477, 4603.0506213699791, 33985.170841703461,
                      0.4612080504904093, 0.56782898533329018, *life, *life])
    got = BGNBD(covariates=["gender", "channel"])._loglik_rows(theta, data)
    np.testing.assert_allclose(got, rows["LL_ind"], rtol=1e-10)


def test_a_segment_the_data_cannot_describe_is_flagged():
    """Sixty customers of one channel none of whom bought again: its purchase rate runs off to zero,
    which the fit reports instead of printing a ratio of 0 as a finding."""
    rfm, _ = two_channels(600, EFFECT, seed=8)
    idle = pd.DataFrame({"frequency": 0, "recency": 0.0, "T": 52.0}, index=range(10_000, 10_060))
    rfm = pd.concat([rfm, idle])
    channel = pd.Series(["Email"] * 1200 + ["Display"] * 60, index=rfm.index)
    with pytest.warns(UserWarning, match=r"edge of its parameter space \(purchase:Display"):
        test = covariate_lrt(rfm, channel, reference="Email")
    assert test.attrs["identified"] is False and not test.attrs["model"].identified_
    assert test.index.name == "segment" and test.loc["Display", "rate_ratio"] < 1e-3


# --- a channel whose customers all leave alike: its dropout runs off along a ridge (a, b ~ 1e8) ---

def ridge_channels(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Email as BASE; Display buys 1.5x as often (purchase effect 0.4) and every customer of it
    leaves with the same probability 0.3 after a purchase (Beta(3e6, 7e6): no heterogeneity)."""
    rfm = pd.concat([simulate_bgnbd(n, **BASE, T=52.0, seed=seed),
                     simulate_bgnbd(n, BASE["r"], BASE["alpha"] * np.exp(-0.4), 3e6, 7e6, T=52.0,
                                    seed=seed + 1)], ignore_index=True)
    return rfm, pd.Series(["Email"] * n + ["Display"] * n, index=rfm.index, name="channel")


def exact_loglik(params: dict[str, float], rfm: pd.DataFrame, z: np.ndarray) -> float:
    """Eq. 6 of Fader, Hardie & Lee summed customer by customer in Python floats, with the ratios of
    gamma functions as the products they are for whole x (B(a, b+x)/B(a, b) = prod (b+j)/(a+b+j),
    G(r+x)/G(r) = prod (r+j)): no special function, nothing that cancels."""
    r, alpha, a, b, g_p, g_a, g_b = params.values()
    total = []
    for x, tx, T, zi in zip(rfm["frequency"].astype(int), rfm["recency"], rfm["T"], z, strict=True):
        al, ai, bi = alpha * math.exp(-g_p * zi), a * math.exp(g_a * zi), b * math.exp(g_b * zi)
        head = math.fsum([-math.log1p(ai / (bi + j)) for j in range(x)] + [math.log(r + j) for j in range(x)])
        first = -r * math.log1p(T / al) - x * math.log(al + T)
        if x == 0:
            total.append(head + first)
            continue
        second = math.log(ai) - math.log(bi + x - 1) - r * math.log1p(tx / al) - x * math.log(al + tx)
        total.append(head + max(first, second) + math.log1p(math.exp(-abs(first - second))))
    return math.fsum(total)


@pytest.mark.parametrize("y", [0.3, 50.0, 999.0, 1e3, 5e4, 1e8, 1e13])
def test_rising_factorials_are_exact_at_any_size(y):
    """log G(y+x)/G(y) = sum_j log(y+j) and digamma(y+x) - digamma(y) = sum_j 1/(y+j) for whole x
    (at y = 1e13 the plain gammaln difference has no correct digit left)."""
    for x in (0, 1, 3, 25, 200):
        logs = math.fsum(math.log(y + j) for j in range(x))
        steps = math.fsum(1 / (y + j) for j in range(x))
        assert float(_log_rising(y, x)) == pytest.approx(logs, rel=1e-12, abs=1e-300), x
        assert float(_digamma_step(y, x)) == pytest.approx(steps, rel=1e-11, abs=1e-300), x


def test_the_likelihood_is_exact_out_on_the_ridge():
    """Where dropout (a, b ~ 1e8 and beyond) or purchase rates (r, alpha ~ 1e7) are all alike, each
    customer's log-likelihood still equals the exact sum (the old betaln differences were off by
    ~1e-6 per customer there, 3.5e-3 summed over 6,000)."""
    rfm, channel = ridge_channels(150, seed=21)
    z = (channel == "Display").to_numpy(float)
    data = {"frequency": rfm["frequency"].to_numpy(float), "recency": rfm["recency"].to_numpy(float),
            "T": rfm["T"].to_numpy(float), "Display": z}
    model = BGNBD(covariates=["Display"])
    for params in ({"r": 0.51, "alpha": 6.2, "a": 0.74, "b": 2.4, "g_p": 0.32, "g_a": 18.6, "g_b": 18.3},
                   {"r": 0.51, "alpha": 6.2, "a": 0.74, "b": 2.4, "g_p": 0.32, "g_a": 30.0, "g_b": 31.0},
                   {"r": 3e7, "alpha": 6e7, "a": 2e8, "b": 6e8, "g_p": 0.2, "g_a": 0.5, "g_b": -0.1}):
        got = model._loglik_rows(np.array(list(params.values())), data)
        assert float(got.sum()) == pytest.approx(exact_loglik(params, rfm, z), rel=1e-13, abs=1e-9)


def test_the_newton_hessian_is_the_numerical_hessian():
    """The Hessian the covariate fit steps with (and takes standard errors from) equals statsmodels'
    finite-difference Hessian of the summed log-likelihood, in the optimiser's coordinates."""
    from statsmodels.tools.numdiff import approx_hess3

    rng = np.random.default_rng(4)
    rfm = simulate_bgnbd(400, **BASE, T=40.0, seed=2)
    rfm["paid"] = rng.integers(0, 2, len(rfm)).astype(float)
    rfm["age"] = rng.normal(0, 1, len(rfm)).round(1)
    model = BGNBD(covariates=["paid", "age"])
    data, weights = unique_rows(rfm, ["frequency", "recency", "T", "paid", "age"])
    free = model._free()
    for point in ([0.7, 5.0, 1.1, 2.5, 0.3, -0.2, 0.4, 0.1, -0.5, 0.25],
                  [0.3, 9.0, 0.6, 4.0, -0.4, 0.1, 0.0, 0.3, 0.2, -0.1]):
        params = np.array(point)
        theta = np.where(free, params, np.log(np.where(free, 1.0, params)))

        def loglik(t: np.ndarray) -> float:
            return float(weights @ model._loglik_rows(np.where(free, t, np.exp(t)), data))

        numeric = approx_hess3(theta, loglik)
        got = model._theta_hessian(params, data, weights)
        np.testing.assert_allclose(got, numeric, rtol=0, atol=2e-5 * np.abs(numeric).max())
        np.testing.assert_array_equal(got, got.T)


def test_a_channel_that_leaves_alike_is_fitted_without_a_simplex(monkeypatch):
    """The ridge fit: Newton steps, no Nelder-Mead rescue, a log-likelihood at least as high as the
    quasi-Newton path's and as the fit before this change (its parameters below, the likelihood
    evaluated exactly), the purchase effect recovered and the ridge flagged."""
    from scipy import optimize

    import closedloop_nb.lifetime.base as base

    rfm, channel = ridge_channels(3000, seed=11)
    methods, minimize = [], optimize.minimize

    def recording(*args, method=None, **kwargs):
        methods.append(method)
        return minimize(*args, method=method, **kwargs)

    monkeypatch.setattr(base.optimize, "minimize", recording)
    with pytest.warns(UserWarning, match=r"edge of its parameter space \(dropout_a:Display=.*dropout_b:Disp"):
        test = covariate_lrt(rfm, channel, reference="Email")
    assert "Nelder-Mead" not in methods and "trust-exact" in methods
    model = test.attrs["model"]
    display = test.loc["Display"]
    assert abs(display["purchase"] - 0.4) < 3 * display["purchase_se"]
    email_p = BASE["a"] / (BASE["a"] + BASE["b"])
    assert display["dropout_ratio"] == pytest.approx(0.3 / email_p, rel=0.1)
    assert 0.0 not in model.standard_errors_.values()  # no certainty claimed on the ridge: NaN there
    # before: L-BFGS-B stalled on the noisy ridge, the simplex ran 20,000 evaluations and stopped here
    before = {"r": 0.5129371855296816, "alpha": 6.2435346098992985, "a": 0.7354974981041229,
              "b": 2.39363758142198, "g_p": 0.31709641554790213, "g_a": 18.5966563332939,
              "g_b": 18.285657114003158}
    z = (channel == "Display").to_numpy(float)
    assert model.log_likelihood_ >= exact_loglik(before, rfm, z) + 1e-4
    monkeypatch.setattr(BGNBD, "_newton", lambda self: False)
    with pytest.warns(UserWarning, match="edge of its parameter space"):
        quasi = BGNBD(covariates=["Display"]).fit(rfm.assign(Display=z))
    assert model.log_likelihood_ >= quasi.log_likelihood_ - 1e-7
