"""Who is likely to churn next month: a calibrated scikit-learn classifier on subscription behaviour
and acquisition source, judged on the most recent months it never saw.

:func:`churn_panel` turns MRR movements into one row per paying customer and month, with what was
known at the end of that month and whether the customer churned the month after:

================  ===============================================================================
``tenure``        months paid so far (1 in the first month)
``log_mrr``       log(1 + MRR) at the end of the month
``mrr_change``    log(MRR / MRR a month before) (0 in the first month)
``contracted``    MRR fell in the last three months
``expanded``      MRR rose in the last three months
``reactivated``   the customer had churned before and came back
``channel``       acquisition channel (or any segment), ``(unknown)`` when not given
``churn_next``    the customer pays nothing the month after (the label; empty in the last month)
================  ===============================================================================

Examples
--------
>>> import pandas as pd
>>> subs = pd.DataFrame({"customer_id": ["a", "a", "a"],
...     "month": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
...     "movement": ["new", "contraction", "churn"], "mrr_delta": [100.0, -50.0, -50.0],
...     "mrr": [100.0, 50.0, 0.0]})
>>> churn_panel(subs)[["month", "tenure", "contracted", "churn_next"]].values.tolist()
[['2024-01', 1, False, 0.0], ['2024-02', 2, True, 1.0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.errors import NotFittedError
from closedloop_nb.lifetime.base import one_blas_thread
from closedloop_nb.lifetime.subscriptions import mrr_by_customer

__all__ = ["FEATURES", "ChurnClassifier", "churn_panel"]

#: Numeric features of :func:`churn_panel`, in order (``channel`` is the categorical one).
FEATURES = ("tenure", "log_mrr", "mrr_change", "contracted", "expanded", "reactivated")


def churn_panel(subscriptions: pd.DataFrame, channel: pd.Series | None = None) -> pd.DataFrame:
    """One row per customer and month they paid at the end of (see the module docs).

    Parameters
    ----------
    subscriptions
        MRR movements (the canonical ``subscriptions`` table).
    channel
        Acquisition channel per ``customer_id`` (e.g. :func:`closedloop_nb.metrics.acquisition_channel`).
    """
    wide = mrr_by_customer(subscriptions)
    mrr = wide.to_numpy()
    paying = mrr > 0
    prev = np.column_stack([np.zeros(len(mrr)), mrr[:, :-1]])
    tenure = np.cumsum(paying, axis=1)
    started = np.cumsum(paying, axis=1) > 0
    churned_before = np.maximum.accumulate(started & ~paying, axis=1)
    down = (mrr < prev) & paying & (prev > 0)
    up = (mrr > prev) & paying & (prev > 0)
    window = lambda a: pd.DataFrame(a).T.rolling(3, min_periods=1).max().T.to_numpy() > 0  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(prev > 0, np.log(mrr / prev), 0.0)
    nxt = np.column_stack([~paying[:, 1:], np.full(len(mrr), np.nan)]).astype(float)
    rows, cols = np.nonzero(paying)
    months = wide.columns.strftime("%Y-%m").to_numpy()
    out = pd.DataFrame({
        "customer_id": wide.index.to_numpy()[rows], "month": months[cols], "tenure": tenure[rows, cols],
        "log_mrr": np.log1p(mrr[rows, cols]), "mrr_change": change[rows, cols],
        "contracted": window(down)[rows, cols], "expanded": window(up)[rows, cols],
        "reactivated": churned_before[rows, cols], "churn_next": nxt[rows, cols]})
    ch = (out["customer_id"].map(channel).astype(object) if channel is not None
          else pd.Series(None, index=out.index, dtype=object))
    out.insert(2, "channel", ch.fillna("(unknown)").astype(str).to_numpy())
    return out.sort_values(["month", "customer_id"], kind="stable").reset_index(drop=True)


class ChurnClassifier:
    """Logistic regression on :data:`FEATURES` and the channel, probabilities calibrated
    (scikit-learn's ``CalibratedClassifierCV``), evaluated on the last ``holdout_months`` months.

    Parameters
    ----------
    holdout_months
        The most recent labelled months kept out of training and used to judge the model (a
        time-based holdout: the model is scored on months after everything it learnt from).
    C
        Inverse regularisation strength of the logistic regression.
    calibration
        ``"sigmoid"`` (Platt; robust with few churners) or ``"isotonic"``.
    min_churners
        Fewest churners in training needed to calibrate by cross-validation; below it the
        logistic regression's own probabilities are used and ``calibrated_`` is False.

    Attributes
    ----------
    model_
        The fitted scikit-learn estimator (refitted on every labelled month after evaluation).
    metrics_
        ``roc_auc``, ``brier``, ``base_rate``, ``n_train``, ``n_test``, ``churners_train``,
        ``churners_test`` on the holdout.
    calibration_
        Holdout calibration table: ``predicted`` (mean of a bin) and ``observed`` churn rate.
    coefficients_
        Standardised coefficients of the logistic regression (log-odds per standard deviation).
    """

    def __init__(self, holdout_months: int = 3, C: float = 1.0, calibration: str = "sigmoid",
                 min_churners: int = 10):
        self.holdout_months = holdout_months
        self.C = C
        self.calibration = calibration
        self.min_churners = min_churners

    def _pipeline(self, n_churners: int) -> Any:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        prep = ColumnTransformer([("num", StandardScaler(), list(FEATURES)),
                                  ("cat", OneHotEncoder(handle_unknown="ignore"), ["channel"])])
        base = make_pipeline(prep, LogisticRegression(C=self.C, max_iter=1_000))
        if n_churners < self.min_churners:
            return base, False
        return CalibratedClassifierCV(base, method=self.calibration, cv=3), True

    @one_blas_thread
    def fit(self, panel: pd.DataFrame) -> ChurnClassifier:
        """Train on all but the last ``holdout_months`` labelled months, score on those, then refit
        on everything for :meth:`at_risk`; returns self."""
        from sklearn.calibration import calibration_curve
        from sklearn.metrics import brier_score_loss, roc_auc_score

        labelled = panel[panel["churn_next"].notna()]
        months = np.sort(labelled["month"].unique())
        if len(months) <= self.holdout_months:
            raise ValueError(f"{len(months)} labelled month(s): need more than holdout_months="
                             f"{self.holdout_months} to train and judge")
        test_months = months[-self.holdout_months:]
        in_test = labelled["month"].isin(test_months)
        train, test = labelled[~in_test], labelled[in_test]
        y_train, y_test = train["churn_next"].astype(int), test["churn_next"].astype(int)
        if y_train.nunique() < 2:
            raise ValueError("the training months have no churner (or only churners): nothing to learn")
        model, calibrated = self._pipeline(int(y_train.sum()))
        model.fit(train, y_train)
        p = model.predict_proba(test)[:, 1]
        both = y_test.nunique() == 2
        self.metrics_ = {"roc_auc": float(roc_auc_score(y_test, p)) if both else np.nan,
                         "brier": float(brier_score_loss(y_test, p)), "base_rate": float(y_test.mean()),
                         "n_train": len(train), "n_test": len(test), "churners_train": int(y_train.sum()),
                         "churners_test": int(y_test.sum())}
        bins = min(10, max(2, int(y_test.sum())))
        obs, pred = calibration_curve(y_test, p, n_bins=bins, strategy="quantile") if both else ([], [])
        self.calibration_ = pd.DataFrame({"predicted": pred, "observed": obs})
        self.holdout_ = test.assign(probability=p)
        y_all = labelled["churn_next"].astype(int)
        self.model_, self.calibrated_ = self._pipeline(int(y_all.sum()))
        self.model_.fit(labelled, y_all)
        base, _ = self._pipeline(0)
        base.fit(labelled, y_all)
        names = base[0].get_feature_names_out()
        self.coefficients_ = pd.Series(base[-1].coef_[0], index=[n.split("__", 1)[1] for n in names],
                                       name="coefficient").sort_values(key=np.abs, ascending=False)
        return self

    def predict_proba(self, panel: pd.DataFrame) -> np.ndarray:
        """Probability of churning the month after, per row of ``panel``."""
        self._check()
        return self.model_.predict_proba(panel)[:, 1]

    def at_risk(self, panel: pd.DataFrame, month: str | None = None, top: int = 20) -> pd.DataFrame:
        """Customers of ``month`` (default: the last one) ranked by churn probability."""
        self._check()
        month = month or panel["month"].max()
        rows = panel[panel["month"] == month]
        out = rows.assign(probability=self.predict_proba(rows)).sort_values("probability", ascending=False)
        cols = ["customer_id", "channel", "probability", "tenure", "log_mrr", "contracted", "expanded"]
        return out[cols].head(top).reset_index(drop=True)

    def plot(self, ax: Any = None) -> Any:
        """Holdout calibration: predicted against observed churn rate; returns the Axes."""
        import matplotlib.pyplot as plt

        self._check()
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 5))
        c = self.calibration_
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
        ax.plot(c["predicted"], c["observed"], marker="o", label="holdout months")
        top = max(float(c[["predicted", "observed"]].max().max()) if len(c) else 0.0, 0.05) * 1.1
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("predicted churn probability")
        ax.set_ylabel("observed churn rate")
        auc = self.metrics_["roc_auc"]
        ax.set_title("Churn next month" + (f": holdout ROC AUC {auc:.2f}" if np.isfinite(auc) else ""))
        ax.legend(fontsize="small")
        return ax

    def _check(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("This ChurnClassifier is not fitted yet; call fit(panel) first.")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        fitted = f"; holdout ROC AUC {self.metrics_['roc_auc']:.3f}" if hasattr(self, "metrics_") else ""
        return f"ChurnClassifier({args}){fitted}"
