"""Every metric picture draws on the sample data and returns its Axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
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


def test_pictures_do_not_show_what_the_tables_withhold():
    import pandas as pd

    from closedloop_nb.metrics.plots import plot_pipeline, plot_roi_vs_spend

    perf = pd.DataFrame({"spend": [100.0, 200.0, 300.0], "revenue": [48_000.0, 900.0, 2_000.0],
                         "roi": [479.0, 3.5, 5.67]}, index=pd.Index(["One deal", "B", "C"], name="channel"))
    support = pd.DataFrame({"customers": [1, 5, 4]}, index=perf.index)
    ax = plot_roi_vs_spend(perf, support=support, min_cell=3)
    labels = [t.get_text() for t in ax.texts]
    assert not [t for t in labels if "One deal" in t] and len(ax.collections[0].get_offsets()) == 2
    assert "1 paid channel with fewer than 3 deals not shown" in ax.get_xlabel()
    assert "One deal" not in ax.get_title()
    month = pd.DataFrame({"channel": ["One deal", "B"], "stage": ["opportunity"] * 2, "deals": [1.0, 4.0],
                          "value": [48_000.0, 9_000.0], "month": ["2024-12"] * 2})
    stages = pd.DataFrame({"opportunity": [1, 4]}, index=["One deal", "B"])
    ax = plot_pipeline(month, support=stages, min_cell=3)
    heights = {t.get_text(): b.get_height() for t, b in zip(ax.get_xticklabels(), ax.patches, strict=False)}
    assert heights["One deal"] == 0 and heights["B"] == 9_000 and "B brought the most" in ax.get_title()


def test_the_new_pictures_use_the_channel_palette_and_state_the_finding():
    import pandas as pd
    from matplotlib.colors import to_hex

    from closedloop_nb.metrics.plots import channel_colour, plot_journey_lengths, plot_touches_by_channel

    counts = pd.Series({"Direct": 600, "Paid Search": 300, "Email": 100})
    ax = plot_touches_by_channel(counts)
    colours = [to_hex(b.get_facecolor()) for b in ax.patches]          # smallest first
    assert colours == [channel_colour(n) for n in ("Email", "Paid Search", "Direct")]
    assert ax.get_title() == "Direct brought the most touches: 600 of 1,000 (60%)"
    # 2 of 5 journeys have one touch; 1 has five or more (12 is counted as 10+)
    ax = plot_journey_lengths(pd.Series([1, 1, 2, 3, 12]))
    assert ax.get_title() == "40% of converting journeys have a single touch; 20% have five or more"


def test_the_mrr_picture_pools_channels_the_tables_withhold():
    import pandas as pd

    from closedloop_nb.metrics.plots import FEW, plot_mrr_by_source

    mrr = pd.DataFrame({"month": ["2024-11", "2024-11", "2024-11", "2024-12", "2024-12", "2024-12"],
                        "channel": ["Big", "Solo", "Pair", "Big", "Solo", "Pair"],
                        "mrr": [900.0, 50.0, 70.0, 1000.0, 60.0, 80.0], "customers": [9, 1, 2, 10, 1, 2]})
    ax = plot_mrr_by_source(mrr, min_cell=3)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["Big", FEW]                      # one customer's MRR is never a band of its own
    assert "Big holds the largest share of MRR: 88% of" in ax.get_title()   # 1,000 of 1,140


def test_roi_title_is_wrapped_to_a_narrow_figure():
    """The explorer draws ROI against spend in a 6-inch figure: the finding must not run off it."""
    import matplotlib.figure

    from closedloop_nb.metrics.plots import plot_roi_vs_spend

    perf = pd.DataFrame({"revenue": [5_000.0, 900.0, 100.0], "spend": [1_000.0, 1_000.0, 400.0],
                         "roi": [4.0, -0.1, -0.75]},
                        index=pd.Index(["A channel with a long name", "Paid Social", "Display"],
                                       name="channel"))
    ax = plot_roi_vs_spend(perf, ax=matplotlib.figure.Figure(figsize=(6, 4.5)).add_subplot())
    lines = ax.get_title().split("\n")
    assert len(lines) > 1 and max(map(len, lines)) <= 66
    assert " ".join(lines).startswith("A channel with a long name returned most per")
