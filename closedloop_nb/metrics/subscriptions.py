"""Subscription revenue by source: MRR, ARR, movements and net revenue retention per channel.

ChartMogul can segment MRR by one stored source attribute only; here a customer's MRR is split over
channels by the same per-deal credits as the pipeline, so MRR by source works under first touch and
under any multi-touch model. A subscription customer (a ``person_id`` or an ``account_id``) takes the
credits of their first won deal (else their first deal); customers without any deal are
``(no deal)``, shown and counted, never dropped. For every month the channels add up to the total
MRR (:func:`closedloop_nb.lifetime.subscriptions.mrr_movements`).

Examples
--------
>>> import pandas as pd
>>> subs = pd.DataFrame({"customer_id": ["p1", "p1"], "month": pd.to_datetime(["2024-01-01", "2024-02-01"]),
...                      "movement": ["new", "expansion"], "mrr_delta": [100.0, 20.0], "mrr": [100.0, 120.0]})
>>> deals = pd.DataFrame({"deal_id": ["d1"], "person_id": ["p1"], "account_id": [None],
...                       "won": [True], "closed_at": pd.to_datetime(["2024-01-01"], utc=True)})
>>> credits = pd.DataFrame({"deal_id": ["d1", "d1"], "channel": ["Email", "Paid Search"],
...                         "share": [0.25, 0.75]})
>>> m = mrr_by_source({"subscriptions": subs, "deals": deals}, credits)
>>> m[m.month == "2024-02"][["channel", "mrr", "expansion"]].values.tolist()
[['Email', 30.0, 5.0], ['Paid Search', 90.0, 15.0]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from closedloop_nb.lifetime.subscriptions import _KINDS, mrr_by_customer, retention_window
from closedloop_nb.metrics.pipeline import credit_level

__all__ = ["NO_DEAL", "customer_credits", "mrr_by_source", "nrr_by_source"]

NO_DEAL = "(no deal)"


def customer_credits(tables: dict[str, pd.DataFrame], credits: pd.DataFrame) -> pd.DataFrame:
    """Each subscription customer's channel shares: those of their first won deal (else first deal).

    Returns
    -------
    pandas.DataFrame
        ``customer_id``, ``<level>``, ``share`` (adding up to 1 per customer).
    """
    level = credit_level(credits)
    customers = pd.Series(tables["subscriptions"]["customer_id"].unique(), name="customer_id")
    deals = tables["deals"]
    won = deals["won"].fillna(False).astype(bool)
    # a deal belongs to its person and to its account; won deals first, then by close / creation time
    when = deals["closed_at"] if "closed_at" in deals else deals.get("created_at")
    keyed = pd.concat([
        pd.DataFrame({"customer_id": deals[col].to_numpy(), "deal_id": deals["deal_id"].to_numpy(),
                      "lost": ~won.to_numpy(), "when": when.to_numpy()})
        for col in ("person_id", "account_id") if col in deals
    ]).dropna(subset=["customer_id"])
    first = (keyed.sort_values(["customer_id", "lost", "when", "deal_id"], na_position="last", kind="stable")
             .drop_duplicates("customer_id").set_index("customer_id")["deal_id"])
    frame = pd.DataFrame({"customer_id": customers, "deal_id": customers.map(first).to_numpy()})
    out = frame.merge(credits[["deal_id", level, "share"]], on="deal_id", how="left")
    out[level] = out[level].fillna(NO_DEAL)
    out["share"] = out["share"].fillna(1.0)
    return out[["customer_id", level, "share"]]


def mrr_by_source(tables: dict[str, pd.DataFrame], credits: pd.DataFrame) -> pd.DataFrame:
    """MRR, ARR, movements and paying customers per month and channel.

    Parameters
    ----------
    tables
        Validated canonical tables (``subscriptions``, ``deals``).
    credits
        Per-deal shares (:func:`closedloop_nb.metrics.deal_credits`).

    Returns
    -------
    pandas.DataFrame
        ``month`` (``YYYY-MM``), ``<level>``, ``mrr`` (end of month), ``arr`` (12 x MRR), the
        movements ``new``, ``expansion``, ``contraction``, ``churn``, ``reactivation`` (positive
        amounts) and ``customers`` (paying at the end of the month, credited).
    """
    level = credit_level(credits)
    subs = tables["subscriptions"]
    shares = _share_matrix(customer_credits(tables, credits), level)
    wide = mrr_by_customer(subs)
    s = shares.reindex(wide.index).fillna(0.0)
    mrr = s.T @ wide.to_numpy()
    paying = s.T @ (wide.to_numpy() > 0)
    months = wide.columns.strftime("%Y-%m")
    out = pd.DataFrame({
        "month": np.tile(months, len(s.columns)), level: np.repeat(s.columns.to_numpy(), len(months)),
        "mrr": mrr.to_numpy().ravel(), "customers": paying.to_numpy().ravel()})
    flows = subs.assign(amount=subs["mrr_delta"].abs(),
                        month=pd.to_datetime(subs["month"]).dt.strftime("%Y-%m"))
    long = flows.merge(customer_credits(tables, credits), on="customer_id")
    long["amount"] *= long["share"]
    moves = long.pivot_table(index=["month", level], columns="movement", values="amount", aggfunc="sum")
    moves = moves.reindex(columns=list(_KINDS)).fillna(0.0)
    out = out.merge(moves.reset_index(), on=["month", level], how="left").fillna({k: 0.0 for k in _KINDS})
    out.insert(3, "arr", 12 * out["mrr"])
    return out.sort_values(["month", level], kind="stable").reset_index(drop=True)


def nrr_by_source(tables: dict[str, pd.DataFrame], credits: pd.DataFrame, cohort_month: str,
                  months: int = 12) -> pd.DataFrame:
    """Net and gross revenue retention per channel of the customers paying before ``cohort_month``.

    For the customers paying at the end of the month before ``cohort_month``: their MRR ``months``
    later over their MRR then (net; with expansion), and the same capping each customer at their
    start (gross; at most 1). Channels weigh customers by their credited share.

    Returns
    -------
    pandas.DataFrame
        Per channel and ``Total``: ``customers``, ``mrr_start``, ``mrr_end``,
        ``net_revenue_retention``, ``gross_revenue_retention``.
    """
    level = credit_level(credits)
    wide = mrr_by_customer(tables["subscriptions"])
    start_m, end_m = retention_window(wide, cohort_month, months)
    cohort = wide[wide[start_m] > 0]
    s = _share_matrix(customer_credits(tables, credits), level).reindex(cohort.index).fillna(0.0)
    before, after = cohort[start_m].to_numpy(), cohort[end_m].to_numpy()
    out = pd.DataFrame({"customers": s.sum(axis=0), "mrr_start": s.T @ before, "mrr_end": s.T @ after,
                        "_kept": s.T @ np.minimum(before, after)})
    out = out[out["customers"] > 0]
    out.loc["Total"] = out.sum()
    out["net_revenue_retention"] = out["mrr_end"] / out["mrr_start"]
    out["gross_revenue_retention"] = out.pop("_kept") / out["mrr_start"]
    out.index.name = level
    return out


def _share_matrix(cc: pd.DataFrame, level: str) -> pd.DataFrame:
    return cc.pivot_table(index="customer_id", columns=level, values="share", aggfunc="sum", fill_value=0.0)
