"""Recency-frequency-monetary summaries from order (transaction) data.

Columns follow the convention users know from ``lifetimes`` and pymc-marketing:

``frequency``       repeat purchases in the calibration period (purchases after the first)
``recency``         time from the first to the last purchase (0 if no repeat purchase)
``T``               time from the first purchase to the end of the calibration period
``monetary_value``  mean value of the repeat purchases (0 if none)
``frequency_holdout``, ``monetary_value_holdout``, ``duration_holdout``  with ``holdout_end``

Purchases on the same day are merged into one (as Fader, Hardie & Lee do with CDNOW). Times are in
``unit`` (``"W"``: weeks of 7 days, as fractions; ``"D"``: days).

Examples
--------
>>> import pandas as pd
>>> orders = pd.DataFrame({"customer_id": ["a", "a", "a", "b"],
...     "timestamp": pd.to_datetime(["1997-01-01", "1997-01-15", "1997-01-15", "1997-02-01"]),
...     "amount": [10.0, 20.0, 5.0, 8.0]})
>>> rfm_summary(orders, calibration_end="1997-03-01", unit="D").to_dict("index")
{'a': {'frequency': 1, 'recency': 14.0, 'T': 59.0, 'monetary_value': 25.0}, \
'b': {'frequency': 0, 'recency': 0.0, 'T': 28.0, 'monetary_value': 0.0}}
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

__all__ = ["rfm_summary"]

_UNIT_DAYS = {"D": 1.0, "W": 7.0}


def rfm_summary(
    orders: pd.DataFrame,
    calibration_end: str | pd.Timestamp,
    holdout_end: str | pd.Timestamp | None = None,
    customer: str = "customer_id",
    time: str = "timestamp",
    value: str = "amount",
    unit: Literal["D", "W"] = "W",
) -> pd.DataFrame:
    """Per-customer frequency, recency, T and mean repeat spend for a calibration period.

    Parameters
    ----------
    orders
        One row per order.
    calibration_end
        Last day of the calibration period (inclusive). Customers whose first purchase is later are
        left out.
    holdout_end
        Last day of a holdout period after it; adds the holdout columns.
    customer, time, value
        Column names.
    unit
        ``"W"`` (weeks) or ``"D"`` (days).

    Returns
    -------
    pandas.DataFrame
        Indexed by customer.
    """
    missing = [c for c in (customer, time, value) if c not in orders]
    if missing:
        raise KeyError(f"orders miss column(s) {missing}; it has {list(orders.columns)}")
    if unit not in _UNIT_DAYS:
        raise ValueError(f"unit must be one of {list(_UNIT_DAYS)}, got {unit!r}")
    days = _UNIT_DAYS[unit]
    cust, ids = _factorize_sorted(orders[customer])
    day = _days(orders[time])
    amount = pd.to_numeric(orders[value], errors="coerce").to_numpy(float)
    for bad, what, col in ((cust < 0, "no customer", customer), (day == _NO_DAY, "no valid date", time),
                           (np.isnan(amount), "not a number", value)):
        if bad.any():
            rows = np.flatnonzero(bad)[:10].tolist()
            raise ValueError(f"orders, column '{col}': {what} in {int(bad.sum())} row(s), first rows "
                             f"(0-based) {rows}")
    # one entry per customer and day (same-day purchases merged), sorted by customer, then day
    key = cust.astype(np.int64) << 32 | (day - day.min() if len(day) else day)
    order = np.argsort(key, kind="stable")
    key = key[order]
    start = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.zeros(0, int)
    idx = order[start]
    c, d = cust[idx], day[idx]
    v = np.add.reduceat(amount[order], start) if len(start) else np.zeros(0)
    n_cust = len(ids)
    first = np.full(n_cust, np.iinfo(np.int64).max)
    first_idx = np.flatnonzero(np.concatenate([[True], c[1:] != c[:-1]])) if len(c) else start
    first[c[first_idx]] = d[first_idx]
    cal_end = _day(calibration_end)
    kept = first <= cal_end
    in_cal = d <= cal_end
    repeat = in_cal & (d > first[c])
    out = pd.DataFrame(index=pd.Index(ids[kept], name=customer))
    c_repeat = c[repeat]
    frequency = np.bincount(c_repeat, minlength=n_cust)
    out["frequency"] = frequency[kept].astype(int)
    # last calibration day: rows are sorted by customer, then day, so it is the calibration row
    # whose next row is another customer's or after the calibration end
    same_next = np.concatenate([c[1:] == c[:-1], [False]])
    ends = in_cal & ~(same_next & np.concatenate([in_cal[1:], [False]]))
    last = np.full(n_cust, np.iinfo(np.int64).min)
    last[c[ends]] = d[ends]
    out["recency"] = (last[kept] - first[kept]) / days
    out["T"] = (cal_end - first[kept]) / days
    spend = np.bincount(c_repeat, weights=v[repeat], minlength=n_cust)
    out["monetary_value"] = _mean(spend, frequency)[kept]
    if holdout_end is not None:
        end = _day(holdout_end)
        hold = (d > cal_end) & (d <= end) & kept[c]
        count = np.bincount(c[hold], minlength=n_cust)
        out["frequency_holdout"] = count[kept].astype(int)
        out["monetary_value_holdout"] = _mean(np.bincount(c[hold], weights=v[hold], minlength=n_cust),
                                              count)[kept]
        out["duration_holdout"] = (end - cal_end) / days
    return out


_NO_DAY = np.iinfo(np.int64).min


def _factorize_sorted(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes of ``values`` numbered in sorted order of the distinct values (-1 for missing): hash
    first, then sort only the distinct values."""
    codes, uniq = pd.factorize(values, sort=False)
    try:
        order = np.argsort(np.asarray(uniq), kind="stable")
    except TypeError:  # values of mixed types: let pandas decide the order
        return pd.factorize(values, sort=True)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1) if len(rank) else codes
    return codes, uniq.take(order) if hasattr(uniq, "take") else np.asarray(uniq)[order]


def _days(values: pd.Series) -> np.ndarray:
    """Calendar day of each timestamp as days since 1970-01-01 (local wall time for aware ones)."""
    raw = values.to_numpy()
    if raw.dtype.kind == "M":  # naive datetimes already: no parsing (NaT becomes _NO_DAY)
        return raw.astype("datetime64[D]").astype(np.int64)
    ts = pd.to_datetime(values)
    if ts.dt.tz is not None:
        ts = ts.dt.tz_localize(None)
    raw = ts.to_numpy("datetime64[ns]")
    out = raw.astype("datetime64[D]").astype(np.int64)
    out[np.isnat(raw)] = _NO_DAY
    return out


def _day(when: str | pd.Timestamp) -> int:
    ts = pd.Timestamp(when)
    ts = ts.tz_localize(None) if ts.tz is not None else ts
    return int(np.datetime64(ts.normalize(), "D").astype(np.int64))


def _mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.divide(total, count, out=np.zeros(len(total)), where=count > 0)


def _check_rfm(data: pd.DataFrame, columns: tuple[str, ...] = ("frequency", "recency", "T")) -> None:
    missing = [c for c in columns if c not in data]
    if missing:
        raise KeyError(f"RFM data misses column(s) {missing}; expected {list(columns)} "
                       "(see closedloop_nb.lifetime.rfm_summary)")
    x, tx, T = (np.asarray(data[c], float) for c in ("frequency", "recency", "T"))
    bad = (x < 0) | (tx < 0) | (tx > T + 1e-9) | ((x == 0) & (tx > 0))
    if bad.any():
        rows = np.flatnonzero(bad)[:10].tolist()
        raise ValueError(f"impossible RFM rows (positions {rows}): need 0 <= recency <= T, "
                         "and recency 0 when frequency is 0")
