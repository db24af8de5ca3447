"""The metrics' way into the engine: one DuckDB connection over the tables, shared journey builds.

Every metric that needs touch-level data (credits, lead sources, first touches, visitors) runs SQL
here instead of pulling the touchpoints or the per-touch journey table into pandas; pandas sees
only per-deal, per-lead and per-channel results.

:func:`engine_of` accepts what the metric functions accept:

* a run workspace (``closedloop_nb.workspace``; detected by its ``con`` and ``journeys``): its
  connection and its cached journey builds are used as they are;
* a plain ``{table: DataFrame}`` dict (e.g. ``load_dataset(...).tables``): the frames are
  registered, without copying, in an in-memory DuckDB connection, and journeys are built once per
  argument set for the life of the :class:`Engine` (so several models share one build);
* an :class:`Engine` (returned unchanged: callers pass it on to share its builds).

Journey touches are read where the journey build keeps them: the build's table (``journeys.table``)
in the build's connection, DuckDB's or a Spark workspace's (:class:`closedloop_nb.spark_sql.SparkConnection`,
which translates the SQL to Spark's dialect); only a build that keeps them nowhere queryable (a plain
``build_journeys(..., engine="spark")``) is read once into pandas and registered, so the same SQL
runs on it.

Examples
--------
>>> import pandas as pd
>>> eng = engine_of({"leads": pd.DataFrame({"person_id": ["p1", "p2"]})})
>>> eng.frame("SELECT count(*) AS n FROM leads")["n"].tolist()
[2]
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Engine", "JourneyTouches", "engine_of", "is_workspace", "journey_touches"]


def is_workspace(tables: Any) -> bool:
    """True for a run workspace (or an :class:`Engine`): it has a DuckDB ``con`` and ``journeys``."""
    return hasattr(tables, "con") and hasattr(tables, "journeys")


def _fetch(con: Any, sql: str, params: list | None = None) -> pd.DataFrame:
    """A query's result as pandas, through Arrow (exact types)."""
    return _arrow(con, sql, params).to_pandas()


def _arrow(con: Any, sql: str, params: list | None = None) -> Any:
    """A query's result as an Arrow table (a relation: no extra copy of the rows)."""
    relation = con.sql(sql, params=params) if params else con.sql(sql)
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


class Engine(Mapping):
    """The tables of a metric call: a DuckDB connection where each is a relation named as in
    :mod:`closedloop_nb.schema`, the tables as pandas on demand (``eng["deals"]``), and journeys
    built once per argument set.

    Parameters
    ----------
    tables
        A run workspace or a dict of validated canonical tables.
    """

    def __init__(self, tables: Mapping[str, Any]) -> None:
        self.tables = tables
        self._workspace = is_workspace(tables)
        if self._workspace:
            self.con = tables.con
        else:
            import duckdb

            self.con = duckdb.connect()
            self.con.execute("SET TimeZone = 'UTC'")
            for name, frame in tables.items():
                if isinstance(frame, pd.DataFrame) and name.isidentifier():
                    self.con.register(name, frame)
        self._journeys: dict[tuple, Any] = {}

    # the Mapping of the tables, so an Engine goes wherever the tables dict goes
    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)

    def __contains__(self, name: object) -> bool:
        return name in self.tables

    def journeys(self, conversion: str = "lead", lookback_days: int = 90, level: str = "channel",
                 **options: Any) -> Any:
        """The :class:`~closedloop_nb.journeys.Journeys` for these arguments, built once."""
        options.pop("progress", None)
        key = (conversion, lookback_days, level, tuple(sorted(options.items(), key=lambda kv: kv[0])))
        if key not in self._journeys:
            if self._workspace:
                self._journeys[key] = self.tables.journeys(conversion=conversion, lookback_days=lookback_days,
                                                           level=level, **options)
            else:
                from closedloop_nb.journeys import build_journeys

                self._journeys[key] = build_journeys(dict(self.tables), conversion=conversion,
                                                     lookback_days=lookback_days, level=level,
                                                     progress=False, **options)
        return self._journeys[key]

    def frame(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run ``sql`` on the tables' connection; the result as pandas."""
        return _fetch(self.con, sql, params)

    def columns(self, name: str) -> list[str]:
        """Columns of table ``name`` as the engine sees it."""
        return [r[0] for r in self.con.execute(f"DESCRIBE {name}").fetchall()]


def engine_of(tables: Any) -> Engine:
    """An :class:`Engine` over ``tables`` (a workspace, a dict of DataFrames, or an Engine)."""
    return tables if isinstance(tables, Engine) else Engine(tables)


class JourneyTouches:
    """A journey build's touches as a SQL relation: ``name`` in connection ``con`` (or a DuckDB
    ``relation`` queried under ``name``), with the columns of
    :func:`closedloop_nb.journey_sql.journey_touches_sql` (``journey_id``, ``person_id``,
    ``touch_id``, ``ts``, ``step``, ``converted``, ``conversion_at``, ``value``...)."""

    def __init__(self, con: Any, name: str, tables: Mapping[str, Any] | None = None,
                 relation: Any = None) -> None:
        self.con, self.name, self._tables, self.relation = con, name, tables, relation

    def arrow(self, sql: str) -> Any:
        """Run ``sql`` (``{t}`` stands for the touches relation); the result as an Arrow table."""
        sql = sql.replace("{t}", self.name)
        if self.relation is not None:
            rel = self.relation.query(self.name, sql)
            fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
            return fetch()
        return _arrow(self.con, sql)

    def frame(self, sql: str) -> pd.DataFrame:
        """Run ``sql`` (``{t}`` stands for the touches relation); the result as pandas."""
        return self.arrow(sql).to_pandas()

    def within(self, lookback_days: int) -> JourneyTouches:
        """The touches of the journeys a build with a shorter lookback makes: converting journeys
        keep their touches of the last ``lookback_days`` before the conversion, the others all of
        theirs (exact for builds without ``collapse_repeats`` or ``max_touches``, which act on
        the kept touches)."""
        cond = f"converted = 0 OR ts >= conversion_at - INTERVAL {int(lookback_days)} DAY"
        if self.relation is not None:
            return JourneyTouches(None, self.name, self._tables, relation=self.relation.filter(cond))
        return JourneyTouches(self.con, f"(SELECT * FROM {self.name} WHERE {cond})", self._tables)

    def paths(self, sep: str = " > ", where: str = "TRUE") -> pd.DataFrame:
        """ChannelAttribution's path table of these touches (those of journeys matching ``where``),
        as a build's ``paths``: sorted by path."""
        sep = sep.replace("'", "''")
        out = self.frame(f"""
WITH j AS (
  SELECT journey_id, string_agg(step, '{sep}' ORDER BY ts, touch_id) AS path, MAX(converted) AS converted,
         MAX(value) AS value
  FROM {{t}} WHERE {where} GROUP BY journey_id)
SELECT path, CAST(SUM(converted) AS BIGINT) AS total_conversions,
       CAST(SUM(CASE WHEN converted = 1 THEN value ELSE 0 END) AS DOUBLE) AS total_conversion_value,
       CAST(SUM(1 - converted) AS BIGINT) AS total_null
FROM j GROUP BY path""")
        return out.sort_values("path", kind="stable").reset_index(drop=True)

    def need(self, table: str) -> str:
        """Name of canonical ``table`` beside the touches (registered from the tables if absent)."""
        try:
            self.arrow(f"SELECT 1 FROM {table} LIMIT 0")
        except Exception:  # noqa: BLE001  (absent from the build's connection: register the frame)
            if self.con is None or self._tables is None or table not in self._tables:
                raise
            self.con.register(table, self._tables[table])
        return table


#: per Journeys object (by id, with a weak reference to tell a live one from a reused id)
_TOUCHES: dict[int, tuple[weakref.ref, JourneyTouches]] = {}
_PATHS: dict[int, tuple[weakref.ref, Any]] = {}
_TABLES: dict[int, tuple[weakref.ref, Any]] = {}


def clear_caches() -> None:
    """Forget the touches, path tables and tables kept per journey build. A kept value refers to the
    tables it was made with (a workspace, whose own cache holds the build), so an entry outlives
    its build's last user; a report kernel calls this between notebooks, which lets the previous
    notebook's workspaces (their DuckDB connections and buffers) be collected."""
    for store in (_TOUCHES, _PATHS, _TABLES):
        store.clear()


def _cached(store: dict, journeys: Any, make: Any) -> Any:
    for k in [k for k, (ref, _) in store.items() if ref() is None]:
        del store[k]
    hit = store.get(id(journeys))
    if hit is not None and hit[0]() is journeys:
        return hit[1]
    value = make()
    try:
        store[id(journeys)] = (weakref.ref(journeys), value)
    except TypeError:  # not weak-referenceable: no cache
        pass
    return value


def journey_touches(journeys: Any, tables: Mapping[str, Any] | None = None) -> JourneyTouches:
    """Where ``journeys`` (a :class:`~closedloop_nb.journeys.Journeys`) keeps its touches, as SQL.

    The DuckDB build's own table when there is one (no copy); otherwise (Spark) its touches fetched
    once and registered in an in-memory DuckDB connection. ``tables`` supplies canonical tables the
    queries join to (``leads``) when the build's connection lacks them.
    """
    def make() -> JourneyTouches:
        relation = getattr(journeys, "touches_relation", None)
        if callable(relation):  # a build that hands out its touches as a DuckDB relation
            return JourneyTouches(None, "journey_touches", tables, relation=relation())
        eng = getattr(journeys, "_engine", None)
        con = getattr(eng, "con", None)
        if con is not None:
            # the build's own table: "journey_touches" for a fresh build, a view over the Parquet
            # files for journeys a workspace read back from its cache
            for name in dict.fromkeys((getattr(journeys, "table", None), "journey_touches")):
                if not isinstance(name, str):
                    continue
                try:
                    con.execute(f"SELECT 1 FROM {name} LIMIT 0")
                    return JourneyTouches(con, name, tables)
                except Exception:  # noqa: BLE001  (not there: try the next, then the pandas copy)
                    pass
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("journey_touches", journeys.touches)
        return JourneyTouches(con, "journey_touches", tables)

    return _cached(_TOUCHES, journeys, make)


@dataclass
class ConvertingPaths:
    """The converting journeys of a build grouped by path (their steps in time order).

    Attributes
    ----------
    journey_id, path_of
        Each converting journey and the number of its path (0, 1, ...).
    n
        Journeys on each path.
    lengths, steps
        Touches on each path, and their steps (all paths' steps end to end, in order).
    """

    journey_id: np.ndarray
    path_of: np.ndarray
    n: np.ndarray
    lengths: np.ndarray
    steps: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)


def converting_paths(journeys: Any, touches: JourneyTouches) -> ConvertingPaths:
    """The converting journeys of ``journeys`` grouped by path, computed in the engine (cached per
    build: every path-table model reads the same grouping)."""
    def make() -> ConvertingPaths:
        import pyarrow as pa
        import pyarrow.compute as pc

        table: pa.Table = touches.arrow("""
WITH j AS (
  SELECT journey_id, list(step ORDER BY ts, touch_id) AS steps
  FROM {t} WHERE converted = 1 GROUP BY journey_id),
p AS (
  SELECT steps, count(*) AS n, row_number() OVER (ORDER BY min(journey_id)) - 1 AS path_no
  FROM j GROUP BY steps)
SELECT j.journey_id, p.path_no, p.n, p.steps FROM j JOIN p ON j.steps = p.steps""")
        path_of = table.column("path_no").to_numpy().astype(np.int64)
        _, first = np.unique(path_of, return_index=True)  # sorted by path number
        paths = table.take(pa.array(first, type=pa.int64()))
        steps = paths.column("steps").combine_chunks()
        return ConvertingPaths(
            journey_id=table.column("journey_id").to_numpy(zero_copy_only=False).astype(object),
            path_of=path_of, n=paths.column("n").to_numpy().astype(float),
            lengths=pc.list_value_length(steps).to_numpy(zero_copy_only=False).astype(np.int64),
            steps=pc.list_flatten(steps).to_numpy(zero_copy_only=False).astype(object))

    return _cached(_PATHS, journeys, make)


def path_table(journeys: Any) -> Any:
    """``journeys.path_table()``, parsed once per build (every model of a comparison fits on it)."""
    return _cached(_TABLES, journeys, journeys.path_table)
