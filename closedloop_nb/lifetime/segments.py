"""Does the acquisition channel matter? Likelihood-ratio tests against one model for all.

* :func:`segment_lrt`: a model fitted separately in each segment (channel, campaign) nests the pooled
  fit, where every segment has the same parameters. Twice the gain in log-likelihood is then
  chi-square with (segments - 1) x (parameters) degrees of freedom under "the channel does not
  matter" (Wilks' theorem); reported with each segment's parameters.
* :func:`covariate_lrt`: one BG/NBD with the segment as covariates (purchase rate and dropout
  shifted per segment, the purchase-rate shape r shared), against the BG/NBD without; fewer
  parameters than separate fits, so smaller segments can be told apart, and each segment's effect
  comes as a rate ratio and a dropout-probability ratio with Wald tests.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from closedloop_nb.lifetime import GammaGamma
>>> rng = np.random.default_rng(1)
>>> def spenders(n, gamma):
...     nu = rng.gamma(4.0, 1 / gamma, n)
...     x = rng.integers(1, 6, n)
...     return pd.DataFrame({"frequency": x, "monetary_value": [rng.gamma(6.0, 1 / v, k).mean()
...                                                             for v, k in zip(nu, x)]})
>>> rfm = pd.concat([spenders(400, 15.0), spenders(400, 45.0)], ignore_index=True)
>>> channel = pd.Series(["Email"] * 400 + ["Paid Search"] * 400, index=rfm.index)
>>> test = segment_lrt(GammaGamma, rfm, channel)
>>> bool(test.attrs["p_value"] < 0.001), test.attrs["df"]
(True, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from closedloop_nb.lifetime.base import one_blas_thread

__all__ = ["covariate_lrt", "segment_lrt"]


@one_blas_thread
def segment_lrt(model_class: Any, rfm: pd.DataFrame, segments: pd.Series,
                min_customers: int = 50) -> pd.DataFrame:
    """Fit ``model_class`` per segment and pooled; likelihood-ratio test of "segments alike".

    Parameters
    ----------
    model_class
        A lifetime model class (``BGNBD``, ``ParetoNBD``, ``GammaGamma``...).
    rfm
        Its input, one row per customer.
    segments
        Segment of each row of ``rfm`` (same index); segments with fewer than ``min_customers``
        customers are pooled into ``(other)``.

    Returns
    -------
    pandas.DataFrame
        One row per segment and ``All``: ``customers``, ``log_likelihood`` and the parameters. The
        test is in ``attrs``: ``statistic``, ``df``, ``p_value``.
    """
    seg = _pooled(rfm, segments, min_customers)
    rows = {}
    pooled = model_class().fit(rfm)
    total = 0.0
    for name, part in rfm.groupby(seg, sort=True):
        m = model_class().fit(part)
        total += m.log_likelihood_
        rows[name] = {"customers": len(part), "log_likelihood": m.log_likelihood_, **m.params_}
    rows["All"] = {"customers": len(rfm), "log_likelihood": pooled.log_likelihood_, **pooled.params_}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = _label(segments, rfm)
    statistic = max(2 * (total - pooled.log_likelihood_), 0.0)
    df = (seg.nunique() - 1) * len(pooled.params_)
    out.attrs.update(statistic=float(statistic), df=int(df), p_value=float(stats.chi2.sf(statistic, df)))
    return out


@one_blas_thread
def covariate_lrt(rfm: pd.DataFrame, segments: pd.Series, min_customers: int = 50,
                  reference: str | None = None) -> pd.DataFrame:
    """BG/NBD with the segment as covariates against BG/NBD without; likelihood-ratio test.

    Parameters
    ----------
    rfm
        ``frequency``, ``recency``, ``T``, one row per customer.
    segments
        Segment of each row (same index); segments under ``min_customers`` are pooled into
        ``(other)``.
    reference
        The segment the others are compared with (default: the largest).

    Returns
    -------
    pandas.DataFrame
        One row per segment: ``customers``, ``rate_ratio`` (mean purchase rate against the
        reference), ``dropout_ratio`` (mean dropout probability after a purchase against the
        reference), the coefficients with standard errors and Wald p-values (the reference row has
        ratio 1). ``attrs``: the test (``statistic``, ``df``, ``p_value``), ``reference``, the
        fitted ``model`` (use ``model.at({segment: 1})`` for one segment's BG/NBD) and
        ``identified`` (False, with a warning, when some segment's parameters ran off to a limit:
        too few of its customers to tell; read its ratios as unknown).

    Examples
    --------
    >>> import pandas as pd
    >>> from closedloop_nb.lifetime.simulate import simulate_bgnbd
    >>> rfm = pd.concat([simulate_bgnbd(3000, 0.5, 6.0, 0.9, 3.0, T=52.0, seed=1),
    ...                  simulate_bgnbd(3000, 0.5, 2.0, 0.9, 3.0, T=52.0, seed=2)], ignore_index=True)
    >>> channel = pd.Series(["Email"] * 3000 + ["Paid Search"] * 3000, index=rfm.index)
    >>> test = covariate_lrt(rfm, channel, reference="Email")
    >>> ratio = float(test.loc["Paid Search", "rate_ratio"])  # the truth is 6 / 2 = 3
    >>> bool(test.attrs["p_value"] < 1e-6), bool(2.5 < ratio < 3.5), test.attrs["df"]
    (True, True, 3)
    """
    from scipy.stats import norm

    from closedloop_nb.lifetime.bgnbd import BGNBD

    seg = _pooled(rfm, segments, min_customers)
    sizes = seg.value_counts()
    reference = reference if reference is not None else str(sizes.index[0])
    if reference not in sizes.index:
        raise KeyError(f"reference segment {reference!r} is not among {sorted(sizes.index)}")
    levels = [s for s in sorted(sizes.index) if s != reference]
    data = rfm[["frequency", "recency", "T"]].copy()
    for level in levels:
        data[level] = (seg == level).astype(float)
    pooled = BGNBD().fit(rfm)
    model = BGNBD(covariates=levels).fit(data)
    base = model.at({})
    mean_p = base.params_["a"] / (base.params_["a"] + base.params_["b"])
    rows = {reference: {"customers": int(sizes[reference]), "rate_ratio": 1.0, "dropout_ratio": 1.0}}
    for level in levels:
        prof = model.at({level: 1}).params_
        row = {"customers": int(sizes[level]),
               "rate_ratio": float(np.exp(model.params_[f"purchase:{level}"])),
               "dropout_ratio": prof["a"] / (prof["a"] + prof["b"]) / mean_p}
        for kind in ("purchase", "dropout_a", "dropout_b"):
            name = f"{kind}:{level}"
            est, se = model.params_[name], model.standard_errors_[name]
            row[kind] = est
            row[f"{kind}_se"] = se
            row[f"{kind}_p"] = float(2 * norm.sf(abs(est / se))) if se > 0 else np.nan
        rows[level] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = _label(segments, rfm)
    statistic = max(2 * (model.log_likelihood_ - pooled.log_likelihood_), 0.0)
    df = 3 * len(levels)
    out.attrs.update(statistic=float(statistic), df=int(df), p_value=float(stats.chi2.sf(statistic, df)),
                     reference=reference, model=model, identified=model.identified_)
    return out


def _label(segments: pd.Series, rfm: pd.DataFrame) -> str:
    """The segments' name for the table's index ("segment" when they only carry the customer id's)."""
    name = segments.name
    return str(name) if name is not None and name != rfm.index.name else "segment"


def _pooled(rfm: pd.DataFrame, segments: pd.Series, min_customers: int) -> pd.Series:
    """Each row's segment as text, segments under ``min_customers`` pooled into ``(other)``."""
    seg = segments.reindex(rfm.index).astype(object).fillna("(unknown)").astype(str)
    sizes = seg.value_counts()
    seg = seg.where(seg.map(sizes) >= min_customers, "(other)")
    if seg.nunique() < 2:
        raise ValueError(f"fewer than two segments with at least {min_customers} customers: "
                         "nothing to compare")
    return seg
