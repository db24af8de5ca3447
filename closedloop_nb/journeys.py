"""Journeys and path tables from the canonical tables.

This module holds the plain-pandas *reference* implementation: small, readable, obviously correct,
used to check the scalable engines against (issue 3 adds DuckDB by default and Spark, with
reconciliation tables, collapse/cap options and progress). It builds journeys that end at lead
creation:

* a visitor's touches count for the person the visitor was matched to (``identities``), including
  touches before the match and on other devices of the same person; a visitor matched to several
  people counts for the earliest match;
* a converting journey is the person's touches in the ``lookback_days`` before (and at) the lead's
  creation time;
* a non-converting journey is all the touches of a visitor never matched to anyone.

Examples
--------
>>> from closedloop_nb.synth import generate
>>> from closedloop_nb.validation import validate_tables
>>> ds = validate_tables(generate(2_000, seed=1).frames())
>>> paths = lead_paths_reference(ds.tables)
>>> list(paths.columns)
['path', 'total_conversions', 'total_conversion_value', 'total_null']
"""

from __future__ import annotations

import pandas as pd

__all__ = ["lead_paths_reference"]


def lead_paths_reference(tables: dict[str, pd.DataFrame], lookback_days: float = 90,
                         level: str = "channel", sep: str = " > ") -> pd.DataFrame:
    """Path table (ChannelAttribution's format) of journeys ending at lead creation.

    Parameters
    ----------
    tables
        Validated canonical tables with at least ``touchpoints``, ``identities`` and ``leads``.
    lookback_days
        Touches older than this before the conversion are left out of its journey.
    level
        The touch attribute that names a step (``channel``, ``campaign``, ``source``, ...).
    sep
        Separator between steps.

    Returns
    -------
    pandas.DataFrame
        ``path``, ``total_conversions``, ``total_conversion_value`` (0: leads carry no value),
        ``total_null``.
    """
    touches = tables["touchpoints"][["visitor_id", "timestamp", level]]
    ident = tables["identities"].sort_values("matched_at", kind="stable")
    person_of = ident.drop_duplicates("visitor_id").set_index("visitor_id")["person_id"]
    touches = touches.assign(person_id=touches["visitor_id"].map(person_of))
    leads = tables["leads"].set_index("person_id")["created_at"]
    matched = touches[touches["person_id"].notna()]
    matched = matched.assign(converted_at=matched["person_id"].map(leads))
    window = pd.Timedelta(days=lookback_days)
    inside = (matched["timestamp"] <= matched["converted_at"]) & (
        matched["timestamp"] >= matched["converted_at"] - window)
    conv = _paths(matched[inside], "person_id", level, sep).rename("total_conversions")
    unmatched = touches[touches["person_id"].isna()]
    null = _paths(unmatched, "visitor_id", level, sep).rename("total_null")
    out = pd.concat([conv, null], axis=1).fillna(0).astype(int)
    out.index.name = "path"
    out = out.reset_index()
    out.insert(2, "total_conversion_value", 0.0)
    return out.sort_values("path", kind="stable").reset_index(drop=True)


def _paths(touches: pd.DataFrame, key: str, level: str, sep: str) -> pd.Series:
    ordered = touches.sort_values([key, "timestamp"], kind="stable")
    joined = ordered.groupby(key, sort=False)[level].agg(sep.join)
    return joined.value_counts()
