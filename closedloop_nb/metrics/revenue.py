"""Revenue and return per channel: leads, pipeline, customers and revenue credited against spend.

Definitions (per channel, campaign or keyword; per period when one is given):

==========================  =====================================================================
``leads``                   leads created, credited (default: to their lead source)
``opportunities``           deals created, credited by the deal credits
``pipeline``                the amount of those deals
``customers``               deals closed won (a won deal is a new customer)
``revenue``                 the amount of those won deals
``spend``                   cost in the ``spend`` table
``cost_per_lead``           spend / leads
``cost_per_opportunity``    spend / opportunities
``cac``                     spend / customers (customer acquisition cost)
``roi``                     (revenue - spend) / spend; -1 (-100%) with spend and no revenue
``roas``                    revenue / spend
==========================  =====================================================================

Every ratio is empty (NaN) where its denominator is zero: revenue without spend has no ROI, not an
infinite one. Cost ratios are empty for channels without recorded spend (organic search has costs,
just not in the spend table), rather than a misleading zero. The ``Total`` row adds up the channels,
so it equals the CRM's revenue and the spend table's cost for the period.

Examples
--------
>>> import pandas as pd
>>> roi = revenue_and_roi(pd.Series({"Email": 500.0, "Paid Search": 0.0, "Referral": 300.0}),
...                       pd.Series({"Email": 100.0, "Paid Search": 50.0}))
>>> roi.loc["Paid Search", "roi"], roi.loc["Email", "roas"], bool(pd.isna(roi.loc["Referral", "roi"]))
(np.float64(-1.0), np.float64(5.0), True)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from closedloop_nb.metrics._ids import isin
from closedloop_nb.metrics.pipeline import _check_credits, _period, credit_level

__all__ = ["PERFORMANCE_COLUMNS", "best_and_worst", "channel_performance", "currency_of", "money",
           "revenue_and_roi", "revenue_by_model", "safe_ratio"]

#: Columns of :func:`channel_performance`, in order.
PERFORMANCE_COLUMNS = ("leads", "opportunities", "pipeline", "customers", "revenue", "spend",
                       "cost_per_lead", "cost_per_opportunity", "cac", "roi", "roas")


def safe_ratio(num: pd.Series | float, den: pd.Series | float) -> pd.Series | float:
    """``num / den``, empty (NaN) where ``den`` is zero or missing; never raises, never infinite."""
    if isinstance(num, pd.Series) or isinstance(den, pd.Series):
        den_s = den if isinstance(den, pd.Series) else pd.Series(den, index=num.index)
        return (num / den_s.where(den_s > 0)).astype(float)
    return float(num) / float(den) if den and den > 0 else np.nan


def channel_performance(tables: dict[str, pd.DataFrame], credits: pd.DataFrame,
                        lead_credits: pd.DataFrame | None = None, period: str | None = None,
                        freq: str = "M") -> pd.DataFrame:
    """Leads, pipeline, customers, revenue, spend and their ratios per channel (see module docs).

    Parameters
    ----------
    tables
        Validated canonical tables (``leads``, ``deals``, optionally ``spend``).
    credits
        Per-deal shares (:func:`closedloop_nb.metrics.deal_credits`): the attribution model.
    lead_credits
        Per-lead shares (:func:`closedloop_nb.metrics.lead_credits`); default: every lead to its
        lead source (first touch), at the same level as ``credits``.
    period
        Only what happened in this period (e.g. ``"2024-03"``): leads and deals created, deals won,
        money spent in it. ``None``: everything.
    freq
        Period alias for ``period`` (``"M"`` months, ``"Q"`` quarters).

    Returns
    -------
    pandas.DataFrame
        One row per channel and ``Total``; columns :data:`PERFORMANCE_COLUMNS`.
    """
    if isinstance(tables, Mapping):
        currency_of(tables)  # refuses money in several currencies: never added up
    return _performance(tables, credits, lead_credits, period, freq)


def _performance(tables: Mapping[str, pd.DataFrame], credits: pd.DataFrame,
                 lead_credits: pd.DataFrame | None, period: str | None, freq: str) -> pd.DataFrame:
    """:func:`channel_performance` once the tables' money is known to be in one currency."""
    level = credit_level(credits)
    deals = tables["deals"]
    _check_credits(credits, deals)
    if lead_credits is None:
        from closedloop_nb.metrics.credits import lead_credits as _lead_credits

        lead_credits = _lead_credits(tables, "lead_source", level=level)

    def within(ts: pd.Series) -> np.ndarray:
        return np.ones(len(ts), bool) if period is None else (_period(ts, freq) == str(period)).to_numpy()

    leads = tables["leads"]
    new_leads = lead_credits[isin(lead_credits["person_id"],
                                  leads.loc[within(leads["created_at"]), "person_id"])]
    d = deals.merge(credits[["deal_id", level, "share"]], on="deal_id")
    won = d["won"].fillna(False).astype(bool) & d["closed_at"].notna()
    created, closed = d[within(d["created_at"])], d[won & within(d["closed_at"])]
    out = pd.DataFrame({
        "leads": new_leads.groupby(level)["share"].sum(),
        "opportunities": created.groupby(level)["share"].sum(),
        "pipeline": (created["share"] * created["amount"]).groupby(created[level]).sum(),
        "customers": closed.groupby(level)["share"].sum(),
        "revenue": (closed["share"] * closed["amount"]).groupby(closed[level]).sum(),
    })
    spend = tables.get("spend")
    if spend is not None and level in spend:
        s = spend[within(spend["date"])]
        out = out.join(s.groupby(level)["cost"].sum().rename("spend"), how="outer")
    else:
        out["spend"] = 0.0 if spend is None else np.nan
    out = out.fillna({c: 0.0 for c in out.columns if c != "spend" or spend is None or level in spend})
    out.loc["Total"] = out.sum(min_count=1)
    paid = out["spend"].where(out["spend"] > 0)  # no recorded cost: cost per lead unknown, not free
    out["cost_per_lead"] = safe_ratio(paid, out["leads"])
    out["cost_per_opportunity"] = safe_ratio(paid, out["opportunities"])
    out["cac"] = safe_ratio(paid, out["customers"])
    out["roi"] = safe_ratio(out["revenue"] - out["spend"], out["spend"])
    out["roas"] = safe_ratio(out["revenue"], out["spend"])
    out.index.name = level
    return out[list(PERFORMANCE_COLUMNS)]


def revenue_and_roi(revenue: pd.Series, spend: pd.Series) -> pd.DataFrame:
    """Revenue, spend, ROI = (revenue - spend) / spend and ROAS = revenue / spend per channel.

    A channel with spend and no revenue has ROI -100%; one with revenue and no spend has ROI and ROAS
    undefined (empty), not infinite; nothing raises on a zero.
    """
    out = pd.DataFrame({"revenue": revenue, "spend": spend}).fillna(0.0)
    paid = out["spend"] > 0
    out["roi"] = ((out["revenue"] - out["spend"]) / out["spend"]).where(paid)
    out["roas"] = (out["revenue"] / out["spend"]).where(paid)
    out.loc["Total"] = [out["revenue"].sum(), out["spend"].sum(), np.nan, np.nan]
    total_spend = out.loc["Total", "spend"]
    if total_spend > 0:
        out.loc["Total", "roi"] = (out.loc["Total", "revenue"] - total_spend) / total_spend
        out.loc["Total", "roas"] = out.loc["Total", "revenue"] / total_spend
    out.index.name = "channel"
    return out


#: Symbols of common currencies, for sentences (others are written as their ISO code).
SYMBOLS = {"GBP": "£", "USD": "$", "EUR": "€", "JPY": "¥", "INR": "₹"}


def currency_of(tables: dict[str, pd.DataFrame]) -> str:
    """The one currency of deals and spend (ISO code), ``""`` when not recorded.

    Raises
    ------
    ValueError
        When amounts come in several currencies: they cannot be added up without conversion.
    """
    codes: set[str] = set()
    for name in ("deals", "spend", "subscriptions"):
        t = tables.get(name)
        if t is not None and "currency" in t:
            # each distinct code once (not every row's: ~1 s at 10M touchpoints' deals and subscriptions)
            codes |= {str(c).upper() for c in t["currency"].dropna().unique()}
    if len(codes) > 1:
        raise ValueError(f"amounts are in several currencies ({', '.join(sorted(codes))}); they are never "
                         "added up: open the workspace with reporting_currency and fx_rates to convert them, "
                         "or report one currency at a time (closedloop_nb.money.one_currency)")
    return codes.pop() if codes else ""


def money(amount: float, currency: str = "") -> str:
    """``£1,234`` (or ``1,234 XYZ``, or ``1,234`` without a currency); empty amounts as ``n/a``."""
    if amount is None or not np.isfinite(amount):
        return "n/a"
    sign = "-" if amount < 0 else ""
    if currency in SYMBOLS:
        return f"{sign}{SYMBOLS[currency]}{abs(amount):,.0f}"
    return f"{sign}{abs(amount):,.0f}" + (f" {currency}" if currency else "")


def best_and_worst(performance: pd.DataFrame, by: str = "revenue", n: int = 3,
                   paid_only: bool = False) -> pd.DataFrame:
    """The ``n`` best and ``n`` worst channels (or campaigns) of a :func:`channel_performance` table.

    ``Total`` and the ``(no touches)`` / ``(not set)`` buckets are left out, as are rows where
    ``by`` is empty (no ROI without spend); ``paid_only`` keeps rows with spend only.

    Returns
    -------
    pandas.DataFrame
        The rows, with ``rank`` (``best 1``..., ``worst 1``...) as index.
    """
    p = performance.drop(index=[i for i in ("Total", "(no touches)", "(not set)") if i in performance.index])
    if paid_only:
        p = p[p["spend"] > 0]
    p = p[p[by].notna()].sort_values(by, ascending=False, kind="stable")
    k = min(n, len(p) // 2) if len(p) < 2 * n else n
    best = p.head(k).assign(rank=[f"best {i + 1}" for i in range(k)])
    worst = p.tail(k).iloc[::-1].assign(rank=[f"worst {i + 1}" for i in range(k)])
    level = performance.index.name or "channel"
    return pd.concat([best, worst]).rename_axis(level).reset_index().set_index("rank")


def revenue_by_model(tables: Mapping[str, pd.DataFrame], models: list[str], period: str | None = None,
                     lookback_days: int = 90, level: str = "channel",
                     nonnegative: bool = False) -> pd.DataFrame:
    """Pipeline, revenue, spend and ROAS per channel under each model, side by side (tidy).

    Totals are the same under every model (the CRM's); only the split by channel moves. Every model
    reads the same journey build (the deal journeys, built once, or the workspace's cached ones).
    ``nonnegative`` applies the reports' credit policy to each model's deal credits first
    (:func:`closedloop_nb.metrics.policy.nonnegative_credits`: no negative shares, deals whole).

    Returns
    -------
    pandas.DataFrame
        ``model``, ``<level>``, ``pipeline``, ``revenue``, ``spend``, ``roas``; no ``Total`` rows.
    """
    from closedloop_nb.metrics._engine import engine_of
    from closedloop_nb.metrics.credits import deal_credits, lead_credits

    eng = engine_of(tables)
    currency_of(eng)  # refuses money in several currencies: never added up (once for every model)
    leads = lead_credits(eng, "lead_source", lookback_days, level)
    parts = []
    for name in models:
        credits = deal_credits(eng, name, lookback_days, level)
        if nonnegative:
            from closedloop_nb.metrics.policy import nonnegative_credits

            credits = nonnegative_credits(credits)
        perf = _performance(eng, credits, leads, period, "M")  # the currency was checked above
        perf = perf.drop(index="Total")[["pipeline", "revenue", "spend", "roas"]]
        parts.append(perf.reset_index().assign(model=name))
    out = pd.concat(parts, ignore_index=True)
    return out[["model", level, "pipeline", "revenue", "spend", "roas"]]
