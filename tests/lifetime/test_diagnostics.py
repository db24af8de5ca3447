"""Fit diagnostics on CDNOW: exact expected counts, the published picture, the grid."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from closedloop_nb.lifetime import BGNBD, rfm_summary  # noqa: E402
from closedloop_nb.lifetime.diagnostics import (  # noqa: E402
    frequency_recency_matrix,
    holdout_by_frequency,
    period_transactions,
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
