"""Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005, "RFM and CLV: Using
Iso-Value Curves for Customer Base Analysis", JMR 42(4); Fader & Hardie 2013, "The Gamma-Gamma Model
of Monetary Value").

A customer's transaction values are Gamma(p, nu) with nu ~ Gamma(q, gamma) across customers; the
model is fitted on repeat buyers' mean spend and number of repeat transactions.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> nu = rng.gamma(4.0, 1 / 15.0, 500)              # each customer's rate: q = 4, gamma = 15
>>> x = rng.integers(1, 6, 500)
>>> spend = [rng.gamma(6.0, 1 / n, k).mean() for n, k in zip(nu, x)]   # p = 6
>>> m = GammaGamma().fit(pd.DataFrame({"frequency": x, "monetary_value": spend}))
>>> sorted(m.params_), bool(3 < m.params_["p"] < 12)
(['gamma', 'p', 'q'], True)
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.special import betaln, digamma

from closedloop_nb.lifetime.base import LifetimeModel, unique_rows

__all__ = ["GammaGamma"]


class GammaGamma(LifetimeModel):
    """Gamma-Gamma spend model. ``fit(rfm)`` takes ``frequency`` and ``monetary_value``.

    Customers without repeat purchases carry no information about repeat spend and are left out;
    repeat buyers with zero mean spend cannot come from a Gamma distribution and are left out too,
    counted in ``n_excluded_`` with a warning (not an error).

    Attributes
    ----------
    params_
        ``p``, ``q``, ``gamma``.
    n_customers_, n_excluded_
        Repeat buyers used, and those left out for zero spend.
    """

    param_names = ("p", "q", "gamma")
    mixing = ((("p",), "a customer's transaction values"), (("q",), "customers' mean spend"))

    def fit(self, rfm: pd.DataFrame) -> GammaGamma:
        """Fit on repeat buyers' ``frequency`` and ``monetary_value``."""
        missing = [c for c in ("frequency", "monetary_value") if c not in rfm]
        if missing:
            raise KeyError(f"RFM data misses column(s) {missing}")
        repeat = rfm[rfm["frequency"] > 0]
        zero = repeat["monetary_value"] <= 0
        self.n_excluded_ = int(zero.sum())
        if self.n_excluded_:
            warnings.warn(f"{self.n_excluded_} repeat buyers with zero or negative mean spend left out "
                          "of the Gamma-Gamma fit", stacklevel=2)
        repeat = repeat[~zero]
        if len(repeat) < 3:
            raise ValueError(f"need at least 3 repeat buyers with positive spend, got {len(repeat)}")
        data, weights = unique_rows(repeat, ["frequency", "monetary_value"])
        self.n_customers_ = int(weights.sum())
        return self._maximise(data, weights)

    def _start(self, data: dict[str, np.ndarray]) -> np.ndarray:
        return np.array([1.0, 1.0, max(float(np.mean(data["monetary_value"])), 1.0)])

    def _starts(self, data: dict[str, np.ndarray]) -> list[np.ndarray]:
        # the likelihood has a ridge towards p -> infinity (no spread within customers); starting
        # on both sides of typical values keeps the optimiser from settling on it too early
        mean = max(float(np.mean(data["monetary_value"])), 1.0)
        return [self._start(data), np.array([5.0, 3.0, 2.0 * mean]), np.array([20.0, 5.0, 4.0 * mean / 20])]

    def _loglik_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        p, q, g = params
        x, m = data["frequency"], data["monetary_value"]
        # Eq. 3 of Fader & Hardie (2013), the density of the mean spend zbar over x transactions,
        # rearranged so that no two huge terms cancel (the optimiser must not be able to exploit
        # rounding error at extreme p): Gamma(px+q) / (Gamma(px) Gamma(q)) = 1 / B(px, q), and
        # (px-1) log m + px log x - px log(g + m x) = -log m - px log1p(g / (m x))
        px = p * x
        return (-betaln(px, q) + q * np.log(g) - np.log(m) - px * np.log1p(g / (m * x))
                - q * np.log(g + m * x))

    def _gradient_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        p, q, g = params
        x, m = data["frequency"], data["monetary_value"]
        px = p * x
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            both = digamma(px + q)
            d_p = -x * (digamma(px) - both) - x * np.log1p(g / (m * x))
            d_q = -(digamma(q) - both) + np.log(g) - np.log(g + m * x)
            d_g = q / g - (px + q) / (g + m * x)
        return np.column_stack([d_p, d_q, d_g])

    def conditional_expected_spend(self, frequency, monetary_value) -> np.ndarray:
        """E[spend per transaction | x, mean spend] (Eq. 5 of Fader & Hardie 2013); the population
        mean p * gamma / (q - 1) for customers with no repeat purchase."""
        p, q, g = self._p()
        x, m = np.asarray(frequency, float), np.asarray(monetary_value, float)
        return (p * (g + x * m)) / (p * x + q - 1)
