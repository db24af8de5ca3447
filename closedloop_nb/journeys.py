"""Journeys and path tables from the canonical tables.

:func:`build_journeys` stitches every visitor's touches to the person they became and cuts them into
journeys ending at a chosen conversion, on DuckDB (embedded, out-of-core, the default) or Spark (when
data outgrow one machine): the same SQL runs on both (:mod:`closedloop_nb.journey_sql`).

:func:`lead_paths_reference` is the plain-pandas *reference*: small, readable, obviously correct,
used to check the engines against. It builds journeys that end at lead creation:

* a visitor's touches count for the person the visitor was matched to (``identities``), including
  touches before the match and on other devices of the same person; a visitor matched to several
  people counts for the earliest match (ties: the smallest person_id);
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

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from closedloop_nb import journey_sql as q

__all__ = ["Journeys", "build_journeys", "lead_paths_reference", "stitching_summary"]

_TABLES = ("touchpoints", "identities", "leads", "deals", "stage_history", "orders")


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
    ident = tables["identities"].sort_values(["matched_at", "person_id"], kind="stable")
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


def stitching_summary(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """How far anonymous visitors were tied to the CRM: visitors matched, leads and deals with (and
    without) web touches, visitors matched to several people.

    Returns
    -------
    pandas.DataFrame
        ``item``, ``n``, ``of``, ``share`` (``n`` over ``of``), one row per measure.

    Examples
    --------
    >>> t = {"touchpoints": pd.DataFrame({"visitor_id": ["v1", "v1", "v2"]}),
    ...      "identities": pd.DataFrame({"visitor_id": ["v1"], "person_id": ["p1"]}),
    ...      "leads": pd.DataFrame({"person_id": ["p1", "p2"]}),
    ...      "deals": pd.DataFrame({"deal_id": ["d1"], "person_id": ["p2"]})}
    >>> stitching_summary(t).set_index("item")["n"].to_dict()["leads without web touches"]
    1
    """
    visitors = pd.Index(tables["touchpoints"]["visitor_id"].dropna().unique())
    ident = tables.get("identities", pd.DataFrame({"visitor_id": [], "person_id": []}))
    matched = ident[ident["visitor_id"].isin(visitors)]
    people_with_touches = set(matched["person_id"])
    leads = tables["leads"]["person_id"]
    deals = tables.get("deals", pd.DataFrame({"deal_id": [], "person_id": []}))
    several = matched.groupby("visitor_id")["person_id"].nunique().gt(1).sum()
    with_touches = leads.isin(people_with_touches)
    rows = [("visitors", len(visitors), len(visitors)),
            ("visitors matched to a person", matched["visitor_id"].nunique(), len(visitors)),
            ("visitors matched to several people (earliest match used)", int(several), len(visitors)),
            ("leads", len(leads), len(leads)),
            ("leads with web touches", int(with_touches.sum()), len(leads)),
            ("leads without web touches", int((~with_touches).sum()), len(leads)),
            ("deals", len(deals), len(deals)),
            ("deals whose person has web touches", int(deals["person_id"].isin(people_with_touches).sum()),
             len(deals))]
    out = pd.DataFrame(rows, columns=["item", "n", "of"])
    out["share"] = out["n"] / out["of"].where(out["of"] > 0)
    return out


def _paths(touches: pd.DataFrame, key: str, level: str, sep: str) -> pd.Series:
    ordered = touches.sort_values([key, "timestamp"], kind="stable")
    joined = ordered.groupby(key, sort=False)[level].agg(sep.join)
    return joined.value_counts()


@dataclass
class Journeys:
    """What :func:`build_journeys` returns.

    Attributes
    ----------
    paths
        ChannelAttribution's path table (``path``, ``total_conversions``,
        ``total_conversion_value``, ``total_null``), sorted by path.
    reconciliation
        Conversions, value and touches in, in journeys, and where the rest went.
    touches
        One row per touch of every journey: ``journey_id``, ``person_id``, ``visitor_id``,
        ``touch_id``, ``ts``, ``step``, ``channel``, ``converted``, ``conversion_at``, ``value``,
        then every other touch attribute (source, medium, campaign, keyword, landing page, ...).
        Fetched from the engine on first use (it is as large as the touchpoints).
    """

    paths: pd.DataFrame
    reconciliation: pd.DataFrame
    _engine: Any = None
    _touches: pd.DataFrame | None = None

    @property
    def touches(self) -> pd.DataFrame:
        if self._touches is None:
            have = set(self._engine.columns("journey_touches"))
            extra = [c for c in self._engine.columns("touchpoints") if c not in have | {"timestamp"}]
            cols = "".join(f", tp.{c}" for c in extra)
            self._touches = self._engine.frame(
                f"SELECT j.*{cols} FROM journey_touches j LEFT JOIN touchpoints tp "
                "ON j.touch_id = tp.touch_id ORDER BY j.journey_id, j.ts, j.touch_id")
        return self._touches

    def touch_table(self) -> pd.DataFrame:
        """The converting journeys' touches in the format the touch-level models fit on
        (:class:`~closedloop_nb.attribution.TimeDecay`, ``WShaped``, ``FullPath``): ``journey_id``,
        ``channel`` (the step: channel, campaign... as built), ``timestamp``, ``conversion_at``,
        ``conversions`` (1), ``value``, ``touch_id``, ``person_id``."""
        t = self.touches
        t = t[t["converted"] == 1]
        return pd.DataFrame({"journey_id": t["journey_id"].to_numpy(), "channel": t["step"].to_numpy(),
                             "timestamp": t["ts"].to_numpy(), "conversion_at": t["conversion_at"].to_numpy(),
                             "conversions": 1.0, "value": t["value"].to_numpy(float),
                             "touch_id": t["touch_id"].to_numpy(), "person_id": t["person_id"].to_numpy()})

    def path_table(self):
        """The paths as a :class:`~closedloop_nb.attribution.PathTable` for the models."""
        from closedloop_nb.attribution import PathTable

        return PathTable.from_frame(self.paths)

    def __repr__(self) -> str:
        conv = int(self.paths["total_conversions"].sum())
        return (f"<Journeys {len(self.paths):,} distinct paths: {conv:,} converting journeys, "
                f"{int(self.paths['total_null'].sum()):,} not converting>")


class _DuckDB:
    def __init__(self, memory_limit: str = "2.5GB", progress: bool = True) -> None:
        import duckdb

        # a database file in a temporary folder (not the user's): intermediate tables live in DuckDB's
        # buffer manager, which keeps to memory_limit and spills beyond it
        self._spill = tempfile.TemporaryDirectory(prefix="closedloop-duckdb-")
        self.con = duckdb.connect(str(Path(self._spill.name) / "journeys.duckdb"))
        self.con.execute(f"SET enable_progress_bar = {str(progress).lower()}")
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute(f"SET temp_directory = '{self._spill.name}'")
        self.con.execute("SET preserve_insertion_order = false")  # every output is sorted explicitly

    def register(self, name: str, source: Any) -> None:
        if isinstance(source, pd.DataFrame):
            self.con.register(name, source)
        else:
            path = str(source).replace("'", "''")
            self.con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")

    def create(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE TABLE {name} AS {sql}")

    def columns(self, name: str) -> dict[str, str]:
        rows = self.con.execute(f"DESCRIBE {name}").fetchall()
        return {r[0]: str(r[1]).lower() for r in rows}

    def naive(self, type_name: str) -> bool:
        return type_name.startswith("timestamp") and "time zone" not in type_name

    def frame(self, sql: str) -> pd.DataFrame:
        relation = self.con.sql(sql)  # through Arrow: exact types, no pandas-side deprecations
        fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
        return fetch().to_pandas()


class _Spark:
    def __init__(self, spark: Any = None) -> None:
        if spark is None:
            from pyspark.sql import SparkSession

            spark = (SparkSession.builder.master("local[2]").appName("closedloop")
                     .config("spark.sql.session.timeZone", "UTC")
                     .config("spark.ui.enabled", "false")
                     .config("spark.sql.shuffle.partitions", "8")
                     .getOrCreate())
        self.spark = spark
        self._tmp = tempfile.TemporaryDirectory(prefix="closedloop-spark-")

    def register(self, name: str, source: Any) -> None:
        if isinstance(source, pd.DataFrame):  # through Parquet: exact types, no pandas conversion
            path = Path(self._tmp.name) / f"{name}.parquet"
            source.to_parquet(path, index=False)
            source = path
        self.spark.read.parquet(str(source)).createOrReplaceTempView(name)

    def create(self, name: str, sql: str) -> None:
        self.spark.sql(sql).cache().createOrReplaceTempView(name)

    def frame(self, sql: str) -> pd.DataFrame:
        return self.spark.sql(sql).toPandas()

    def columns(self, name: str) -> dict[str, str]:
        return {f.name: f.dataType.simpleString() for f in self.spark.table(name).schema.fields}

    def naive(self, type_name: str) -> bool:
        return type_name == "timestamp_ntz"


def build_journeys(
    source: str | Path | dict[str, Any],
    conversion: str = "lead",
    lookback_days: int = 90,
    level: str = "channel",
    engine: Literal["duckdb", "spark"] = "duckdb",
    restart_after_conversion: bool = True,
    drop_direct: bool = False,
    collapse_repeats: bool = False,
    max_touches: int | None = None,
    spark: Any = None,
    memory_limit: str = "2.5GB",
    progress: bool = True,
) -> Journeys:
    """Stitch touches to people and cut them into journeys ending at ``conversion``.

    Parameters
    ----------
    source
        A folder of canonical Parquet tables (as ``closedloop synth`` writes them; validate them
        first with ``closedloop validate``), or ``{table: DataFrame or Parquet path}`` (e.g. a
        validated :class:`~closedloop_nb.validation.Dataset`'s ``tables``).
    conversion
        What a journey ends at: one of :data:`closedloop_nb.journey_sql.CONVERSIONS`.
    lookback_days
        Touches older than this before a conversion are not part of its journey.
    level
        The touch attribute naming each step: ``channel``, ``campaign``, ``source``, ``keyword``...
        A touch with no value there is the step ``(not set)``, as in GA4 (never dropped).
    engine
        ``duckdb`` (embedded, default) or ``spark`` (local mode unless a session is given).
    restart_after_conversion
        A person's next journey starts after their previous conversion (no touch counted twice).
    drop_direct, collapse_repeats, max_touches
        Leave out direct touches; merge consecutive repeats of a step; keep at most this many
        touches (the first and the last ones).
    spark
        An existing SparkSession for ``engine="spark"``.
    memory_limit
        DuckDB's memory limit (e.g. ``"2GB"``); beyond it DuckDB spills to a temporary folder, so
        tables larger than memory still build.
    progress
        Show DuckDB's progress bar on long steps (Spark shows its own).

    Raises
    ------
    DataValidationError
        When a table the build needs is missing, lacks a column, or has timestamps without a time
        zone (naming the table, the column and what to do).

    Returns
    -------
    Journeys
    """
    if conversion not in q.CONVERSIONS:
        raise ValueError(f"unknown conversion {conversion!r}; choose from {', '.join(q.CONVERSIONS)}")
    if max_touches is not None and max_touches < 2:
        raise ValueError("max_touches must be at least 2 (the first and the last touch)")
    if not isinstance(level, str) or not level.isidentifier():
        raise ValueError(f"level must be a column name, got {level!r}")
    items = _sources(source)
    eng: _DuckDB | _Spark
    if engine == "duckdb":
        eng = _DuckDB(memory_limit, progress)
    elif engine == "spark":
        eng = _Spark(spark)
    else:
        raise ValueError(f"engine must be 'duckdb' or 'spark', got {engine!r}")
    for name, item in items.items():
        eng.register(name, item)
    _check_inputs(eng, items, conversion, level)
    eng.create("conversions", q.conversions_sql(conversion))
    eng.create("journey_touches", q.journey_touches_sql(level, lookback_days, restart_after_conversion,
                                                         drop_direct, collapse_repeats, max_touches))
    dialect = "duckdb" if engine == "duckdb" else "spark"
    paths = eng.frame(q.paths_sql(dialect)).sort_values("path", kind="stable").reset_index(drop=True)
    recon = eng.frame(q.reconciliation_sql())
    touches_in = int(recon.loc[(recon.item == "touches") & (recon.bucket == "in"), "n"].iloc[0])
    in_journeys = int(recon.loc[(recon.item == "touches") & (recon.bucket != "in"), "n"].sum())
    left_out = pd.DataFrame([{"item": "touches", "bucket": "not in any journey (before the lookback, "
                              "after the last conversion, or dropped by the options)",
                              "n": touches_in - in_journeys, "value": float("nan")}])
    recon = pd.concat([recon, left_out], ignore_index=True)
    rank = {("conversions", "in"): 0, ("conversions", "with a journey"): 1, ("touches", "in"): 10,
            ("touches", "in converting journeys"): 11, ("touches", "in non-converting journeys"): 12}
    default = {"conversions": 5, "touches": 13, "identities": 20}
    recon["_k"] = [rank.get((i, b), default.get(i, 30)) for i, b in zip(
        recon["item"], recon["bucket"], strict=True)]
    recon = recon.sort_values(["_k", "bucket"], kind="stable").drop(columns="_k").reset_index(drop=True)
    return Journeys(paths, recon, eng)


def _sources(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, (str, Path)):
        folder = Path(source)
        items = {t: folder / f"{t}.parquet" for t in _TABLES if (folder / f"{t}.parquet").is_file()}
    else:
        items = dict(source)
    missing = [t for t in ("touchpoints", "identities") if t not in items]
    if missing:
        raise FileNotFoundError(f"journeys need the tables {missing}; found {sorted(items)}")
    return {k: v for k, v in items.items() if k in _TABLES}


#: Columns each build reads, per table (the conversion's table is added by conversion kind).
_NEEDS = {"touchpoints": ("touch_id", "visitor_id", "timestamp", "channel"),
          "identities": ("visitor_id", "person_id", "matched_at")}
_CONVERSION_NEEDS = {
    "lead": {"leads": ("person_id", "created_at")},
    "mql": {"leads": ("person_id", "mql_at")},
    "sql": {"leads": ("person_id", "sql_at")},
    "opportunity": {"deals": ("deal_id", "person_id", "created_at", "amount")},
    "proposal": {"deals": ("deal_id", "person_id", "amount"),
                 "stage_history": ("deal_id", "stage", "entered_at")},
    "closed_won": {"deals": ("deal_id", "person_id", "closed_at", "won", "amount")},
    "first_order": {"orders": ("order_id", "customer_id", "timestamp", "amount")},
    "order": {"orders": ("order_id", "customer_id", "timestamp", "amount")},
}
_TIMES = {"timestamp", "matched_at", "created_at", "mql_at", "sql_at", "closed_at", "entered_at"}


def _check_inputs(eng: Any, items: dict[str, Any], conversion: str, level: str) -> None:
    from closedloop_nb.errors import DataValidationError, Problem

    needs = {**_NEEDS, **_CONVERSION_NEEDS[conversion]}
    needs["touchpoints"] = (*needs["touchpoints"], level)
    problems = []
    for table, cols in needs.items():
        where = str(items[table]) if table in items and not isinstance(items[table], pd.DataFrame) \
            else f"<{table} DataFrame>"
        if table not in items:
            problems.append(Problem(table, f"<{table}>", None, f"table missing: journeys ending at "
                                    f"'{conversion}' need it", "error"))
            continue
        have = eng.columns(table)
        for col in dict.fromkeys(cols):
            if col not in have:
                problems.append(Problem(table, where, col, "missing column; journeys need it "
                                        "(validate the tables with closedloop validate first)", "error"))
            elif col in _TIMES and eng.naive(have[col]):
                problems.append(Problem(table, where, col, f"timestamps without a time zone ({have[col]}); "
                                        "store them as UTC (closedloop validate converts them)", "error"))
    if problems:
        raise DataValidationError(problems)
