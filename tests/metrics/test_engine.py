"""The metrics in the engine give what the pandas implementation gave (tests/metrics/reference.py, the
code as it was), on a dict of tables and on a workspace, without reading the touchpoints into pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import closedloop_nb.metrics as m
from closedloop_nb.attribution.compare import sensitivity
from closedloop_nb.metrics.credits import DEAL_MODELS
from closedloop_nb.metrics.funnel import _visitors
from closedloop_nb.metrics.pipeline import first_touch_at
from closedloop_nb.synth import generate
from closedloop_nb.validation import validate_tables

from . import reference as ref

SEVEN = ["first_touch", "last_touch", "linear", "position_based", "markov", "shapley", "shapley_model"]


def same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False,
                                  rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def small() -> dict[str, pd.DataFrame]:
    """A second synthetic loop (other seed, other size) than the shared sample."""
    return validate_tables(generate(2_500, seed=11).frames()).tables


@pytest.mark.filterwarnings("ignore:credited by the model:UserWarning")
@pytest.mark.filterwarnings("ignore:per-conversion shares:UserWarning")
@pytest.mark.parametrize("model", DEAL_MODELS)
def test_credits_equal_the_pandas_reference_on_tables_and_workspace(small, workspace, model):
    ws = workspace(small)
    for new, old in ((m.deal_credits, ref.deal_credits), (m.lead_credits, ref.lead_credits)):
        want = old(small, model)
        same(new(small, model), want)
        same(new(ws, model), want)


@pytest.mark.filterwarnings("ignore:credited by the model:UserWarning")
def test_credits_at_campaign_level_and_with_journey_options(sample, workspace):
    tables = sample.tables
    ws = workspace(tables)
    for model in ("markov", "w_shaped", "lead_source"):
        same(m.deal_credits(ws, model, lookback_days=30, level="campaign"),
             ref.deal_credits(tables, model, lookback_days=30, level="campaign"))
    same(m.deal_credits(ws, "linear", drop_direct=True), ref.deal_credits(tables, "linear", drop_direct=True))


@pytest.mark.filterwarnings("ignore:credited by the model:UserWarning")
@pytest.mark.parametrize("model", ["markov", "w_shaped", "time_decay", "lead_source"])
@pytest.mark.parametrize("kind", ["relation", "pandas"])
def test_credits_from_journeys_that_give_their_touches_as_a_relation_or_pandas(small, workspace, model, kind):
    ws = workspace(small, relation=kind)
    same(m.deal_credits(ws, model), ref.deal_credits(small, model))


def test_a_custom_journey_model_is_fitted_on_the_converting_touches(small):
    from closedloop_nb.attribution.journey import _Milestones

    class Halves(_Milestones):  # milestones the SQL does not know: fitted in pandas
        positions = (("first", 0.5), ("opportunity_touch", 0.5))

        def _weights(self, t):
            return super()._weights(t)

    same(m.deal_credits(small, Halves()), ref.deal_credits(small, Halves()))


def test_acquisition_channel_and_funnel_visitors_equal_the_reference(sample, workspace):
    tables = sample.tables
    ws = workspace(tables)
    want = ref.acquisition_channel(tables)
    pd.testing.assert_series_equal(m.acquisition_channel(ws), want)
    people = set(tables["leads"]["person_id"])
    pd.testing.assert_frame_equal(_visitors(ws, people), ref.visitors(tables, people), check_dtype=False)
    pd.testing.assert_series_equal(first_touch_at(ws), ref.first_touch_at(tables), check_dtype=False,
                                   check_index_type=False)


def test_a_visitors_first_touch_at_one_instant_goes_by_touch_id(hand, workspace):
    tables = dict(hand)
    t = tables["touchpoints"]
    twin = t.iloc[[0]].assign(touch_id="0-first", channel="Display")  # same visitor, same instant as Email
    tables["touchpoints"] = pd.concat([t, twin], ignore_index=True)
    visitors = _visitors(workspace(tables), {"A", "B", "C"})
    # visitor a's first touches: Display ("0-first") and Email at Jan 1 12:00; the smaller touch id wins
    assert visitors.to_dict("index") == {"Display": {"visitors": 1, "_visitor_leads": 1},
                                         "Paid Search": {"visitors": 1, "_visitor_leads": 1}}


@pytest.mark.filterwarnings("ignore:credited by the model:UserWarning")
def test_revenue_by_model_shares_one_journey_build(sample, workspace):
    tables = sample.tables
    ws = workspace(tables)
    got = m.revenue_by_model(ws, SEVEN)
    same(got, ref.revenue_by_model(tables, SEVEN))
    # one lead build for the lead sources, one deal build for the seven models
    assert sorted(b[0] for b in ws.builds) == ["lead", "opportunity"]
    # totals are the CRM's under every model
    totals = got.groupby("model")["revenue"].sum()
    won = tables["deals"][tables["deals"]["won"].fillna(False).astype(bool)]["amount"].sum()
    np.testing.assert_allclose(totals, won)


def test_sensitivity_equals_the_reference_from_one_build(sample, workspace):
    tables = sample.tables
    ws = workspace(tables)
    settings = dict(lookbacks=(30, 90), half_lives=(3, 7))
    want = ref.sensitivity(tables, **settings)
    same(sensitivity(ws, **settings), want)
    same(sensitivity(tables, **settings), want)
    assert [b[1] for b in ws.builds] == [90]  # the longest lookback serves the shorter ones
    ws = workspace(tables, relation="relation")
    same(sensitivity(ws, lookbacks=(30, 60), lookback_days=45, half_lives=(7,)),
         ref.sensitivity(tables, lookbacks=(30, 60), lookback_days=45, half_lives=(7,)))


def test_sensitivity_builds_each_lookback_when_options_act_on_the_kept_touches(sample, workspace):
    tables = sample.tables
    ws = workspace(tables)
    settings = dict(lookbacks=(30, 90), half_lives=(7,), collapse_repeats=True)
    same(sensitivity(ws, **settings), ref.sensitivity(tables, **settings))
    assert sorted(b[1] for b in ws.builds) == [30, 90]


@pytest.mark.filterwarnings("ignore:credited by the model:UserWarning")
def test_every_metric_runs_on_a_workspace_without_the_touchpoints(sample, workspace):
    tables = sample.tables
    ws = workspace(tables)
    credits = m.deal_credits(ws, "shapley_model")
    same(credits, m.deal_credits(tables, "shapley_model"))
    pairs = [
        (m.channel_performance(ws, credits, period="2024-06"), m.channel_performance(tables, credits,
                                                                                      period="2024-06")),
        (m.pipeline_by_stage(ws, credits), m.pipeline_by_stage(tables, credits)),
        (m.sales_cycle(ws, credits), m.sales_cycle(tables, credits)),
        (m.mrr_by_source(ws, credits), m.mrr_by_source(tables, credits)),
        (m.month_over_month(ws, credits, "2024-06"), m.month_over_month(tables, credits, "2024-06")),
        (m.funnel_rates(ws, m.acquisition_channel(ws)),
         m.funnel_rates(tables, m.acquisition_channel(tables))),
    ]
    for got, want in pairs:
        pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_journey_summary_equals_the_per_touch_group_by(sample):
    from closedloop_nb.journeys import build_journeys

    journeys = build_journeys(sample.tables, conversion="opportunity", progress=False)
    converting = journeys.touches[journeys.touches["converted"] == 1]  # what notebook 2 did
    want = converting.groupby("journey_id").agg(touches=("touch_id", "size"), first=("ts", "min"),
                                                converted_at=("conversion_at", "first"))
    want["days_to_convert"] = (want["converted_at"] - want["first"]).dt.days
    got = m.journey_summary(journeys)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_index_type=False)
    assert got["days_to_convert"].median() == want["days_to_convert"].median()


def test_a_report_kernel_lets_the_previous_notebooks_workspace_go(tmp_path):
    # the metrics keep per-build values that refer to the workspace they were made with (whose own
    # cache holds the build): without clearing them a workspace, its DuckDB connection and buffers
    # outlive the notebook that opened it; a report kernel clears them between notebooks
    import gc
    import weakref

    from closedloop_nb import open_workspace
    from closedloop_nb._report_child import _release_memory
    from closedloop_nb.config import SAMPLE_DIR

    ws = open_workspace(SAMPLE_DIR, cache_dir=tmp_path)
    m.channel_performance(ws, m.deal_credits(ws, "shapley"))
    gone = weakref.ref(ws)
    del ws
    gc.collect()
    assert gone() is not None  # kept by the caches: what the kernel reset must let go
    _release_memory()
    assert gone() is None
