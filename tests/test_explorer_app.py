"""The widget app computes and draws a view when its tab is shown (the ROI chart, pipeline, the
drill-down), not on every change."""

from __future__ import annotations

import importlib

import pandas as pd

ex = importlib.import_module("closedloop_nb.explorer")


def test_the_roi_chart_is_drawn_when_its_tab_is_shown(sample, monkeypatch):
    drawn = []
    real = ex.roi_png
    monkeypatch.setattr(ex, "roi_png", lambda perf: drawn.append(len(perf)) or real(perf))
    monkeypatch.setattr(ex.Explorer, "_start_intervals", lambda self, s: None)  # no redraw with intervals
    app = ex.Explorer(sample.tables, ex.Settings(models=("first_touch",)), background=False)
    app.controls["lookback_days"].value = 30
    assert drawn == [] and app.roi_png.value == b""  # the credit tab is shown: no ROI chart drawn
    app.tabs.selected_index = ex.ROI_TAB
    assert len(drawn) == 1 and app.roi_png.value == real(app.views.performance)
    app.controls["lookback_days"].value = 60  # shown: redrawn with the change
    assert len(drawn) == 2 and app.roi_png.value == real(app.views.performance)
    app.tabs.selected_index = 0
    app.tabs.selected_index = ex.ROI_TAB  # the same views: not drawn again
    assert len(drawn) == 2


def test_pipeline_and_drill_down_are_computed_when_their_tab_is_shown(sample, monkeypatch):
    from closedloop_nb.metrics import channel_performance, deal_credits, lead_credits

    tables = sample.tables
    credited = []
    real = ex._deal_credits
    monkeypatch.setattr(ex, "_deal_credits", lambda *a: credited.append(a[1]) or real(*a))
    monkeypatch.setattr(ex.Explorer, "_start_intervals", lambda self, s: None)
    app = ex.Explorer(tables, ex.Settings(models=("first_touch",)), background=False)
    app.controls["lookback_days"].value = 30
    assert credited == [] and app.performance_html.value == ex.LATER  # the credit tab alone is shown
    app.tabs.selected_index = ex.ROI_TAB
    assert [s.lookback_days for s in credited] == [30]
    direct = channel_performance(tables, deal_credits(tables, "first_touch", lookback_days=30),
                                 lead_credits=lead_credits(tables, "lead_source", lookback_days=30))
    pd.testing.assert_frame_equal(app.views.performance, direct)
    assert app.performance_html.value.startswith(direct.round(2).to_html())
    app.tabs.selected_index = 0
    app.controls["lookback_days"].value = 45  # the pipeline tab no longer shows this setting's figures
    assert app.performance_html.value == ex.LATER and app.roi_png.value == b""
    channel = app.views.credit.sort_values("conversions").iloc[-1]["channel"]
    app.controls["channel"].value = channel  # choosing a channel shows its deals
    assert app.tabs.selected_index == ex.DRILL_TAB and channel in app.drill_html.value
    assert set(app.views.drill["deal_id"]) == set(
        (c := deal_credits(tables, "first_touch", lookback_days=45))[c["channel"] == channel]["deal_id"])


def test_choosing_a_channel_draws_its_deals_and_leaves_the_credit_as_drawn(sample, monkeypatch):
    from closedloop_nb.metrics import deal_credits

    drawn = []
    real = ex.credit_png
    monkeypatch.setattr(ex, "credit_png", lambda credit: drawn.append(len(credit)) or real(credit))
    settings = ex.Settings(models=("first_touch", "linear"), n_boot=5)
    app = ex.Explorer(sample.tables, settings, background=False)
    assert "lower" in app.views.credit and len(drawn) == 2  # the first draw, then with its intervals
    table, chart = app.credit_html.value, app.credit_png.value
    for channel in app.views.credit.sort_values("conversions")["channel"].iloc[-2:]:
        app.controls["channel"].value = channel
        assert app.tabs.selected_index == ex.DRILL_TAB and channel in app.drill_html.value
        credits = deal_credits(sample.tables, "first_touch", lookback_days=90)
        assert set(app.views.drill["deal_id"]) == set(credits[credits["channel"] == channel]["deal_id"])
        # the credit does not depend on the drilled channel: not computed, drawn or bootstrapped again
        assert len(drawn) == 2 and (app.credit_html.value, app.credit_png.value) == (table, chart)
        assert "lower" in app.views.credit
    app.controls["lookback_days"].value = 30  # any other control: drawn again
    assert len(drawn) >= 3
