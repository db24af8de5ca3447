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

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, Literal

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
    parallel = len(orders) >= _PARALLEL_ROWS
    with ThreadPoolExecutor(1) if parallel else nullcontext() as pool:
        # arrays a worker fills are allocated here: this thread's heap reuses mapped memory, while a
        # worker's own large allocations are fresh pages on every call
        dates = _start(pool, _days, orders[time], _scratch(len(orders), np.int64, bool) if parallel else None)
        cust, ids = _customer_codes(orders[customer])
        if len(cust) and cust.min() < 0:  # missing ids (nullable integers too) are coded -1
            _refuse(cust < 0, customer, "no customer")
        day, no_day = dates.result()
        _refuse(no_day, time, "no valid date")
        amount = _amounts(orders[value])
        _refuse(~np.isfinite(amount), value, "not a finite number")
        n_cust = len(ids)
        d0 = int(day.min()) if len(day) else 0
        cal = _day(calibration_end) - d0
        day -= d0
        c, d, day = _distinct_days(cust, day, n_cust)
        same = c[1:] == c[:-1]
        # every customer has a row, so customer k's days start at the k-th change of customer
        starts = np.flatnonzero(np.concatenate([[len(c) > 0], ~same]))
        first = d[starts]
        # repeat spend, the rows split between the worker thread and this one
        split = len(day) * 3 // 5 if parallel else len(day)
        scratch = _scratch(split, first.dtype, bool, bool, float)
        spend = _start(pool, _repeat_spend, cust[:split], day[:split], amount[:split], first, cal, scratch)
        kept = first <= cal
        rows = slice(None) if kept.all() else kept
        # calibration days come first within each customer: a kept customer's last one is the
        # calibration day not followed by another calibration day of theirs
        in_cal = d <= cal
        ends = np.flatnonzero(in_cal & ~np.append(same & in_cal[1:], False))
        frequency = ends - starts[rows]
        cols = {"frequency": frequency.astype(int),
                "recency": (d[ends] - first[rows]) / days,
                "T": (cal - first[rows]) / days}
        rest = _scratch(len(day) - split, first.dtype, bool, bool, float)
        spend = spend.result() + _repeat_spend(cust[split:], day[split:], amount[split:], first, cal, rest)
    # no repeat purchase, no repeat spend: 0 / 1
    cols["monetary_value"] = spend[rows] / np.maximum(frequency, 1)
    if holdout_end is not None:
        end = _day(holdout_end) - d0
        count = np.bincount(c[(d > cal) & (d <= end)], minlength=n_cust)[rows]
        hold = (day > cal) & (day <= end)
        total = np.bincount(cust, weights=amount * hold, minlength=n_cust)[rows]
        cols |= {"frequency_holdout": count.astype(int),
                 "monetary_value_holdout": total / np.maximum(count, 1),
                 "duration_holdout": np.full(len(cols["T"]), (end - cal) / days)}
    return pd.DataFrame(cols, index=pd.Index(ids[rows], name=customer), copy=False)


_PARALLEL_ROWS = 200_000  # from here on, a second thread saves more than it costs


def _start(pool: ThreadPoolExecutor | None, func: Callable[..., Any], *args: Any) -> Future:
    """``func(*args)`` on the pool's thread, or here and now without a pool."""
    if pool is not None:
        return pool.submit(func, *args)
    done: Future = Future()
    try:
        done.set_result(func(*args))
    except Exception as exc:  # raised again by result(), as from a thread
        done.set_exception(exc)
    return done


def _distinct_days(cust: np.ndarray, day: np.ndarray, n_cust: int) -> tuple[np.ndarray, ...]:
    """Customer and day of each distinct (customer, day) pair, sorted by customer then day (same-day
    purchases are one), and ``day`` in the integer type used.

    The pairs are one integer key, 32-bit when it fits (half the memory to sort).
    """
    shift = int(day.max()).bit_length() if len(day) else 0
    kind = np.int32 if (n_cust << shift) < 2**31 else np.int64
    day = day.astype(kind)
    pairs = cust.astype(kind)
    pairs <<= shift
    pairs |= day
    if not (pairs[1:] >= pairs[:-1]).all():  # order lines often come sorted by customer and date
        pairs.sort()
    pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])] if len(pairs) else pairs
    return pairs >> shift, pairs & ((1 << shift) - 1), day


def _scratch(n: int, *dtypes: Any) -> tuple[np.ndarray, ...]:
    return tuple(np.empty(n, dtype) for dtype in dtypes)


def _repeat_spend(cust: np.ndarray, day: np.ndarray, amount: np.ndarray, first: np.ndarray, cal: int,
                  scratch: tuple[np.ndarray, ...]) -> np.ndarray:
    """Per customer, the spend on calibration days after their first (``scratch``: arrays of the
    rows' length, of ``first``'s type, bool, bool and float)."""
    first_day, later, in_cal, weights = scratch
    np.take(first, cust, out=first_day, mode="clip")  # valid codes; "raise" would buffer the output
    np.greater(day, first_day, out=later)
    np.less_equal(day, cal, out=in_cal)
    later &= in_cal
    np.multiply(amount, later, out=weights)
    return np.bincount(cust, weights=weights, minlength=len(first))


def _amounts(values: pd.Series) -> np.ndarray:
    """Floats of ``values`` (NaN where not a number)."""
    return (values if values.dtype.kind == "f" else pd.to_numeric(values, errors="coerce")).to_numpy(float)


def _refuse(bad: np.ndarray, column: str, what: str) -> None:
    """Refuse the rows flagged in ``bad``, numbered 1-based as data rows (the project's convention)."""
    if bad.any():
        rows = (np.flatnonzero(bad) + 1)[:10].tolist()
        raise ValueError(f"orders, column '{column}': {what} in {int(bad.sum())} row(s), first rows "
                         f"(1-based) {rows}")


def _customer_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..k-1 of ``values`` numbered in sorted order of the k distinct values (-1 for missing).

    Integer ids spread over no more than a few times as many numbers as there are rows are numbered by
    a presence table (no hashing); anything else is hashed first, then only the distinct values sorted.
    """
    raw = values.to_numpy()
    if raw.dtype.kind in "iu" and len(raw):
        lo, hi = int(raw.min()), int(raw.max())
        if hi - lo <= 4 * len(raw) + 65536:
            if hi >= 2**62:  # unsigned ids past intp: subtract in their own type
                offset = (raw - raw.dtype.type(lo)).astype(np.intp)
            else:
                offset = raw.astype(np.intp, copy=False)
                offset = offset - lo if lo else offset
            present = np.zeros(hi - lo + 1, bool)
            present[offset] = True
            distinct = np.flatnonzero(present)
            values = distinct.astype(raw.dtype) + raw.dtype.type(lo)
            if len(distinct) == len(present):  # every number in the range is used: codes are offsets
                return offset, values
            return (np.cumsum(present, dtype=np.intp) - 1)[offset], values
    codes, uniq = pd.factorize(values, sort=False)
    try:
        order = np.argsort(np.asarray(uniq), kind="stable")
    except TypeError:  # values of mixed types: let pandas decide the order
        return pd.factorize(values, sort=True)
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1) if len(rank) else codes
    return codes, uniq.take(order) if hasattr(uniq, "take") else np.asarray(uniq)[order]


def _days(values: pd.Series, scratch: tuple[np.ndarray, np.ndarray] | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Calendar day of each timestamp as days since 1970-01-01 (local wall time for aware ones), and
    where the timestamp is missing (into ``scratch``, int64 and bool arrays of their length, if given)."""
    day, missing = (None, None) if scratch is None else scratch
    raw = values.to_numpy()
    if raw.dtype.kind != "M":
        ts = pd.to_datetime(values)
        if ts.dt.tz is not None:
            ts = ts.dt.tz_localize(None)
        raw = ts.to_numpy()
    unit, step = np.datetime_data(raw.dtype)
    if unit in _PER_DAY:  # integer floor division, as the cast to days does, at a fraction of its cost
        out = np.floor_divide(raw.view(np.int64), _PER_DAY[unit] // step, out=day)
    else:
        out = raw.astype("datetime64[D]").astype(np.int64)
    return out, np.isnat(raw, out=missing)


_PER_DAY = {"ns": 86_400 * 10**9, "us": 86_400 * 10**6, "ms": 86_400_000, "s": 86_400, "m": 1440, "h": 24,
            "D": 1}


def _day(when: str | pd.Timestamp) -> int:
    ts = pd.Timestamp(when)
    ts = ts.tz_localize(None) if ts.tz is not None else ts
    return int(np.datetime64(ts.normalize(), "D").astype(np.int64))


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
