"""Every metric picture draws on the sample data and returns its Axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

import closedloop_nb.metrics as m  # noqa: E402


@pytest.fixture(scope="module")
def loop(sample):
    tables = sample.tables
    return tables, m.deal_credits(tables, "linear")


def test_plots_return_axes(loop):
    tables, credits = loop
    axes = [
        m.plot_pipeline(m.pipeline_by_stage(tables, credits)),
        m.plot_funnel(m.funnel_rates(tables, m.acquisition_channel(tables))),
        m.plot_roi_vs_spend(m.channel_performance(tables, credits)),
        m.plot_sales_cycle(tables, credits),
        m.plot_mrr_by_source(m.mrr_by_source(tables, credits)),
        m.ResponseCurves(min_periods=3).fit(m.spend_and_revenue(tables, credits)).plot(),
    ]
    assert all(ax.__class__.__name__ == "Axes" for ax in axes)
    assert all(ax.get_title() for ax in axes)
    # the pipeline picture shows one bar series per stage reached
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert legend == ["opportunity", "proposal", "closed won"]
