"""Journeys under a narrower setting, derived from one wide build instead of built again.

A journey build (:func:`~closedloop_nb.journeys.build_journeys`) stitches every touch to its person
and cuts journeys: at 10M touchpoints that is tens of CPU seconds. The explorer's controls (lookback,
drop direct, collapse repeats, level, segment, date range) only ever *narrow* a build, so each
conversion is built once at the widest setting (:func:`wide_journeys`: the longest lookback, direct
kept, repeats kept, every level's step on each touch) and a setting is derived from it in SQL
(:meth:`WideJourneys.derive`), in the same order the build applies its options:

* lookback: a converting journey keeps its touches with ``ts >= conversion_at - lookback`` (the
  build's own bound, inclusive); non-converting journeys keep all of theirs;
* drop direct: touches whose ``channel`` is ``Direct`` are left out (a journey left empty goes);
* collapse repeats: a touch whose step equals the step of the journey's previous *kept* touch goes
  (the window runs after the filters above, as in the build);
* level: which precomputed step column names the step;
* people (segment, date range): only the touches of the kept people and of anonymous visitors
  (those inside the date range) stay, as :func:`closedloop_nb.explorer` narrows the tables.

The result is a :class:`~closedloop_nb.journeys.Journeys` whose touches are a view in the wide
build's connection: its path table and reconciliation are what a fresh build with those settings
gives (the tests compare the two on the sample and on hand-made journeys).

Examples
--------
>>> from closedloop_nb.synth import generate
>>> from closedloop_nb.validation import validate_tables
>>> from closedloop_nb.journeys import build_journeys
>>> tables = validate_tables(generate(1_500, seed=3).frames()).tables
>>> wide = wide_journeys(tables, "lead", lookback_days=365)
>>> got = wide.derive(lookback_days=30, drop_direct=True).paths
>>> want = build_journeys(tables, lookback_days=30, drop_direct=True, progress=False).paths
>>> bool((got["path"] == want["path"]).all() and (got["total_null"] == want["total_null"]).all())
True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from closedloop_nb import journey_sql as q
from closedloop_nb.journeys import Journeys, _DuckDB, build_journeys

__all__ = ["LEVEL_STEPS", "WideJourneys", "wide_journeys"]

#: The step a touch takes at each level, as the build names it (``replace(..., '>', '›')``: a step
#: never holds the path separator; ``source_medium`` is ``source / medium`` as GA4 shows it).
LEVEL_STEPS = {
    "channel": "tp.channel",
    "campaign": "tp.campaign",
    "source_medium": "coalesce(CAST(tp.source AS VARCHAR), '(not set)') || ' / ' || "
                     "coalesce(CAST(tp.medium AS VARCHAR), '(not set)')",
    "keyword": "tp.keyword",
}
_NEEDS = {"channel": ("channel",), "campaign": ("campaign",), "source_medium": ("source", "medium"),
          "keyword": ("keyword",)}
_COLUMNS = "journey_id, person_id, visitor_id, touch_id, ts, step, channel, converted, conversion_at, value"
_names = itertools.count()


def _step(expr: str) -> str:
    return f"replace(COALESCE(CAST({expr} AS VARCHAR), '(not set)'), '>', '›')"


@dataclass
class WideJourneys:
    """One conversion's journeys at the widest setting, every level's step on each touch.

    Attributes
    ----------
    base
        The wide build itself (a :class:`~closedloop_nb.journeys.Journeys`, level ``channel``).
    con
        The DuckDB connection holding ``name``, the wide touches (the build's columns, ``step`` the
        channel's, plus ``step_<level>`` for every level the touchpoints have).
    lookback_days
        The lookback of the wide build: the longest a derived setting can have.
    """

    base: Journeys
    con: Any
    name: str
    lookback_days: int
    levels: tuple[str, ...]
    _nulls: dict[tuple, tuple[pd.DataFrame, int]] = field(default_factory=dict)
    _derived: list[str] = field(default_factory=list)

    def derive(self, lookback_days: int = 90, level: str = "channel", drop_direct: bool = False,
               collapse_repeats: bool = False, direct: str = "Direct") -> Journeys:
        """The journeys a build with these settings gives (its ``paths``, ``reconciliation`` and
        touches), from the wide build: a few SQL filters and one window instead of a build.

        Raises
        ------
        ValueError
            A lookback longer than the wide build's, or a level the touchpoints do not have.
        """
        if int(lookback_days) > self.lookback_days:
            raise ValueError(f"lookback {lookback_days} d is longer than the wide build's "
                             f"{self.lookback_days} d")
        if level not in self.levels:
            from closedloop_nb.errors import DataValidationError, Problem

            raise DataValidationError([Problem("touchpoints", "<touchpoints>", _NEEDS.get(level, (level,))[0],
                                               "missing column; journeys need it", "error")])
        sql = self._sql(int(lookback_days), level, drop_direct, collapse_repeats, direct)
        n = next(_names)
        conv, view = f"_cl_derived_{n}_conv", f"_cl_derived_{n}"
        # the converting touches are materialised (every metric reads them); the others stay a view
        self.con.execute(f"CREATE TEMP TABLE {conv} AS SELECT * FROM ({sql('converted = 1')})")
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {conv} UNION ALL "
                         f"SELECT * FROM ({sql('converted = 0')})")
        self._derived.append(conv)
        eng = _DuckDB(con=self.con)
        null_key = (level, drop_direct, collapse_repeats, direct)
        if null_key not in self._nulls:  # non-converting journeys do not depend on the lookback
            src = f"({sql('converted = 0')})"
            self._nulls[null_key] = (eng.frame(q.paths_sql("duckdb", touches=src)),
                                     int(self.con.execute(f"SELECT COUNT(*) FROM {src}").fetchall()[0][0]))
        null_paths, null_touches = self._nulls[null_key]
        from closedloop_nb.metrics._engine import add_paths

        conv_paths = eng.frame(q.paths_sql("duckdb", touches=conv))
        paths = add_paths(conv_paths, null_paths) if len(null_paths) else conv_paths.sort_values(
            "path", kind="stable").reset_index(drop=True)
        paths = paths.astype({"total_conversion_value": "float64"})
        recon = _reconciliation(self.base.reconciliation, self.con, conv, null_touches)
        return Journeys(paths, recon, eng, _table=view, conversion=self.base.conversion, unit=self.base.unit)

    def _sql(self, lookback: int, level: str, drop_direct: bool, collapse: bool, direct: str):
        keep = [f"(converted = 0 OR ts >= conversion_at - INTERVAL {lookback} DAY)"]
        if drop_direct:
            keep.append("(channel IS NULL OR channel <> '" + direct.replace("'", "''") + "')")
        steps = f"journey_id, person_id, visitor_id, touch_id, ts, step_{level} AS step, channel, converted, " \
                "conversion_at, value"

        def sql(part: str) -> str:
            filtered = f"SELECT {steps} FROM {self.name} WHERE {part} AND {' AND '.join(keep)}"
            if not collapse:
                return filtered
            return (f"SELECT {_COLUMNS} FROM (SELECT *, LAG(step) OVER (PARTITION BY journey_id ORDER BY ts, "
                    f"touch_id) AS prev_step FROM ({filtered})) WHERE prev_step IS NULL OR prev_step <> step")
        return sql

    def close(self) -> None:
        """Drop the derived tables (the wide build stays)."""
        for name in self._derived:
            self.con.execute(f"DROP TABLE IF EXISTS {name}")
        self._derived.clear()


def _reconciliation(base: pd.DataFrame, con: Any, conv: str, null_touches: int) -> pd.DataFrame:
    """The build's reconciliation for derived journeys: what does not depend on the options (the
    conversions and touches in, conversions whose person has no touches at all, identities) is the
    wide build's; the rest is counted on the derived touches."""
    n_journeys, value, n_touches = con.execute(
        f"SELECT COUNT(*), SUM(v), SUM(k) FROM (SELECT journey_id, MAX(value) AS v, COUNT(*) AS k "
        f"FROM {conv} GROUP BY journey_id)").fetchall()[0]
    n_journeys, n_touches, value = int(n_journeys), int(n_touches or 0), float(value or 0.0)
    out = base.copy()

    def at(item: str, bucket: str) -> Any:
        return (out["item"] == item) & (out["bucket"] == bucket)

    def get(item: str, bucket: str, col: str) -> float:
        return float(out.loc[at(item, bucket), col].iloc[0])

    conv_in, value_in = get("conversions", "in", "n"), get("conversions", "in", "value")
    offline = "unattributed: no touches at all (offline or unmatched)"
    none_n, none_value = get("conversions", offline, "n"), get("conversions", offline, "value")
    touches_in = get("touches", "in", "n")
    rows = {("conversions", "with a journey"): (n_journeys, value),
            ("conversions", "unattributed: no touches in the lookback window"): (
                conv_in - n_journeys - none_n, value_in - value - none_value),
            ("touches", "in converting journeys"): (n_touches, None),
            ("touches", "in non-converting journeys"): (null_touches, None)}
    left = touches_in - n_touches - null_touches
    rows[("touches", "not in any journey (before the lookback, after the last conversion, or dropped by "
          "the options)")] = (left, None)
    n_dtype = out["n"].dtype
    for (item, bucket), (n, v) in rows.items():
        mask = at(item, bucket)
        out.loc[mask, "n"] = n
        if v is not None:
            out.loc[mask, "value"] = v
    out["n"] = out["n"].astype(n_dtype)
    return out


def wide_journeys(source: Any, conversion: str, lookback_days: int = 365, memory_limit: str = "1GB",
                  folder: str | Path | None = None) -> WideJourneys:
    """``conversion``'s journeys at the widest setting (``lookback_days``, direct and repeats kept),
    with every level's step on each touch, ready for :meth:`WideJourneys.derive`.

    ``source`` is a dict of validated tables (built in DuckDB kept to ``memory_limit``) or a run
    workspace (its cached build, read back; the wide touches are written as Parquet to ``folder``,
    a temporary folder the caller keeps, so the workspace's database is never written to).
    """
    workspace = hasattr(source, "con") and hasattr(source, "journeys")
    if workspace:
        base = source.journeys(conversion=conversion, lookback_days=lookback_days, level="channel")
        con = source.con
    else:
        base = build_journeys(source, conversion=conversion, lookback_days=lookback_days, level="channel",
                              progress=False, memory_limit=memory_limit)
        con = base._engine.con
    have = {r[0] for r in con.execute("DESCRIBE touchpoints").fetchall()}
    levels = tuple(lv for lv, cols in _NEEDS.items() if all(c in have for c in cols))
    steps = "".join(f", {_step(LEVEL_STEPS[lv])} AS step_{lv}" for lv in levels)
    n = next(_names)
    name = f"_cl_wide_{n}"
    select = (f"SELECT j.*{steps} FROM {base.table} j JOIN touchpoints tp ON j.touch_id = tp.touch_id")
    if workspace:
        if folder is None:
            raise ValueError("a workspace's wide journeys need a folder for their Parquet file")
        path = str(Path(folder) / f"{name}.parquet").replace("'", "''")
        con.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    else:
        con.execute(f"CREATE TEMP TABLE {name} AS {select}")
    got = con.execute(f"SELECT COUNT(*) FROM {name}").fetchall()[0][0]
    want = con.execute(f"SELECT COUNT(*) FROM {base.table}").fetchall()[0][0]
    if got != want:
        raise ValueError(f"touch_id is not unique in the touchpoints ({got:,} joined rows for {want:,} "
                         "journey touches): validate the tables first")
    return WideJourneys(base, con, name, int(lookback_days), levels)
