"""BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy
Way", Marketing Science 24(2), 275-284), fitted by maximum likelihood in log space.

While active, a customer buys at Poisson rate lambda ~ Gamma(r, alpha); after each purchase they
become inactive with probability p ~ Beta(a, b).

Time-invariant covariates (for instance the acquisition channel as 0/1 columns) scale the
population parameters: ``alpha_i = alpha exp(-z_i' g_purchase)`` (a positive coefficient means more
purchases: the mean rate r / alpha_i grows by exp(z_i' g_purchase)), ``a_i = a exp(z_i' g_a)`` and
``b_i = b exp(z_i' g_b)``. CLVTools ties g_a = g_b, which keeps every profile's mean dropout
probability a / (a + b); separate coefficients let a channel's customers leave more or less often,
and contain CLVTools' model as the case g_a = g_b (there each customer's likelihood equals
CLVTools' own, checked in the tests on its apparel data). Fitted coefficients are
``params_["purchase:<column>"]``, ``params_["dropout_a:<column>"]``, ``params_["dropout_b:<column>"]``;
:meth:`BGNBD.at` gives the plain model of one covariate profile (with its parameter covariance, so
intervals and CLV work on it).

Examples
--------
>>> import pandas as pd
>>> rfm = pd.DataFrame({"frequency": [0, 2, 5, 1], "recency": [0, 10.0, 30.0, 4.0],
...                     "T": [38.0, 38.0, 36.0, 20.0]})
>>> BGNBD().fit(rfm).params_.keys()
dict_keys(['r', 'alpha', 'a', 'b'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import betaln, digamma, gammaln, hyp2f1

from closedloop_nb.lifetime.base import RFMModel, standard_errors, unique_rows

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

    def __init__(self, covariates: Sequence[str] | None = None):
        self.covariates = covariates

    mixing = ((("r",), "purchase rates"), (("a", "b"), "dropout probabilities"))

    @property
    def param_names(self) -> tuple[str, ...]:
        cov = list(self.covariates or ())
        return ("r", "alpha", "a", "b", *(f"purchase:{c}" for c in cov), *(f"dropout_a:{c}" for c in cov),
                *(f"dropout_b:{c}" for c in cov))

    def _free(self) -> np.ndarray:
        return np.arange(len(self.param_names)) >= 4

    def fit(self, rfm: pd.DataFrame) -> BGNBD:
        """Fit on one row per customer (``frequency``, ``recency``, ``T`` and any covariate columns);
        distinct rows are weighted, not repeated."""
        if not self.covariates:
            return self._fit_rfm(rfm)
        from closedloop_nb.lifetime.rfm import _check_rfm

        _check_rfm(rfm)
        cov = list(self.covariates)
        missing = [c for c in cov if c not in rfm]
        if missing:
            raise KeyError(f"rfm lacks covariate column(s) {missing}; it has {list(rfm.columns)}")
        for c in cov:
            values = pd.to_numeric(rfm[c], errors="coerce")
            if not np.isfinite(values.to_numpy(float)).all():
                rows = rfm.index[~np.isfinite(values.to_numpy(float))][:10].tolist()
                raise ValueError(f"covariate column '{c}': not a finite number for customers {rows}")
        data, weights = unique_rows(rfm, ["frequency", "recency", "T", *cov])
        self.n_customers_ = int(weights.sum())
        return self._maximise(data, weights)

    def _start(self, data: dict[str, np.ndarray]) -> np.ndarray:
        base = [1.0, max(float(np.mean(data["T"])), 1.0), 1.0, 1.0]
        return np.array(base + [0.0] * (len(self.param_names) - 4))

    def _individual(self, params: np.ndarray, data: dict[str, np.ndarray]) -> tuple:
        """r and each row's alpha, a, b (arrays only when there are covariates)."""
        r, alpha, a, b = params[:4]
        cov = list(self.covariates or ())
        if not cov:
            return r, alpha, a, b
        z = np.column_stack([data[c] for c in cov])
        k = len(cov)
        g = params[4:].reshape(3, k)
        with np.errstate(over="ignore"):
            return r, alpha * np.exp(-z @ g[0]), a * np.exp(z @ g[1]), b * np.exp(z @ g[2])

    def _loglik_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        params = np.asarray(params, float)
        r, alpha, a, b = self._individual(params, data)
        x = data["frequency"]
        # Eq. 6 of [1], in logs: L = B(a, b+x)/B(a, b) * G(r+x) a^r / (G(r) (alpha+T)^(r+x))
        #                         + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) a^r / (G(r) (alpha+t_x)^(r+x))
        xu, xi = _distinct(data, "frequency")  # special functions once per distinct x, not per row
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # extreme trial parameters:
            # log B(a, b+x)/B(a, b) = log G(b+x)/G(b) - log G(a+b+x)/G(a+b): rising factorials, which
            # stay exact when a and b run to 1e8 (differences of betaln there lose digits)
            if np.ndim(a) == 0:                                               # rejected as non-finite
                common = (_log_rising(r, xu) + _log_rising(b, xu) - _log_rising(a + b, xu))[xi]
            else:
                common = _log_rising(r, xu)[xi] + _log_rising(b, x) - _log_rising(a + b, x)
            *_, total = _tail(params, r, alpha, a, b, data)
        return common + total

    def _gradient_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Exact gradient of each row's log-likelihood, one array per parameter (with covariates by
        the chain rule through each row's alpha, a and b)."""
        params = np.asarray(params, float)
        r, alpha, a, b = self._individual(params, data)
        x = data["frequency"]
        xu, xi = _distinct(data, "frequency")  # special functions once per distinct x
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if np.ndim(a) == 0:
                dc_a = -_digamma_step(a + b, xu)[xi]
                dc_b = (_digamma_step(b, xu) - _digamma_step(a + b, xu))[xi]
            else:
                dc_a = -_digamma_step(a + b, x)
                dc_b = _digamma_step(b, x) - _digamma_step(a + b, x)
            log_qt, log_qtx, first, second, total = _tail(params, r, alpha, a, b, data)
            w1, w2 = np.exp(first - total), np.exp(second - total)  # w2 is 0 where x = 0; w1 + w2 = 1
            T, tx = data["T"], data["recency"]
            d_r = _digamma_step(r, xu)[xi] - w1 * log_qt - w2 * log_qtx
            # r / alpha - (r + x) (w1 / (alpha + T) + w2 / (alpha + t_x)), without the cancellation
            # of its two large terms when r and alpha run off together
            d_alpha = (r * (w1 * (T / (alpha + T)) + w2 * (tx / (alpha + tx))) / alpha
                       - x * (w1 / (alpha + T) + w2 / (alpha + tx)))
            d_a = dc_a + w2 / a
            d_b = dc_b - w2 / np.maximum(b + (x - 1), 1e-300)
        cov = list(self.covariates or ())
        if not cov:
            return [d_r, d_alpha, d_a, d_b]
        # alpha_i = alpha exp(-z g_p), a_i = a exp(z g_a), b_i = b exp(z g_b)
        z = [data[c] for c in cov]
        return [d_r, d_alpha * alpha / params[1], d_a * a / params[2], d_b * b / params[3],
                *(-(d_alpha * alpha) * zc for zc in z), *((d_a * a) * zc for zc in z),
                *((d_b * b) * zc for zc in z)]

    def _newton(self) -> bool:
        return bool(self.covariates)

    def _theta_hessian(self, params: np.ndarray, data: dict[str, np.ndarray],
                       weights: np.ndarray) -> np.ndarray | None:
        """Hessian of the weighted log-likelihood in (log r, log alpha, log a, log b, coefficients).

        Each row's log-likelihood depends on the coefficients only through its own
        ``eta = (log r, log alpha_i, log a_i, log b_i)``, which is linear in them (``log alpha_i =
        log alpha - z_i' g_purchase``, ...). So the Hessian is ``sum_i w_i X_i' H_i X_i`` exactly, with
        ``H_i`` the 4 x 4 Hessian of the plain BG/NBD in ``eta``: central differences of the exact
        gradient, shifting one base parameter (so every row's ``eta`` by the same step) at a time,
        eight gradient evaluations whatever the number of covariates.
        """
        if not self.covariates:
            return None
        params = np.asarray(params, float)
        cov = list(self.covariates)
        k = len(cov)
        step = 1e-5

        def eta_gradient(shifted: np.ndarray) -> np.ndarray:
            cols = self._gradient_rows(shifted, data)
            return np.array([cols[j] * shifted[j] for j in range(4)])  # d/d log of the base parameters

        h_rows = np.empty((4, 4, len(weights)))
        for j in range(4):
            up, down = params.copy(), params.copy()
            up[j] *= np.exp(step)
            down[j] *= np.exp(-step)
            h_rows[:, j] = (eta_gradient(up) - eta_gradient(down)) / (2 * step)
        h_rows = (h_rows + h_rows.transpose(1, 0, 2)) / 2  # the two differences of a cross term
        # the columns of theta each eta depends on, and how (X_i restricted to them)
        z = np.column_stack([data[c] for c in cov])
        ones = np.ones((len(weights), 1))
        design = [ones, np.hstack([ones, -z]), np.hstack([ones, z]), np.hstack([ones, z])]
        index = [[0], [1, *range(4, 4 + k)], [2, *range(4 + k, 4 + 2 * k)], [3, *range(4 + 2 * k, 4 + 3 * k)]]
        out = np.zeros((4 + 3 * k, 4 + 3 * k))
        for i in range(4):
            for j in range(4):
                weighted = design[i] * (weights * h_rows[i, j])[:, None]
                out[np.ix_(index[i], index[j])] += weighted.T @ design[j]
        return (out + out.T) / 2  # symmetric to rounding already

    def _p(self) -> list[float]:
        if self.covariates:
            raise ValueError("this BGNBD has covariates: its customers differ by profile; use "
                             "model.at({column: value, ...}) for the model of one profile")
        return super()._p()

    def at(self, profile: dict[str, float] | None = None) -> BGNBD:
        """The plain BG/NBD of customers with covariate values ``profile`` (missing columns 0).

        Its ``covariance_`` is the fitted one carried over by the delta method, so
        ``parameter_interval`` and ``customer_lifetime_value`` give intervals for the profile.

        Examples
        --------
        >>> m = BGNBD(covariates=["email"])
        >>> m.params_ = {"r": 0.5, "alpha": 6.0, "a": 0.9, "b": 3.0, "purchase:email": 0.5,
        ...              "dropout_a:email": 0.0, "dropout_b:email": 0.0}
        >>> round(m.at({"email": 1}).params_["alpha"], 4)  # 6 exp(-0.5): email customers buy more
        3.6392
        """
        self._check_fitted()
        cov = list(self.covariates or ())
        profile = dict(profile or {})
        unknown = sorted(set(profile) - set(cov))
        if unknown:
            raise KeyError(f"unknown covariate(s) {unknown}; this model has {cov}")
        z = np.array([float(profile.get(c, 0.0)) for c in cov])
        theta = np.array([self.params_[n] for n in self.param_names])
        r, alpha, a, b = self._individual(theta, {c: np.array([v]) for c, v in zip(cov, z, strict=True)})
        point = np.array([r, float(np.ravel(alpha)[0]), float(np.ravel(a)[0]), float(np.ravel(b)[0])])
        out = BGNBD()
        out.params_ = dict(zip(("r", "alpha", "a", "b"), point.tolist(), strict=True))
        out.identified_ = getattr(self, "identified_", True)
        if hasattr(self, "covariance_"):
            # log(profile parameters) = J (log r, log alpha, log a, log b, g_purchase, g_a, g_b)
            k = len(cov)
            jac = np.zeros((4, 4 + 3 * k))
            jac[:, :4] = np.eye(4)
            jac[1, 4:4 + k] = -z
            jac[2, 4 + k:4 + 2 * k] = z
            jac[3, 4 + 2 * k:] = z
            scale = np.where(self._free(), 1.0, theta)  # natural -> log scale for positive parameters
            cov_theta = self.covariance_.loc[list(self.param_names), list(self.param_names)].to_numpy()
            cov_log = jac @ (cov_theta / np.outer(scale, scale)) @ jac.T
            cov_nat = cov_log * np.outer(point, point)
            out.covariance_ = pd.DataFrame(cov_nat, index=list(out.params_), columns=list(out.params_))
            out.standard_errors_ = dict(zip(out.params_, standard_errors(cov_nat).tolist(), strict=True))
        return out

    def expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        """E[X(t)]: expected repeat purchases of a new customer in ``t`` periods (Eq. 7 of [1])."""
        r, alpha, a, b = self._p()
        return _expected_count(r, alpha, a, b, t)

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
        return nb + np.exp(betaln(a + 1, b + (x - 1)) - betaln(a, b)) * (1 - head.sum(axis=-1))

    def probability_alive(self, frequency, recency, T) -> np.ndarray:
        """P(still active | x, t_x, T) (Eq. A.5 of [1]; 1 for customers with no repeat purchase)."""
        r, alpha, a, b = self._p()
        x, tx, T = (np.asarray(v, float) for v in (frequency, recency, T))
        with np.errstate(divide="ignore", invalid="ignore"):
            odds = np.where(x > 0, a / np.maximum(b + (x - 1), 1e-300)
                            * ((alpha + T) / (alpha + tx)) ** (r + x), 0.0)
        return 1.0 / (1.0 + odds)

    def conditional_expected_purchases(self, t: float, frequency, recency, T) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` periods (Eq. 10 of [1])."""
        r, alpha, a, b = self._p()
        x, tx, T = (np.asarray(v, float) for v in (frequency, recency, T))
        # Eq. 10 is Eq. 7 for the posterior of an active customer: (r + x, alpha + T, a, b + x)
        return _expected_count(r + x, alpha + T, a, b + x, t) * self.probability_alive(x, tx, T)


def _tail(params: np.ndarray, r, alpha, a, b, data: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """log(1 + T / alpha), log(1 + t_x / alpha) and the two terms of Eq. 6 (with its ``alpha^r``)
    and their log-sum, computed once per parameter vector (the likelihood and its gradient are asked
    for at the same point). ``r log(alpha) - (r + x) log(alpha + T)`` is written
    ``-r log(1 + T / alpha) - x log(alpha + T)``: the same number, without two large terms that
    cancel when r and alpha run off together (every customer buying at one rate)."""
    key = params.tobytes()
    cached = data.get("_tail")
    if cached is not None and cached[0] == key:
        return cached[1]
    x, tx, T = data["frequency"], data["recency"], data["T"]
    log_qt, log_qtx = np.log1p(T / alpha), np.log1p(tx / alpha)
    first = -r * log_qt - x * np.log(alpha + T)
    second = np.where(x > 0, np.log(a) - np.log(np.maximum(b + (x - 1), 1e-300)) - r * log_qtx
                      - x * np.log(alpha + tx), -np.inf)
    out = (log_qt, log_qtx, first, second, np.logaddexp(first, second))
    data["_tail"] = (key, out)
    return out


#: From here on log-gamma and digamma differences come from Stirling's series (its next terms are
#: below 1e-14 there), in a form without the cancellation of two large values.
_STIRLING = 1e3


def _log_rising(y: Any, x: Any) -> np.ndarray:
    """``log G(y + x) - log G(y)`` for ``y > 0``, ``x >= 0``, exact to rounding also for huge ``y``.

    ``gammaln(1e8)`` is 1.7e9, so the plain difference keeps only ~7 of its digits there: enough noise
    to stop a line search on a likelihood summed over thousands of customers. From ``y = 1e3`` it is
    ``(y - 1/2) log(1 + x/y) + x log(y + x) - x`` plus the first two correction terms of Stirling's
    series, each term of the size of the result.

    Examples
    --------
    >>> float(_log_rising(1e8, 2.0) - np.log(1e8 * (1e8 + 1)))  # G(y + 2) / G(y) = y (y + 1)
    0.0
    """
    y, x = np.broadcast_arrays(np.asarray(y, float), np.asarray(x, float))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        out = gammaln(y + x) - gammaln(y)
        big = y >= _STIRLING
        if big.any():
            yb, xb = y[big], x[big]
            out = np.array(out, float)
            out[big] = ((yb - 0.5) * np.log1p(xb / yb) + xb * np.log(yb + xb) - xb
                        - xb / (12.0 * yb * (yb + xb)) - (1.0 / (yb + xb) ** 3 - 1.0 / yb ** 3) / 360.0)
    return out


def _digamma_step(y: Any, x: Any) -> np.ndarray:
    """``digamma(y + x) - digamma(y)`` (the derivative of :func:`_log_rising` in ``y``), exact to
    rounding also for huge ``y``.

    Examples
    --------
    >>> round(float(_digamma_step(1e8, 2.0) * 1e8), 10)  # 1/y + 1/(y + 1), times y
    1.99999999
    """
    y, x = np.broadcast_arrays(np.asarray(y, float), np.asarray(x, float))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        out = digamma(y + x) - digamma(y)
        big = y >= _STIRLING
        if big.any():
            yb, xb = y[big], x[big]
            out = np.array(out, float)
            out[big] = (np.log1p(xb / yb) + xb / (2.0 * yb * (yb + xb))
                        + xb * (2.0 * yb + xb) / (12.0 * yb ** 2 * (yb + xb) ** 2)
                        + (1.0 / (yb + xb) ** 4 - 1.0 / yb ** 4) / 120.0)
    return out


def _distinct(data: dict[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of ``data[key]`` and the index of each row's, computed once per data set."""
    cached = data.get("_distinct_" + key)
    if cached is None:
        cached = np.unique(data[key], return_inverse=True)
        data["_distinct_" + key] = cached
    return cached


def _expected_count(r: Any, alpha: Any, a: float, b: Any, t: Any, method: str = "auto",
                    modified: bool = False) -> np.ndarray:
    """E[X(t)] of a BG/NBD customer with parameters ``(r, alpha, a, b)`` (arrays broadcast); with
    ``modified``, of an MBG/NBD customer (who may also leave at time zero: ``E[X(t) | p]`` is
    ``1 - p`` times the BG/NBD's, and Eq. 7 reads ``b / (a - 1) [1 - (alpha / (alpha + t))^r
    2F1(r, b + 1; a + b; t / (alpha + t))]``).

    Eq. 7 of [1], ``(a + b - 1) / (a - 1) [1 - (alpha / (alpha + t))^r 2F1(r, b; a + b - 1;
    t / (alpha + t))]``, is 0/0 at ``a = 1`` (a removable singularity: a fit to data without repeat
    purchases lands there) and loses its digits near it, and ``2F1`` has poles where ``a + b <= 1``.
    There (and with ``method="integral"``) the expectation is computed from what Eq. 7 integrates:
    given ``p``, ``E[X(t) | p] = (1 - (alpha / (alpha + p t))^r) / p`` (the Gamma mixture of the
    purchase rate), averaged over ``p ~ Beta(a, b)`` by adaptive quadrature with the Beta weight.
    """
    r, alpha, b, t = (np.asarray(v, float) for v in np.broadcast_arrays(r, alpha, b, t))
    a = float(a)
    out = np.full(t.shape, np.nan)
    if method == "auto" and abs(a - 1.0) > 1e-4:
        with np.errstate(all="ignore"):
            z = t / (alpha + t)
            if modified:
                c = a + b
                out = b / (a - 1.0) * (1.0 - (alpha / (alpha + t)) ** r * hyp2f1(r, b + 1.0, c, z))
            else:
                c = a + b - 1.0
                out = c / (a - 1.0) * (1.0 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, c, z))
            out = np.where(c > 0, out, np.nan)
    redo = ~np.isfinite(out)
    if redo.any():
        keys = np.stack([r[redo], alpha[redo], b[redo], t[redo]], axis=-1)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        values = np.array([_integral(ri, ai, a, bi, ti, modified) for ri, ai, bi, ti in uniq])
        out = np.array(out, float)
        out[redo] = values[np.ravel(inverse)]
    return out


def _integral(r: float, alpha: float, a: float, b: float, t: float, modified: bool = False) -> float:
    """E_p[(1 - (alpha / (alpha + p t))^r) / p] for p ~ Beta(a, b), times ``1 - p`` inside when
    ``modified`` (see :func:`_expected_count`)."""
    from scipy.integrate import quad

    if t <= 0:
        return 0.0

    def given_p(p: float) -> float:
        if p <= 0:
            return r * t / alpha  # the limit: no dropout, Poisson purchases at the mean rate r / alpha
        return -np.expm1(-r * np.log1p(p * t / alpha)) / p

    beta_weight = (a - 1.0, b - (0.0 if modified else 1.0))  # p^(a-1) (1-p)^(b-1), times (1-p)
    value, _ = quad(given_p, 0.0, 1.0, weight="alg", wvar=beta_weight, limit=200)
    return float(value / np.exp(betaln(a, b)))
