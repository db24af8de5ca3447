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

__all__ = ["simulate_bgnbd"]


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
