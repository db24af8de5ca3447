"""Month over month on the hand-worked loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.metrics import (
    compare,
    deal_credits,
    headline_metrics,
    headline_sentence,
    month_over_month,
    previous_period,
)


def test_headlines_of_a_month_by_hand(hand):
    h = headline_metrics(hand, deal_credits(hand, "linear"), "2024-02")
    # February: d1 won (1200), d2 created (500), B became MQL, Paid Search spent 100,
    # MRR 150 at the end (A 100 + C 50), all of it new
    assert h["revenue"] == 1200 and h["customers"] == 1 and h["opportunities"] == 1
    assert h["pipeline"] == 500 and h["mqls"] == 1 and h["leads"] == 0
    assert np.isnan(h["mql_rate"])  # no new leads: no rate, not a division error
    assert h["spend"] == 100 and h["roi"] == pytest.approx(11.0)
    assert h["mrr_end"] == 150 and h["net_new_mrr"] == 150


def test_month_over_month_by_hand(hand):
    mom = month_over_month(hand, deal_credits(hand, "linear"), "2024-02")
    # January: d3 won (300); spend 150; three leads
    assert mom.loc["revenue"].tolist() == [1200, 300, 900, 3.0]
    assert mom.loc["spend", "change"] == -50 and mom.loc["leads", "pct_change"] == -1.0
    # from nothing: a change, but no percentage
    assert mom.loc["mrr_end", "change"] == 150 and np.isnan(mom.loc["mrr_end", "pct_change"])
    by = month_over_month(hand, deal_credits(hand, "linear"), "2024-02", by_channel=True)
    assert by.loc["Paid Search", ("revenue", "current")] == 600
    assert by.loc["Paid Search", ("revenue", "previous")] == 0


def test_compare_and_previous_period():
    assert previous_period("2024-01") == "2023-12" and previous_period("2024Q1", "Q") == "2023Q4"
    c = compare(pd.Series({"a": 5.0, "b": -2.0}), pd.Series({"a": 4.0, "b": -4.0}))
    assert c.loc["a", "pct_change"] == 0.25
    assert np.isnan(c.loc["b", "pct_change"])  # negative base: no percentage


def test_marketing_revenue_leaves_out_deals_nobody_touched(hand):
    mom = month_over_month(hand, deal_credits(hand, "linear"), "2024-02")
    # January's only revenue is d3 (300), whose person never touched the site: not marketing's
    assert mom.loc["marketing_revenue"].tolist()[:3] == [1200, 0, 1200]
    assert mom.loc["marketing_roas", "current"] == 12.0 and mom.loc["marketing_roas", "previous"] == 0
    text = headline_sentence(mom, "2024-02", "GBP")
    assert "£1,500" not in text and "marketing generated £1,200" in text and "(12.0:1)" in text


def test_the_headline_sentence_escapes_the_currency_code_from_the_data(hand):
    mom = month_over_month(hand, deal_credits(hand, "linear"), "2024-02")
    payload = "<img src=x onerror=alert(1)>"
    text = headline_sentence(mom, "2024-02", payload)
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "marketing generated 1,200 &lt;img" in text          # the figure still reads, its unit as text
