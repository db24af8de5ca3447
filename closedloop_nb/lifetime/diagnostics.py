"""Does a repeat-purchase model fit? Exact diagnostics (no simulation), tables first, pictures after.

* :func:`period_transactions`: customers by number of repeat purchases in the calibration period,
  actual against expected (the sum over customers of P(X(T_i) = x)), with a true "7+" bin and a
  chi-square goodness-of-fit test;
* :func:`holdout_by_frequency`: mean holdout purchases against the model's conditional expectation,
  by calibration frequency;
* :func:`frequency_recency_matrix`: expected purchases or P(alive) over a bounded grid of frequency
  and recency, for one customer age ``T``;
* :func:`cumulative_tracking`: repeat purchases of the whole cohort by calendar time, actual against
  the model's expectation (each customer's E[X(age)] added up), through calibration and holdout.

Examples
--------
>>> import pandas as pd
>>> from closedloop_nb.lifetime import BGNBD
>>> m = BGNBD()
>>> m.params_ = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
>>> rfm = pd.DataFrame({"frequency": [0, 0, 1, 3], "recency": [0.0, 0.0, 5.0, 20.0], "T": [39.0] * 4})
>>> pt = period_transactions(m, rfm, max_frequency=3)
>>> pt.index.tolist(), round(float(pt["expected"].sum()), 9)
([0, 1, 2, '3+'], 4.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from closedloop_nb.lifetime.rfm import _day, _days, _refuse

__all__ = ["cumulative_tracking", "frequency_recency_matrix", "holdout_by_frequency", "period_transactions",
           "plot_cumulative_tracking", "plot_holdout_by_frequency", "plot_period_transactions"]

_UNIT_DAYS = {"D": 1, "W": 7}


def period_transactions(model: Any, rfm: pd.DataFrame, max_frequency: int = 7) -> pd.DataFrame:
    """Customers with 0, 1, ... ``max_frequency``+ repeat purchases: actual and expected.

    The last bin holds everything from ``max_frequency`` up (1 minus the lower bins), so expected
    counts add up to the number of customers. ``attrs`` carry the chi-square test of fit
    (``statistic``, ``df`` = bins - 1 - parameters, ``p_value``).

    Parameters
    ----------
    model
        A fitted model with ``probability_of_purchases(x, t)`` (BG/NBD).
    """
    T = rfm["T"].to_numpy(float)
    uniq, counts = np.unique(T, return_counts=True)  # the pmf once per distinct customer age
    expected = []
    for x in range(max_frequency):
        expected.append(float(np.dot(counts, model.probability_of_purchases(x, uniq))))
    expected.append(len(rfm) - sum(expected))
    capped = np.minimum(rfm["frequency"].to_numpy(int), max_frequency)
    actual = np.bincount(capped, minlength=max_frequency + 1)
    index = [*range(max_frequency), f"{max_frequency}+"]
    out = pd.DataFrame({"actual": actual, "expected": expected}, index=pd.Index(index, name="frequency"))
    ok = out["expected"] > 0
    chi2 = float((((out["actual"] - out["expected"]) ** 2)[ok] / out["expected"][ok]).sum())
    df = int(ok.sum()) - 1 - len(model.params_)
    out.attrs.update(statistic=chi2, df=df, p_value=float(stats.chi2.sf(chi2, df)) if df > 0 else np.nan)
    return out


def holdout_by_frequency(model: Any, rfm: pd.DataFrame, max_frequency: int = 7) -> pd.DataFrame:
    """Mean holdout purchases per customer, actual against the model's conditional expectation, by
    calibration frequency (``rfm`` from ``rfm_summary(..., holdout_end=...)``).

    Returns
    -------
    pandas.DataFrame
        Per frequency (the last bin ``max_frequency``+): ``customers``, ``actual``, ``expected``.
    """
    missing = [c for c in ("frequency_holdout", "duration_holdout") if c not in rfm]
    if missing:
        raise KeyError(f"rfm lacks {missing}: build it with rfm_summary(..., holdout_end=...)")
    t = float(rfm["duration_holdout"].iloc[0])
    pred = model.conditional_expected_purchases(t, rfm["frequency"], rfm["recency"], rfm["T"])
    key = np.minimum(rfm["frequency"].to_numpy(int), max_frequency)
    df = pd.DataFrame({"bin": key, "actual": rfm["frequency_holdout"].to_numpy(float), "expected": pred})
    out = df.groupby("bin").agg(customers=("actual", "size"), actual=("actual", "mean"),
                                expected=("expected", "mean"))
    out.index = [f"{i}+" if i == max_frequency else i for i in out.index]
    out.index.name = "frequency"
    return out


def frequency_recency_matrix(model: Any, T: float, max_frequency: int = 20, steps: int = 20,
                             quantity: str = "probability_alive", t: float = 1.0) -> pd.DataFrame:
    """``probability_alive`` or ``expected_purchases`` (in the next ``t`` periods) over frequency 0..
    ``max_frequency`` and ``steps`` recencies between 0 and ``T`` (a bounded grid)."""
    freq = np.arange(max_frequency + 1)
    rec = np.linspace(0, T, steps + 1)
    x, tx = np.meshgrid(freq, rec, indexing="ij")
    tx = np.where(x == 0, 0.0, tx)  # no repeat purchase: recency 0 by definition
    if quantity == "probability_alive":
        values = model.probability_alive(x.ravel(), tx.ravel(), np.full(x.size, T))
    elif quantity == "expected_purchases":
        values = model.conditional_expected_purchases(t, x.ravel(), tx.ravel(), np.full(x.size, T))
    else:
        raise ValueError("quantity is 'probability_alive' or 'expected_purchases'")
    return pd.DataFrame(np.asarray(values).reshape(x.shape), index=pd.Index(freq, name="frequency"),
                        columns=pd.Index(rec.round(2), name="recency"))


def cumulative_tracking(model: Any, orders: pd.DataFrame, calibration_end: str | pd.Timestamp,
                        holdout_end: str | pd.Timestamp | None = None, customer: str = "customer_id",
                        time: str = "timestamp", unit: str = "W") -> pd.DataFrame:
    """Cumulative repeat purchases of the cohort by calendar time: actual against expected.

    The cohort is every customer whose first purchase is on or before ``calibration_end`` (the
    customers the model was fitted on). At each date, *actual* counts their repeat purchases so far
    (purchases on the same day merged, as in :func:`rfm_summary`) and *expected* adds up each
    customer's unconditional expectation ``E[X(age)]`` at their age then, in ``unit`` periods. Exact:
    one evaluation per distinct (date, first-purchase day), no simulation.

    Parameters
    ----------
    model
        A fitted model with ``expected_purchases(t)`` (BG/NBD, MBG/NBD, Pareto/NBD).
    orders
        One row per order, with ``customer`` and ``time`` columns.
    calibration_end, holdout_end
        End of the calibration period (inclusive) and, optionally, of the holdout period.
    unit
        The model's time unit and the step of the table: ``"W"`` (weeks) or ``"D"`` (days).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``date`` (one row per period, the last ones ending on ``calibration_end`` and
        ``holdout_end``): ``actual`` and ``expected`` cumulative repeat purchases, their increments
        ``actual_in_period`` and ``expected_in_period``, and ``period`` (calibration or holdout).

    Examples
    --------
    A model at Fader, Hardie & Lee's CDNOW parameters, and two customers:

    >>> import pandas as pd
    >>> from closedloop_nb.lifetime import BGNBD
    >>> m = BGNBD()
    >>> m.params_ = dict(r=0.243, alpha=4.414, a=0.793, b=2.426)
    >>> orders = pd.DataFrame({"customer_id": [1, 1, 2],
    ...                        "timestamp": pd.to_datetime(["1997-01-01", "1997-01-20", "1997-01-08"])})
    >>> track = cumulative_tracking(m, orders, "1997-01-22")
    >>> track[["actual", "expected"]].round(4)  # doctest: +NORMALIZE_WHITESPACE
                actual  expected
    date
    1997-01-01       0    0.0000
    1997-01-08       0    0.0533
    1997-01-15       0    0.1567
    1997-01-22       1    0.2543

    (On 8 January customer 1 is a week old, customer 2 a new customer: E[X(1)] = 0.0533.)
    """
    if unit not in _UNIT_DAYS:
        raise ValueError(f"unit must be one of {list(_UNIT_DAYS)}, got {unit!r}")
    missing = [c for c in (customer, time) if c not in orders]
    if missing:
        raise KeyError(f"orders miss column(s) {missing}; it has {list(orders.columns)}")
    day, no_day = _days(orders[time])
    _refuse(no_day, time, "no valid date")
    _refuse(orders[customer].isna().to_numpy(), customer, "no customer")  # a group-by would drop them
    daily = pd.DataFrame({"c": orders[customer].to_numpy(), "d": day}).drop_duplicates()
    cal_end = _day(calibration_end)
    end = _day(holdout_end) if holdout_end is not None else cal_end
    if end < cal_end:
        raise ValueError(f"holdout_end {holdout_end} is before calibration_end {calibration_end}")
    first = daily.groupby("c")["d"].min()
    first = first[first <= cal_end]
    if first.empty:
        raise ValueError(f"no customer made a first purchase by {calibration_end}")
    cohort = daily[daily["c"].isin(first.index)]
    repeats = np.sort(cohort.loc[cohort["d"] > cohort["c"].map(first), "d"].to_numpy())
    step = _UNIT_DAYS[unit]
    # one row per period, the calibration rows ending on calibration_end, then on to holdout_end
    grid = np.concatenate([np.arange(cal_end - (cal_end - first.min()) // step * step, cal_end + 1, step),
                           np.arange(cal_end + step, end, step), [end] if end > cal_end else []])
    grid = grid.astype(np.int64)
    dates = pd.DatetimeIndex(grid.astype("datetime64[D]"), name="date")
    births, counts = np.unique(first.to_numpy(), return_counts=True)
    ages = np.clip(grid[:, None] - births[None, :], 0, None) / step
    uniq, inverse = np.unique(ages, return_inverse=True)
    per_age = np.asarray(model.expected_purchases(uniq), dtype=float)
    expected = (per_age[inverse.reshape(ages.shape)] * counts).sum(axis=1)
    actual = np.searchsorted(repeats, grid, side="right")
    out = pd.DataFrame({"actual": actual, "expected": expected}, index=dates)
    out["actual_in_period"] = out["actual"].diff().fillna(out["actual"]).astype(int)
    out["expected_in_period"] = out["expected"].diff().fillna(out["expected"])
    out["period"] = np.where(grid <= cal_end, "calibration", "holdout")
    out.attrs.update(calibration_end=pd.Timestamp(np.datetime64(cal_end, "D")), customers=len(first),
                     unit=unit)
    return out


def plot_cumulative_tracking(table: pd.DataFrame, ax: Any = None) -> Any:
    """Cumulative repeat purchases, actual against the model, with the end of calibration marked;
    returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    ax.plot(table.index, table["actual"], label="actual")
    ax.plot(table.index, table["expected"], ls="--", label="model")
    cal_end = table.attrs.get("calibration_end")
    if cal_end is not None and cal_end < table.index[-1]:
        ax.axvline(cal_end, color="grey", ls=":", lw=1)
        ax.annotate("end of calibration", (cal_end, 0), xytext=(4, 4), textcoords="offset points",
                    fontsize=8, color="grey")
    ax.set_ylabel("cumulative repeat purchases")
    ax.set_title(f"Tracking cumulative repeat purchases ({table.attrs.get('customers', '?'):,} customers)"
                 if isinstance(table.attrs.get("customers"), int) else "Tracking cumulative repeat purchases")
    ax.legend()
    return ax


def plot_period_transactions(table: pd.DataFrame, ax: Any = None) -> Any:
    """Bars of actual and expected customers per repeat-purchase count; returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    pos = np.arange(len(table))
    ax.bar(pos - 0.2, table["actual"], 0.4, label="actual")
    ax.bar(pos + 0.2, table["expected"], 0.4, label="model")
    ax.set_xticks(pos, [str(i) for i in table.index])
    ax.set_xlabel("repeat purchases in the calibration period")
    ax.set_ylabel("customers")
    p = table.attrs.get("p_value", np.nan)
    ax.set_title("Frequency of repeat purchases" + (f" (chi-square p = {p:.3f})" if np.isfinite(p) else ""))
    ax.legend()
    return ax


def plot_holdout_by_frequency(table: pd.DataFrame, ax: Any = None) -> Any:
    """Actual against expected holdout purchases by calibration frequency; returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    labels = [str(i) for i in table.index]
    ax.plot(labels, table["actual"], marker="o", label="actual")
    ax.plot(labels, table["expected"], marker="s", ls="--", label="model")
    ax.set_xlabel("repeat purchases in the calibration period")
    ax.set_ylabel("mean purchases in the holdout period")
    ax.set_title("Conditional expectations against the holdout")
    ax.legend()
    return ax
