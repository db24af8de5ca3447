"""The metrics on a Spark workspace equal the same metrics on the DuckDB workspace of the same data
(the DuckDB path is itself checked against the pandas reference in tests/metrics), and no metric
brings the touchpoints or the journeys' touches to the driver."""

from __future__ import annotations

import pandas as pd
import pytest

import closedloop_nb.metrics as m
from closedloop_nb.journeys import stitching_summary
from closedloop_nb.metrics._engine import journey_touches
from closedloop_nb.spark_sql import SparkConnection


def same(got: pd.DataFrame | pd.Series, want: pd.DataFrame | pd.Series) -> None:
    if isinstance(want, pd.Series):
        pd.testing.assert_series_equal(got, want, check_dtype=False, rtol=1e-9)
    else:
        pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-9)


def test_journeys_stitching_and_journey_lengths(spark_ws, duck_ws):
    s, d = spark_ws.journeys("lead", 90), duck_ws.journeys("lead", 90)
    same(s.paths, d.paths)
    same(s.reconciliation, d.reconciliation)
    same(m.journey_summary(s), m.journey_summary(d))
    same(stitching_summary(spark_ws), stitching_summary(duck_ws))
    same(spark_ws.value_counts("touchpoints", "channel"), duck_ws.value_counts("touchpoints", "channel"))
    touches = journey_touches(s, spark_ws)
    assert isinstance(touches.con, SparkConnection) and touches.name == s.table


@pytest.mark.parametrize("model", ["lead_source", "linear", "shapley_model", "markov", "time_decay",
                                   "w_shaped"])
def test_deal_credits(spark_ws, duck_ws, model):
    def credits(ws):
        return m.deal_credits(ws, model).sort_values(["deal_id", "channel"]).reset_index(drop=True)

    same(credits(spark_ws), credits(duck_ws))


def test_funnel_cycle_pipeline_performance_and_revenue_by_model(spark_ws, duck_ws):
    for fn in (lambda ws: m.funnel_rates(ws, m.acquisition_channel(ws, 90)),
               lambda ws: m.sales_cycle(ws, m.deal_credits(ws, "linear")),
               lambda ws: m.pipeline_by_stage(ws, m.deal_credits(ws, "linear")),
               lambda ws: m.channel_performance(ws, m.deal_credits(ws, "linear"), period="2024-12"),
               lambda ws: m.revenue_by_model(ws, ["first_touch", "markov"])):
        same(fn(spark_ws), fn(duck_ws))
    assert "touchpoints" not in spark_ws._frames  # never materialised on the driver
