"""The widget app draws the ROI chart when its tab is shown, not on every change."""

from __future__ import annotations

import importlib

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
