"""The synthetic generator: deterministic, internally consistent, and its ground truth is what the
data actually encodes (checked by an independent estimator, not by re-running its own arithmetic)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from closedloop_nb.schema import TABLES
from closedloop_nb.synth import CHANNELS, SEGMENTS, generate


def test_same_seed_same_tables_different_seed_different_tables():
    a, b, c = generate(3_000, seed=3), generate(3_000, seed=3), generate(3_000, seed=4)
    for name in a.tables:
        assert a.tables[name].equals(b.tables[name]), name
    pd.testing.assert_frame_equal(a.ground_truth, b.ground_truth)
    assert not a.tables["touchpoints"].equals(c.tables["touchpoints"])


def test_tables_follow_the_data_model(synthetic):
    optional = {"deal_contacts", "fx_rates"}  # tables synth does not generate
    assert set(synthetic.tables) == set(TABLES) - optional
    for name, spec in TABLES.items():
        if name in optional:
            continue
        names = synthetic.tables[name].column_names
        # every required column, in the schema's order; optional columns the generator has no values
        # for (spend.impressions, touchpoints.ad_group, ...) may be left out
        assert set(spec.required) <= set(names), name
        assert names == [c for c in spec.names if c in names], name


@pytest.fixture(scope="module")
def large():
    return generate(150_000, seed=11, dirty_share=0.0)


def test_ols_on_exposures_recovers_each_channels_incremental_effect(large):
    """P(lead) is linear in which channels a visitor saw, so OLS of lead on the channel dummies is an
    unbiased estimator of every beta: each must fall within 4 robust standard errors of the truth."""
    ex = large.exposures
    touched = ex[[c.name for c in CHANNELS]].any(axis=1)
    ex = ex[touched]
    X = sm.add_constant(ex[[c.name for c in CHANNELS]].astype(float))
    fit = sm.OLS(ex["lead"].astype(float), X).fit(cov_type="HC1")
    truth = large.ground_truth.set_index("channel")["incremental_effect"]
    z = (fit.params.drop("const") - truth.reindex(fit.params.index.drop("const"))) / fit.bse.drop("const")
    assert (z.abs() < 4).all(), z.round(2).to_dict()
    assert abs(fit.params["const"] - large.parameters["config"]["baseline"]) < 4 * fit.bse["const"]


def test_expected_leads_match_realised_leads(large):
    gt = large.ground_truth.set_index("channel")
    expected = gt.drop(index="(offline)")["expected_leads"].sum()
    realised = large.parameters["counts"]["web_leads"]
    assert abs(realised - expected) < 4 * np.sqrt(expected)
    # the web leads are exactly the visitors flagged as leads
    assert large.exposures["lead"].sum() == realised


def test_expected_won_deals_match_realised_outcomes_without_censoring():
    """Stretch the data so nearly every deal closes: realised wins approach the expectation."""
    data = generate(60_000, seed=5, months=12, dirty_share=0.0)
    deals = data.frame("deals")
    early = pd.Timestamp(data.parameters["period"]["start"]) + pd.DateOffset(months=4)
    leads = data.frame("leads").set_index("person_id")
    web = leads.index.isin(data.frame("identities")["person_id"])
    early_people = leads.index[(leads["created_at"] < early) & web]
    won = deals[deals["person_id"].isin(early_people) & deals["won"].fillna(False).astype(bool)]
    # P(won | segment) from the published funnel probabilities, for leads created early enough to close
    p_won = {s: float(np.prod(v["funnel"])) for s, v in SEGMENTS.items()}
    expected = leads.loc[early_people, "segment"].map(p_won).sum()
    assert abs(len(won) - expected) < 4 * np.sqrt(expected) + 0.1 * expected


def test_ground_truth_shares_sum_to_one_over_channels(synthetic):
    gt = synthetic.ground_truth
    channels = gt[~gt["channel"].str.startswith("(")]
    for col in ("lead_share", "won_share", "revenue_share"):
        assert channels[col].sum() == pytest.approx(1.0)
    assert gt.loc[gt["channel"] == "Unassigned", "expected_leads"].item() == 0


def test_every_web_lead_converts_on_a_form_chat_or_call_touch(sample):
    t, ident, leads = sample.tables["touchpoints"], sample.tables["identities"], sample.tables["leads"]
    first_match = ident[ident["method"].isin(["form", "chat", "call"])]
    conv = t.merge(first_match, on="visitor_id").query("timestamp == matched_at")
    assert conv["interaction_type"].isin(["form", "chat", "call"]).all()
    web_people = first_match["person_id"].unique()
    created = leads.set_index("person_id").loc[web_people, "created_at"]
    at = conv.groupby("person_id")["timestamp"].min().reindex(web_people)
    assert (at.to_numpy() == created.to_numpy()).all()


def test_offline_leads_have_no_web_identity(synthetic, sample):
    ident = sample.tables["identities"]
    web = ident.loc[ident["method"] != "crm_import", "person_id"].unique()
    n_offline = (~sample.tables["leads"]["person_id"].isin(web)).sum()
    assert n_offline == synthetic.parameters["counts"]["offline_leads"]
    offline_sources = sample.tables["leads"]["lead_source"].isin(["Trade Show", "Outbound", "Partner"])
    assert offline_sources.sum() == n_offline


def test_pipeline_is_time_ordered(sample):
    leads, deals = sample.tables["leads"].set_index("person_id"), sample.tables["deals"]
    assert (leads["mql_at"].dropna() >= leads.loc[leads["mql_at"].notna(), "created_at"]).all()
    assert (deals["created_at"].to_numpy() > leads.loc[deals["person_id"], "created_at"].to_numpy()).all()
    order = {"opportunity": 0, "proposal": 1, "closed_won": 2, "closed_lost": 2}
    hist = sample.tables["stage_history"].assign(rank=lambda h: h["stage"].map(order))
    hist = hist.sort_values(["deal_id", "rank"])
    assert (hist.groupby("deal_id")["entered_at"].diff().dropna() >= pd.Timedelta(0)).all()
    closed = deals["won"].notna()
    assert deals.loc[closed, "closed_at"].notna().all() and deals.loc[~closed, "closed_at"].isna().all()
    won_ids = set(deals.loc[deals["won"].fillna(False).astype(bool), "deal_id"])
    assert won_ids == set(hist.loc[hist["stage"] == "closed_won", "deal_id"])


def test_mrr_movements_add_up(sample):
    subs = sample.tables["subscriptions"].sort_values(["customer_id", "month"], kind="stable")
    running = subs.groupby("customer_id")["mrr_delta"].cumsum()
    assert np.allclose(running, subs["mrr"], atol=0.02)
    assert (subs.groupby("customer_id")["movement"].first() == "new").all()
    assert set(subs["movement"]) <= {"new", "expansion", "contraction", "churn", "reactivation"}


def test_first_order_is_at_the_won_deals_close(sample):
    deals = sample.tables["deals"]
    won = deals[deals["won"].fillna(False).astype(bool)].set_index("person_id")
    first = sample.tables["orders"].groupby("customer_id")["timestamp"].min()
    assert set(first.index) == set(won.index)
    assert (first.sort_index() == won.loc[first.sort_index().index, "closed_at"]).all()


def test_spend_is_only_on_paid_channels_and_tracks_paid_touches(synthetic, sample):
    spend, touches = sample.tables["spend"], sample.tables["touchpoints"]
    cost = {c.name: c.cost_per_touch for c in CHANNELS}
    assert set(spend["channel"]) == {n for n, c in cost.items() if c > 0}
    expected = touches["channel"].map(cost).sum()
    assert spend["cost"].sum() == pytest.approx(expected, rel=0.05)


def test_dirty_rows_are_there_and_caught(sample):
    reasons = {(p.table, p.reason) for p in sample.report.problems}
    assert ("deals", "person_id not found in leads.person_id") in reasons
    assert ("orders", "negative amount") in reasons
    assert sample.report.counts["touchpoints"]["rows_collapsed"] > 0
    assert not sample.report.errors


def test_clean_data_has_no_rejected_rows():
    from closedloop_nb.validation import validate_tables

    ds = validate_tables(generate(2_000, seed=2, dirty_share=0.0).frames())
    assert ds.report.n_rejected == 0 and not ds.report.errors
