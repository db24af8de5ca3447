"""Pareto/NBD model of repeat purchasing (Schmittlein, Morrison & Colombo 1987), with the likelihood
as written in Fader, Hardie & Lee (2005), "A Note on Deriving the Pareto/NBD Model and Related
Expressions", fitted by maximum likelihood in log space from a fixed start (deterministic, unlike
``lifetimes``' random start).

While active, a customer buys at Poisson rate lambda ~ Gamma(r, alpha) and stays active for an
exponential time with rate mu ~ Gamma(s, beta).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, hyp2f1

from closedloop_nb.lifetime.base import RFMModel

__all__ = ["ParetoNBD"]


class ParetoNBD(RFMModel):
    """The Pareto/NBD model. ``fit(rfm)`` takes ``frequency``, ``recency``, ``T``.

    Attributes
    ----------
    params_
        ``r``, ``alpha``, ``s``, ``beta``.
    """

    param_names = ("r", "alpha", "s", "beta")
    mixing = ((("r",), "purchase rates"), (("s",), "dropout rates"))


    def _start(self, data: dict[str, np.ndarray]) -> np.ndarray:
        mean_t = max(float(np.mean(data["T"])), 1.0)
        return np.array([1.0, mean_t, 1.0, mean_t])

    def _loglik_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        r, alpha, s, beta = params
        first, second = _terms(params, data["frequency"], data["recency"], data["T"])
        return (gammaln(r + data["frequency"]) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
                + np.logaddexp(first, second))

    def expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        """E[X(t)]: expected purchases of a new customer in ``t`` periods (Schmittlein et al. 1987)."""
        r, alpha, s, beta = self._p()
        t = np.asarray(t, float)
        return r * beta / (alpha * (s - 1)) * (1 - (beta / (beta + t)) ** (s - 1))

    def probability_alive(self, frequency, recency, T) -> np.ndarray:
        """P(still active | x, t_x, T): the likelihood's "still alive at T" part over the whole
        (Fader, Hardie & Lee's note)."""
        x, tx, T = (np.asarray(v, float) for v in (frequency, recency, T))
        first, second = _terms(np.array(self._p()), x, tx, T)
        return np.exp(first - np.logaddexp(first, second))

    def conditional_expected_purchases(self, t: float, frequency, recency, T) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` periods (Fader, Hardie & Lee's note)."""
        r, alpha, s, beta = self._p()
        x, T_ = np.asarray(frequency, float), np.asarray(T, float)
        head = (r + x) * (beta + T_) / ((alpha + T_) * (s - 1))
        return head * (1 - ((beta + T_) / (beta + T_ + t)) ** (s - 1)) * self.probability_alive(
            frequency, recency, T)


def _terms(params: np.ndarray, x: np.ndarray, tx: np.ndarray,
           T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log of the two parts of the likelihood (without the common factor): alive at T, and died
    between t_x and T."""
    r, alpha, s, beta = params
    rsx = r + s + x
    # A0 of the note, with the larger of alpha and beta in the denominators
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
    return first, second
