"""Pareto/NBD model of repeat purchasing (Schmittlein, Morrison & Colombo 1987), with the likelihood
as written in Fader, Hardie & Lee (2005), "A Note on Deriving the Pareto/NBD Model and Related
Expressions", fitted by maximum likelihood in log space from a fixed start (deterministic, unlike
``lifetimes``' random start).

While active, a customer buys at Poisson rate lambda ~ Gamma(r, alpha) and stays active for an
exponential time with rate mu ~ Gamma(s, beta).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import gammaln, hyp2f1

from closedloop_nb.lifetime.base import LifetimeModel

__all__ = ["ParetoNBD"]


class ParetoNBD(LifetimeModel):
    """The Pareto/NBD model. ``fit(rfm)`` takes ``frequency``, ``recency``, ``T``.

    Attributes
    ----------
    params_
        ``r``, ``alpha``, ``s``, ``beta``.
    """

    param_names = ("r", "alpha", "s", "beta")

    def fit(self, rfm: pd.DataFrame) -> ParetoNBD:
        """Fit on one row per customer (distinct (x, t_x, T) rows weighted)."""
        return self._fit_rfm(rfm)  # type: ignore[return-value]

    def _start(self, data: dict[str, np.ndarray]) -> np.ndarray:
        mean_t = max(float(np.mean(data["T"])), 1.0)
        return np.array([1.0, mean_t, 1.0, mean_t])

    def _loglik_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        r, alpha, s, beta = params
        x, tx, T = data["frequency"], data["recency"], data["T"]
        rsx = r + s + x
        # Eq. 19-22 of the note: A0 with the larger of alpha and beta in the denominators
        if alpha >= beta:
            big, b_arg = alpha, s + 1
            z_tx, z_T = (alpha - beta) / (alpha + tx), (alpha - beta) / (alpha + T)
        else:
            big, b_arg = beta, r + x
            z_tx, z_T = (beta - alpha) / (beta + tx), (beta - alpha) / (beta + T)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            u1 = np.log(hyp2f1(rsx, b_arg, rsx + 1, z_tx)) - rsx * np.log(big + tx)
            u2 = np.log(hyp2f1(rsx, b_arg, rsx + 1, z_T)) - rsx * np.log(big + T)
            log_a0 = u1 + np.log1p(-np.exp(u2 - u1))
        first = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
        second = np.log(s) - np.log(rsx) + log_a0
        return (gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
                + np.logaddexp(first, second))
