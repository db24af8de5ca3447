"""Closed-loop metrics: who gets the credit for each lead and deal, and what follows from it.

* :mod:`~closedloop_nb.metrics.credits`: per-deal and per-lead channel shares from any model;
* :mod:`~closedloop_nb.metrics.funnel`: funnel step rates with confidence intervals;
* :mod:`~closedloop_nb.metrics.pipeline`: pipeline count and value per stage, channel and month;
  sales-cycle length;
* :mod:`~closedloop_nb.metrics.revenue`: revenue, spend, ROI, ROAS, cost per lead / opportunity, CAC;
* :mod:`~closedloop_nb.metrics.subscriptions`: MRR, ARR and net revenue retention by source;
* :mod:`~closedloop_nb.metrics.periods`: month over month;
* :mod:`~closedloop_nb.metrics.journey_stats`: per-journey touches and days to convert;
* :mod:`~closedloop_nb.metrics.budget`: marginal returns and budget what-ifs;
* :mod:`~closedloop_nb.metrics.plots`: the pictures.

Every function takes the validated tables as a dict of DataFrames or a run workspace, and works
on touch-level data in the engine (DuckDB SQL, :mod:`~closedloop_nb.metrics._engine`): pandas holds
per-deal, per-lead and per-channel tables only, and several models share one journey build.

Every table is tidy and reconciles: the shares of each deal add up to 1, so channel totals equal
the CRM's totals, with ``(no touches)`` holding what no touch explains.
"""

from closedloop_nb.metrics.budget import ResponseCurves, spend_and_revenue, suggest_move
from closedloop_nb.metrics.credits import (
    DEAL_MODELS,
    NO_TOUCHES,
    acquisition_channel,
    deal_credits,
    lead_credits,
)
from closedloop_nb.metrics.funnel import funnel_rates
from closedloop_nb.metrics.journey_stats import journey_summary
from closedloop_nb.metrics.periods import (
    compare,
    headline_metrics,
    headline_sentence,
    month_over_month,
    previous_period,
)
from closedloop_nb.metrics.pipeline import deal_stages, pipeline_by_stage, sales_cycle
from closedloop_nb.metrics.plots import (
    plot_funnel,
    plot_mrr_by_source,
    plot_pipeline,
    plot_roi_vs_spend,
    plot_sales_cycle,
)
from closedloop_nb.metrics.revenue import (
    best_and_worst,
    channel_performance,
    currency_of,
    money,
    revenue_and_roi,
    revenue_by_model,
    safe_ratio,
)
from closedloop_nb.metrics.subscriptions import customer_credits, mrr_by_source, nrr_by_source

__all__ = [
    "suggest_move",
    "money",
    "headline_sentence",
    "currency_of",
    "best_and_worst",
    "DEAL_MODELS",
    "NO_TOUCHES",
    "ResponseCurves",
    "acquisition_channel",
    "channel_performance",
    "compare",
    "customer_credits",
    "deal_credits",
    "deal_stages",
    "funnel_rates",
    "headline_metrics",
    "journey_summary",
    "lead_credits",
    "month_over_month",
    "mrr_by_source",
    "nrr_by_source",
    "pipeline_by_stage",
    "plot_funnel",
    "plot_mrr_by_source",
    "plot_pipeline",
    "plot_roi_vs_spend",
    "plot_sales_cycle",
    "previous_period",
    "revenue_and_roi",
    "revenue_by_model",
    "safe_ratio",
    "sales_cycle",
    "spend_and_revenue",
]
