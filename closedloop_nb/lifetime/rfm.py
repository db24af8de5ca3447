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
    ts = pd.to_datetime(orders[time])
    day = ts.dt.tz_localize(None).dt.normalize() if ts.dt.tz is not None else ts.dt.normalize()
    daily = (pd.DataFrame({"c": orders[customer].to_numpy(), "d": day.to_numpy(),
                           "v": orders[value].to_numpy(float)})
             .groupby(["c", "d"], sort=True)["v"].sum().reset_index())
    cal_end = pd.Timestamp(calibration_end).tz_localize(None).normalize()
    first = daily.groupby("c")["d"].min()
    first = first[first <= cal_end]
    cal = daily[(daily["d"] <= cal_end) & daily["c"].isin(first.index)]
    repeat = cal[cal["d"] > cal["c"].map(first)]
    g = repeat.groupby("c")
    out = pd.DataFrame(index=first.index)
    out.index.name = customer
    out["frequency"] = g.size().reindex(out.index, fill_value=0).astype(int)
    last = cal.groupby("c")["d"].max()
    out["recency"] = (last - first).dt.days / days
    out["T"] = (cal_end - first).dt.days / days
    out["monetary_value"] = g["v"].mean().reindex(out.index, fill_value=0.0)
    if holdout_end is not None:
        end = pd.Timestamp(holdout_end).tz_localize(None).normalize()
        hold = daily[(daily["d"] > cal_end) & (daily["d"] <= end) & daily["c"].isin(out.index)]
        hg = hold.groupby("c")
        out["frequency_holdout"] = hg.size().reindex(out.index, fill_value=0).astype(int)
        out["monetary_value_holdout"] = hg["v"].mean().reindex(out.index, fill_value=0.0)
        out["duration_holdout"] = (end - cal_end).days / days
    return out


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
