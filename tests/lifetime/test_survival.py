"""Retention curves and hazards by channel: by hand, against scipy, and on simulations with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from closedloop_nb.lifetime.survival import (
    channel_hazards,
    logrank,
    retention_curves,
    subscription_lifetimes,
)


def frame(months, churned, groups=None) -> tuple[pd.DataFrame, pd.Series | None]:
    ids = [f"c{i}" for i in range(len(months))]
    lt = pd.DataFrame({"customer_id": ids, "months": months, "churned": churned})
    return lt, (None if groups is None else pd.Series(list(groups), index=ids))


def test_kaplan_meier_by_hand():
    # lifetimes 1, 2, 2, 3 (still paying), 4: S(1) = 4/5, S(2) = 4/5 * 2/4, S(3) unchanged, S(4) = 0
    lt, _ = frame([1, 2, 2, 3, 4], [True, True, True, False, True])
    km = retention_curves(lt).set_index("month")
    assert km["retained"].round(12).tolist() == [1.0, 0.8, 0.4, 0.4, 0.0]
    assert km["at_risk"].tolist() == [5, 4, 2, 1, 0]
    assert (km["lower"] <= km["retained"]).all() and (km["retained"] <= km["upper"]).all()


def test_kaplan_meier_and_logrank_match_scipy():
    rng = np.random.default_rng(3)
    t = np.ceil(rng.exponential(8, 300))
    c = rng.random(300) < 0.7
    g = np.where(rng.random(300) < 0.5, "A", "B")
    t = np.where(g == "B", np.ceil(t * 0.7), t)
    lt, groups = frame(t, c, g)
    km = retention_curves(lt, groups)
    for name in ("A", "B"):
        res = stats.ecdf(stats.CensoredData(uncensored=t[(g == name) & c], right=t[(g == name) & ~c]))
        mine = km[km["group"] == name].set_index("month")["retained"]
        np.testing.assert_allclose(mine.loc[res.sf.quantiles[:-1]], res.sf.probabilities[:-1], rtol=1e-12)
    chi2, p = logrank(lt, groups)
    ref = stats.logrank(stats.CensoredData(uncensored=t[(g == "A") & c], right=t[(g == "A") & ~c]),
                        stats.CensoredData(uncensored=t[(g == "B") & c], right=t[(g == "B") & ~c]))
    assert chi2 == pytest.approx(ref.statistic ** 2, rel=1e-9) and p == pytest.approx(ref.pvalue, rel=1e-9)


def simulate(seed: int, shape_b: float = 1.0, n: int = 1500) -> tuple[pd.DataFrame, pd.Series]:
    """Group B churns at twice group A's rate (exponential) or, with shape_b != 1, with the same
    median but a hazard that changes over time (Weibull): censoring at 24 months."""
    rng = np.random.default_rng(seed)
    g = np.where(rng.random(n) < 0.5, "A", "B")
    a = rng.exponential(12, n)
    scale_b = 6 * np.log(2) / np.log(2) ** (1 / shape_b)  # Weibull median = exponential(6) median
    b = scale_b * rng.weibull(shape_b, n) if shape_b != 1 else rng.exponential(6, n)
    t = np.where(g == "A", a, b)
    return frame(np.minimum(t, 24), t < 24, g)


def test_cox_recovers_a_known_hazard_ratio_and_keeps_proportional_hazards():
    lt, groups = simulate(0)
    hz = channel_hazards(lt, groups, reference="A")
    row = hz.loc["B"]
    assert row["lower"] < 2.0 < row["upper"] and row["hazard_ratio"] == pytest.approx(2.0, rel=0.15)
    assert bool(row["proportional"])


def test_cox_flags_hazards_that_are_not_proportional():
    lt, groups = simulate(1, shape_b=3.0)
    hz = channel_hazards(lt, groups, reference="A")
    assert hz.loc["B", "ph_p_value"] < 0.001 and hz.loc["B", "proportional"] == False  # noqa: E712


def test_small_groups_are_pooled():
    lt, groups = simulate(2, n=400)
    groups.iloc[:3] = "Tiny"
    hz = channel_hazards(lt, groups, reference="A", min_customers=10)
    assert "Tiny" not in hz.index and "(other)" in hz.index


def test_lifetimes_from_movements_censor_the_still_paying():
    subs = pd.DataFrame({"customer_id": ["a", "a", "a", "b"],
                         "month": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-04-01", "2024-02-01"]),
                         "movement": ["new", "churn", "reactivation", "new"],
                         "mrr_delta": [10.0, -10.0, 10.0, 5.0], "mrr": [10.0, 0.0, 10.0, 5.0]})
    lt = subscription_lifetimes(subs).set_index("customer_id")
    # a: paid January, churned February (reactivation in April starts no new lifetime)
    assert (lt.loc["a", "months"], lt.loc["a", "churned"]) == (1, True)
    assert (lt.loc["b", "months"], lt.loc["b", "churned"]) == (3, False)


def test_a_group_nobody_left_is_retained_throughout():
    lt, groups = frame([2, 3, 1], [False, False, True], ["A", "A", "B"])
    km = retention_curves(lt, groups)
    assert km.loc[km["group"] == "A", "retained"].eq(1.0).all()
    assert km.loc[km["group"] == "B", "retained"].tolist() == [1.0, 0.0]


def test_sbg_on_individual_lifetimes_equals_the_cohort_fit():
    """Fader & Hardie's regular cohort as 1,000 individual lifetimes (the 241 still there in year 7
    censored) gives the cohort fit's parameters: alpha 0.704, beta 1.182."""
    import matplotlib

    matplotlib.use("Agg")
    from closedloop_nb.lifetime import ShiftedBetaGeometric, plot_retention, sbg_projections

    active = np.array([1000, 631, 468, 382, 326, 289, 262, 241])
    lost = active[:-1] - active[1:]
    months = np.concatenate([np.repeat(np.arange(1, len(active)), lost), np.full(active[-1], len(active))])
    churned = np.concatenate([np.ones(lost.sum(), bool), np.zeros(active[-1], bool)])
    m = ShiftedBetaGeometric().fit_lifetimes(months, churned)
    assert m.params_["alpha"] == pytest.approx(0.704, abs=1e-3)
    assert m.params_["beta"] == pytest.approx(1.182, abs=1e-3)
    lt, groups = frame(months, churned, ["regular"] * len(months))
    proj = sbg_projections(lt, groups)
    assert proj["regular"].params_ == pytest.approx(m.params_)
    ax = plot_retention(retention_curves(lt, groups), projections=proj, horizon=12)
    assert "sBG" in ax.get_title()
