"""BG/BB model of discrete-time repeat transactions (Fader, Hardie & Shang 2010, "Customer-Base
Analysis in a Discrete-Time Noncontractual Setting", Marketing Science 29(6)).

At each of ``n`` transaction opportunities an active customer transacts with probability
p ~ Beta(alpha, beta), and becomes inactive before the next with probability theta ~ Beta(gamma, delta).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import betaln

from closedloop_nb.lifetime.base import LifetimeModel

__all__ = ["BGBB"]


class BGBB(LifetimeModel):
    """The BG/BB model. ``fit(data)`` takes ``frequency`` (x), ``recency`` (t_x, the opportunity of
    the last transaction), ``periods`` (n) and optionally ``weights`` (customers with that pattern).

    Attributes
    ----------
    params_
        ``alpha``, ``beta``, ``gamma``, ``delta``.
    """

    param_names = ("alpha", "beta", "gamma", "delta")
    mixing = ((("alpha", "beta"), "transaction probabilities"), (("gamma", "delta"), "dropout probabilities"))

    def fit(self, data: pd.DataFrame) -> BGBB:
        """Fit on (frequency, recency, periods) patterns, weighted by ``weights`` if present."""
        missing = [c for c in ("frequency", "recency", "periods") if c not in data]
        if missing:
            raise KeyError(f"BG/BB data misses column(s) {missing}")
        rows = {c: data[c].to_numpy(float) for c in ("frequency", "recency", "periods")}
        weights = data["weights"].to_numpy(float) if "weights" in data else np.ones(len(data))
        self.n_customers_ = int(weights.sum())
        return self._maximise(rows, weights)

    def _loglik_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        alpha, beta, gamma, delta = params
        x, tx, n = data["frequency"], data["recency"], data["periods"]
        # Eq. 5 of the paper: alive through all n opportunities, or inactive after t_x + i
        alive = betaln(alpha + x, beta + n - x) - betaln(alpha, beta) + betaln(gamma, delta + n) \
            - betaln(gamma, delta)
        terms = [alive]
        for i in range(int(np.max(n - tx))):
            ok = i <= n - tx - 1
            term = (betaln(alpha + x, beta + tx - x + i) - betaln(alpha, beta)
                    + betaln(gamma + 1, delta + tx + i) - betaln(gamma, delta))
            terms.append(np.where(ok, term, -np.inf))
        return np.logaddexp.reduce(np.vstack(terms), axis=0)
