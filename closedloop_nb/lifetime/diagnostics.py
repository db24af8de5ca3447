"""Does a repeat-purchase model fit? Exact diagnostics (no simulation), tables first, pictures after.

* :func:`period_transactions`: customers by number of repeat purchases in the calibration period,
  actual against expected (the sum over customers of P(X(T_i) = x)), with a true "7+" bin and a
  chi-square goodness-of-fit test;
* :func:`holdout_by_frequency`: mean holdout purchases against the model's conditional expectation,
  by calibration frequency;
* :func:`frequency_recency_matrix`: expected purchases or P(alive) over a bounded grid of frequency
  and recency, for one customer age ``T``.

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

__all__ = ["frequency_recency_matrix", "holdout_by_frequency", "period_transactions",
           "plot_holdout_by_frequency", "plot_period_transactions"]


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
