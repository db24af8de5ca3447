"""Customer lifetime value: exact identities, discounting by hand, intervals, channels and CAC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.lifetime import BGNBD, GammaGamma, rfm_summary
from closedloop_nb.lifetime.value import clv_to_cac, customer_lifetime_value, subscription_clv


@pytest.fixture(scope="module")
def fitted(cdnow_transactions):
    raw = cdnow_transactions
    rfm = rfm_summary(raw, calibration_end="1997-09-30", unit="W")
    return rfm, BGNBD().fit(rfm), GammaGamma().fit(rfm)


def test_undiscounted_clv_is_expected_purchases_times_expected_spend(fitted):
    rfm, bg, gg = fitted
    v = customer_lifetime_value(bg, gg, rfm, horizon=12, period=52 / 12, discount_rate=0.0)
    want = (bg.conditional_expected_purchases(52, rfm["frequency"], rfm["recency"], rfm["T"])
            * gg.conditional_expected_spend(rfm["frequency"], rfm["monetary_value"]))
    np.testing.assert_allclose(v["clv"], want, rtol=1e-9)


def test_discounting_period_by_period(fitted):
    rfm, bg, gg = fitted
    one = rfm.iloc[[0, 5, 9]]
    v = customer_lifetime_value(bg, gg, one, horizon=2, period=4.0, discount_rate=0.05, margin=0.3)
    x, tx, T = one["frequency"], one["recency"], one["T"]
    e1 = bg.conditional_expected_purchases(4.0, x, tx, T)
    e2 = bg.conditional_expected_purchases(8.0, x, tx, T)
    spend = gg.conditional_expected_spend(x, one["monetary_value"])
    np.testing.assert_allclose(v["clv"], 0.3 * spend * (e1 / 1.05 + (e2 - e1) / 1.05 ** 2), rtol=1e-12)


def test_intervals_surround_the_estimate(fitted):
    rfm, bg, gg = fitted
    v = customer_lifetime_value(bg, gg, rfm.head(200), n_draws=200, seed=1)
    assert (v["lower"] <= v["clv"] * 1.0001).all() and (v["clv"] <= v["upper"] * 1.0001).all()
    assert (v["upper"] > v["lower"]).mean() > 0.99
    with pytest.raises(ValueError, match="horizon"):
        customer_lifetime_value(bg, gg, rfm, horizon=0)


def subs_table() -> pd.DataFrame:
    # a pays Jan-Feb then churns in March; b pays Jan-Mar (the data end); c pays Feb-Mar
    return pd.DataFrame({
        "customer_id": ["a", "b", "c", "a"],
        "month": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-02-01", "2024-03-01"]),
        "movement": ["new", "new", "new", "churn"], "mrr_delta": [100.0, 200.0, 50.0, -100.0],
        "mrr": [100.0, 200.0, 50.0, 0.0]})


def test_subscription_clv_by_hand_with_discounting():
    v = subscription_clv(subs_table(), annual_discount=0.12).loc["All"]
    # lifetimes: a 2 (churned), b 3 and c 2 (still paying). KM: S(0) = S(1) = 1, S(2) = 2/3 (one of
    # the three at risk after two months churned); the longest follow-up is 3 months
    m = 1.12 ** (1 / 12) - 1
    assert v["horizon_months"] == 3
    assert v["expected_months"] == pytest.approx(1 + 1 / (1 + m) + (2 / 3) / (1 + m) ** 2)
    # ARPA per paid customer-month: (2 x 100 + 3 x 200 + 2 x 50) / 7; churn 1 per 7 paid months
    assert v["arpa"] == pytest.approx(900 / 7) and v["monthly_churn"] == pytest.approx(1 / 7)
    assert v["naive_ltv"] == pytest.approx(900)
    assert v["clv"] == pytest.approx(v["arpa"] * v["expected_months"])


def test_subscription_clv_by_channel_and_shares():
    subs = subs_table()
    by = subscription_clv(subs, pd.Series({"a": "Email", "b": "Email", "c": "Paid Search"}, name="channel"))
    assert by.loc["Paid Search", "customers"] == 1 and np.isinf(by.loc["Paid Search", "naive_ltv"])
    assert by.loc["Email", "monthly_churn"] == pytest.approx(1 / 5)  # a's churn over 2 + 3 paid months
    # splitting b half and half moves half a customer (and half its months) to Paid Search
    shares = pd.DataFrame({"customer_id": ["a", "b", "b", "c"],
                           "channel": ["Email", "Email", "Paid Search", "Paid Search"],
                           "share": [1.0, 0.5, 0.5, 1.0]})
    split = subscription_clv(subs, shares)
    assert split["customers"].to_dict() == {"Email": 1.5, "Paid Search": 1.5}
    assert split.loc["Paid Search", "arpa"] == pytest.approx((0.5 * 3 * 200 + 2 * 50) / (0.5 * 3 + 2))


def test_clv_to_cac_leaves_unpaid_channels_without_a_ratio():
    clv = pd.DataFrame({"clv": [3000.0, 500.0]}, index=["Paid Search", "Email"])
    perf = pd.DataFrame({"cac": [1000.0, np.nan]}, index=["Paid Search", "Email"])
    r = clv_to_cac(clv, perf)
    assert r.loc["Paid Search", "clv_to_cac"] == 3.0 and np.isnan(r.loc["Email", "clv_to_cac"])


def test_degenerate_fits_say_so_and_clv_intervals_are_left_empty(fitted):
    from closedloop_nb.config import SAMPLE_DIR
    from closedloop_nb.validation import load_dataset

    # the bundled sample's 25 repeat buyers do not identify Gamma-Gamma: p runs off to infinity
    orders = load_dataset(SAMPLE_DIR).tables["orders"]
    rfm = rfm_summary(orders, calibration_end="2024-09-30", unit="W")
    with pytest.warns(UserWarning, match="edge of its parameter space"):
        gg = GammaGamma().fit(rfm)
    # ... nor BG/NBD's spread of dropout probabilities: a and b run off together along a ridge
    with pytest.warns(UserWarning, match=r"a \+ b = .*dropout probabilities all alike"):
        bg = BGNBD().fit(rfm)
    assert not bg.identified_ and not gg.identified_
    from closedloop_nb.lifetime.value import parameter_interval

    with pytest.raises(ValueError, match="do not identify the model"):
        parameter_interval(bg, lambda m: m.expected_purchases(10.0))
    with pytest.warns(UserWarning, match="no interval"):
        v = customer_lifetime_value(bg, gg, rfm, n_draws=10)
    assert v["lower"].isna().all() and v["clv"].notna().all()


def test_parameter_intervals_cover_a_known_truth_at_about_their_level():
    """Simulate BG/NBD data from known parameters; the 90% interval of E[X(39)] should contain the
    true value in about 90% of data sets."""
    from closedloop_nb.lifetime.simulate import simulate_bgnbd
    from closedloop_nb.lifetime.value import parameter_interval

    truth = BGNBD()
    truth.params_ = {"r": 0.5, "alpha": 6.0, "a": 0.9, "b": 3.0}
    want = float(truth.expected_purchases(39.0))
    hits = 0
    for seed in range(20):
        m = BGNBD().fit(simulate_bgnbd(1500, 0.5, 6.0, 0.9, 3.0, T=39.0, seed=100 + seed))
        lo, hi = parameter_interval(m, lambda mm: mm.expected_purchases(39.0), n_draws=200, alpha=0.1,
                                    seed=seed)
        hits += lo <= want <= hi
    assert hits >= 15  # Binomial(20, 0.9): fewer than 15 has probability < 1.2%


def test_intervals_are_the_quantiles_of_each_customers_draws(fitted):
    """Expected purchases are computed once per distinct (x, t_x, T) and the quantiles in one pass:
    the interval of every customer is still the quantile of that customer's own draws."""
    from closedloop_nb.lifetime.value import _draw

    rfm, bg, gg = fitted
    some = rfm.iloc[:300]
    assert len(some[["frequency", "recency", "T"]].drop_duplicates()) < len(some) / 2  # many alike
    v = customer_lifetime_value(bg, gg, some, horizon=3, period=4.0, n_draws=40, seed=5)
    rng = np.random.default_rng(5)
    x, tx, T, m = (some[c] for c in ("frequency", "recency", "T", "monetary_value"))
    draws = []
    for _ in range(40):
        b, g = _draw(bg, rng), _draw(gg, rng)
        e = [b.conditional_expected_purchases(t, x, tx, T) for t in (0.0, 4.0, 8.0, 12.0)]
        discounted = sum((e[i] - e[i - 1]) / 1.01 ** i for i in (1, 2, 3))
        draws.append(g.conditional_expected_spend(x, m) * discounted)
    draws = np.column_stack(draws)
    np.testing.assert_allclose(v["lower"], np.nanquantile(draws, 0.025, axis=1), rtol=1e-12)
    np.testing.assert_allclose(v["upper"], np.nanquantile(draws, 0.975, axis=1), rtol=1e-12)
