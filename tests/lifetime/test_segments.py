"""The likelihood-ratio test of "the channel does not matter": size under the null, power when it does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.lifetime import GammaGamma, segment_lrt


def spenders(rng, n, gamma, p=6.0, q=4.0):
    nu = rng.gamma(q, 1 / gamma, n)
    x = rng.integers(1, 6, n)
    spend = [rng.gamma(p, 1 / v, k).mean() for v, k in zip(nu, x, strict=True)]
    return pd.DataFrame({"frequency": x, "monetary_value": spend})


# a few of the 60 half-samples of 150 customers genuinely put the maximum at p -> infinity
@pytest.mark.filterwarnings("ignore:GammaGamma ran to the edge")
def test_size_under_the_null_is_about_the_level():
    rng = np.random.default_rng(11)
    rejected = 0
    for _ in range(30):
        rfm = spenders(rng, 300, 15.0)
        seg = pd.Series(rng.choice(["A", "B"], len(rfm)), index=rfm.index)
        rejected += segment_lrt(GammaGamma, rfm, seg).attrs["p_value"] < 0.05
    assert rejected <= 5  # Binomial(30, 0.05): more than 5 has probability < 1%


def test_power_and_the_table():
    rng = np.random.default_rng(12)
    rfm = pd.concat([spenders(rng, 300, 15.0), spenders(rng, 300, 30.0), spenders(rng, 20, 15.0)],
                    ignore_index=True)
    seg = pd.Series(["A"] * 300 + ["B"] * 300 + ["tiny"] * 20, index=rfm.index, name="channel")
    t = segment_lrt(GammaGamma, rfm, seg)
    assert t.attrs["p_value"] < 1e-6 and t.attrs["df"] == 2 * 3  # A, B, (other) -> 2 x 3 parameters
    assert list(t.index) == ["(other)", "A", "B", "All"] and t.index.name == "channel"
    # segments' own fits are at least as likely as the pooled one on their customers
    assert t.drop(index="All")["log_likelihood"].sum() >= t.loc["All", "log_likelihood"]
    with pytest.raises(ValueError, match="fewer than two segments"):
        segment_lrt(GammaGamma, rfm, seg, min_customers=1000)
