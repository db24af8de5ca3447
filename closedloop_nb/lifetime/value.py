"""Customer lifetime value with an explicit time unit, horizon and discount rate; by channel; against CAC.

Two kinds of business, two definitions:

* **Repeat purchases** (orders): :func:`customer_lifetime_value` adds up, period by period, the
  expected purchases of each customer (BG/NBD, given their history) times their expected spend
  (Gamma-Gamma), discounted: ``CLV = margin * spend * sum_i (E[Y(i p)] - E[Y((i-1) p)]) / (1+d)^i``
  for ``i = 1..horizon`` periods of ``p`` model time units. Intervals come from the uncertainty of
  both models' fitted parameters (parametric draws on the log scale).
* **Subscriptions**: :func:`subscription_clv` per channel: ARPA (mean MRR of a paying customer-month)
  times the discounted expected number of paid months over the horizon, read off the channel's
  Kaplan-Meier retention curve (only as far as the data reach: no extrapolation), next to the naive
  constant-churn LTV (ARPA x margin / monthly churn, ChartMogul's formula) that ignores how churn
  falls with tenure.

:func:`clv_to_cac` sets either against the channel's customer acquisition cost.

Examples
--------
>>> import pandas as pd
>>> subs = pd.DataFrame({"customer_id": ["a", "b", "a"],
...     "month": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-03-01"]),
...     "movement": ["new", "new", "churn"], "mrr_delta": [100.0, 100.0, -100.0],
...     "mrr": [100.0, 100.0, 0.0]})
>>> v = subscription_clv(subs, annual_discount=0.0)
>>> float(v.loc["All", "expected_months"]), float(v.loc["All", "clv"])
(2.5, 250.0)
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.lifetime.subscriptions import mrr_by_customer
from closedloop_nb.lifetime.survival import subscription_lifetimes

__all__ = ["clv_to_cac", "customer_lifetime_value", "parameter_interval", "subscription_clv"]


def customer_lifetime_value(transactions: Any, spend: Any, rfm: pd.DataFrame, horizon: int = 12,
                            period: float = 1.0, discount_rate: float = 0.01, margin: float = 1.0,
                            n_draws: int = 0, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Discounted expected value of each customer over the next ``horizon`` periods.

    Parameters
    ----------
    transactions
        A fitted model with ``conditional_expected_purchases(t, frequency, recency, T)`` (BG/NBD).
    spend
        A fitted :class:`~closedloop_nb.lifetime.GammaGamma`.
    rfm
        ``frequency``, ``recency``, ``T``, ``monetary_value`` per customer, in the unit the models
        were fitted in.
    horizon
        Number of periods ahead (e.g. 12 months).
    period
        Length of one period in the models' time unit (4.348 weeks per month for weekly models).
    discount_rate
        Discount rate per period (0.01 a month is about 12.7% a year).
    margin
        Share of revenue that is profit (1: value is revenue).
    n_draws
        Parametric draws for intervals (0: no intervals; empty intervals, with a warning, when a
        model's parameter covariance is unusable).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``rfm``: ``expected_purchases``, ``expected_spend``, ``clv`` (and ``lower``,
        ``upper`` with ``n_draws``).
    """
    if horizon < 1 or period <= 0 or discount_rate < 0 or not 0 <= margin <= 1:
        raise ValueError("horizon >= 1, period > 0, discount_rate >= 0 and 0 <= margin <= 1 are needed")
    distinct = _distinct_rfm(rfm)
    point, purchases, per_purchase = _clv(transactions, spend, rfm, horizon, period, discount_rate, margin,
                                          distinct)
    out = pd.DataFrame({"expected_purchases": purchases, "expected_spend": per_purchase, "clv": point},
                       index=rfm.index)
    usable = all(_covariance_usable(m) for m in (transactions, spend))
    if n_draws and not usable:
        warnings.warn("a model's parameter covariance is not usable (the data do not identify the model, "
                      "or the likelihood is flat in some direction), so CLV has no interval", stacklevel=2)
        out["lower"] = out["upper"] = np.nan
    elif n_draws:
        rng = np.random.default_rng(seed)
        draws = np.column_stack([
            _clv(_draw(transactions, rng), _draw(spend, rng), rfm, horizon, period, discount_rate, margin,
                 distinct)[0]
            for _ in range(n_draws)])
        # nanquantile works row by row in Python; without NaNs quantile gives the same in one pass
        quantile = np.nanquantile if np.isnan(draws).any() else np.quantile
        out["lower"] = quantile(draws, alpha / 2, axis=1)
        out["upper"] = quantile(draws, 1 - alpha / 2, axis=1)
    return out


def _clv(transactions: Any, spend: Any, rfm: pd.DataFrame, horizon: int, period: float, d: float,
         margin: float, distinct: tuple[np.ndarray, np.ndarray] | None = None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point CLV, expected purchases and spend per purchase of each row of ``rfm``; ``distinct``:
    :func:`_distinct_rfm` of it, when the caller evaluates many draws."""
    keys, inverse = distinct if distinct is not None else _distinct_rfm(rfm)
    cum = np.column_stack([np.zeros(len(keys))] + [
        transactions.conditional_expected_purchases(i * period, keys[:, 0], keys[:, 1], keys[:, 2])
        for i in range(1, horizon + 1)])
    factor = (1 + d) ** -np.arange(1, horizon + 1)
    discounted = np.diff(cum, axis=1) @ factor
    x = rfm["frequency"].to_numpy(float)
    per_purchase = spend.conditional_expected_spend(x, rfm["monetary_value"].to_numpy(float))
    return margin * per_purchase * discounted[inverse], cum[inverse, -1], per_purchase


def _distinct_rfm(rfm: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (x, t_x, T) rows of ``rfm`` and the index of each customer's: expected purchases
    depend on these alone, so they are computed once per triple (at 10M touchpoints there are a
    third as many triples as customers), the same numbers."""
    rows = np.column_stack([rfm[c].to_numpy(float) for c in ("frequency", "recency", "T")])
    keys, inverse = np.unique(rows, axis=0, return_inverse=True)
    return keys, np.ravel(inverse)


def parameter_interval(model: Any, quantity: Any, n_draws: int = 500, alpha: float = 0.05,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Interval of any quantity a fitted lifetime model computes, from its parameter uncertainty.

    Parameters are drawn from their estimated (log-scale normal) distribution; ``quantity(model)``
    is evaluated for each draw.

    Examples
    --------
    >>> from closedloop_nb.lifetime import BGNBD
    >>> from closedloop_nb.lifetime.simulate import simulate_bgnbd
    >>> rfm = simulate_bgnbd(2000, r=0.5, alpha=6.0, a=0.9, b=3.0, T=39.0, seed=1)
    >>> m = BGNBD().fit(rfm)
    >>> lo, hi = parameter_interval(m, lambda mm: mm.expected_purchases(39.0), n_draws=200)
    >>> bool(lo < m.expected_purchases(39.0) < hi)
    True
    """
    if not _covariance_usable(model):
        raise ValueError(f"{type(model).__name__}'s parameter covariance is not usable (the data do not "
                         "identify the model, or the likelihood is flat in some direction): no interval")
    rng = np.random.default_rng(seed)
    draws = np.array([np.asarray(quantity(_draw(model, rng)), float) for _ in range(n_draws)])
    return np.nanquantile(draws, alpha / 2, axis=0), np.nanquantile(draws, 1 - alpha / 2, axis=0)


def _covariance_usable(model: Any) -> bool:
    if not getattr(model, "identified_", True):  # fitted at the edge: its covariance means nothing
        return False
    cov = np.asarray(model.covariance_, float)
    return bool(np.isfinite(cov).all() and np.linalg.eigvalsh((cov + cov.T) / 2).min() >= -1e-12)


def _draw(model: Any, rng: np.random.Generator) -> Any:
    """A copy of a fitted model with parameters drawn from their estimated distribution (log scale)."""
    names = list(model.params_)
    est = np.array([model.params_[n] for n in names])
    cov = model.covariance_.loc[names, names].to_numpy() / np.outer(est, est)  # delta method: log scale
    drawn = copy.copy(model)
    drawn.params_ = dict(zip(names, np.exp(rng.multivariate_normal(np.log(est), cov)).tolist(), strict=True))
    return drawn


def subscription_clv(subscriptions: pd.DataFrame, segments: pd.Series | pd.DataFrame | None = None,
                     horizon_months: int = 36, annual_discount: float = 0.10,
                     gross_margin: float = 1.0) -> pd.DataFrame:
    """Subscription CLV per segment (e.g. acquisition channel), from retention actually observed.

    Parameters
    ----------
    subscriptions
        MRR movements.
    segments
        A segment per ``customer_id`` (Series), or shares (DataFrame ``customer_id``, segment column,
        ``share``, as :func:`closedloop_nb.metrics.customer_credits` returns) to split customers over
        channels by an attribution model; ``None``: everyone (``All``).
    horizon_months
        Months of value counted; cut to what the segment's data cover (the ``horizon_months``
        column says how far each went).
    annual_discount
        Yearly discount rate (monthly: ``(1 + r) ** (1 / 12) - 1``).
    gross_margin
        Share of MRR that is profit.

    Returns
    -------
    pandas.DataFrame
        Per segment: ``customers``, ``arpa`` (monthly), ``monthly_churn`` (churns per paid month),
        ``horizon_months``, ``expected_months`` (discounted paid months over the horizon), ``clv``,
        and ``naive_ltv`` (ARPA x margin / monthly churn; infinite when nobody churned).
    """
    from statsmodels.duration.survfunc import SurvfuncRight

    lt = subscription_lifetimes(subscriptions)
    wide = mrr_by_customer(subscriptions)
    paying = wide.where(wide > 0)
    arpa_c = paying.mean(axis=1)
    months_c = paying.notna().sum(axis=1)
    long = _shares(lt["customer_id"], segments)
    level = [c for c in long.columns if c not in ("customer_id", "share")][0]
    monthly = (1 + annual_discount) ** (1 / 12) - 1
    rows = {}
    for name, g in long.groupby(level, sort=True):
        life = lt.set_index("customer_id").loc[g["customer_id"]]
        w = g["share"].to_numpy(float)
        sf = SurvfuncRight(life["months"].to_numpy(float), life["churned"].to_numpy(int), freq_weights=w)
        horizon = int(min(horizon_months, life["months"].max()))
        t = np.arange(horizon)
        idx = np.searchsorted(sf.surv_times, t, side="right") - 1
        probs = np.concatenate([[1.0], sf.surv_prob])  # nobody churned yet: everyone retained
        retained = probs[idx + 1]  # S(t): still paying in month t + 1
        expected = float(np.sum(retained / (1 + monthly) ** t))
        cust = g["customer_id"].to_numpy()
        exposure = np.dot(w, months_c.loc[cust].to_numpy(float))
        arpa = np.dot(w * months_c.loc[cust].to_numpy(float), arpa_c.loc[cust].to_numpy(float)) / exposure
        churn = np.dot(w, life["churned"].to_numpy(float)) / exposure
        rows[name] = {"customers": w.sum(), "arpa": arpa, "monthly_churn": churn, "horizon_months": horizon,
                      "expected_months": expected, "clv": arpa * gross_margin * expected,
                      "naive_ltv": arpa * gross_margin / churn if churn > 0 else np.inf}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = level
    return out


def _shares(customers: pd.Series, segments: pd.Series | pd.DataFrame | None) -> pd.DataFrame:
    if segments is None:
        return pd.DataFrame({"customer_id": customers.to_numpy(), "segment": "All", "share": 1.0})
    if isinstance(segments, pd.Series):
        name = segments.name or "segment"
        seg = customers.map(segments).astype(object).fillna("(unknown)").astype(str)
        return pd.DataFrame({"customer_id": customers.to_numpy(), name: seg.to_numpy(), "share": 1.0})
    out = segments[segments["customer_id"].isin(set(customers)) & (segments["share"] > 0)]
    missing = customers[~customers.isin(out["customer_id"])]
    if len(missing):
        level = [c for c in out.columns if c not in ("customer_id", "share")][0]
        out = pd.concat([out, pd.DataFrame({"customer_id": missing.to_numpy(), level: "(unknown)",
                                            "share": 1.0})], ignore_index=True)
    return out


def clv_to_cac(clv: pd.DataFrame, performance: pd.DataFrame, value: str = "clv") -> pd.DataFrame:
    """CLV against customer acquisition cost per channel: ``clv``, ``cac``, ``clv_to_cac``.

    ``performance`` is :func:`closedloop_nb.metrics.channel_performance`; channels without spend have
    no CAC and so no ratio (empty), rather than an infinite one.
    """
    out = clv[[value]].join(performance[["cac"]], how="left")
    out["clv_to_cac"] = out[value] / out["cac"].where(out["cac"] > 0)
    return out
