"""Per-journey figures of a journey build, computed in the engine (no per-touch table in pandas).

Examples
--------
>>> from closedloop_nb.journeys import build_journeys
>>> from closedloop_nb.synth import generate
>>> from closedloop_nb.validation import validate_tables
>>> tables = validate_tables(generate(2_000, seed=1).frames()).tables
>>> per_journey = journey_summary(build_journeys(tables, progress=False))
>>> list(per_journey.columns)
['touches', 'first', 'converted_at', 'days_to_convert']
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from closedloop_nb.metrics._engine import journey_touches

__all__ = ["journey_summary"]


def journey_summary(journeys: Any) -> pd.DataFrame:
    """Each converting journey's touches, first touch, conversion time and whole days to convert.

    Parameters
    ----------
    journeys
        A :class:`~closedloop_nb.journeys.Journeys` (from ``build_journeys`` or a workspace).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``journey_id`` (sorted): ``touches``, ``first`` (earliest touch), ``converted_at``,
        ``days_to_convert`` (whole days from the first touch to the conversion, rounded down).
    """
    out = journey_touches(journeys).frame("""
SELECT journey_id, COUNT(*) AS touches, MIN(ts) AS first, MIN(conversion_at) AS converted_at,
       CAST(floor(date_diff('microsecond', MIN(ts), MIN(conversion_at)) / 86400000000.0) AS BIGINT)
         AS days_to_convert
FROM {t} WHERE converted = 1 GROUP BY journey_id ORDER BY journey_id""")
    return out.set_index("journey_id")
