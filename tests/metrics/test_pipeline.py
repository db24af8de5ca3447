"""Pipeline by stage and sales cycle, worked out by hand (see conftest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.metrics import NO_TOUCHES, deal_credits, deal_stages, pipeline_by_stage, sales_cycle


def cell(p: pd.DataFrame, month: str, stage: str, channel: str) -> tuple[float, float]:
    r = p[(p["month"] == month) & (p["stage"] == stage) & (p["channel"] == channel)]
    return (float(r["deals"].sum()), float(r["value"].sum())) if len(r) else (0.0, 0.0)


def test_pipeline_by_stage_by_hand(hand):
    p = pipeline_by_stage(hand, deal_credits(hand, "linear"))
    # d1 (Email/Paid Search 50/50): opportunity in Jan at 1000, proposal in Jan at 1200, won in Feb at 1200
    assert cell(p, "2024-01", "opportunity", "Email") == (0.5, 500.0)
    assert cell(p, "2024-01", "proposal", "Paid Search") == (0.5, 600.0)
    assert cell(p, "2024-02", "closed_won", "Email") == (0.5, 600.0)
    # d2 (Paid Search): opportunity in Feb; lost, so no later stage
    assert cell(p, "2024-02", "opportunity", "Paid Search") == (1.0, 500.0)
    assert cell(p, "2024-03", "closed_won", "Paid Search") == (0.0, 0.0)
    # d3 was won without a recorded proposal: it passed the proposal stage when it was won (Jan 30)
    assert cell(p, "2024-01", "proposal", NO_TOUCHES) == (1.0, 300.0)
    assert cell(p, "2024-01", "closed_won", NO_TOUCHES) == (1.0, 300.0)


@pytest.mark.filterwarnings("ignore:credited by the model:UserWarning")
def test_pipeline_reconciles_to_the_crm(sample):
    tables = sample.tables
    deals = tables["deals"]
    for model in ("lead_source", "position_based", "markov"):
        p = pipeline_by_stage(tables, deal_credits(tables, model))
        by_stage = p.groupby("stage", observed=True)[["deals", "value"]].sum()
        won = deals["won"].fillna(False).astype(bool)
        assert by_stage.loc["opportunity", "deals"] == pytest.approx(len(deals))
        assert by_stage.loc["closed_won", "value"] == pytest.approx(deals.loc[won, "amount"].sum())
        assert by_stage.loc["closed_won", "deals"] == pytest.approx(won.sum())


def test_deal_stages_are_monotone(sample):
    s = deal_stages(sample.tables).pivot(index="deal_id", columns="stage", values="reached_at")
    # a deal reaches a stage no later than the next one
    ok = (s["opportunity"] <= s["proposal"]) | s["proposal"].isna()
    assert ok.all()
    assert ((s["proposal"] <= s["closed_won"]) | s["closed_won"].isna()).all()
    assert (s["proposal"].notna() | s["closed_won"].isna()).all()


def test_credits_must_cover_every_deal(hand):
    c = deal_credits(hand, "linear")
    with pytest.raises(ValueError, match="no credits"):
        pipeline_by_stage(hand, c[c["deal_id"] != "d2"])
    with pytest.raises(ValueError, match="do not add up to 1"):
        pipeline_by_stage(hand, c[~((c["deal_id"] == "d1") & (c["channel"] == "Email"))])


def test_sales_cycle_by_hand(hand):
    cyc = sales_cycle(hand, deal_credits(hand, "linear"))
    # won deals: d1 42 days after its lead (Jan 4 -> Feb 15), 45 after the first touch (Jan 1);
    # d3 23 days after its lead (Jan 7 -> Jan 30), no touch
    assert cyc.loc["Email", "deals"] == 0.5
    assert cyc.loc["Email", "median_days_from_lead"] == pytest.approx(42)
    assert cyc.loc["Email", "median_days_from_first_touch"] == pytest.approx(45)
    assert np.isnan(cyc.loc[NO_TOUCHES, "median_days_from_first_touch"])
    total = cyc.loc["Total"]
    assert total["deals"] == 2
    assert total["median_days_from_lead"] == pytest.approx(23)  # half the weight at 23 days
    assert (total["share <= 30 days"], total["share 31-90 days"], total["share > 90 days"]) == (0.5, 0.5, 0)
    seg = sales_cycle(hand, deal_credits(hand, "linear"), by="segment")
    assert seg.loc[(NO_TOUCHES, "Enterprise"), "deals"] == 1.0
