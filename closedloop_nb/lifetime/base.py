"""Maximum-likelihood fitting shared by the lifetime models.

A model defines its parameter names and its per-row log-likelihood; the base class fits by
minimising the weighted negative log-likelihood over log-parameters (positivity for free) from fixed
starts (L-BFGS-B, with a Nelder-Mead rescue where it stops short), so fits are deterministic;
standard errors come from the numerical Hessian of the log-likelihood at the optimum (statsmodels'
``approx_hess3``). A model that gives the Hessian itself (:meth:`LifetimeModel._theta_hessian`) is
fitted by a trust-region Newton method instead (scipy's ``trust-exact``) and takes its standard
errors from that Hessian.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.stats import norm
from statsmodels.tools.numdiff import approx_hess3

from closedloop_nb.errors import NotFittedError

__all__ = ["LifetimeModel", "RFMModel", "one_blas_thread"]

F = TypeVar("F", bound=Callable[..., Any])
_blas = threading.local()


@contextlib.contextmanager
def _blas_limited() -> Iterator[None]:
    """BLAS on one thread inside the block (the caller's setting restored after; nested blocks
    do not look the libraries up again, which costs threadpoolctl a few milliseconds)."""
    if getattr(_blas, "depth", 0):
        yield
        return
    from threadpoolctl import threadpool_limits

    _blas.depth = 1
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        _blas.depth = 0


def one_blas_thread(function: F) -> F:
    """Run ``function`` with BLAS limited to one thread.

    The lifetime fits multiply vectors of a few thousand customers, a few dozen parameters, or
    a logistic regression's tens of thousands of customer-months by twenty features: too small for
    BLAS threads to pay, and where the cores are busy threads that spin waiting for each other cost
    more than the work (notebook 04's churn classifier at 10M touchpoints: 5.2 CPU s against 0.75 on
    one thread, under load; benchmarks/RESULTS.md). Results are the same to rounding.

    Examples
    --------
    >>> from threadpoolctl import threadpool_info
    >>> @one_blas_thread
    ... def threads():
    ...     return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    >>> threads() <= {1}
    True
    """
    @functools.wraps(function)
    def limited(*args: Any, **kwargs: Any) -> Any:
        with _blas_limited():
            return function(*args, **kwargs)

    return limited  # type: ignore[return-value]

#: Quasi-Newton stopping rule: a relative change of the log-likelihood under 1e-12 (on CDNOW that is
#: a millionth of a log-likelihood unit; tighter only adds iterations).
_LBFGS = {"ftol": 1e-12, "gtol": 1e-8}

#: Trust-region Newton stopping rule: a gradient (in log parameters) under 1e-7. Along a flat ridge the
#: log-likelihood still to gain is about the size of the gradient there, so this is within 1e-7 of
#: the supremum; at an interior optimum Newton's steps are far past it.
_NEWTON = {"gtol": 1e-7, "maxiter": 500}

#: A mixing distribution this concentrated (coefficient of variation ~1%) has collapsed to a point.
_COLLAPSED = 1e4



class LifetimeModel:
    """Base class: ``fit`` returns ``self``; ``params_``, ``log_likelihood_``, ``summary``.

    Attributes
    ----------
    params_
        Fitted parameters, by the papers' names.
    log_likelihood_
        Log-likelihood at the optimum.
    standard_errors_
        Standard errors of the parameters (inverse Hessian).
    identified_
        False when the fit ran to the edge of the parameter space (a warning says where): then the
        standard errors mean nothing and intervals are refused.
    """

    param_names: tuple[str, ...] = ()
    #: The model's mixing distributions: (parameters whose sum is the concentration, what varies).
    mixing: tuple[tuple[tuple[str, ...], str], ...] = ()

    def _loglik_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def _gradient_rows(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        """Optional: d(log-likelihood of each row) / d(params), as an array (rows, parameters) or one
        array per parameter. Models that define it are fitted with an exact gradient instead of
        finite differences."""
        raise NotImplementedError  # pragma: no cover

    def _newton(self) -> bool:
        """Whether :meth:`_theta_hessian` gives the Hessian (then the fit takes Newton steps)."""
        return False

    def _theta_hessian(self, params: np.ndarray, data: dict[str, np.ndarray],
                       weights: np.ndarray) -> np.ndarray | None:
        """Optional: the Hessian of the weighted log-likelihood at ``params`` in the optimiser's
        coordinates (logs of the positive parameters, covariate coefficients as they are), or None.

        A model that gives it is fitted by Newton steps in a trust region: on a flat ridge (a mixing
        distribution collapsing, a covariate with too few customers to tell) a Newton step moves the
        log of the running-off parameter by about one, where quasi-Newton steps crawl (hundreds of
        evaluations over 40 parameters, and then a simplex rescue).
        """
        return None

    def _start(self, data: dict[str, np.ndarray]) -> np.ndarray:
        return np.ones(len(self.param_names))

    def _starts(self, data: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Starting points of the optimiser (models with ridges in their likelihood give several)."""
        return [self._start(data)]

    def _free(self) -> np.ndarray:
        """Which parameters are unconstrained (covariate coefficients); the rest are positive and
        optimised in logs."""
        return np.zeros(len(self.param_names), dtype=bool)

    @one_blas_thread
    def _maximise(self, data: dict[str, np.ndarray], weights: np.ndarray) -> LifetimeModel:
        free = self._free()

        def natural(theta: np.ndarray) -> np.ndarray:
            return np.where(free, theta, np.exp(np.where(free, 0.0, theta)))

        def nll(theta: np.ndarray) -> float:
            with np.errstate(all="ignore"):  # trial points far out: rejected as non-finite
                value = -np.dot(weights, self._loglik_rows(natural(theta), data))
            return value if np.isfinite(value) else 1e300

        jac = None
        if type(self)._gradient_rows is not LifetimeModel._gradient_rows:  # the model knows its gradient
            def nll_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
                with np.errstate(all="ignore"):
                    params = natural(theta)
                    value = -np.dot(weights, self._loglik_rows(params, data))
                    cols = self._gradient_rows(params, data)
                    cols = cols.T if isinstance(cols, np.ndarray) else cols
                    grad = -np.array([weights @ c for c in cols]) * np.where(free, 1.0, params)
                if not (np.isfinite(value) and np.isfinite(grad).all()):
                    return 1e300, np.zeros_like(theta)
                return value, grad

            jac = True
        objective = nll_and_grad if jac else nll

        newton = bool(jac) and self._newton()
        res = None
        for start in self._starts(data):  # a fixed set of starts: deterministic, the best one wins
            start = np.asarray(start, float)
            theta0 = np.where(free, start, np.log(np.where(free, 1.0, start)))
            best = None
            if newton:
                # a parameter the data do not touch at all (the dropout of a segment without repeat
                # buyers) has zero gradient and curvature; a trust region would step along such a
                # direction to its boundary, ever further (and the trust region's "hard case" steps
                # along its least curved direction). The largest curvature there keeps it in place.
                def hessian(theta: np.ndarray) -> np.ndarray:
                    h = -self._theta_hessian(natural(theta), data, weights)
                    untouched = ~h.any(axis=0)
                    h[untouched, untouched] = max(1.0, float(np.abs(np.diag(h)).max()))
                    return h

                best = optimize.minimize(objective, theta0, method="trust-exact", jac=True, hess=hessian,
                                         options=_NEWTON)
                if not best.success:  # the quasi-Newton path below from where it stopped
                    theta0 = best.x
            if best is None or not best.success:
                best = self._quasi_newton(objective, nll, theta0, jac, best)
            if res is None or best.fun < res.fun:
                res = best
        params = natural(res.x)
        self.params_ = dict(zip(self.param_names, params.astype(float).tolist(), strict=True))
        # a covariate coefficient past log(1e4) scales a parameter by over 10,000: a ridge, not an effect
        edge = [f"{n}={v:.3g}" for n, v, f in zip(self.param_names, params, free, strict=True)
                if not (abs(v) < np.log(_COLLAPSED) if f else 1e-8 < v < 1e8)]
        # a mixing distribution whose concentration runs off (a + b of a Beta, the shape of a Gamma)
        # has collapsed to one value for everybody: the fit sits on a ridge towards that limit
        edge += [f"{' + '.join(names)} = {sum(self.params_[n] for n in names):.3g}: {what} all alike"
                 for names, what in self.mixing if sum(self.params_[n] for n in names) > _COLLAPSED]
        self.identified_ = not edge
        if edge:
            warnings.warn(f"{type(self).__name__} ran to the edge of its parameter space "
                          f"({'; '.join(edge)}): the data do not identify the model (too few customers, "
                          "or no variation it can describe); its standard errors and intervals are not "
                          "meaningful", stacklevel=3)
        self.log_likelihood_ = float(-res.fun)

        hess = self._theta_hessian(params, data, weights) if newton else None
        if hess is not None:
            # from log coordinates to the parameters: d2L/dp_j dp_k = (H_jk - [j = k] g_j) / (p_j p_k)
            # for positive parameters (g the gradient in logs, ~0 at an interior optimum)
            scale = np.where(free, 1.0, params)
            grad = -objective(res.x)[1]
            hess = (hess - np.diag(np.where(free, 0.0, grad))) / np.outer(scale, scale)
        else:
            def ll_params(p: np.ndarray) -> float:
                return float(np.dot(weights, self._loglik_rows(p, data)))

            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                hess = approx_hess3(params, ll_params)
        try:
            cov = np.linalg.inv(-hess)
            se = standard_errors(cov)
        except np.linalg.LinAlgError:  # pragma: no cover
            cov, se = np.full_like(hess, np.nan), np.full(len(params), np.nan)
        self.covariance_ = pd.DataFrame(cov, index=self.param_names, columns=self.param_names)
        self.standard_errors_ = dict(zip(self.param_names, se.tolist(), strict=True))
        return self

    @staticmethod
    def _quasi_newton(objective, nll, theta0: np.ndarray, jac: bool | None, before=None):
        """L-BFGS-B from ``theta0``; where it stops short of convergence, a simplex to get past the
        trouble and L-BFGS-B again to polish. The best of these (and of ``before``) is returned."""
        best = optimize.minimize(objective, theta0, method="L-BFGS-B", jac=jac, options=_LBFGS)
        stalled = not best.success
        if stalled and jac:  # an exact gradient tells whether the line search stalled at the optimum
            stalled = np.abs(best.jac).max() > 1e-6 * max(1.0, abs(best.fun))
        if stalled:
            simplex = optimize.minimize(nll, best.x, method="Nelder-Mead",
                                        options={"xatol": 1e-10, "fatol": 1e-10, "maxfev": 20_000})
            polished = optimize.minimize(objective, simplex.x, method="L-BFGS-B", jac=jac, options=_LBFGS)
            best = min((best, simplex, polished), key=lambda o: o.fun)
        if before is not None and before.fun < best.fun:
            best = before
        return best

    def _fit_rfm(self, rfm: pd.DataFrame) -> LifetimeModel:
        """Fit on one row per customer; distinct (frequency, recency, T) rows are weighted."""
        from closedloop_nb.lifetime.rfm import _check_rfm

        _check_rfm(rfm)
        data, weights = unique_rows(rfm, ["frequency", "recency", "T"])
        self.n_customers_ = int(weights.sum())
        return self._maximise(data, weights)

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(...) first.")

    def _p(self) -> list[float]:
        self._check_fitted()
        return [self.params_[n] for n in self.param_names]

    @property
    def summary(self) -> pd.DataFrame:
        """Estimates with standard errors and 95% intervals.

        The model parameters are positive, so their intervals are Wald intervals on the log scale
        (delta method: se(log theta) = se / theta), which never cross zero; covariate coefficients
        get plain Wald intervals.
        """
        self._check_fitted()
        est = pd.Series(self.params_)
        se = pd.Series(self.standard_errors_)
        z = norm.ppf(0.975)
        free = pd.Series(self._free(), index=est.index)
        spread = np.exp(z * se / est.where(~free, 1.0))
        lower = est.where(free, est / spread).where(~free, est - z * se)
        upper = est.where(free, est * spread).where(~free, est + z * se)
        return pd.DataFrame({"estimate": est, "std_error": se, "lower_95": lower, "upper_95": upper})

    def _repr_html_(self) -> str:
        if not hasattr(self, "params_"):
            return f"<pre>{self!r}</pre>"
        ll = getattr(self, "log_likelihood_", None)
        head = f"<b>{type(self).__name__}</b>" + (f", log-likelihood {ll:,.2f}" if ll is not None else "")
        table = (self.summary if hasattr(self, "standard_errors_")
                 else pd.Series(self.params_).to_frame("estimate"))
        return f"<p>{head}</p>" + table.to_html(float_format="{:.4g}".format)

    def __repr__(self) -> str:
        if not hasattr(self, "params_"):
            return f"{type(self).__name__}()"
        ps = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        ll = getattr(self, "log_likelihood_", None)
        return f"{type(self).__name__}({ps}" + (f"; log-likelihood {ll:,.2f})" if ll is not None else ")")


class RFMModel(LifetimeModel):
    """A repeat-purchase model fitted on ``frequency``, ``recency``, ``T`` (as ``rfm_summary`` gives)."""

    def fit(self, rfm: pd.DataFrame) -> RFMModel:
        """Fit on one row per customer (distinct (x, t_x, T) rows are weighted, not repeated)."""
        return self._fit_rfm(rfm)


def standard_errors(cov: np.ndarray) -> np.ndarray:
    """Square roots of a covariance's diagonal; NaN where a variance is not positive (on a flat
    ridge the inverse Hessian can say so): no standard error, rather than a zero that would print
    as an interval of no width.

    Examples
    --------
    >>> standard_errors(np.array([[4.0, 0.0], [0.0, -1e-9]])).tolist()
    [2.0, nan]
    """
    var = np.diag(np.asarray(cov, float))
    with np.errstate(invalid="ignore"):
        return np.where(var > 0, np.sqrt(var), np.nan)


def unique_rows(df: pd.DataFrame, columns: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Distinct rows of ``columns`` and how many customers share each (the likelihood's weights)."""
    g = df[columns].astype(float).value_counts(sort=False).reset_index()
    data = {c: g[c].to_numpy(float) for c in columns}
    return data, g["count"].to_numpy(float)
