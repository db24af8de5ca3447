"""BG/NBD with time-invariant covariates (the acquisition channel): the likelihood is the plain
BG/NBD at each customer's parameters, effects are recovered from simulations with known truth, and
the likelihood-ratio test keeps its size when the channel does not matter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.lifetime import BGNBD, covariate_lrt, segment_lrt
from closedloop_nb.lifetime.base import unique_rows
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
