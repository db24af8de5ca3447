"""Revenue, spend and their ratios by hand; edge cases of ROI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.metrics import (
    NO_TOUCHES,
    channel_performance,
    currency_of,
    deal_credits,
    money,
    revenue_and_roi,
    revenue_by_model,
)
from closedloop_nb.metrics import best_and_worst as m_best_and_worst


def test_channel_performance_by_hand(hand):
    perf = channel_performance(hand, deal_credits(hand, "linear"))
    ps, email, display = perf.loc["Paid Search"], perf.loc["Email"], perf.loc["Display"]
    # revenue: d1 (1200) half to Paid Search; spend 200
    assert ps["revenue"] == 600 and ps["spend"] == 200 and ps["roi"] == pytest.approx(2.0)
    assert ps["roas"] == pytest.approx(3.0)
    assert ps["customers"] == 0.5 and ps["cac"] == pytest.approx(400)
    # B's lead source is Paid Search; A's is Email (first touch): one lead each
    assert ps["leads"] == 1 and ps["cost_per_lead"] == 200
    assert ps["opportunities"] == 1.5 and ps["cost_per_opportunity"] == pytest.approx(200 / 1.5)
    assert ps["pipeline"] == pytest.approx(0.5 * 1200 + 500)
    # spend and no revenue: -100%, not an error; revenue and no spend: undefined
    assert display["roi"] == -1.0 and display["revenue"] == 0
    assert np.isnan(email["roi"]) and np.isnan(email["cost_per_lead"])
    total = perf.loc["Total"]
    assert total["revenue"] == 1500 and total["spend"] == 250  # the CRM's won revenue; all the spend
    assert total["roi"] == pytest.approx((1500 - 250) / 250)
    assert perf.drop(index="Total")[["leads", "opportunities", "customers"]].sum().tolist() == [3, 3, 2]


def test_channel_performance_for_one_month(hand):
    jan = channel_performance(hand, deal_credits(hand, "linear"), period="2024-01")
    # January: d3 won (300, no touches); spend 100 Paid Search + 50 Display; three leads
    assert jan.loc["Total", "revenue"] == 300 and jan.loc[NO_TOUCHES, "revenue"] == 300
    assert jan.loc["Total", "spend"] == 150 and jan.loc["Total", "leads"] == 3
    assert jan.loc["Paid Search", "roi"] == -1.0


def test_roi_edge_cases_and_reconciliation():
    revenue = pd.Series({"Email": 1000.0, "Paid Search": 0.0, NO_TOUCHES: 0.0})
    spend = pd.Series({"Email": 200.0, "Paid Search": 50.0, "Display": 0.0})
    r = revenue_and_roi(revenue, spend)
    assert r.loc["Email", "roi"] == pytest.approx(4.0) and r.loc["Email", "roas"] == pytest.approx(5.0)
    assert r.loc["Paid Search", "roi"] == -1.0          # spend and no revenue: -100%
    assert np.isnan(r.loc[NO_TOUCHES, "roi"])          # revenue without spend: undefined
    assert r.loc["Total", "revenue"] == revenue.sum() and r.loc["Total", "spend"] == 250.0
    assert r.loc["Total", "roi"] == pytest.approx((1000 - 250) / 250)


def test_performance_reconciles_on_synthetic_data(sample):
    tables = sample.tables
    perf = channel_performance(tables, deal_credits(tables, "j_shaped"))
    deals = tables["deals"]
    won = deals["won"].fillna(False).astype(bool)
    assert perf.loc["Total", "revenue"] == pytest.approx(deals.loc[won, "amount"].sum())
    assert perf.loc["Total", "spend"] == pytest.approx(tables["spend"]["cost"].sum())
    assert perf.drop(index="Total")["revenue"].sum() == pytest.approx(perf.loc["Total", "revenue"])
    assert perf.loc["Total", "leads"] == len(tables["leads"])


def test_best_and_worst_leave_out_buckets_and_empty_ratios(hand):
    perf = channel_performance(hand, deal_credits(hand, "linear"))
    bw = m_best_and_worst(perf, by="roi", n=1, paid_only=True)
    assert bw.loc["best 1", "channel"] == "Paid Search" and bw.loc["worst 1", "channel"] == "Display"
    by_revenue = m_best_and_worst(perf, by="revenue", n=3)
    assert NO_TOUCHES not in set(by_revenue["channel"]) and "Total" not in set(by_revenue["channel"])


def test_currency_is_one_or_refused(hand):
    assert currency_of(hand) == ""
    tables = dict(hand, deals=hand["deals"].assign(currency=["GBP", "GBP", "USD"]))
    with pytest.raises(ValueError, match="several currencies"):
        currency_of(tables)
    assert money(1234.4, "GBP") == "£1,234" and money(-5, "XYZ") == "-5 XYZ" and money(np.nan) == "n/a"


def test_revenue_by_model_moves_the_split_not_the_total(hand):
    r = revenue_by_model(hand, ["first_touch", "last_touch", "linear"])
    totals = r.groupby("model")["revenue"].sum()
    assert totals.tolist() == [1500.0, 1500.0, 1500.0]
    by = r.set_index(["model", "channel"])["revenue"]
    # d1 (1200): all to Email under first touch, all to Paid Search under last touch
    assert by[("first_touch", "Email")] == 1200 and by[("last_touch", "Paid Search")] == 1200
