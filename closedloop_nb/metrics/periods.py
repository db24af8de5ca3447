"""Month over month: every headline number of a period next to the previous period's, with the change.

Examples
--------
>>> import pandas as pd
>>> compare(pd.Series({"revenue": 120.0, "roi": 0.5}), pd.Series({"revenue": 100.0, "roi": 0.0}))
         current  previous  change  pct_change
revenue    120.0     100.0    20.0         0.2
roi          0.5       0.0     0.5         NaN
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from closedloop_nb.metrics.credits import NO_TOUCHES
from closedloop_nb.metrics.pipeline import _period, credit_level
from closedloop_nb.metrics.revenue import channel_performance, money, safe_ratio

__all__ = ["HEADLINES", "compare", "headline_metrics", "headline_sentence", "month_over_month",
           "previous_period"]

#: Headline numbers of a period, in report order.
HEADLINES = ("leads", "mqls", "sqls", "mql_rate", "opportunities", "pipeline", "customers", "revenue",
             "marketing_revenue", "spend", "roi", "roas", "marketing_roas", "cost_per_lead", "cac", "mrr_end",
             "net_new_mrr")


def previous_period(period: str, freq: str = "M") -> str:
    """The period before ``period`` (``"2024-03"`` -> ``"2024-02"``)."""
    return str(pd.Period(period, freq) - 1)


def headline_metrics(tables: dict[str, pd.DataFrame], credits: pd.DataFrame, period: str, freq: str = "M",
                     lead_credits: pd.DataFrame | None = None) -> pd.Series:
    """The period's headline numbers (:data:`HEADLINES`).

    They are totals, so the attribution model (``credits``) does not change them; it only decides
    how they split by channel. ``mqls`` and ``sqls`` count leads that became MQL / SQL in the
    period, and ``mql_rate`` is MQLs over new leads of the same period (a monthly dashboard ratio;
    the cohort rate with intervals is :func:`closedloop_nb.metrics.funnel_rates`). ``mrr_end`` is the
    MRR at the end of the period and ``net_new_mrr`` its change over the period.
    ``marketing_revenue`` leaves out deals of people marketing never touched (``(no touches)``),
    and ``marketing_roas`` sets it against spend: "marketing generated X at Y:1".
    """
    table = channel_performance(tables, credits, lead_credits, period=period, freq=freq)
    perf = table.loc["Total"]
    untouched = float(table["revenue"].get(NO_TOUCHES, 0.0))
    leads = tables["leads"]
    in_period = {c: (_period(leads[c], freq) == period).sum() if c in leads else 0
                 for c in ("mql_at", "sql_at")}
    out = perf.reindex(["leads", "opportunities", "pipeline", "customers", "revenue", "spend", "roi", "roas",
                        "cost_per_lead", "cac"])
    out["mqls"], out["sqls"] = float(in_period["mql_at"]), float(in_period["sql_at"])
    out["mql_rate"] = safe_ratio(out["mqls"], out["leads"])
    out["marketing_revenue"] = perf["revenue"] - untouched
    out["marketing_roas"] = safe_ratio(out["marketing_revenue"], out["spend"])
    out["mrr_end"], out["net_new_mrr"] = _mrr(tables, period, freq)
    return out.reindex(list(HEADLINES)).astype(float)


def _mrr(tables: dict[str, pd.DataFrame], period: str, freq: str) -> tuple[float, float]:
    subs = tables.get("subscriptions")
    if subs is None or subs.empty:
        return np.nan, np.nan
    from closedloop_nb.lifetime.subscriptions import mrr_by_customer

    end = mrr_by_customer(subs).sum(axis=0)
    end.index = end.index.to_period(freq)
    end = end.groupby(level=0).last()
    p = pd.Period(period, freq)
    full = end.reindex(pd.period_range(end.index.min(), max(end.index.max(), p), freq=freq)).ffill()
    now = float(full.get(p, 0.0)) if p >= end.index.min() else 0.0
    before = float(full.get(p - 1, 0.0)) if p - 1 >= end.index.min() else 0.0
    return now, now - before


def compare(current: pd.Series | pd.DataFrame, previous: pd.Series | pd.DataFrame) -> pd.DataFrame:
    """Current, previous, change and relative change, side by side.

    Series give one row per metric. DataFrames (one row per channel) give, per metric, the four
    columns under a two-level header. The relative change is empty where the previous value is 0
    or negative (a change from nothing is not a percentage).
    """
    if isinstance(current, pd.Series):
        cur, prev = current.astype(float), previous.reindex(current.index).astype(float)
        return pd.DataFrame({"current": cur, "previous": prev, "change": cur - prev,
                             "pct_change": safe_ratio(cur - prev, prev)})
    index = current.index.union(previous.index, sort=False)
    cur, prev = current.reindex(index), previous.reindex(index)
    parts = {m: compare(cur[m], prev[m]) for m in current.columns}
    return pd.concat(parts, axis=1)


def month_over_month(tables: dict[str, pd.DataFrame], credits: pd.DataFrame, period: str, freq: str = "M",
                     by_channel: bool = False) -> pd.DataFrame:
    """Headline numbers (or, with ``by_channel``, the channel table) of ``period`` against the period
    before, with the change.

    Examples
    --------
    >>> from closedloop_nb.synth import generate
    >>> from closedloop_nb.validation import validate_tables
    >>> from closedloop_nb.metrics import deal_credits
    >>> tables = validate_tables(generate(3_000, seed=2).frames()).tables
    >>> mom = month_over_month(tables, deal_credits(tables), "2024-03")
    >>> list(mom.columns)
    ['current', 'previous', 'change', 'pct_change']
    """
    level = credit_level(credits)
    from closedloop_nb.metrics.credits import lead_credits

    leads = lead_credits(tables, "lead_source", level=level)
    prev = previous_period(period, freq)
    if by_channel:
        return compare(channel_performance(tables, credits, leads, period, freq),
                       channel_performance(tables, credits, leads, prev, freq))
    return compare(headline_metrics(tables, credits, period, freq, leads),
                   headline_metrics(tables, credits, prev, freq, leads))


def headline_sentence(mom: pd.DataFrame, period: str, currency: str = "") -> str:
    """One sentence for stakeholders from :func:`month_over_month`: revenue, the part marketing
    touched, its return on spend, and the change from the month before.

    The sentence is safe to put in HTML or Markdown: the currency code (a value from the data) is
    masked and every character HTML treats as markup is escaped (``<img ...>`` shows as text).

    Examples
    --------
    >>> mom = compare(pd.Series({"revenue": 120_000.0, "marketing_revenue": 100_000.0, "spend": 20_000.0,
    ...                          "marketing_roas": 5.0}),
    ...               pd.Series({"revenue": 90_000.0, "marketing_revenue": 80_000.0, "spend": 20_000.0,
    ...                          "marketing_roas": 4.0}))
    >>> import re
    >>> for part in re.split("; |: ", headline_sentence(mom, "2024-06", "GBP")):
    ...     print(part)
    In 2024-06 deals closed £120,000 of revenue
    marketing generated £100,000 of it (people with marketing touches) on £20,000 of spend
    £5.00 back per £1 spent (5.0:1)
    that is up 25% on the month before (£80,000).
    """
    cur = mom["current"]
    unit = money(1, currency).replace("1", "").strip()
    text = f"In {period} deals closed {money(cur['revenue'], currency)} of revenue; "
    text += (f"marketing generated {money(cur['marketing_revenue'], currency)} of it "
             "(people with marketing touches)")
    roas = cur["marketing_roas"]
    if cur["spend"] > 0 and np.isfinite(roas):
        text += (f" on {money(cur['spend'], currency)} of spend: {unit}{roas:,.2f} back per {unit}1 spent "
                 f"({roas:,.1f}:1)")
    else:
        text += ", with no marketing spend recorded, so no return can be stated"
    prev, pct = mom.loc["marketing_revenue", "previous"], mom.loc["marketing_revenue", "pct_change"]
    if np.isfinite(pct):
        text += (f"; that is {'up' if pct >= 0 else 'down'} {abs(pct):.0%} on the month before "
                 f"({money(prev, currency)}).")
    elif np.isfinite(prev):
        text += f"; the month before it was {money(prev, currency)}."
    else:
        text += "."
    from closedloop_nb.present import clean_text

    return html.escape(clean_text(text), quote=True)
