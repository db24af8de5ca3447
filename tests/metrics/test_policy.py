"""The report credit policy: non-negative shares, deals credited in full, revenue conserved exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.metrics import channel_performance, deal_credits
from closedloop_nb.metrics.policy import negative_credit, nonnegative_credits


def test_hand_worked_deal():
    # d1: 0.75 + 0.5 positive (sum 1.25) -> 0.6 and 0.4; -0.25 -> 0; d2 untouched
    c = pd.DataFrame({"deal_id": ["d1", "d1", "d1", "d2", "d2"],
                      "channel": ["Email", "Video", "Search", "Email", "Search"],
                      "share": [0.75, -0.25, 0.5, 0.3, 0.7]})
    out = nonnegative_credits(c)
    assert out["share"].tolist() == pytest.approx([0.6, 0.0, 0.4, 0.3, 0.7])
    assert out.attrs["adjusted_deals"] == 1
    assert out["share"].iloc[3:].tolist() == c["share"].iloc[3:].tolist()  # exactly as the model gave


def test_deal_without_positive_share_is_split_equally_or_goes_to_its_lead_source():
    c = pd.DataFrame({"deal_id": ["d1", "d1", "d2"], "person_id": ["p1", "p1", "p2"],
                      "channel": ["Email", "Video", "Search"], "share": [0.0, -0.5, 1.0]})
    equal = nonnegative_credits(c)
    assert equal["share"].tolist() == [0.5, 0.5, 1.0]
    to_source = nonnegative_credits(c, fallback=pd.Series({"p1": "Organic Search"}))
    d1 = to_source[to_source["deal_id"] == "d1"]
    assert d1[["channel", "share"]].values.tolist() == [["Organic Search", 1.0]]


def test_missing_shares_are_refused():
    c = pd.DataFrame({"deal_id": ["d1"], "channel": ["Email"], "share": [np.nan]})
    with pytest.raises(ValueError, match="missing or infinite"):
        nonnegative_credits(c)


@pytest.fixture(scope="module")
def shapley_model(sample):
    return deal_credits(sample.tables, "shapley_model")


def test_shapley_model_credits_become_nonnegative_and_conserve_revenue(sample, shapley_model):
    raw = shapley_model
    assert (raw["share"] < 0).any(), "the fixture should exercise negative shares"
    fixed = nonnegative_credits(raw)
    assert (fixed["share"] >= 0).all() and (fixed["share"] <= 1).all()
    per_deal = fixed.groupby("deal_id")["share"].sum()
    assert np.allclose(per_deal, 1.0, atol=1e-12)
    deals = sample.tables["deals"]
    won = deals[deals["won"].fillna(False).astype(bool)]
    perf = channel_performance(sample.tables, fixed)
    # the CRM's revenue and pipeline, to the penny, and no channel below zero
    assert perf.loc["Total", "revenue"] == pytest.approx(won["amount"].sum(), abs=1e-6)
    assert perf.loc["Total", "pipeline"] == pytest.approx(deals["amount"].sum(), abs=1e-6)
    channels = perf.drop(index="Total")
    assert (channels[["revenue", "customers", "pipeline", "opportunities"]] >= 0).all().all()


def test_negative_credit_names_each_channel_and_its_value(sample, shapley_model):
    neg = negative_credit(shapley_model, sample.tables["deals"])
    raw = shapley_model.merge(sample.tables["deals"][["deal_id", "amount"]], on="deal_id")
    below = raw[raw["share"] < 0]
    assert set(neg.index) == set(below["channel"])
    assert neg["negative_share"].sum() == pytest.approx(below["share"].sum())
    assert neg["negative_value"].sum() == pytest.approx((below["share"] * below["amount"]).sum())
    assert (neg["deals_negative"] <= neg["deals_credited"]).all()


def test_deal_trail_lists_each_won_deals_touches_and_shares(hand):
    from closedloop_nb.metrics.policy import deal_trail

    credits = deal_credits(hand, "linear")
    feb = deal_trail(hand, credits, "2024-02")
    # d1 (person A): Email on Jan 1 and Paid Search on Jan 3 before the deal was created on Jan 10
    assert feb[["deal_id", "amount", "journey", "credit"]].values.tolist() == [
        ["d1", 1200.0, "Email > Paid Search", "Email 50% · Paid Search 50%"]]
    jan = deal_trail(hand, credits, "2024-01")
    assert jan[["deal_id", "journey", "credit"]].values.tolist() == [
        ["d3", "(no touches)", "(no touches) 100%"]]
    assert deal_trail(hand, credits, "2024-03").empty


def test_distinct_deals_count_deals_not_credited_shares(hand):
    from closedloop_nb.metrics.policy import distinct_deals, distinct_deals_by_stage

    credits = deal_credits(hand, "linear")
    jan = distinct_deals(hand, credits, "2024-01")
    # created in January: d1 (Email, Paid Search half each) and d3 (no touches); won: d3
    assert jan.loc["Email"].tolist() == [1, 0] and jan.loc["(no touches)"].tolist() == [1, 1]
    assert jan.loc["Total"].tolist() == [2, 1]
    stages = distinct_deals_by_stage(hand, credits, "2024-02")
    # February: d2 (Paid Search) created; d1 won (Email, Paid Search)
    assert stages.loc["Paid Search", "opportunity"] == 1 and stages.loc["Paid Search", "closed_won"] == 1
    assert stages.loc["Email", "closed_won"] == 1
