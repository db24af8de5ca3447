"""BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy
Way", Marketing Science 24(2), 275-284), fitted by maximum likelihood in log space.

While active, a customer buys at Poisson rate lambda ~ Gamma(r, alpha); after each purchase they
become inactive with probability p ~ Beta(a, b).

Examples
--------
>>> import pandas as pd
>>> rfm = pd.DataFrame({"frequency": [0, 2, 5, 1], "recency": [0, 10.0, 30.0, 4.0],
...                     "T": [38.0, 38.0, 36.0, 20.0]})
>>> BGNBD().fit(rfm).params_.keys()
dict_keys(['r', 'alpha', 'a', 'b'])
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, gammaln, hyp2f1

from closedloop_nb.lifetime.base import RFMModel

__all__ = ["BGNBD"]


class BGNBD(RFMModel):
    """The BG/NBD model. ``fit(rfm)`` takes ``frequency``, ``recency``, ``T`` (see ``rfm_summary``).

    Attributes
    ----------
    params_
        ``r``, ``alpha``, ``a``, ``b``.
    log_likelihood_
        Log-likelihood at the optimum (Eq. 6 of [1], summed over customers).
    """

    param_names = ("r", "alpha", "a", "b")


    def _start(self, data: dict[str, np.ndarray]) -> np.ndarray:
        return np.array([1.0, max(float(np.mean(data["T"])), 1.0), 1.0, 1.0])

    def _loglik_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        r, alpha, a, b = params
        x, tx, T = data["frequency"], data["recency"], data["T"]
        # Eq. 6 of [1], in logs: L = B(a, b+x)/B(a, b) * G(r+x) a^r / (G(r) (alpha+T)^(r+x))
        #                         + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) a^r / (G(r) (alpha+t_x)^(r+x))
        xu, xi = _distinct(data, "frequency")  # special functions once per distinct x, not per row
        with np.errstate(invalid="ignore", over="ignore"):  # extreme trial parameters: rejected as non-finite
            common = (gammaln(r + xu) - gammaln(r) + betaln(a, b + xu) - betaln(a, b))[xi] + r * np.log(alpha)
        first = -(r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            second = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300))
                              - (r + x) * np.log(alpha + tx), -np.inf)
        return common + np.logaddexp(first, second)

    def expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        """E[X(t)]: expected repeat purchases of a new customer in ``t`` periods (Eq. 7 of [1])."""
        r, alpha, a, b = self._p()
        t = np.asarray(t, float)
        return (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r
                                        * hyp2f1(r, b, a + b - 1, t / (alpha + t)))

    def probability_of_purchases(self, x: int, t: float | np.ndarray) -> np.ndarray:
        """P(X(t) = x): probability that a new customer makes exactly ``x`` repeat purchases in
        ``t`` periods (Eq. 8 of [1])."""
        r, alpha, a, b = self._p()
        t = np.asarray(t, float)
        log_q = np.log(alpha) - np.log(alpha + t)            # log(alpha / (alpha + t))
        with np.errstate(divide="ignore"):
            log_z = np.log(t) - np.log(alpha + t)            # log(t / (alpha + t))
        nb = np.exp(betaln(a, b + x) - betaln(a, b) + gammaln(r + x) - gammaln(r) - gammaln(x + 1)
                    + r * log_q + x * log_z)
        if x == 0:
            return nb
        j = np.arange(x)
        head = np.exp(gammaln(r + j) - gammaln(r) - gammaln(j + 1) + j * log_z[..., None]
                      + r * log_q[..., None])
        return nb + np.exp(betaln(a + 1, b + x - 1) - betaln(a, b)) * (1 - head.sum(axis=-1))

    def probability_alive(self, frequency, recency, T) -> np.ndarray:
        """P(still active | x, t_x, T) (Eq. A.5 of [1]; 1 for customers with no repeat purchase)."""
        r, alpha, a, b = self._p()
        x, tx, T = (np.asarray(v, float) for v in (frequency, recency, T))
        with np.errstate(divide="ignore", invalid="ignore"):
            odds = np.where(x > 0, a / np.maximum(b + x - 1, 1e-300)
                            * ((alpha + T) / (alpha + tx)) ** (r + x), 0.0)
        return 1.0 / (1.0 + odds)

    def conditional_expected_purchases(self, t: float, frequency, recency, T) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` periods (Eq. 10 of [1])."""
        r, alpha, a, b = self._p()
        x, tx, T = (np.asarray(v, float) for v in (frequency, recency, T))
        z = t / (alpha + T + t)
        head = (a + b + x - 1) / (a - 1)
        body = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
        return head * body * self.probability_alive(x, tx, T)


def _distinct(data: dict[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of ``data[key]`` and the index of each row's, computed once per data set."""
    cached = data.get("_distinct_" + key)
    if cached is None:
        cached = np.unique(data[key], return_inverse=True)
        data["_distinct_" + key] = cached
    return cached
