"""The pictures of the closed-loop report; each function returns the matplotlib Axes it drew on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.metrics.pipeline import STAGES, credit_level, first_touch_at

__all__ = ["plot_funnel", "plot_mrr_by_source", "plot_pipeline", "plot_roi_vs_spend", "plot_sales_cycle"]


def _axes(ax: Any, size: tuple[float, float]) -> Any:
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)[1] if ax is None else ax


def _money(ax: Any, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v / 1e6:,.1f}M" if abs(v) >= 1e6 else
                        f"{v / 1e3:,.0f}k" if abs(v) >= 1e3 else f"{v:,.0f}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def plot_pipeline(pipeline: pd.DataFrame, value: bool = True, top: int = 10, ax: Any = None) -> Any:
    """Bars of pipeline value (or deals) per channel, one bar per stage (from :func:`pipeline_by_stage`)."""
    level = [c for c in pipeline.columns if c not in ("month", "stage", "deals", "value")][0]
    col = "value" if value else "deals"
    wide = pipeline.pivot_table(index=level, columns="stage", values=col, aggfunc="sum", observed=True)
    wide = wide.reindex(columns=[s for s in STAGES if s in wide.columns]).fillna(0.0)
    wide = wide.sort_values(wide.columns[0], ascending=False).head(top)
    ax = _axes(ax, (8, 4.5))
    width = 0.8 / max(len(wide.columns), 1)
    x = np.arange(len(wide))
    for i, stage in enumerate(wide.columns):
        ax.bar(x + i * width, wide[stage], width, label=stage.replace("_", " "))
    ax.set_xticks(x + width * (len(wide.columns) - 1) / 2, wide.index, rotation=30, ha="right")
    ax.set_ylabel("pipeline value" if value else "deals (credited)")
    if value:
        _money(ax)
    ax.set_title(f"Pipeline by stage and {level}")
    ax.legend()
    return ax


def plot_funnel(funnel: pd.DataFrame, channel: str = "Total", ax: Any = None) -> Any:
    """The funnel of one channel (a row of :func:`funnel_rates`): people per stage, step rates."""
    stages = ["leads", "mqls", "sqls", "opportunities", "won"]
    rates = [None, "mql_rate", "sql_rate", "opportunity_rate", "win_rate"]
    row = funnel.loc[channel]
    ax = _axes(ax, (7, 3.5))
    counts = [float(row[s]) for s in stages]
    ax.barh(stages[::-1], counts[::-1], color="#4c72b0")
    for i, r in enumerate(rates):
        label = f"{counts[i]:,.0f}"
        if r is not None and pd.notna(row[r]):
            label += f"  ({row[r]:.0%} of previous)"
        ax.text(counts[i], len(stages) - 1 - i, " " + label, va="center", fontsize="small")
    ax.set_xlim(0, max(counts) * 1.45 if max(counts) > 0 else 1)
    ax.set_title(f"Funnel: {channel}")
    return ax


def plot_roi_vs_spend(performance: pd.DataFrame, ax: Any = None) -> Any:
    """Spend against revenue per channel (from :func:`channel_performance`); the line is break-even."""
    p = performance.drop(index="Total", errors="ignore")
    p = p[p["spend"] > 0]
    ax = _axes(ax, (6.5, 5))
    ax.scatter(p["spend"], p["revenue"], s=40)
    for name, r in p.iterrows():
        roi = f"{r['roi']:+.0%}" if pd.notna(r["roi"]) else "n/a"
        ax.annotate(f"{name} ({roi})", (r["spend"], r["revenue"]), fontsize="small",
                    xytext=(4, 4), textcoords="offset points")
    top = max(float(p["spend"].max()) if len(p) else 0.0, float(p["revenue"].max()) if len(p) else 0.0, 1.0)
    ax.plot([0, top], [0, top], ls="--", color="grey", lw=1, label="revenue = spend (ROI 0)")
    ax.set_xlabel("spend")
    ax.set_ylabel("attributed revenue")
    _money(ax, "x")
    _money(ax, "y")
    ax.set_title("Revenue against spend (ROI in brackets)")
    ax.legend(fontsize="small")
    return ax


def plot_sales_cycle(tables: dict[str, pd.DataFrame], credits: pd.DataFrame, top: int = 6,
                     from_first_touch: bool = False, ax: Any = None) -> Any:
    """Share of won deals closed within x days of lead creation (or first touch), per channel,
    weighted by credit: curves further left close faster."""
    level = credit_level(credits)
    deals = tables["deals"]
    won = deals[deals["won"].fillna(False).astype(bool) & deals["closed_at"].notna()]
    start = (won["person_id"].map(first_touch_at(tables)) if from_first_touch else
             won["person_id"].map(tables["leads"].set_index("person_id")["created_at"]))
    d = won.assign(days=(won["closed_at"] - start).dt.total_seconds() / 86_400)
    d = d.dropna(subset=["days"]).merge(credits[["deal_id", level, "share"]], on="deal_id")
    ax = _axes(ax, (7, 4.5))
    for name in d.groupby(level)["share"].sum().nlargest(top).index:
        g = d[d[level] == name].sort_values("days")
        ax.step(g["days"], g["share"].cumsum() / g["share"].sum(), where="post", label=name)
    ax.set_xlabel(f"days from {'first touch' if from_first_touch else 'lead creation'} to close")
    ax.set_ylabel("share of won deals")
    for edge in (30, 90):
        ax.axvline(edge, color="grey", lw=0.8, ls=":")
    ax.set_title("Sales cycle by channel")
    ax.legend(fontsize="small")
    return ax


def plot_mrr_by_source(mrr: pd.DataFrame, ax: Any = None) -> Any:
    """Stacked MRR per channel over time (from :func:`mrr_by_source`)."""
    level = [c for c in mrr.columns if c not in ("month", "mrr", "arr", "customers", "new", "expansion",
                                                  "contraction", "churn", "reactivation")][0]
    wide = mrr.pivot_table(index="month", columns=level, values="mrr", aggfunc="sum").fillna(0.0)
    wide = wide[wide.sum().sort_values(ascending=False).index]
    ax = _axes(ax, (8, 4.5))
    ax.stackplot(np.arange(len(wide)), wide.T.to_numpy(), labels=wide.columns)
    step = max(len(wide) // 12, 1)
    ax.set_xticks(np.arange(len(wide))[::step], wide.index[::step], rotation=30, ha="right")
    ax.set_ylabel("MRR at month end")
    _money(ax)
    ax.set_title(f"MRR by {level}")
    ax.legend(fontsize="small", loc="upper left", ncols=2)
    return ax
