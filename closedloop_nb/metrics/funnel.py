"""Funnel step rates per acquisition channel, with confidence intervals.

A person's acquisition channel is the channel of the first touch of their lead journey (people with
no web touches are ``(no touches)``, see :func:`closedloop_nb.metrics.acquisition_channel`), so every
lead lands in exactly one channel and channel totals reconcile to the CRM.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from closedloop_nb.metrics.credits import NO_TOUCHES

__all__ = ["funnel_rates"]

def funnel_rates(tables: dict[str, pd.DataFrame], channel: pd.Series, alpha: float = 0.05) -> pd.DataFrame:
    """People reaching each funnel stage per channel, and step rates with Wilson intervals.

    Counts are of people (a person with two deals is one opportunity). Each step rate is a proportion
    of a cohort: of the people at one stage, the share who reached the next (an opportunity recorded
    without an SQL date does not count towards the SQL -> opportunity rate), so no rate exceeds 1.

    The first step, visitor -> lead, is counted in visitors (anonymous ids: cookies, devices), by the
    channel of each visitor's first touch: of the visitors a channel first brought, the share matched
    to a person who became a lead. It needs ``touchpoints`` and ``identities``.

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
        One row per channel (and ``Total``): ``visitors``, ``leads``, ``mqls``, ``sqls``,
        ``opportunities``, ``won``, then each rate (``visitor_to_lead``, ``mql_rate``, ``sql_rate``,
        ``opportunity_rate``, ``win_rate``, ``lead_to_customer``) with ``_lower`` / ``_upper``
        bounds; empty where nobody was at the earlier stage.
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
    visitors = _visitors(tables, set(leads["person_id"]))
    agg = agg.join(visitors, how="outer").fillna(0)
    agg.loc["Total"] = agg.sum()
    out = agg[["visitors", *stages]].astype(int)
    pairs = [("visitor_to_lead", "_visitor_leads", "visitors")]
    pairs += [(steps[cur], f"_{steps[cur]}", prev) for prev, cur in zip(stages[:-1], stages[1:], strict=True)]
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


def _visitors(tables: Mapping[str, pd.DataFrame], lead_people: set) -> pd.DataFrame:
    """Per first-touch channel: visitors, and visitors matched to a person who became a lead
    (computed in the engine; a visitor's touches at the same instant are ordered by touch id)."""
    if "touchpoints" not in tables or "identities" not in tables:
        return pd.DataFrame({"visitors": pd.Series(dtype=float), "_visitor_leads": pd.Series(dtype=float)})
    from closedloop_nb.metrics._engine import engine_of

    eng = engine_of(tables)
    order = "timestamp, touch_id" if "touch_id" in eng.columns("touchpoints") else "timestamp"
    out = eng.frame(f"""
WITH first AS (
  SELECT visitor_id, first(COALESCE(CAST(channel AS VARCHAR), '(not set)') ORDER BY {order}) AS channel
  FROM touchpoints GROUP BY visitor_id),
converted AS (
  SELECT DISTINCT i.visitor_id FROM identities i JOIN (SELECT DISTINCT person_id FROM leads) l
  ON i.person_id = l.person_id)
SELECT f.channel, COUNT(*) AS visitors, COUNT(c.visitor_id) AS _visitor_leads
FROM first f LEFT JOIN converted c ON f.visitor_id = c.visitor_id
GROUP BY f.channel ORDER BY f.channel""")
    return out.set_index("channel").astype("int64")
