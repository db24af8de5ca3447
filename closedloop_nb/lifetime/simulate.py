"""Customers simulated from the BG/NBD process (or MBG/NBD's), for parameter recovery and planning.

Examples
--------
>>> rfm = simulate_bgnbd(1_000, r=0.5, alpha=6.0, a=0.9, b=3.0, T=52.0, seed=1)
>>> list(rfm.columns), len(rfm)
(['frequency', 'recency', 'T'], 1000)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["simulate_bgnbd", "simulate_orders"]


def simulate_bgnbd(n: int, r: float, alpha: float, a: float, b: float, T: float, seed: int = 0,
                   leave_at_first: bool = False) -> pd.DataFrame:
    """RFM of ``n`` customers over ``T`` periods, simulated purchase by purchase.

    Each buys at Poisson rate lambda ~ Gamma(r, alpha) and leaves after a purchase with probability
    p ~ Beta(a, b); with ``leave_at_first`` (MBG/NBD) also straight after the first purchase.

    Returns
    -------
    pandas.DataFrame
        ``frequency`` (repeat purchases), ``recency`` (time of the last), ``T``.
    """
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    t, x, tx = np.zeros(n), np.zeros(n, int), np.zeros(n)
    active = rng.random(n) >= p if leave_at_first else np.ones(n, bool)
    while active.any():  # every customer still active makes their next purchase (or runs out of time)
        idx = np.flatnonzero(active)
        t[idx] += rng.exponential(1 / lam[idx])
        past = t[idx] > T
        active[idx[past]] = False
        buy = idx[~past]
        x[buy] += 1
        tx[buy] = t[buy]
        active[buy[rng.random(len(buy)) < p[buy]]] = False
    return pd.DataFrame({"frequency": x, "recency": tx, "T": np.full(n, float(T))})


def simulate_orders(n: int, r: float, alpha: float, a: float, b: float, start: str | pd.Timestamp,
                    join_days: int, end: str | pd.Timestamp, seed: int = 0,
                    spend: tuple[float, float] = (2.0, 20.0)) -> pd.DataFrame:
    """Order lines of ``n`` BG/NBD customers who join on a random day of the first ``join_days``
    days from ``start``, with days as the time unit, until ``end``.

    Each customer's first order is on their joining day; repeat orders follow the BG/NBD process
    (rate lambda ~ Gamma(r, alpha) per day, leaving after a purchase with probability p ~ Beta(a, b)).
    Amounts are Gamma(``spend``) distributed.

    Returns
    -------
    pandas.DataFrame
        ``customer_id``, ``timestamp`` (day precision), ``amount``; one row per order.

    Examples
    --------
    >>> orders = simulate_orders(100, 0.5, 20.0, 0.5, 3.0, "2024-01-01", 30, "2024-06-30", seed=1)
    >>> orders["customer_id"].nunique(), orders["timestamp"].min() >= pd.Timestamp("2024-01-01")
    (100, True)
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(start)
    horizon = (pd.Timestamp(end) - start).days + 1
    birth = rng.integers(0, join_days, n)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    who, when = [np.arange(n)], [birth.astype(float)]
    t, active = np.zeros(n), np.ones(n, bool)
    while active.any():
        idx = np.flatnonzero(active)
        t[idx] += rng.exponential(1 / lam[idx])
        inside = idx[birth[idx] + t[idx] < horizon]
        active[idx] = False
        active[inside[rng.random(len(inside)) >= p[inside]]] = True
        who.append(inside)
        when.append(birth[inside] + t[inside])
    days = np.floor(np.concatenate(when)).astype("timedelta64[D]")
    return pd.DataFrame({"customer_id": np.concatenate(who),
                         "timestamp": pd.DatetimeIndex(np.datetime64(start.normalize(), "D") + days),
                         "amount": rng.gamma(spend[0], spend[1], len(days)).round(2)})
