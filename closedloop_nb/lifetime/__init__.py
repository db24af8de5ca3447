"""Churn and customer lifetime value.

* Repeat purchases: BG/NBD, MBG/NBD, Pareto/NBD, BG/BB and Gamma-Gamma, fitted by maximum likelihood and
  checked against the published results; :func:`customer_lifetime_value` with horizon, time unit,
  discount rate and intervals.
* Subscriptions: the shifted-beta-geometric model; MRR movements and churn rates as ChartMogul
  defines them (:mod:`~closedloop_nb.lifetime.subscriptions`); Kaplan-Meier retention, log-rank and
  Cox hazards by channel (:mod:`~closedloop_nb.lifetime.survival`); :func:`subscription_clv` by
  channel and :func:`clv_to_cac`; a calibrated churn classifier (:mod:`~closedloop_nb.lifetime.churn`).

Fitted parameters are in ``params_`` under the papers' names, the log-likelihood in
``log_likelihood_``; ``fit`` takes the ``frequency``, ``recency``, ``T`` (and ``monetary_value``)
columns that :func:`rfm_summary` returns.
"""

from closedloop_nb.lifetime.bgbb import BGBB
from closedloop_nb.lifetime.bgnbd import BGNBD
from closedloop_nb.lifetime.churn import ChurnClassifier, churn_panel
from closedloop_nb.lifetime.gamma_gamma import GammaGamma
from closedloop_nb.lifetime.mbgnbd import MBGNBD
from closedloop_nb.lifetime.pareto_nbd import ParetoNBD
from closedloop_nb.lifetime.rfm import rfm_summary
from closedloop_nb.lifetime.sbg import ShiftedBetaGeometric
from closedloop_nb.lifetime.segments import covariate_lrt, segment_lrt
from closedloop_nb.lifetime.survival import (
    channel_hazards,
    logrank,
    plot_retention,
    retention_curves,
    sbg_projections,
    subscription_lifetimes,
)
from closedloop_nb.lifetime.value import (
    clv_to_cac,
    customer_lifetime_value,
    parameter_interval,
    subscription_clv,
)

__all__ = [
    "BGBB",
    "BGNBD",
    "ChurnClassifier",
    "GammaGamma",
    "MBGNBD",
    "ParetoNBD",
    "ShiftedBetaGeometric",
    "channel_hazards",
    "churn_panel",
    "clv_to_cac",
    "covariate_lrt",
    "customer_lifetime_value",
    "logrank",
    "parameter_interval",
    "plot_retention",
    "retention_curves",
    "rfm_summary",
    "sbg_projections",
    "segment_lrt",
    "subscription_clv",
    "subscription_lifetimes",
]
