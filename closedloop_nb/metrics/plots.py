"""The pictures of the closed-loop report; each function returns the matplotlib Axes it drew on.

One colour means one channel in every picture (:func:`channel_colour`): the GA4 default channel groups
have fixed colours, any other name gets a stable colour from its text. Titles state the finding
("Paid Search brought the most pipeline: £120k"), not just the subject. Names from the data are
masked (e-mail addresses, phone numbers) before they are drawn.
"""

from __future__ import annotations

import hashlib
import textwrap
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.metrics.pipeline import STAGES, credit_level, first_touch_at

__all__ = ["CHANNEL_COLOURS", "channel_colour", "palette", "plot_funnel", "plot_journey_lengths",
           "plot_model_comparison", "plot_mrr", "plot_mrr_by_source", "plot_pipeline", "plot_roi_vs_spend",
           "plot_sales_cycle", "plot_touches_by_channel"]

#: Fixed colours of the GA4 default channel groups and the buckets the package adds.
CHANNEL_COLOURS: dict[str, str] = {
    "Paid Search": "#1f77b4", "Organic Search": "#2ca02c", "Email": "#ff7f0e", "Paid Social": "#d62728",
    "Organic Social": "#9467bd", "Display": "#8c564b", "Referral": "#e377c2", "Direct": "#7f7f7f",
    "Paid Video": "#8c8c00", "Organic Video": "#17becf", "Affiliates": "#5254a3", "Paid Shopping": "#e6550d",
    "Organic Shopping": "#31a354", "Cross-network": "#ad494a", "Paid Other": "#7b4173", "Audio": "#c49c94",
    "SMS": "#ce6dbd", "Mobile Push Notifications": "#8ca252", "Unassigned": "#969696",
    "(no touches)": "#4d4d4d", "(not set)": "#a0a0a0", "Total": "#000000", "other channels": "#c7c7c7",
}
_EXTRA = ("#393b79", "#637939", "#8c6d31", "#843c39", "#6b6ecf", "#3182bd", "#756bb1", "#636363", "#bd9e39",
          "#d6616b", "#a55194", "#e7ba52", "#2b8cbe", "#238b45", "#cb181d", "#54278f")
#: Stages of the pipeline in shades of one grey-blue (a stage is not a channel).
STAGE_COLOURS = ("#9ecae1", "#4292c6", "#2171b5", "#08519c", "#08306b")


def channel_colour(name: Any) -> str:
    """The colour of a channel (campaign...) in every picture: fixed for known names, stable otherwise.

    >>> channel_colour("Paid Search"), channel_colour("spring-sale") == channel_colour("spring-sale")
    ('#1f77b4', True)
    """
    key = str(name)
    if key in CHANNEL_COLOURS:
        return CHANNEL_COLOURS[key]
    return _EXTRA[int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % len(_EXTRA)]


def palette(names: Any) -> list[str]:
    """:func:`channel_colour` of each name."""
    return [channel_colour(n) for n in names]


def _name(value: Any) -> str:
    """A data value as a label: masked, and ``$`` escaped so matplotlib does not read it as maths."""
    from closedloop_nb.present import clean_text

    return clean_text(value).replace("$", r"\$")


def _axes(ax: Any, size: tuple[float, float]) -> Any:
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)[1] if ax is None else ax


def _short(v: float, currency: str = "") -> str:
    from closedloop_nb.present import currency_symbol

    unit = _name(currency_symbol(currency))
    sign = "−" if v < 0 else ""
    v = abs(v)
    body = (f"{v / 1e6:,.1f}M" if v >= 1e6 else f"{v / 1e3:,.0f}k" if v >= 1e4 else
            f"{v / 1e3:,.1f}".removesuffix(".0") + "k" if v >= 1e3 else f"{v:,.0f}")
    return f"{sign}{unit}{body}"


def _money(ax: Any, axis: str = "y", currency: str = "") -> None:
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: _short(v, currency))
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _tidy(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_pipeline(pipeline: pd.DataFrame, value: bool = True, top: int = 10, ax: Any = None,
                  currency: str = "", support: pd.DataFrame | None = None, min_cell: int = 0) -> Any:
    """Bars of pipeline value (or deals) per channel, one bar per stage (from :func:`pipeline_by_stage`).

    With ``support`` (distinct deals per channel and stage,
    :func:`closedloop_nb.metrics.policy.distinct_deals_by_stage`) a bar resting on fewer than
    ``min_cell`` deals is not drawn, as the tables show it as "< 3"."""
    level = [c for c in pipeline.columns if c not in ("month", "stage", "deals", "value")][0]
    col = "value" if value else "deals"
    wide = pipeline.pivot_table(index=level, columns="stage", values=col, aggfunc="sum", observed=True)
    wide = wide.reindex(columns=[s for s in STAGES if s in wide.columns]).fillna(0.0)
    if support is not None and min_cell:
        n = support.rename(columns=str).reindex(index=wide.index, columns=[str(c) for c in wide.columns])
        few = ((n > 0) & (n < min_cell)).to_numpy()
        wide = wide.mask(few, 0.0)
    wide = wide.sort_values(wide.columns[0], ascending=False).head(top)
    ax = _axes(ax, (8, 4.5))
    width = 0.8 / max(len(wide.columns), 1)
    x = np.arange(len(wide))
    for i, stage in enumerate(wide.columns):
        ax.bar(x + i * width, wide[stage], width, label=stage.replace("_", " "),
               color=STAGE_COLOURS[i % len(STAGE_COLOURS)])
    ax.set_xticks(x + width * (len(wide.columns) - 1) / 2, [_name(n) for n in wide.index], rotation=30,
                  ha="right")
    for tick, name in zip(ax.get_xticklabels(), wide.index, strict=False):
        tick.set_color(channel_colour(name))
    ax.set_ylabel("pipeline value" if value else "deals (credited)")
    if value:
        _money(ax, currency=currency)
    if len(wide) and wide.iloc[0, 0] > 0:
        lead = wide.index[0]
        amount = _short(wide.iloc[0, 0], currency) if value else f"{wide.iloc[0, 0]:,.0f} deals"
        ax.set_title(f"{_name(lead)} brought the most new pipeline: {amount}")
    else:
        ax.set_title(f"Pipeline by stage and {level}: none in this period")
    ax.legend(title="stage reached", fontsize="small")
    _tidy(ax)
    return ax


def plot_funnel(funnel: pd.DataFrame, channel: str = "Total", ax: Any = None) -> Any:
    """The funnel of one channel (a row of :func:`funnel_rates`): people per stage, step rates."""
    stages = ["leads", "mqls", "sqls", "opportunities", "won"]
    rates = [None, "mql_rate", "sql_rate", "opportunity_rate", "win_rate"]
    row = funnel.loc[channel]
    ax = _axes(ax, (7, 3.5))
    counts = [float(row[s]) for s in stages]
    ax.barh(stages[::-1], counts[::-1], color=channel_colour(channel) if channel != "Total" else "#4c72b0")
    for i, r in enumerate(rates):
        label = f"{counts[i]:,.0f}"
        if r is not None and pd.notna(row[r]):
            label += f"  ({row[r]:.0%} of previous)"
        ax.text(counts[i], len(stages) - 1 - i, " " + label, va="center", fontsize="small")
    ax.set_xlim(0, max(counts) * 1.45 if max(counts) > 0 else 1)
    who = "all leads" if channel == "Total" else _name(channel)
    if counts[0] > 0:
        ax.set_title(f"{counts[4] / counts[0]:.1%} of {who} became customers "
                     f"({counts[4]:,.0f} of {counts[0]:,.0f})")
    else:
        ax.set_title(f"Funnel: {who} (no leads)")
    _tidy(ax)
    return ax


def _few(support: pd.DataFrame | None, column: str, min_cell: int) -> pd.Index:
    """Rows whose ``column`` of ``support`` (distinct deals behind them) is between 0 and ``min_cell``."""
    if support is None or not min_cell or column not in support:
        return pd.Index([])
    n = support[column]
    return n.index[(n > 0) & (n < min_cell)]


def plot_roi_vs_spend(performance: pd.DataFrame, ax: Any = None, currency: str = "",
                      support: pd.DataFrame | None = None, min_cell: int = 0) -> Any:
    """Spend against revenue per channel (from :func:`channel_performance`); the line is break-even.

    With ``support`` (distinct deals per channel, :func:`closedloop_nb.metrics.policy.distinct_deals`)
    channels whose revenue rests on fewer than ``min_cell`` deals are left out (the tables show them as
    "< 3"; a point would show the amount), and the axis label says how many."""
    from closedloop_nb.present import currency_symbol

    p = performance.drop(index="Total", errors="ignore")
    p = p[p["spend"] > 0]
    hidden = p.index.intersection(_few(support, "customers", min_cell))
    p = p.drop(index=hidden)
    ax = _axes(ax, (6.5, 5))
    ax.scatter(p["spend"], p["revenue"], s=60, c=palette(p.index), zorder=3)
    for name, r in p.iterrows():
        roi = f"{r['roi']:+.0%}".replace("-", "−") if pd.notna(r["roi"]) else "n/a"
        ax.annotate(f"{_name(name)} ({roi})", (r["spend"], r["revenue"]), fontsize="small",
                    xytext=(4, 4), textcoords="offset points", color=channel_colour(name))
    top = max(float(p["spend"].max()) if len(p) else 0.0, float(p["revenue"].max()) if len(p) else 0.0, 1.0)
    ax.plot([0, top], [0, top], ls="--", color="grey", lw=1, label="revenue = spend (ROI 0%)")
    ax.set_xlabel("spend" + (f" ({len(hidden)} paid channel{'s' if len(hidden) > 1 else ''} with fewer than "
                             f"{min_cell} deals not shown)" if len(hidden) else ""))
    ax.set_ylabel("attributed revenue")
    _money(ax, "x", currency)
    _money(ax, "y", currency)
    ranked = p["roi"].dropna()
    if len(ranked):
        best = ranked.idxmax()
        below = int((ranked < 0).sum())
        unit = _name(currency_symbol(currency).strip() or "unit")
        roi = f"{ranked[best] * 100:+,.0f}%".replace("-", "−")
        if len(ranked) == 1:
            title = f"{_name(best)}: ROI {roi} ({'below' if ranked[best] < 0 else 'above'} break-even)"
        elif below == len(ranked):
            title = f"No paid channel shown broke even; closest: {_name(best)} (ROI {roi})"
        else:
            title = (f"{_name(best)} returned most per {unit} spent (ROI {roi}); {below} of {len(ranked)} "
                     "paid channels below break-even")
        # channel names make this title long: wrap it to the figure's width (~11 characters an inch at
        # this size) so that a narrow figure, e.g. the explorer's, does not cut it off
        width = max(30, int(ax.figure.get_figwidth() * 11))
        ax.set_title(textwrap.fill(title, width), fontsize="medium")
    else:
        ax.set_title("No channel with recorded spend this period")
    ax.legend(fontsize="small")
    _tidy(ax)
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
    d = d[d["share"] > 0]
    ax = _axes(ax, (7, 4.5))
    medians = {}
    for name in d.groupby(level)["share"].sum().nlargest(top).index:
        g = d[d[level] == name].sort_values("days")
        cum = g["share"].cumsum() / g["share"].sum()
        ax.step(g["days"], cum, where="post", label=_name(name), color=channel_colour(name))
        medians[name] = float(g["days"].to_numpy()[np.searchsorted(cum.to_numpy(), 0.5)])
    ax.set_xlabel(f"days from {'first touch' if from_first_touch else 'lead creation'} to close")
    ax.set_ylabel("share of won deals")
    for edge in (30, 90):
        ax.axvline(edge, color="grey", lw=0.8, ls=":")
    if medians:
        fast = min(medians, key=medians.get)
        slow = max(medians, key=medians.get)
        ax.set_title(f"{_name(fast)} deals close fastest (median {medians[fast]:.0f} days; "
                     f"{_name(slow)} {medians[slow]:.0f})", fontsize="medium")
    else:
        ax.set_title("Sales cycle by channel: no won deals")
    ax.legend(fontsize="small")
    _tidy(ax)
    return ax


#: The band of channels pooled in :func:`plot_mrr_by_source` because each has few customers.
FEW = "other channels"


def plot_mrr_by_source(mrr: pd.DataFrame, ax: Any = None, currency: str = "", min_cell: int = 0) -> Any:
    """Stacked MRR per channel over time (from :func:`mrr_by_source`).

    Channels that never had ``min_cell`` customers in any month are pooled into one band
    (:data:`FEW`), as the tables withhold their MRR."""
    level = [c for c in mrr.columns if c not in ("month", "mrr", "arr", "customers", "new", "expansion",
                                                  "contraction", "churn", "reactivation")][0]
    if min_cell and "customers" in mrr:
        most = mrr.groupby(level)["customers"].max()
        few = set(most.index[most < min_cell])
        if few:
            mrr = mrr.assign(**{level: [FEW if c in few else c for c in mrr[level]]})
    wide = mrr.pivot_table(index="month", columns=level, values="mrr", aggfunc="sum").fillna(0.0)
    wide = wide.clip(lower=0.0)
    wide = wide[wide.sum().sort_values(ascending=False).index]
    ax = _axes(ax, (8, 4.5))
    ax.stackplot(np.arange(len(wide)), wide.T.to_numpy(), labels=[_name(c) for c in wide.columns],
                 colors=palette(wide.columns))
    step = max(len(wide) // 12, 1)
    ax.set_xticks(np.arange(len(wide))[::step], wide.index[::step], rotation=30, ha="right")
    ax.set_ylabel("MRR at month end")
    _money(ax, currency=currency)
    last = wide.iloc[-1] if len(wide) else pd.Series(dtype=float)
    if len(last) and last.sum() > 0:
        lead = last.idxmax()
        ax.set_title(f"{_name(lead)} holds the largest share of MRR: {last[lead] / last.sum():.0%} of "
                     f"{_short(last.sum(), currency)} at {wide.index[-1]}", fontsize="medium")
    else:
        ax.set_title(f"MRR by {level}: none recorded")
    ax.legend(fontsize="small", loc="upper left", ncols=2)
    _tidy(ax)
    return ax


def plot_touches_by_channel(counts: pd.Series, ax: Any = None) -> Any:
    """Horizontal bars of touches per channel (``ws.value_counts("touchpoints", "channel")``), each in
    its channel's colour, the largest on top; the title says which channel brought most and its share."""
    counts = counts.astype(float).sort_values()
    ax = _axes(ax, (7, 0.32 * len(counts) + 1.5))
    ax.barh([_name(n) for n in counts.index], counts.to_numpy(), color=palette(counts.index))
    ax.xaxis.set_major_formatter(_thousands())
    ax.set_xlabel("touches")
    total = float(counts.sum())
    if total > 0:
        top = counts.index[-1]
        ax.set_title(f"{_name(top)} brought the most touches: {counts.iloc[-1]:,.0f} of {total:,.0f} "
                     f"({counts.iloc[-1] / total:.0%})", fontsize="medium")
    else:
        ax.set_title("No touches recorded")
    _tidy(ax)
    return ax


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:,.0f}")


def plot_journey_lengths(touches: pd.Series, cap: int = 10, ax: Any = None) -> Any:
    """Converting journeys by number of touches (``cap`` = that many or more); the title says how
    many convert on their first touch and how many need five or more."""
    n = touches.clip(upper=cap).value_counts().sort_index()
    ax = _axes(ax, (7, 3.5))
    ax.bar([str(int(k)) + ("+" if k == cap else "") for k in n.index], n.to_numpy(), color="#4c72b0")
    ax.yaxis.set_major_formatter(_thousands())
    ax.set_xlabel("touches in the journey")
    ax.set_ylabel("converting journeys")
    total = float(n.sum())
    if total > 0:
        one = float(n.get(1, 0)) / total
        long = float(n[n.index >= 5].sum()) / total
        ax.set_title(f"{one:.0%} of converting journeys have a single touch; {long:.0%} have five or more",
                     fontsize="medium")
    else:
        ax.set_title("No converting journeys")
    _tidy(ax)
    return ax


def plot_model_comparison(comparison: pd.DataFrame, ax: Any = None) -> Any:
    """Each model's share of conversions per channel (from :func:`compare_models`), with intervals where
    present; channel names in their colours; the title says where the models agree and where not."""
    wide = comparison.pivot(index="channel", columns="model", values="share")
    wide = wide.reindex(columns=list(dict.fromkeys(comparison["model"])))
    order = wide.mean(axis=1).sort_values().index
    wide = wide.loc[order]
    ax = _axes(ax, (8, 0.55 * len(wide) + 1.8))
    height = 0.8 / max(len(wide.columns), 1)
    y = np.arange(len(wide))
    shades = ("#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b", "#fd8d3c",
              "#e6550d", "#a63603")
    for i, model in enumerate(wide.columns):
        xerr = None
        if {"share_lower", "share_upper"} <= set(comparison.columns):
            sub = comparison[comparison["model"] == model].set_index("channel").reindex(order)
            xerr = np.vstack([sub["share"] - sub["share_lower"], sub["share_upper"] - sub["share"]])
            xerr = np.nan_to_num(xerr.clip(min=0))
        ax.barh(y + i * height, wide[model].fillna(0.0), height=height, label=str(model), xerr=xerr,
                capsize=1.5, color=shades[i % len(shades)], error_kw={"lw": 0.6})
    ax.set_yticks(y + height * (len(wide.columns) - 1) / 2, [_name(n) for n in wide.index])
    for tick, name in zip(ax.get_yticklabels(), wide.index, strict=False):
        tick.set_color(channel_colour(name))
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("share of conversions credited")
    if len(wide):
        top = wide.idxmax().value_counts()
        spread = (wide.max(axis=1) - wide.min(axis=1)).sort_values()
        leader = top.index[0]
        ax.set_title(f"{top.iloc[0]} of {len(wide.columns)} models rank {_name(leader)} first; the models "
                     f"disagree most on {_name(spread.index[-1])} ({wide.loc[spread.index[-1]].min():.0%} to "
                     f"{wide.loc[spread.index[-1]].max():.0%})", fontsize="medium")
    ax.legend(loc="lower right", fontsize="x-small", title="model")
    _tidy(ax)
    return ax


def plot_mrr(moves: pd.DataFrame, ax: Any = None, currency: str = "") -> Any:
    """MRR at month end (from :func:`closedloop_nb.lifetime.subscriptions.mrr_movements`); the title
    says where it ended and how it moved over the months shown."""
    mrr = moves["mrr_end"].astype(float)
    ax = _axes(ax, (7, 3.5))
    labels = [str(m)[:7] for m in mrr.index]
    ax.plot(labels, mrr.to_numpy(), marker="o", color="#4c72b0")
    _money(ax, currency=currency)
    ax.set_ylabel("MRR at month end")
    ax.tick_params(axis="x", rotation=30)
    if len(mrr) >= 2 and mrr.iloc[-2] > 0:
        change = mrr.iloc[-1] / mrr.iloc[-2] - 1
        ax.set_title(f"MRR ended {labels[-1]} at {_short(mrr.iloc[-1], currency)}, "
                     f"{'up' if change >= 0 else 'down'} {abs(change):.0%} on the month before "
                     f"({_short(mrr.iloc[-2], currency)})", fontsize="medium")
    elif len(mrr):
        ax.set_title(f"MRR at month end: {_short(mrr.iloc[-1], currency)} at {labels[-1]}")
    else:
        ax.set_title("No subscription revenue recorded")
    ax.set_ylim(bottom=0)
    _tidy(ax)
    return ax
