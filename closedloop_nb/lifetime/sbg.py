"""Shifted-beta-geometric model of contract renewal (Fader & Hardie 2007, "How to Project Customer
Retention", Journal of Interactive Marketing 21(1)).

Each customer churns at the end of a period with probability theta ~ Beta(alpha, beta); retention
rises over time because the customers likely to churn leave first. Fitted on a cohort's counts of
customers still active at the start of each period.

Examples
--------
>>> m = ShiftedBetaGeometric().fit([1000, 631, 468, 382, 326, 289, 262, 241])
>>> {k: round(v, 3) for k, v in m.params_.items()}
{'alpha': 0.704, 'beta': 1.182}
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, hyp2f1

from closedloop_nb.lifetime.base import LifetimeModel

__all__ = ["ShiftedBetaGeometric"]


class ShiftedBetaGeometric(LifetimeModel):
    """sBG model. ``fit(active)`` takes the number active at the start of periods 0, 1, 2, ...

    Attributes
    ----------
    params_
        ``alpha``, ``beta``.
    """

    param_names = ("alpha", "beta")
    mixing = ((("alpha", "beta"), "churn probabilities"),)

    def fit(self, active) -> ShiftedBetaGeometric:
        """Fit on cohort counts: ``active[0]`` customers at the start, ``active[t]`` still there at
        the start of period ``t`` (non-increasing)."""
        n = np.asarray(active, float)
        if n.ndim != 1 or len(n) < 2 or (np.diff(n) > 0).any() or (n < 0).any():
            raise ValueError("active must be a non-increasing sequence of at least two counts")
        self.active_ = n
        return self._maximise({"n": n}, np.ones(1))

    def fit_lifetimes(self, periods, churned) -> ShiftedBetaGeometric:
        """Fit on individual customers with censoring (mixed cohorts, as
        :func:`~closedloop_nb.lifetime.subscription_lifetimes` gives them).

        Parameters
        ----------
        periods
            Periods each customer paid (>= 1).
        churned
            False for customers still paying when the data end (their lifetime is at least that).

        Examples
        --------
        Fader & Hardie's regular cohort over three years: 369, 163 and 86 customers left after one,
        two and three years; 382 were still paying in year 4.

        >>> import numpy as np
        >>> periods = np.repeat([1, 2, 3, 4], [369, 163, 86, 382])
        >>> churned = periods < 4
        >>> m = ShiftedBetaGeometric().fit_lifetimes(periods, churned)
        >>> cohort = ShiftedBetaGeometric().fit([1000, 631, 468, 382])  # the same data as a cohort
        >>> bool(np.allclose(list(m.params_.values()), list(cohort.params_.values()), rtol=1e-4))
        True
        """
        m = np.asarray(periods, float)
        c = np.asarray(churned, bool)
        if m.ndim != 1 or len(m) != len(c) or len(m) == 0 or (m < 1).any():
            raise ValueError("periods (each >= 1) and churned must be equally long, non-empty sequences")
        keys, weights = np.unique(np.column_stack([m, c]), axis=0, return_counts=True)
        data = {"periods": keys[:, 0], "churned": keys[:, 1].astype(bool)}
        return self._maximise(data, weights.astype(float))

    def _loglik_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        alpha, beta = params
        if "periods" in data:  # individuals: churned after m periods, P(T = m); still paying, S(m - 1)
            m = data["periods"]
            churned = betaln(alpha + 1, beta + m - 1) - betaln(alpha, beta)
            staying = betaln(alpha, beta + m - 1) - betaln(alpha, beta)
            return np.where(data["churned"], churned, staying)
        n = data["n"]
        t = np.arange(1, len(n))
        # Eq. 1-2 of the paper: P(T = t) = B(alpha + 1, beta + t - 1) / B(alpha, beta),
        # S(t) = B(alpha, beta + t) / B(alpha, beta)
        log_p = betaln(alpha + 1, beta + t - 1) - betaln(alpha, beta)
        log_s = betaln(alpha, beta + t[-1]) - betaln(alpha, beta)
        lost = n[:-1] - n[1:]
        return np.array([np.dot(lost, log_p) + n[-1] * log_s])

    def survival(self, t) -> np.ndarray:
        """S(t): share of a cohort still active at the start of period ``t``."""
        alpha, beta = self._p()
        t = np.asarray(t, float)
        return np.exp(betaln(alpha, beta + t) - betaln(alpha, beta))

    def retention_rate(self, t) -> np.ndarray:
        """r(t) = S(t) / S(t - 1) = (beta + t - 1) / (alpha + beta + t - 1), for t >= 1."""
        alpha, beta = self._p()
        t = np.asarray(t, float)
        return (beta + t - 1) / (alpha + beta + t - 1)

    def discounted_expected_lifetime(self, discount: float) -> float:
        """DEL: expected discounted number of periods a new customer stays, counting the current
        one, sum over t >= 0 of S(t) / (1 + d)^t = 2F1(1, beta; alpha + beta; 1 / (1 + d))
        (Fader & Hardie 2010, "Customer-Base Valuation in a Contractual Setting", Eq. 6)."""
        alpha, beta = self._p()
        return float(hyp2f1(1.0, beta, alpha + beta, 1.0 / (1.0 + discount)))
