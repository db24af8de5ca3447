"""MRR, ARR and net revenue retention by source, by hand and reconciled to the total MRR."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.lifetime.subscriptions import mrr_movements
from closedloop_nb.metrics import NO_TOUCHES, customer_credits, deal_credits, mrr_by_source, nrr_by_source
from closedloop_nb.metrics.subscriptions import NO_DEAL


def value(m, month, channel, col="mrr"):
    return float(m.loc[(m["month"] == month) & (m["channel"] == channel), col].sum())


def test_mrr_by_source_by_hand(hand):
    m = mrr_by_source(hand, deal_credits(hand, "linear"))
    # A (d1: Email / Paid Search 50/50) pays 100 from Feb, 120 from Mar; C (d3: no touches) 50 Feb-Mar
    assert value(m, "2024-02", "Email") == 50 and value(m, "2024-02", NO_TOUCHES) == 50
    assert value(m, "2024-03", "Paid Search") == 60 and value(m, "2024-03", "Paid Search", "arr") == 720
    assert value(m, "2024-03", "Email", "expansion") == 10
    assert value(m, "2024-04", NO_TOUCHES) == 0 and value(m, "2024-04", NO_TOUCHES, "churn") == 50
    assert value(m, "2024-02", "Email", "customers") == 0.5


def test_nrr_by_source_by_hand(hand):
    nrr = nrr_by_source(hand, deal_credits(hand, "linear"), cohort_month="2024-03", months=2)
    # cohort: paying at the end of Feb (A 100, C 50); two months later A pays 120, C nothing
    assert nrr.loc["Email", "net_revenue_retention"] == pytest.approx(1.2)
    assert nrr.loc["Email", "gross_revenue_retention"] == pytest.approx(1.0)
    assert nrr.loc[NO_TOUCHES, "net_revenue_retention"] == 0
    assert nrr.loc["Total", "net_revenue_retention"] == pytest.approx(120 / 150)
    assert nrr.loc["Total", "gross_revenue_retention"] == pytest.approx(100 / 150)
    with pytest.raises(ValueError, match="needs both ends"):
        nrr_by_source(hand, deal_credits(hand, "linear"), cohort_month="2024-03", months=24)


def test_customers_without_deals_are_shown(hand):
    tables = dict(hand)
    subs = tables["subscriptions"]
    extra = subs.iloc[[0]].assign(customer_id="Z")
    tables["subscriptions"] = pd.concat([subs, extra], ignore_index=True)
    cc = customer_credits(tables, deal_credits(hand, "linear"))
    assert cc.loc[cc["customer_id"] == "Z", "channel"].tolist() == [NO_DEAL]


def test_mrr_by_source_reconciles_to_total_mrr(sample):
    tables = sample.tables
    for model in ("lead_source", "linear"):
        m = mrr_by_source(tables, deal_credits(tables, model))
        total = m.groupby("month")[["mrr", "new", "churn", "expansion"]].sum()
        ref = mrr_movements(tables["subscriptions"])
        ref.index = ref.index.strftime("%Y-%m")
        np.testing.assert_allclose(total["mrr"], ref["mrr_end"].reindex(total.index), rtol=1e-9)
        np.testing.assert_allclose(total["new"], ref["new"].reindex(total.index), rtol=1e-9)
        np.testing.assert_allclose(total["churn"], ref["churn"].reindex(total.index), rtol=1e-9)
