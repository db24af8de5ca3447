"""Churn classifier: the panel by hand; the model against a simulation whose churn probabilities are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from closedloop_nb.errors import NotFittedError
from closedloop_nb.lifetime.churn import FEATURES, ChurnClassifier, churn_panel


def test_panel_by_hand():
    subs = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "b"],
        "month": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-02-01"]),
        "movement": ["new", "expansion", "churn", "reactivation", "new"],
        "mrr_delta": [100.0, 100.0, -200.0, 50.0, 10.0], "mrr": [100.0, 200.0, 0.0, 50.0, 10.0]})
    p = churn_panel(subs, pd.Series({"a": "Email"})).set_index(["customer_id", "month"])
    assert p.loc[("a", "2024-02"), "mrr_change"] == pytest.approx(np.log(2))
    assert bool(p.loc[("a", "2024-02"), "expanded"]) and p.loc[("a", "2024-02"), "churn_next"] == 1
    assert ("a", "2024-03") not in p.index  # not paying at the end of March: no row
    assert bool(p.loc[("a", "2024-04"), "reactivated"]) and np.isnan(p.loc[("a", "2024-04"), "churn_next"])
    assert p.loc[("b", "2024-02"), "channel"] == "(unknown)" and p.loc[("a", "2024-01"), "channel"] == "Email"
    assert p.loc[("b", "2024-03"), "tenure"] == 2


def simulated_panel(seed: int, per_month: int = 500, months: int = 18) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows with known churn probability: logit = -3 + 1.2 contracted - 0.08 tenure + 0.8 [Paid Social]."""
    rng = np.random.default_rng(seed)
    n = per_month * months
    df = pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)],
        "month": np.repeat([str(p) for p in pd.period_range("2023-01", periods=months, freq="M")], per_month),
        "channel": rng.choice(["Paid Search", "Paid Social", "Email"], n),
        "tenure": rng.integers(1, 24, n), "log_mrr": rng.normal(6, 0.5, n),
        "mrr_change": rng.normal(0, 0.1, n), "contracted": rng.random(n) < 0.2,
        "expanded": rng.random(n) < 0.1, "reactivated": rng.random(n) < 0.05})
    logit = -3 + 1.2 * df["contracted"] - 0.08 * df["tenure"] + 0.8 * (df["channel"] == "Paid Social")
    p = 1 / (1 + np.exp(-logit.to_numpy(float)))
    df["churn_next"] = (rng.random(n) < p).astype(float)
    return df, p


def test_classifier_is_as_good_as_the_truth_allows_and_calibrated():
    panel, p_true = simulated_panel(0)
    model = ChurnClassifier(holdout_months=4).fit(panel)
    test = panel["month"].isin(sorted(panel["month"].unique())[-4:]).to_numpy()
    oracle = roc_auc_score(panel.loc[test, "churn_next"], p_true[test])
    assert model.metrics_["roc_auc"] > oracle - 0.03
    # calibrated: predicted probabilities track the true ones, and on average match the churn rate
    pred = model.holdout_["probability"].to_numpy()
    assert np.corrcoef(pred, p_true[test])[0, 1] > 0.95
    assert abs(pred.mean() - model.metrics_["base_rate"]) < 0.015
    assert model.coefficients_.index[0] in ("contracted", "tenure", "channel_Paid Social")
    assert set(FEATURES) <= set(model.coefficients_.index)
    risk = model.at_risk(panel, top=10)
    assert len(risk) == 10 and risk["probability"].is_monotonic_decreasing


def test_refuses_what_it_cannot_learn_from():
    panel, _ = simulated_panel(1, per_month=50, months=3)
    with pytest.raises(ValueError, match="need more than holdout_months"):
        ChurnClassifier(holdout_months=3).fit(panel)
    with pytest.raises(ValueError, match="no churner"):
        ChurnClassifier(holdout_months=1).fit(panel.assign(churn_next=0.0))
    with pytest.raises(NotFittedError):
        ChurnClassifier().at_risk(panel)


def test_fits_run_blas_on_one_thread_and_give_what_they_give_on_several():
    """Lifetime fits are too small for BLAS threads to pay (and on a busy machine threads spinning for
    each other cost several times the work): they run on one thread, the caller's setting is back
    after, and the classifier's holdout figures equal those of a fit with BLAS unlimited."""
    from threadpoolctl import threadpool_info

    from closedloop_nb.lifetime.base import one_blas_thread

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    inner = one_blas_thread(one_blas_thread(blas_threads))  # nested: still one thread, then restored
    assert inner() <= {1}
    assert blas_threads() == before
    panel, _ = simulated_panel(3)
    limited = ChurnClassifier(holdout_months=4).fit(panel)
    unlimited = ChurnClassifier.fit.__wrapped__(ChurnClassifier(holdout_months=4), panel)
    for key, value in unlimited.metrics_.items():
        assert limited.metrics_[key] == pytest.approx(value, rel=1e-9), key
    np.testing.assert_allclose(limited.holdout_["probability"], unlimited.holdout_["probability"], rtol=1e-8)
