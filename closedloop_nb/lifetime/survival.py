"""How long subscription customers stay, by acquisition channel: Kaplan-Meier curves, the log-rank
test and Cox proportional hazards, from statsmodels, with a check of proportional hazards.

A customer's lifetime runs from their first paying month to the month their MRR first fell to zero
(``churned``); customers still paying at the end of the data are censored there (their lifetime is
at least that long). Reactivation starts no new lifetime: this is time to first churn.

Examples
--------
>>> import pandas as pd
>>> subs = pd.DataFrame({"customer_id": ["a", "b", "a", "c"],
...     "month": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-03-01", "2024-02-01"]),
...     "movement": ["new", "new", "churn", "new"], "mrr_delta": [10.0, 20.0, -10.0, 5.0],
...     "mrr": [10.0, 20.0, 0.0, 5.0]})
>>> subscription_lifetimes(subs)[["customer_id", "months", "churned"]].values.tolist()
[['a', 2, True], ['b', 3, False], ['c', 2, False]]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from closedloop_nb.lifetime.base import one_blas_thread
from closedloop_nb.lifetime.subscriptions import mrr_by_customer

__all__ = ["channel_hazards", "logrank", "plot_retention", "retention_curves", "sbg_projections",
           "subscription_lifetimes"]


def subscription_lifetimes(subscriptions: pd.DataFrame) -> pd.DataFrame:
    """Each customer's months paid until first churn (or until the data end, censored).

    Returns
    -------
    pandas.DataFrame
        ``customer_id``, ``start`` (first paying month), ``months`` (paid months, >= 1),
        ``churned`` (False: still paying when the data end).
    """
    wide = mrr_by_customer(subscriptions)
    paying = wide.to_numpy() > 0
    ever = paying.any(axis=1)
    first = paying.argmax(axis=1)
    n_months = paying.shape[1]
    after = np.arange(n_months)[None, :] > first[:, None]
    stopped = after & ~paying
    churned = stopped.any(axis=1) & ever
    end = np.where(churned, stopped.argmax(axis=1), n_months)
    out = pd.DataFrame({"customer_id": wide.index.to_numpy(), "start": wide.columns[first],
                        "months": end - first, "churned": churned})
    return out[ever].reset_index(drop=True)


def retention_curves(lifetimes: pd.DataFrame, group: pd.Series | None = None,
                     alpha: float = 0.05) -> pd.DataFrame:
    """Kaplan-Meier share still paying after each month, per group, with pointwise intervals.

    Parameters
    ----------
    lifetimes
        As :func:`subscription_lifetimes` returns.
    group
        Group of each customer (e.g. acquisition channel), indexed by ``customer_id``; ``None``:
        everyone together (``All``).
    alpha
        1 - confidence of the intervals (log-log transformed, as statsmodels computes them).

    Returns
    -------
    pandas.DataFrame
        ``group``, ``month`` (0, 1, ...), ``retained`` (share still paying after that many months),
        ``lower``, ``upper``, ``at_risk``.
    """
    from statsmodels.duration.survfunc import SurvfuncRight

    groups = _groups(lifetimes, group)
    rows = []
    for name, lt in lifetimes.groupby(groups, sort=True):
        sf = SurvfuncRight(lt["months"].to_numpy(float), lt["churned"].to_numpy(int))
        lo, hi = _pointwise(sf, alpha)
        horizon = int(lt["months"].max())
        months = np.arange(horizon + 1)
        idx = np.searchsorted(sf.surv_times, months, side="right") - 1
        at_risk = (lt["months"].to_numpy()[None, :] > months[:, None]).sum(axis=1)
        rows.append(pd.DataFrame({"group": name, "month": months, "retained": _step(sf.surv_prob, idx),
                                  "lower": _step(lo, idx), "upper": _step(hi, idx), "at_risk": at_risk}))
    return pd.concat(rows, ignore_index=True)


def _step(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """A step function's value at each month (1 before the first event time, or without events)."""
    return np.concatenate([[1.0], values])[idx + 1]


def _pointwise(sf: Any, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-log pointwise interval of a Kaplan-Meier estimate (Greenwood's variance)."""
    z = stats.norm.ppf(1 - alpha / 2)
    s, se = sf.surv_prob, sf.surv_prob_se
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.log(s)
        sd = se / (s * np.abs(log_s))
        lo = np.exp(-np.exp(np.log(-log_s) + z * sd))
        hi = np.exp(-np.exp(np.log(-log_s) - z * sd))
    edge = (s <= 0) | (s >= 1) | ~np.isfinite(sd)
    return np.where(edge, s, lo), np.where(edge, s, hi)


def logrank(lifetimes: pd.DataFrame, group: pd.Series) -> tuple[float, float]:
    """Log-rank test that all groups retain alike: ``(chi-square statistic, p-value)``."""
    from statsmodels.duration.survfunc import survdiff

    groups = _groups(lifetimes, group)
    return tuple(float(v) for v in survdiff(lifetimes["months"].to_numpy(float),
                                            lifetimes["churned"].to_numpy(int), groups.to_numpy()))


@one_blas_thread
def channel_hazards(lifetimes: pd.DataFrame, group: pd.Series, reference: str | None = None,
                    alpha: float = 0.05, min_customers: int = 10) -> pd.DataFrame:
    """Cox proportional hazards of churn by group against a reference group, and a check of the
    proportional-hazards assumption.

    The check correlates each customer's scaled Schoenfeld residuals with the rank of their churn
    time (the test of R's ``cox.zph`` with rank transform); a small p-value says that group's hazard
    ratio changes over time, so one number misdescribes it: read its retention curve instead.

    Parameters
    ----------
    reference
        Group the others are compared with (default: the largest named group).
    min_customers
        Groups with fewer customers are pooled into ``(other)`` (a hazard ratio from a handful of
        customers says nothing, and makes the fit unstable).

    Returns
    -------
    pandas.DataFrame
        One row per non-reference group: ``customers``, ``churned``, ``hazard_ratio`` (above 1:
        churns faster than the reference), ``lower``, ``upper``, ``p_value``, ``ph_p_value``,
        ``proportional`` (False when ``ph_p_value < alpha``; empty when it cannot be tested).
    """
    from statsmodels.duration.hazard_regression import PHReg

    groups = _groups(lifetimes, group)
    sizes = groups.value_counts()
    groups = groups.where(groups.map(sizes) >= min_customers, "(other)")
    named = groups[groups != "(other)"]
    reference = reference or (named if len(named) else groups).value_counts().idxmax()
    levels = [g for g in sorted(groups.unique()) if g != reference]
    if not levels:
        raise ValueError("need at least two groups to compare")
    exog = np.column_stack([(groups == g).to_numpy(float) for g in levels])
    time, status = lifetimes["months"].to_numpy(float), lifetimes["churned"].to_numpy(int)
    res = PHReg(time, exog, status=status, ties="breslow").fit()
    ci = np.exp(res.conf_int(alpha))
    ph = _ph_test(res, time, status, exog)
    counts = pd.DataFrame({"g": groups.to_numpy(), "c": status}).groupby("g")["c"].agg(["size", "sum"])
    out = pd.DataFrame({
        "customers": counts.loc[levels, "size"].to_numpy(), "churned": counts.loc[levels, "sum"].to_numpy(),
        "hazard_ratio": np.exp(res.params), "lower": ci[:, 0], "upper": ci[:, 1], "p_value": res.pvalues,
        "ph_p_value": ph}, index=pd.Index(levels, name="group"))
    out["proportional"] = (out["ph_p_value"] >= alpha).where(out["ph_p_value"].notna())
    out.attrs["reference"] = reference
    return out


def _ph_test(res: Any, time: np.ndarray, status: np.ndarray, exog: np.ndarray) -> np.ndarray:
    """Per covariate: p-value of the correlation of scaled Schoenfeld residuals (Grambsch & Therneau
    1994) with the rank of event time."""
    resid = res.schoenfeld_residuals
    events = (status == 1) & np.isfinite(resid).all(axis=1)
    if events.sum() < 3:
        return np.full(exog.shape[1], np.nan)
    r = resid[events]
    scaled = r @ np.asarray(res.cov_params()) * events.sum() + np.asarray(res.params)
    t_rank = stats.rankdata(time[events])
    t_rank = t_rank - t_rank.mean()
    out = []
    for j in range(exog.shape[1]):
        y = scaled[:, j]
        if np.std(y) == 0:
            out.append(np.nan)
            continue
        # slope of the scaled residuals on rank of time: t-test of the correlation
        rho = np.corrcoef(t_rank, y)[0, 1]
        f = rho ** 2 * (events.sum() - 2) / max(1 - rho ** 2, 1e-12)
        out.append(float(stats.f.sf(f, 1, events.sum() - 2)))
    return np.asarray(out)


def _groups(lifetimes: pd.DataFrame, group: pd.Series | None) -> pd.Series:
    if group is None:
        return pd.Series("All", index=lifetimes.index)
    g = lifetimes["customer_id"].map(group)
    return g.fillna("(unknown)").astype(str).set_axis(lifetimes.index)


@one_blas_thread
def sbg_projections(lifetimes: pd.DataFrame, group: pd.Series | None = None,
                    min_customers: int = 10) -> dict[str, Any]:
    """A shifted-beta-geometric model per group (groups with at least ``min_customers``), fitted on
    the customers' censored lifetimes: the projection beyond what the data show."""
    from closedloop_nb.lifetime.sbg import ShiftedBetaGeometric

    groups = _groups(lifetimes, group)
    out = {}
    for name, lt in lifetimes.groupby(groups, sort=True):
        if len(lt) >= min_customers and lt["churned"].any():
            out[name] = ShiftedBetaGeometric().fit_lifetimes(lt["months"], lt["churned"])
    return out


def _retained_at(curves: pd.DataFrame, name: Any, month: int) -> float:
    """Share of group ``name`` still paying at ``month`` (the step curve's value), NaN beyond its data."""
    c = curves[(curves["group"] == name) & (curves["month"] <= month)]
    if c.empty or curves[(curves["group"] == name)]["month"].max() < month:
        return float("nan")
    return float(c.sort_values("month")["retained"].iloc[-1])


def plot_retention(curves: pd.DataFrame, top: int = 6, ax: Any = None,
                   projections: dict[str, Any] | None = None, horizon: int = 24) -> Any:
    """Retention curves (from :func:`retention_curves`) of the ``top`` largest groups, with their
    intervals shaded, and the sBG projections (:func:`sbg_projections`) dashed to ``horizon``
    months; returns the Axes."""
    import matplotlib.pyplot as plt

    from closedloop_nb.metrics.plots import channel_colour
    from closedloop_nb.present import clean_text

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    size = curves[curves["month"] == 0].set_index("group")["at_risk"].nlargest(top)
    for name in size.index:
        c = curves[(curves["group"] == name) & (curves["at_risk"] > 0)]
        label = clean_text(name).replace("$", r"\$")
        (line,) = ax.step(c["month"], c["retained"], where="post", label=f"{label} (n={size[name]})",
                          color=channel_colour(name))
        ax.fill_between(c["month"], c["lower"], c["upper"], step="post", alpha=0.12, color=line.get_color())
        if projections and name in projections:
            t = np.arange(horizon + 1)
            ax.plot(t, projections[name].survival(t), ls="--", lw=1, color=line.get_color())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("months since first payment")
    ax.set_ylabel("share still paying")
    at = {n: _retained_at(curves, n, 6) for n in size.index}
    at = {n: v for n, v in at.items() if np.isfinite(v)}
    if len(at) >= 2:  # the title states the finding: who keeps customers longest at six months
        best, worst = max(at, key=at.get), min(at, key=at.get)
        title = (f"After 6 months {at[best]:.0%} of {clean_text(best)} customers still pay, "
                 f"{at[worst]:.0%} of {clean_text(worst)}").replace("$", r"\$")
    else:
        title = "Retention by acquisition channel"
    how = "(Kaplan-Meier, 95% intervals" + ("; dashed: sBG projection)" if projections else ")")
    ax.set_title(f"{title}\n{how}", fontsize="medium")
    ax.legend(fontsize="small")
    return ax
