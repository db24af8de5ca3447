"""Churn and customer lifetime value: repeat-purchase (BG/NBD, Pareto/NBD, BG/BB, Gamma-Gamma) and
contractual (sBG)
models, fitted by maximum likelihood and checked against the published results.

Fitted parameters are in ``params_`` under the papers' names, the log-likelihood in
``log_likelihood_``; ``fit`` takes the ``frequency``, ``recency``, ``T`` (and ``monetary_value``)
columns that :func:`rfm_summary` returns.
"""

from closedloop_nb.lifetime.bgbb import BGBB
from closedloop_nb.lifetime.bgnbd import BGNBD
from closedloop_nb.lifetime.gamma_gamma import GammaGamma
from closedloop_nb.lifetime.pareto_nbd import ParetoNBD
from closedloop_nb.lifetime.rfm import rfm_summary
from closedloop_nb.lifetime.sbg import ShiftedBetaGeometric

__all__ = ["BGBB", "BGNBD", "GammaGamma", "ParetoNBD", "ShiftedBetaGeometric", "rfm_summary"]
