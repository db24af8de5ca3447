"""Does the acquisition channel matter? One model per segment against one model for all.

Fitting a model separately in each segment (channel, campaign) nests the pooled fit: the pooled
model is the special case where every segment has the same parameters. Twice the gain in
log-likelihood is then chi-square with (segments - 1) x (parameters) degrees of freedom under
"the channel does not matter" (Wilks' theorem), which :func:`segment_lrt` reports with each
segment's parameters, so a small p-value comes with the parameters that differ.

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

import pandas as pd
from scipy import stats

__all__ = ["segment_lrt"]


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
    seg = segments.reindex(rfm.index).astype(object).fillna("(unknown)").astype(str)
    sizes = seg.value_counts()
    seg = seg.where(seg.map(sizes) >= min_customers, "(other)")
    if seg.nunique() < 2:
        raise ValueError(f"fewer than two segments with at least {min_customers} customers: "
                         "nothing to compare")
    rows = {}
    pooled = model_class().fit(rfm)
    total = 0.0
    for name, part in rfm.groupby(seg, sort=True):
        m = model_class().fit(part)
        total += m.log_likelihood_
        rows[name] = {"customers": len(part), "log_likelihood": m.log_likelihood_, **m.params_}
    rows["All"] = {"customers": len(rfm), "log_likelihood": pooled.log_likelihood_, **pooled.params_}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = segments.name or "segment"
    statistic = max(2 * (total - pooled.log_likelihood_), 0.0)
    df = (seg.nunique() - 1) * len(pooled.params_)
    out.attrs.update(statistic=float(statistic), df=int(df), p_value=float(stats.chi2.sf(statistic, df)))
    return out
