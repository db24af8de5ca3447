"""Membership of ids (deal, person) hashed in Arrow.

pandas 3's ``Series.isin`` on Arrow-backed strings makes a pyarrow scalar of every value it looks
for, in Python: about 1 s per 150k ids, which at 10M touchpoints was most of
:func:`~closedloop_nb.metrics.revenue.revenue_by_model` (three such calls per model). Arrow's own
``is_in`` does the same in milliseconds.

Examples
--------
>>> import pandas as pd
>>> isin(pd.Series(["d1", "d2", None]), pd.Series(["d2", "d3"])).tolist()
[False, True, False]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["isin"]


def isin(values: pd.Series | pd.Index, among: Any) -> np.ndarray:
    """``values.isin(among)`` as a boolean array (the same answer, missing matching missing), hashed
    in Arrow; ids Arrow cannot compare with each other (mixed types) are left to pandas."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(among, (pd.Series, pd.Index, np.ndarray)):
        among = pd.Series(list(among), dtype=object)
    try:
        a, b = pa.array(values, from_pandas=True), pa.array(among, from_pandas=True)
        if len(a) == 0 or len(b) == 0:
            return np.zeros(len(a), dtype=bool)
        if b.type != a.type:  # strings of another width, or no values at all: cast; else pandas
            if not (_text(a.type) and (_text(b.type) or pa.types.is_null(b.type))):
                return pd.Series(values).isin(among).to_numpy(bool)
            b = b.cast(a.type)
        return pc.is_in(a, value_set=b).to_numpy(zero_copy_only=False).astype(bool)
    except (pa.ArrowException, TypeError, ValueError):
        return pd.Series(values).isin(among).to_numpy(bool)


def _text(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
