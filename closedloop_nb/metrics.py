"""Closed-loop metrics by acquisition channel: funnel rates and revenue against spend.

A person's acquisition channel is the channel of the first touch of their lead journey (people with
no web touches are ``(no touches)``), so every lead, deal and pound of revenue lands in exactly one
channel and channel totals reconcile to the CRM.

Examples
--------
>>> import pandas as pd
>>> roi = revenue_and_roi(pd.Series({"Email": 500.0, "Paid Search": 0.0, "Referral": 300.0}),
...                       pd.Series({"Email": 100.0, "Paid Search": 50.0}))
>>> roi.loc["Paid Search", "roi"], roi.loc["Email", "roas"], bool(pd.isna(roi.loc["Referral", "roi"]))
(np.float64(-1.0), np.float64(5.0), True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

__all__ = ["NO_TOUCHES", "acquisition_channel", "funnel_rates", "revenue_and_roi"]

NO_TOUCHES = "(no touches)"

def acquisition_channel(tables: dict[str, pd.DataFrame], lookback_days: int = 90) -> pd.Series:
    """Each lead's channel of first touch (``(no touches)`` for leads without web touches)."""
    from closedloop_nb.journeys import build_journeys

    touches = build_journeys(tables, conversion="lead", lookback_days=lookback_days, progress=False).touches
    first = (touches[touches["converted"] == 1].sort_values(["person_id", "ts", "touch_id"])
             .drop_duplicates("person_id").set_index("person_id")["channel"])
    people = tables["leads"]["person_id"]
    return pd.Series(people.map(first).fillna(NO_TOUCHES).to_numpy(), index=people.to_numpy(),
                     name="channel")


def funnel_rates(tables: dict[str, pd.DataFrame], channel: pd.Series, alpha: float = 0.05) -> pd.DataFrame:
    """People reaching each funnel stage per channel, and step rates with Wilson intervals.

    Counts are of people (a person with two deals is one opportunity). Each step rate is a proportion
    of a cohort: of the people at one stage, the share who reached the next (an opportunity recorded
    without an SQL date does not count towards the SQL -> opportunity rate), so no rate exceeds 1.

    Parameters
    ----------
    tables
        Validated canonical tables (``leads``, ``deals``).
    channel
        Acquisition channel per person (see :func:`acquisition_channel`).
    alpha
        1 - confidence of the intervals.

    Returns
    -------
    pandas.DataFrame
        One row per channel (and ``Total``): ``leads``, ``mqls``, ``sqls``, ``opportunities``,
        ``won``, then each rate (``mql_rate``, ``sql_rate``, ``opportunity_rate``, ``win_rate``,
        ``lead_to_customer``) with ``_lower`` / ``_upper`` bounds; empty where nobody was at the
        earlier stage.
    """
    leads, deals = tables["leads"], tables["deals"]
    people = pd.DataFrame({"person_id": leads["person_id"].to_numpy()})
    people["channel"] = people["person_id"].map(channel).fillna(NO_TOUCHES).to_numpy()
    people["leads"] = True
    people["mqls"] = leads["mql_at"].notna().to_numpy()
    people["sqls"] = leads["sql_at"].notna().to_numpy()
    people["opportunities"] = people["person_id"].isin(deals["person_id"])
    won = deals.loc[deals["won"].fillna(False).astype(bool), "person_id"]
    people["won"] = people["person_id"].isin(won)
    stages = ["leads", "mqls", "sqls", "opportunities", "won"]
    steps = {"mqls": "mql_rate", "sqls": "sql_rate", "opportunities": "opportunity_rate",
             "won": "win_rate"}
    for prev, cur in zip(stages[:-1], stages[1:], strict=True):  # cohort: at prev and reached cur
        people[f"_{steps[cur]}"] = people[prev] & people[cur]
    agg = people.drop(columns="person_id").groupby("channel").sum()
    agg.loc["Total"] = agg.sum()
    out = agg[stages].astype(int)
    pairs = [(steps[cur], f"_{steps[cur]}", prev) for prev, cur in zip(stages[:-1], stages[1:], strict=True)]
    pairs.append(("lead_to_customer", "won", "leads"))
    for name, num, den in pairs:
        k, n = agg[num].to_numpy(float), agg[den].to_numpy(float)
        ok = n > 0
        rate = np.full(len(n), np.nan)
        lo, hi = rate.copy(), rate.copy()
        rate[ok] = k[ok] / n[ok]
        lo[ok], hi[ok] = proportion_confint(k[ok], n[ok], alpha=alpha, method="wilson")
        out[name], out[f"{name}_lower"], out[f"{name}_upper"] = rate, lo, hi
    out.index.name = "channel"
    return out


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
