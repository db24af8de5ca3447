"""Subscription metrics from MRR movements, defined as ChartMogul documents them.

* customer churn rate = customers lost in the month / customers at its start (new ones excluded)
* gross MRR churn rate = (churned + contraction MRR) / MRR at the start
* net MRR churn rate = (churned + contraction - expansion - reactivation MRR) / MRR at the start
* net revenue retention of a cohort = (start MRR + expansion - contraction - churn) / start MRR;
  gross revenue retention leaves expansion out (at most 100%)
* LTV = ARPA x gross margin / customer churn rate

Examples
--------
>>> import pandas as pd
>>> moves = pd.DataFrame({"customer_id": ["a", "b", "a", "b"],
...     "month": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-02-01", "2024-02-01"]),
...     "movement": ["new", "new", "expansion", "churn"], "mrr_delta": [100.0, 50.0, 20.0, -50.0],
...     "mrr": [100.0, 50.0, 120.0, 0.0]})
>>> mrr_movements(moves).loc["2024-02-01", ["mrr_start", "expansion", "churn", "mrr_end"]].tolist()
[150.0, 20.0, 50.0, 120.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["arpa_ltv", "cohort_retention", "mrr_by_customer", "mrr_movements", "revenue_retention"]

_KINDS = ("new", "expansion", "contraction", "churn", "reactivation")


def mrr_by_customer(subscriptions: pd.DataFrame) -> pd.DataFrame:
    """MRR of every customer at the end of every month (customers x months), carried forward."""
    last = (subscriptions.sort_values(["customer_id", "month"], kind="stable")
            .groupby(["customer_id", "month"])["mrr"].last().unstack("month"))
    months = pd.date_range(last.columns.min(), last.columns.max(), freq="MS")
    return last.reindex(columns=months).ffill(axis=1).fillna(0.0)


def mrr_movements(subscriptions: pd.DataFrame) -> pd.DataFrame:
    """Per month: MRR at the start, each movement (as positive amounts), MRR at the end, customers
    at the start, new and lost customers, and the churn rates.

    Returns
    -------
    pandas.DataFrame
        Indexed by month: ``mrr_start``, ``new``, ``expansion``, ``contraction``, ``churn``,
        ``reactivation``, ``mrr_end``, ``customers_start``, ``customers_new``, ``customers_lost``,
        ``customer_churn_rate``, ``gross_mrr_churn_rate``, ``net_mrr_churn_rate`` (rates are empty
        when the month started with nothing).
    """
    wide = mrr_by_customer(subscriptions)
    flows = (subscriptions.assign(amount=subscriptions["mrr_delta"].abs())
             .pivot_table(index="month", columns="movement", values="amount", aggfunc="sum")
             .reindex(index=wide.columns, columns=list(_KINDS)).fillna(0.0))
    end = wide.sum(axis=0)
    start = end.shift(1, fill_value=0.0)
    active = wide > 0
    was = active.shift(1, axis=1, fill_value=False)
    out = flows.copy()
    out.insert(0, "mrr_start", start)
    out["mrr_end"] = end
    out["customers_start"] = was.sum(axis=0)
    out["customers_new"] = (active & ~was).sum(axis=0)
    out["customers_lost"] = (was & ~active).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        base = out["mrr_start"].where(out["mrr_start"] > 0)
        out["customer_churn_rate"] = out["customers_lost"] / out["customers_start"].where(
            out["customers_start"] > 0)
        out["gross_mrr_churn_rate"] = (out["churn"] + out["contraction"]) / base
        out["net_mrr_churn_rate"] = (out["churn"] + out["contraction"] - out["expansion"]
                                     - out["reactivation"]) / base
    out.index.name = "month"
    return out


def revenue_retention(subscriptions: pd.DataFrame, cohort_month: str | pd.Timestamp,
                      months: int = 12) -> pd.Series:
    """Net and gross revenue retention of the customers paying at the start of ``cohort_month``,
    ``months`` later: (start + expansion - contraction - churn) / start, and the same without
    expansion (so at most 1)."""
    wide = mrr_by_customer(subscriptions)
    start_m, end_m = retention_window(wide, cohort_month, months)
    cohort = wide[wide[start_m] > 0]
    before, after = cohort[start_m], cohort[end_m]
    start = before.sum()
    return pd.Series({"net_revenue_retention": after.sum() / start,
                      "gross_revenue_retention": np.minimum(after, before).sum() / start,
                      "customers": len(cohort), "mrr_start": start})


def retention_window(wide: pd.DataFrame, cohort_month: str | pd.Timestamp,
                     months: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The month before ``cohort_month`` and ``months`` later, both checked to be in the data."""
    start_m = pd.Timestamp(cohort_month) - pd.DateOffset(months=1)
    end_m = pd.Timestamp(cohort_month) + pd.DateOffset(months=months - 1)
    if start_m not in wide.columns or end_m not in wide.columns:
        raise ValueError(f"the data cover {wide.columns.min():%Y-%m} to {wide.columns.max():%Y-%m}; "
                         f"a {months}-month window from {pd.Timestamp(cohort_month):%Y-%m} needs both ends")
    return start_m, end_m


def cohort_retention(subscriptions: pd.DataFrame, by: pd.Series | None = None,
                     revenue: bool = False) -> pd.DataFrame:
    """Share of each cohort (month of first MRR, optionally also a segment such as the acquisition
    channel) still paying k months later. Cells a cohort has not reached yet are empty, not zero.

    Parameters
    ----------
    subscriptions
        MRR movements.
    by
        Optional segment per customer (indexed by customer id), e.g. the first-touch channel.
    revenue
        Retained MRR share instead of customer share.
    """
    wide = mrr_by_customer(subscriptions)
    months = wide.columns
    first = (wide > 0).idxmax(axis=1)
    rows = []
    groups = [first] if by is None else [first, by.reindex(wide.index)]
    keys = pd.concat(groups, axis=1)
    keys.columns = ["cohort"] + ([] if by is None else ["segment"])
    for key, grp in keys.groupby(list(keys.columns)):  # key is a tuple (cohort[, segment])
        sub = wide.loc[grp.index]
        start = pd.Timestamp(key[0])
        k0 = months.get_loc(start)
        base = sub.iloc[:, k0]
        row = {}
        for k in range(len(months) - k0):
            col = sub.iloc[:, k0 + k]
            row[k] = (col.sum() / base.sum()) if revenue else ((col > 0).sum() / len(sub))
        rows.append((key, len(sub), row))
    index = pd.MultiIndex.from_tuples([r[0] for r in rows], names=list(keys.columns))
    table = pd.DataFrame([r[2] for r in rows], index=index).sort_index()
    table.insert(0, "customers", [r[1] for r in rows])
    return table


def arpa_ltv(arpa: float, churn_rate: float, gross_margin: float = 1.0) -> float:
    """ChartMogul's LTV: ARPA x gross margin / customer churn rate (inf when nobody churns)."""
    if churn_rate < 0 or arpa < 0 or not 0 <= gross_margin <= 1:
        raise ValueError("arpa and churn_rate must be >= 0 and gross_margin within [0, 1]")
    return float("inf") if churn_rate == 0 else arpa * gross_margin / churn_rate
