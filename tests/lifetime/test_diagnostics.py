"""Fit diagnostics on CDNOW: exact expected counts, the published picture, the grid."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from closedloop_nb.lifetime import BGNBD, rfm_summary  # noqa: E402
from closedloop_nb.lifetime.diagnostics import (  # noqa: E402
    cumulative_tracking,
    frequency_recency_matrix,
    holdout_by_frequency,
    period_transactions,
    plot_cumulative_tracking,
    plot_holdout_by_frequency,
    plot_period_transactions,
)


@pytest.fixture(scope="module")
def cdnow(cdnow_transactions):
    raw = cdnow_transactions
    rfm = rfm_summary(raw, calibration_end="1997-09-30", holdout_end="1998-06-30", unit="W")
    return rfm, BGNBD().fit(rfm)


def test_the_pmf_is_a_distribution_whose_mean_is_the_expectation(cdnow):
    _, m = cdnow
    t = np.array([1.0, 10.0, 39.0, 78.0])
    probs = np.array([m.probability_of_purchases(x, t) for x in range(1000)])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-10)
    # Eq. 8 (the pmf) and Eq. 7 (the mean) of Fader, Hardie & Lee are separate formulas: they agree
    mean = (np.arange(1000)[:, None] * probs).sum(axis=0)
    np.testing.assert_allclose(mean, m.expected_purchases(t), rtol=1e-9)


def test_period_transactions_on_cdnow(cdnow):
    rfm, m = cdnow
    pt = period_transactions(m, rfm)
    # the calibration-period counts of the CDNOW sample as in Fader, Hardie & Lee's Figure 2
    assert pt["actual"].tolist() == [1411, 439, 214, 100, 62, 38, 29, 64]
    assert pt["expected"].sum() == pytest.approx(len(rfm))
    # the model fits: the paper's picture, and no evidence against it at 5%
    assert pt.attrs["df"] == 8 - 1 - 4 and pt.attrs["p_value"] > 0.05
    assert plot_period_transactions(pt).get_title().startswith("Frequency")


def test_holdout_by_frequency_and_grid(cdnow):
    rfm, m = cdnow
    h = holdout_by_frequency(m, rfm)
    assert (h["customers"] * h["actual"]).sum() == 1882  # the holdout repeat purchases (REFERENCES)
    assert h["expected"].is_monotonic_increasing  # more purchases before, more expected after
    plot_holdout_by_frequency(h)
    grid = frequency_recency_matrix(m, 38.86, max_frequency=5, steps=5)
    assert grid.shape == (6, 6) and (grid.loc[0] == 1).all()
    # at fixed frequency, a more recent last purchase means more likely alive
    assert (np.diff(grid.loc[1:].to_numpy(), axis=1) >= 0).all()
    with pytest.raises(KeyError, match="holdout_end"):
        holdout_by_frequency(m, rfm.drop(columns="frequency_holdout"))


def test_cumulative_tracking_on_cdnow(cdnow, cdnow_transactions):
    rfm, m = cdnow
    track = cumulative_tracking(m, cdnow_transactions, "1997-09-30", "1998-06-30", unit="W")
    cal = track[track["period"] == "calibration"]
    hold = track[track["period"] == "holdout"]
    # actual counts: the calibration repeat purchases of the RFM table, and the published 1,882 after
    assert cal["actual"].iloc[-1] == rfm["frequency"].sum()
    assert hold["actual_in_period"].sum() == 1882
    # expected at the end of calibration: every customer's E[X(T_i)] with T_i as rfm_summary has it
    assert cal["expected"].iloc[-1] == pytest.approx(m.expected_purchases(rfm["T"].to_numpy()).sum())
    # weekly steps; the calibration and holdout rows end on the given dates
    assert track.index[-1].strftime("%Y-%m-%d") == "1998-06-30"
    assert cal.index[-1].strftime("%Y-%m-%d") == "1997-09-30"
    # the fitted BG/NBD tracks the 78 weeks to within 5% (a sanity bound: 4,161 expected, 4,339 actual)
    assert hold["expected"].iloc[-1] == pytest.approx(hold["actual"].iloc[-1], rel=0.05)
    assert track["expected"].is_monotonic_increasing and track["actual"].is_monotonic_increasing
    # time-zone-aware orders and dates (as the loaders give them) mean the same calendar days
    aware = cdnow_transactions.assign(timestamp=cdnow_transactions["timestamp"].dt.tz_localize("UTC"))
    end = aware["timestamp"].max()
    assert str(end.tz) == "UTC"
    naive = cumulative_tracking(m, cdnow_transactions, "1997-09-30", end.tz_localize(None))
    pd.testing.assert_frame_equal(cumulative_tracking(m, aware, "1997-09-30", end, unit="W"), naive)
    ax = plot_cumulative_tracking(track)
    assert ax.get_title().startswith("Tracking") and len(ax.lines) == 3
    unknown = cdnow_transactions.astype({"customer_id": "Int64"})
    unknown.loc[[5, 9], "customer_id"] = pd.NA  # named, not dropped by a group-by
    with pytest.raises(ValueError, match=r"'customer_id': no customer in 2 row\(s\).*\[6, 10\]"):
        cumulative_tracking(m, unknown, "1997-09-30", "1998-06-30", unit="W")


def test_cumulative_tracking_recovers_a_simulated_cohort():
    """Customers join over 12 weeks and buy as the BG/NBD says (known parameters, days as the
    unit): the actual cumulative curve follows the exact expectation."""
    from closedloop_nb.lifetime.simulate import simulate_orders

    r, alpha, a, b = 2.0, 150.0, 0.5, 3.0  # about one purchase in 75 days: few same-day merges
    orders = simulate_orders(50_000, r, alpha, a, b, "2024-01-01", 84, "2024-10-15", seed=5)
    m = BGNBD()
    m.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    track = cumulative_tracking(m, orders, "2024-04-30", "2024-10-15", unit="D")
    late = track.iloc[60:]  # from day 60: enough purchases for a 3% comparison
    # same-day purchases merge and a day's purchases count from its start: a small, known bias
    np.testing.assert_allclose(late["actual"], late["expected"], rtol=0.03)


def test_cumulative_tracking_refuses_bad_input(cdnow_transactions):
    m = BGNBD()
    m.params_ = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    with pytest.raises(ValueError, match="unit"):
        cumulative_tracking(m, cdnow_transactions, "1997-09-30", unit="M")
    with pytest.raises(ValueError, match="before calibration_end"):
        cumulative_tracking(m, cdnow_transactions, "1997-09-30", "1997-01-01")
    with pytest.raises(ValueError, match="no customer"):
        cumulative_tracking(m, cdnow_transactions, "1990-01-01")
    with pytest.raises(KeyError, match="customer_id"):
        cumulative_tracking(m, cdnow_transactions.drop(columns="customer_id"), "1997-09-30")
