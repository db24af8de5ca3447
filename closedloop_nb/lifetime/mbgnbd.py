"""MBG/NBD model of repeat purchasing (Batislam, Denizel & Filiztekin 2007, "Empirical validation and
comparison of models for customer base analysis", IJRM 24(3)): the BG/NBD in which a customer may
also drop out straight after the first purchase, so that customers with no repeat purchase are not
all alive, fitted by maximum likelihood in log space.

While active, a customer buys at Poisson rate lambda ~ Gamma(r, alpha); after each purchase, the
first included, they become inactive with probability p ~ Beta(a, b). With x repeat purchases, the
last at t_x, and T since the first:

    L = G(r+x) alpha^r / G(r) * [ B(a, b+x+1) / B(a, b) / (alpha+T)^(r+x)
                                  + B(a+1, b+x) / B(a, b) / (alpha+t_x)^(r+x) ]

(alive at T after x+1 chances to leave; or left at the chance after the last purchase).

Examples
--------
>>> import pandas as pd
>>> rfm = pd.DataFrame({"frequency": [0, 2, 5, 1], "recency": [0, 10.0, 30.0, 4.0],
...                     "T": [38.0, 38.0, 36.0, 20.0]})
>>> m = MBGNBD().fit(rfm)
>>> bool(m.probability_alive(0, 0.0, 38.0) < 1)   # unlike BG/NBD, not everyone without repeats is alive
True
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, gammaln

from closedloop_nb.lifetime.base import RFMModel
from closedloop_nb.lifetime.bgnbd import BGNBD, _distinct, _expected_count

__all__ = ["MBGNBD"]


class MBGNBD(RFMModel):
    """The MBG/NBD model. ``fit(rfm)`` takes ``frequency``, ``recency``, ``T``.

    Attributes
    ----------
    params_
        ``r``, ``alpha``, ``a``, ``b``.
    """

    param_names = ("r", "alpha", "a", "b")
    mixing = ((("r",), "purchase rates"), (("a", "b"), "dropout probabilities"))


    _start = BGNBD._start

    def _loglik_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        r, alpha, a, b = params
        x, tx, T = data["frequency"], data["recency"], data["T"]
        xu, xi = _distinct(data, "frequency")
        with np.errstate(invalid="ignore", over="ignore"):  # extreme trial parameters: rejected as non-finite
            common = (gammaln(r + xu) - gammaln(r) - betaln(a, b))[xi] + r * np.log(alpha)
        alive = betaln(a, b + xu + 1)[xi] - (r + x) * np.log(alpha + T)
        left = betaln(a + 1, b + xu)[xi] - (r + x) * np.log(alpha + tx)
        return common + np.logaddexp(alive, left)

    def expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        """E[X(t)]: expected repeat purchases of a new customer in ``t`` periods."""
        r, alpha, a, b = self._p()
        return _expected_count(r, alpha, a, b, t, modified=True)  # finite at a = 1 too

    def probability_alive(self, frequency, recency, T) -> np.ndarray:
        """P(still active | x, t_x, T)."""
        r, alpha, a, b = self._p()
        x, tx, T = (np.asarray(v, float) for v in (frequency, recency, T))
        return 1.0 / (1.0 + a / (b + x) * ((alpha + T) / (alpha + tx)) ** (r + x))

    def conditional_expected_purchases(self, t: float, frequency, recency, T) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` periods."""
        r, alpha, a, b = self._p()
        x, tx, T_ = (np.asarray(v, float) for v in (frequency, recency, T))
        # (a + b + x) / (a - 1) [1 - ... 2F1(r + x, b + x + 1; a + b + x; z)]: the MBG/NBD's Eq. 7 at
        # the posterior (r + x, alpha + T, a, b + x), times (a + b + x) / (b + x)
        head = (a + b + x) / (b + x)
        return head * _expected_count(r + x, alpha + T_, a, b + x, t, modified=True) \
            * self.probability_alive(x, tx, T_)
