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

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from closedloop_nb import journey_sql as q

__all__ = ["Journeys", "UnitSummary", "build_journeys", "deal_unit_summary", "lead_paths_reference",
           "stitching_summary"]

_TABLES = ("touchpoints", "identities", "leads", "deals", "stage_history", "orders", "deal_contacts")
#: Whose touches make a deal's journey: ``person`` (the deal's person), ``deal_contacts`` (every
#: contact of the deal: its buying committee), ``account`` (everyone at the deal's account, its
#: contacts included), ``auto`` (deal_contacts where that table exists).
Unit = Literal["auto", "person", "deal_contacts", "account"]
UNITS = ("auto", "person", "deal_contacts", "account")


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

    On a run workspace (:func:`closedloop_nb.open_workspace`) the same figures are counted in the
    engine, without materialising the touchpoints.
    """
    if hasattr(tables, "con") and hasattr(tables, "journeys"):
        return _stitching_summary_sql(tables.con, "identities" in tables, "deals" in tables)
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


def _stitching_summary_sql(con: Any, identities: bool, deals: bool) -> pd.DataFrame:
    ident = "identities" if identities else "(SELECT NULL::VARCHAR AS visitor_id, NULL::VARCHAR AS person_id)"
    deal = "deals" if deals else "(SELECT NULL::VARCHAR AS deal_id, NULL::VARCHAR AS person_id WHERE false)"
    row = con.execute(f"""
WITH v AS (SELECT DISTINCT visitor_id FROM touchpoints WHERE visitor_id IS NOT NULL),
m AS (SELECT i.visitor_id, i.person_id FROM {ident} i SEMI JOIN v ON i.visitor_id = v.visitor_id),
p AS (SELECT DISTINCT person_id FROM m WHERE person_id IS NOT NULL)
SELECT (SELECT COUNT(*) FROM v),
       (SELECT COUNT(DISTINCT visitor_id) FROM m),
       (SELECT COUNT(*) FROM (SELECT visitor_id FROM m GROUP BY visitor_id
                              HAVING COUNT(DISTINCT person_id) > 1)),
       (SELECT COUNT(*) FROM leads),
       (SELECT COUNT(*) FROM leads l SEMI JOIN p ON l.person_id = p.person_id),
       (SELECT COUNT(*) FROM {deal}),
       (SELECT COUNT(*) FROM {deal} d SEMI JOIN p ON d.person_id = p.person_id)
""").fetchall()[0]
    n_visitors, n_matched, several, n_leads, with_touches, n_deals, deals_with = (int(x) for x in row)
    rows = [("visitors", n_visitors, n_visitors),
            ("visitors matched to a person", n_matched, n_visitors),
            ("visitors matched to several people (earliest match used)", several, n_visitors),
            ("leads", n_leads, n_leads),
            ("leads with web touches", with_touches, n_leads),
            ("leads without web touches", n_leads - with_touches, n_leads),
            ("deals", n_deals, n_deals),
            ("deals whose person has web touches", deals_with, n_deals)]
    out = pd.DataFrame(rows, columns=["item", "n", "of"])
    out["share"] = out["n"] / out["of"].where(out["of"] > 0)
    return out


def _paths(touches: pd.DataFrame, key: str, level: str, sep: str) -> pd.Series:
    ordered = touches.sort_values([key, "timestamp"], kind="stable")
    joined = ordered.groupby(key, sort=False)[level].agg(sep.join)
    return joined.value_counts()


@dataclass(frozen=True)
class UnitSummary:
    """Whose touches made the journeys, and how many deals gained touches from people other than the
    deal's own person (:meth:`Journeys.unit_summary`).

    Attributes
    ----------
    conversion
        What the journeys end at.
    unit
        ``person``, ``deal_contacts`` or ``account`` (``auto`` resolved; ``person`` for conversions
        that are not deals).
    deals
        Deal conversions in (0 when the conversion is not a deal).
    deals_with_journey
        Of them, those with at least one touch in the lookback window.
    deals_with_other_contacts
        Of them, those with at least one touch from a person other than the deal's ``person_id``
        (a contact of the deal, or someone at its account): what the unit added.

    Examples
    --------
    >>> s = UnitSummary("opportunity", "deal_contacts", 40, 30, 12)
    >>> print(s.sentence())  # doctest: +NORMALIZE_WHITESPACE
    Deal journeys (opportunity) use the touches of every contact of the deal (unit deal_contacts):
    12 of 40 deals gained touches from contacts other than the deal's person (30 have touches at all).
    """

    conversion: str
    unit: str
    deals: int
    deals_with_journey: int
    deals_with_other_contacts: int

    def sentence(self) -> str:
        """One sentence for a report."""
        if self.conversion in q.DEAL_CONVERSIONS and not self.deals:
            return f"No deals reach {self.conversion}: there are no deal journeys."
        if self.conversion not in q.DEAL_CONVERSIONS:
            return (f"Journeys end at {self.conversion}: each is one person's touches (unit person); deal "
                    "committees apply to deal conversions only.")
        whose = {"person": "the deal's own person only",
                 "deal_contacts": "every contact of the deal",
                 "account": "everyone at the deal's account"}[self.unit]
        return (f"Deal journeys ({self.conversion}) use the touches of {whose} (unit {self.unit}): "
                f"{self.deals_with_other_contacts:,} of {self.deals:,} deals gained touches from contacts "
                f"other than the deal's person ({self.deals_with_journey:,} have touches at all).")

    def _repr_markdown_(self) -> str:
        return self.sentence()


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
    _table: str = "journey_touches"
    #: What the journeys end at, and whose touches make a deal's journey (``auto`` resolved).
    conversion: str = "lead"
    unit: str = "person"

    def unit_summary(self) -> UnitSummary:
        """The unit used and how many deals gained touches from people other than the deal's person
        (counted in the engine, from the journey touches and ``deals``)."""
        deals = int(self.reconciliation.loc[(self.reconciliation["item"] == "conversions")
                                            & (self.reconciliation["bucket"] == "in"), "n"].sum())
        if self.conversion not in q.DEAL_CONVERSIONS:
            return UnitSummary(self.conversion, "person", 0, 0, 0)
        row = self._engine.frame(q.unit_summary_sql(self._table)).iloc[0]
        return UnitSummary(self.conversion, self.unit, deals, int(row["journeys"]), int(row["with_others"]))

    @property
    def touches(self) -> pd.DataFrame:
        if self._touches is None:
            have = set(self._engine.columns(self._table))
            extra = [c for c in self._engine.columns("touchpoints") if c not in have | {"timestamp"}]
            cols = "".join(f", tp.{c}" for c in extra)
            self._touches = self._engine.frame(
                f"SELECT j.*{cols} FROM {self._table} j LEFT JOIN touchpoints tp "
                "ON j.touch_id = tp.touch_id ORDER BY j.journey_id, j.ts, j.touch_id")
        return self._touches

    @property
    def table(self) -> str:
        """Name of the journey touches (columns as :attr:`touches` before the join with the touch
        attributes) in the engine's connection: read them there with SQL at scale."""
        return self._table

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
        from closedloop_nb.path_table import PathTable

        return PathTable.from_frame(self.paths)

    def __repr__(self) -> str:
        conv = int(self.paths["total_conversions"].sum())
        return (f"<Journeys {len(self.paths):,} distinct paths: {conv:,} converting journeys, "
                f"{int(self.paths['total_null'].sum()):,} not converting>")

    def sentence(self) -> str:
        """The journeys in one sentence, for a report (where the ``repr`` would be raw output).

        Examples
        --------
        >>> from closedloop_nb.config import SAMPLE_DIR
        >>> from closedloop_nb.validation import load_dataset
        >>> j = build_journeys(load_dataset(SAMPLE_DIR).tables, progress=False)
        >>> ids = j.touches.groupby("journey_id")["converted"].max()
        >>> j.sentence() == (f"{len(ids):,} journeys along {len(j.paths):,} distinct paths: "
        ...                  f"{int(ids.sum()):,} ended in a conversion, {int((ids == 0).sum()):,} did not.")
        True
        """
        conv, null = int(self.paths["total_conversions"].sum()), int(self.paths["total_null"].sum())
        return (f"{conv + null:,} journeys along {len(self.paths):,} distinct paths: {conv:,} ended in a "
                f"conversion, {null:,} did not.")


class _DuckDB:
    def __init__(self, memory_limit: str = "2.5GB", progress: bool = True, con: Any = None,
                 temporary: bool = False) -> None:
        # temporary: the build's tables are TEMP tables (in memory, spilled to the connection's
        # temp_directory past memory_limit) rather than tables written into the database file
        self._create = "CREATE TEMP TABLE" if temporary else "CREATE TABLE"
        if con is not None:  # a workspace's connection: its tables are there already
            self.con = con
            return
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
        self.con.execute(f"{self._create} {name} AS {sql}")

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
    unit: Unit = "auto",
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
    unit
        Whose touches make a deal conversion's journey: the deal's ``person``; every contact of the
        deal in ``deal_contacts`` (its buying committee: ``person_id`` plus the table's contacts);
        or everyone at the deal's ``account`` (the people in ``leads`` with the deal's
        ``account_id``, plus its person and contacts). Each deal is still one journey, its value
        counted once, so credits sum to one per deal. ``auto``: ``deal_contacts`` for deal
        conversions when that table exists, else ``person``.

    Raises
    ------
    DataValidationError
        When a table the build needs is missing, lacks a column, or has timestamps without a time
        zone (naming the table, the column and what to do).

    Returns
    -------
    Journeys
    """
    if hasattr(source, "con") and hasattr(source, "journeys"):  # a run workspace: built once, cached
        return source.journeys(conversion=conversion, lookback_days=lookback_days, level=level,
                               restart_after_conversion=restart_after_conversion, drop_direct=drop_direct,
                               collapse_repeats=collapse_repeats, max_touches=max_touches, engine=engine,
                               spark=spark, unit=unit)
    args = journey_arguments(conversion, lookback_days, level,
                             restart_after_conversion=restart_after_conversion, drop_direct=drop_direct,
                             collapse_repeats=collapse_repeats, max_touches=max_touches, unit=unit)
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
    steps = _Steps(eng, args, items, progress)  # the build's steps on a progress bar
    paths, recon = _run(steps, items, args, "duckdb" if engine == "duckdb" else "spark")
    return Journeys(paths, recon, eng, conversion=args["conversion"], unit=unit_used(args, items))


def deal_unit_summary(source: Any, conversion: str = "opportunity", lookback_days: int = 90,
                      **options: Any) -> UnitSummary:
    """:meth:`Journeys.unit_summary` of the deal journeys: those ending at ``conversion`` when it is a
    deal conversion, else at ``opportunity`` (the journeys deals are credited over, e.g. by
    :func:`~closedloop_nb.metrics.deal_credits`). On a run workspace the journeys are the cached ones.

    ``options`` are :func:`build_journeys`'s (``unit``, ``level``, ...). Without a deals table: no deals.

    Examples
    --------
    >>> from closedloop_nb.config import SAMPLE_DIR
    >>> from closedloop_nb.validation import load_dataset
    >>> s = deal_unit_summary(load_dataset(SAMPLE_DIR).tables, conversion="lead", progress=False)
    >>> s.conversion, s.unit, s.deals_with_other_contacts
    ('opportunity', 'person', 0)
    """
    kind = conversion if conversion in q.DEAL_CONVERSIONS else "opportunity"
    if "deals" not in source:
        return UnitSummary(kind, "person", 0, 0, 0)
    return build_journeys(source, conversion=kind, lookback_days=lookback_days, **options).unit_summary()


def journey_arguments(conversion: str = "lead", lookback_days: int = 90, level: str = "channel",
                      restart_after_conversion: bool = True, drop_direct: bool = False,
                      collapse_repeats: bool = False, max_touches: int | None = None,
                      unit: Unit = "auto") -> dict[str, Any]:
    """The arguments that decide a journey build, checked, with their defaults (a cache key)."""
    if conversion not in q.CONVERSIONS:
        raise ValueError(f"unknown conversion {conversion!r}; choose from {', '.join(q.CONVERSIONS)}")
    if max_touches is not None and max_touches < 2:
        raise ValueError("max_touches must be at least 2 (the first and the last touch)")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(repr(u) for u in UNITS)}, got {unit!r}")
    if unit in ("deal_contacts", "account") and conversion not in q.DEAL_CONVERSIONS:
        kinds = ", ".join(q.DEAL_CONVERSIONS)
        raise ValueError(f"unit={unit!r} applies to deal conversions ({kinds}), not {conversion!r}")
    if not isinstance(level, str) or not level.isidentifier():
        raise ValueError(f"level must be a column name, got {level!r}")
    return {"conversion": conversion, "lookback_days": int(lookback_days), "level": level,
            "restart_after_conversion": bool(restart_after_conversion), "drop_direct": bool(drop_direct),
            "collapse_repeats": bool(collapse_repeats),
            "max_touches": None if max_touches is None else int(max_touches), "unit": unit}


def _run(eng: Any, items: dict[str, Any], args: dict[str, Any], dialect: str,
         prefix: str = "", anonymous: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the journeys in ``eng`` (tables ``{prefix}conversions``, ``{prefix}journey_touches``):
    the path table and the reconciliation.

    With ``anonymous`` (the number of touches in the anonymous visitors' journeys,
    :func:`journey_sql.anonymous_touches_sql`), the table holds the people's journeys only and the
    path table is theirs; the reconciliation counts both."""
    conversions, touches = f"{prefix}conversions", f"{prefix}journey_touches"
    unit = unit_used(args, items)
    _check_inputs(eng, items, args["conversion"], args["level"], unit)
    eng.create(conversions, q.conversions_sql(args["conversion"]))
    people = None
    if unit != "person":
        people = f"{prefix}conversion_people"
        eng.create(people, q.conversion_people_sql(conversions, contacts="deal_contacts" in items,
                                                   account=unit == "account"))
    eng.create(touches, q.journey_touches_sql(args["level"], args["lookback_days"],
                                              args["restart_after_conversion"], args["drop_direct"],
                                              args["collapse_repeats"], args["max_touches"],
                                              conversions=conversions, people=people,
                                              people_only=anonymous is not None))
    paths = eng.frame(q.paths_sql(dialect, touches=touches)).sort_values("path", kind="stable").reset_index(
        drop=True)
    return paths, _reconciliation(eng, conversions, touches, anonymous or 0)


def _reconciliation(eng: Any, conversions: str, touches: str, anonymous: int = 0) -> pd.DataFrame:
    """Where the conversions and touches of a build went (:func:`journey_sql.reconciliation_sql`),
    with the touches left out of every journey, in the reconciliation's row order; ``anonymous``
    touches (in journeys ``touches`` leaves out, none converting) counted as non-converting."""
    recon = eng.frame(q.reconciliation_sql(conversions, touches))
    recon.loc[(recon.item == "touches") & (recon.bucket == "in non-converting journeys"), "n"] += anonymous
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
    return recon.sort_values(["_k", "bucket"], kind="stable").drop(columns="_k").reset_index(drop=True)


def unit_used(args: dict[str, Any], items: Any) -> str:
    """Whose touches make the journeys of a build: ``person``, ``deal_contacts`` or ``account``
    (``auto``: deal_contacts for deal conversions when that table is there). ``deal_contacts`` asked
    for without the table is refused."""
    unit = args.get("unit", "auto")
    if unit == "deal_contacts" and "deal_contacts" not in items:
        raise ValueError("unit='deal_contacts' needs the deal_contacts table (a CRM import writes it)")
    if args["conversion"] not in q.DEAL_CONVERSIONS or unit == "person":
        return "person"
    if unit == "account":
        return "account"
    return "deal_contacts" if "deal_contacts" in items else "person"


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


@contextlib.contextmanager
def _memory_limit(con: Any, limit: str | None) -> Iterator[None]:
    """DuckDB's ``memory_limit`` on ``con`` set to ``limit`` (when given) inside, restored after."""
    before = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    if limit:
        con.execute(f"SET memory_limit = '{limit}'")
    try:
        yield
    finally:
        con.execute(f"SET memory_limit = '{before}'")


@contextlib.contextmanager
def _staged(folder: Path) -> Iterator[Path]:
    """A temporary folder beside ``folder``, renamed to it when the block completes (removed if not)."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_journeys(con: Any, args: dict[str, Any], folder: Path, prefix: str,
                   memory_limit: str | None = None, anonymous: Path | None = None) -> None:
    """Build journeys on a workspace's connection and store them in ``folder`` (Parquet: the journey
    touches, the path table, the reconciliation), written under a temporary name and renamed.

    ``memory_limit`` is DuckDB's during the build (the connection's own is restored after). With
    ``anonymous`` (a folder :func:`write_anonymous` wrote at this level and ``drop_direct``; only
    where :func:`shortens` holds), only the people's journeys are built and stored: the anonymous
    visitors' touches are read from the touchpoints (:func:`touches_relation`) and their paths
    from that folder, the same for every conversion and lookback."""
    # TEMP tables in memory (spilled past memory_limit): the 10M-row touch table is copied to Parquet
    # and dropped, and writing it into the scratch database file first cost ~9 s of CPU at 10M
    # touchpoints; with the workspace's 1 GB the build's sorts spilled too (26 s CPU at 2 GB, 35 s at 1)
    eng = _DuckDB(con=con, temporary=True)
    items = {t: f"<workspace table {t}>" for t in _TABLES
             if con.execute(f"SELECT COUNT(*) FROM duckdb_views() WHERE view_name = '{t}'").fetchall()[0][0]}
    try:
        anon = None if anonymous is None else _anonymous_touches(anonymous)
        with _memory_limit(con, memory_limit), _staged(folder) as tmp:
            paths, recon = _run(_Steps(eng, args, items), items, args, "duckdb", prefix=f"{prefix}_",
                                anonymous=anon)
            if anonymous is not None:
                paths = add_paths(paths, pd.read_parquet(anonymous / "paths.parquet"))
            con.execute(f"COPY {prefix}_journey_touches TO {_sql_path(tmp / 'journey_touches.parquet')} "
                        "(FORMAT parquet)")
            # the conversions too (one row each): a shorter lookback's journeys are derived from these
            con.execute(f"COPY {prefix}_conversions TO {_sql_path(tmp / 'conversions.parquet')} "
                        "(FORMAT parquet)")
            paths.to_parquet(tmp / "paths.parquet", index=False)
            recon.to_parquet(tmp / "reconciliation.parquet", index=False)
            written = {**args, "unit_used": unit_used(args, items)}
            if anonymous is not None:
                written["anonymous"] = anonymous.name
            (tmp / "arguments.json").write_text(json.dumps(written, indent=2), "utf-8")
    finally:
        for name in ("journey_touches", "conversions", "conversion_people"):
            con.execute(f"DROP TABLE IF EXISTS {prefix}_{name}")


def write_anonymous(con: Any, level: str, drop_direct: bool, folder: Path,
                    memory_limit: str | None = None) -> None:
    """The path table of the anonymous visitors' journeys (:func:`journey_sql.anonymous_touches_sql`)
    at ``level``, counted on a workspace's connection and stored in ``folder`` (``paths.parquet``),
    for every build at that level and ``drop_direct`` to add to its people's paths."""
    with _memory_limit(con, memory_limit), _staged(folder) as tmp:
        anonymous = q.anonymous_touches_sql(level, drop_direct)
        paths = _DuckDB(con=con).frame(q.paths_sql("duckdb", touches=anonymous))
        paths.sort_values("path", kind="stable").reset_index(drop=True).to_parquet(tmp / "paths.parquet",
                                                                                  index=False)
        touches = con.execute(f"SELECT COUNT(*) FROM {anonymous}").fetchall()[0][0]
        (tmp / "arguments.json").write_text(json.dumps({"level": level, "drop_direct": bool(drop_direct),
                                                        "touches": int(touches)}, indent=2), "utf-8")


def _anonymous_touches(folder: Path) -> int:
    """How many touches the anonymous journeys stored in ``folder`` (:func:`write_anonymous`) hold."""
    return int(json.loads((folder / "arguments.json").read_text("utf-8"))["touches"])


def add_paths(*tables: pd.DataFrame) -> pd.DataFrame:
    """Path tables of disjoint sets of journeys as one: each path's counts and value summed, sorted
    by path as a build sorts them (a path of converting journeys without value keeps none)."""
    cols = ["total_conversions", "total_conversion_value", "total_null"]
    paths = pd.concat(tables, ignore_index=True).groupby("path", sort=False)[cols].sum(min_count=1)
    paths = paths.astype({"total_conversions": "int64", "total_null": "int64"}).reset_index()
    return paths.sort_values("path", kind="stable").reset_index(drop=True)


def relevels(args: dict[str, Any]) -> bool:
    """Whether journeys with ``args`` are a ``channel`` build's with each step renamed: the level
    names a touch's step and nothing else, unless ``collapse_repeats`` (which compares steps) or
    ``max_touches`` is set."""
    return args["level"] != "channel" and not args["collapse_repeats"] and args["max_touches"] is None


def write_relevelled(con: Any, base: Path, args: dict[str, Any], folder: Path,
                     memory_limit: str | None = None, anonymous: Path | None = None) -> None:
    """Journeys at ``args["level"]`` from the journeys stored in ``base`` by :func:`write_journeys`
    with the same arguments at ``channel`` (see :func:`relevels`): the same touches in the same
    journeys, each step the touch's own ``level`` (``(not set)`` when empty, as a build names it),
    the path table counted again, the reconciliation (counts of touches and conversions) the same.
    Written to ``folder`` as :func:`write_journeys` writes, at ~60% of a build's CPU (no stitching,
    windows or conversions: one join on ``touch_id``, the touchpoints' key) when ``memory_limit``
    holds the join (at 10M touchpoints 18 CPU s at 2 GB; at 1 GB it spills, 43 s).

    A base that stores its people's journeys alone (``write_journeys(..., anonymous=)``) needs
    ``anonymous``, the anonymous paths at the new level: only the people's touches are renamed."""
    level = args["level"]
    have = {r[0] for r in con.execute("DESCRIBE touchpoints").fetchall()}
    if level not in have:
        raise ValueError(f"touchpoints has no column {level!r}")
    split = json.loads((base / "arguments.json").read_text("utf-8")).get("anonymous") is not None
    if split and anonymous is None:
        raise ValueError(f"{base} holds the people's journeys only: the anonymous paths at {level!r} "
                         "are needed")
    own = f"read_parquet({_sql_path(base / 'journey_touches.parquet')})" if split else touches_relation(base)
    with _memory_limit(con, memory_limit), _staged(folder) as tmp:
        touches = _sql_path(tmp / "journey_touches.parquet")
        con.execute(f"""
COPY (SELECT jt.* REPLACE ({q.level_step_sql(level)} AS step)
      FROM {own} jt
      JOIN touchpoints tp ON tp.touch_id = jt.touch_id) TO {touches} (FORMAT parquet)""")
        paths = _DuckDB(con=con).frame(q.paths_sql("duckdb", touches=f"read_parquet({touches})"))
        if split:
            paths = add_paths(paths, pd.read_parquet(anonymous / "paths.parquet"))
        paths.sort_values("path", kind="stable").reset_index(drop=True).to_parquet(tmp / "paths.parquet",
                                                                                  index=False)
        for same in ("reconciliation.parquet", "conversions.parquet"):  # the same conversions
            if (base / same).is_file():
                shutil.copyfile(base / same, tmp / same)
        used = json.loads((base / "arguments.json").read_text("utf-8")).get("unit_used", "person")
        written = {**args, "unit_used": used, **({"anonymous": anonymous.name} if split else {})}
        (tmp / "arguments.json").write_text(json.dumps(written, indent=2), "utf-8")


def shortens(args: dict[str, Any]) -> bool:
    """Whether journeys with ``args`` are those of a build with a longer lookback (and the same other
    arguments) with the older touches of each converting journey left out: unless
    ``collapse_repeats`` or ``max_touches``, which act on the kept touches. Journeys that do not
    convert are the same at every lookback."""
    return not args["collapse_repeats"] and args["max_touches"] is None


def _within(lookback_days: int) -> str:
    """The touches a build with lookback ``lookback_days`` keeps, as a condition on a longer one's
    (the window of :func:`journey_sql.journey_touches_sql`)."""
    return f"converted = 0 OR ts >= conversion_at - INTERVAL {int(lookback_days)} DAY"


def touches_relation(folder: Path) -> str:
    """The journey touches of the build stored in ``folder`` as a SQL relation: its own Parquet file,
    or, for journeys :func:`write_shortened` derived, the longer build's touches they keep; for a
    build of the people's journeys (:func:`write_journeys` with ``anonymous``), its own file and the
    anonymous visitors' touches."""
    args = json.loads((folder / "arguments.json").read_text("utf-8"))
    within = args.get("within")
    if within is not None:
        base = folder.with_name(within["build"])
        return f"(SELECT * FROM {touches_relation(base)} WHERE {_within(within['lookback_days'])})"
    own = f"read_parquet({_sql_path(folder / 'journey_touches.parquet')})"
    if args.get("anonymous") is None:
        return own
    # a build of the people's journeys: the anonymous visitors' read from the touchpoints
    return (f"(SELECT * FROM {own} UNION ALL "
            f"SELECT * FROM {q.anonymous_touches_sql(args['level'], args['drop_direct'])})")


def stored(folder: Path) -> bool:
    """Whether ``folder`` holds a complete stored build: for derived journeys, also the build whose
    touches they read; for a build of the people's journeys, also its anonymous paths (a folder
    removed by hand is built again, not read as an IO error)."""
    if not folder.is_dir():
        return False
    args = json.loads((folder / "arguments.json").read_text("utf-8"))
    if args.get("within") is not None:
        return stored(folder.with_name(args["within"]["build"]))
    anonymous = args.get("anonymous")
    return (folder / "journey_touches.parquet").is_file() and (
        anonymous is None or (folder.with_name(anonymous) / "arguments.json").is_file())


def null_paths(paths: pd.DataFrame) -> pd.DataFrame:
    """The journeys of a path table that did not convert, as a path table of their own (each path
    with ``total_null``, no conversions or value)."""
    nulls = paths.loc[paths["total_null"] > 0, ["path", "total_null"]]
    return nulls.assign(total_conversions=0, total_conversion_value=0.0)[
        ["path", "total_conversions", "total_conversion_value", "total_null"]]


def write_shortened(con: Any, base: Path, args: dict[str, Any], folder: Path) -> None:
    """Journeys with ``args`` from the build stored in ``base`` by :func:`write_journeys` with the
    same arguments and a longer lookback (see :func:`shortens`), stored in ``folder`` as
    :func:`write_journeys` stores them, but without a copy of the touches: they are read from
    ``base`` through the window (:func:`touches_relation`).

    The path table is the converting journeys' (a few per lead or deal, counted here) plus the
    longer build's non-converting ones (its ``total_null``: at 10M touchpoints the millions of
    anonymous journeys, not counted again); the reconciliation is the build's query on its stored
    conversions and the kept touches."""
    stored = json.loads((base / "arguments.json").read_text("utf-8"))
    days = int(args["lookback_days"])
    same = {k: v for k, v in stored.items() if k not in ("anonymous", "unit_used", "lookback_days")}
    if stored.get("within") is not None or same != {k: v for k, v in args.items() if k not in (
            "unit_used", "lookback_days")} or int(stored["lookback_days"]) < days:
        raise ValueError(f"{base} holds no build with these arguments and a lookback of {days} days or more")
    eng = _DuckDB(con=con)
    # a build of the people's journeys: its own touches, the anonymous ones counted where stored
    split = stored.get("anonymous")
    own = (touches_relation(base) if split is None
           else f"read_parquet({_sql_path(base / 'journey_touches.parquet')})")
    touches = f"(SELECT * FROM {own} WHERE {_within(days)})"
    converting = eng.frame(q.paths_sql("duckdb", touches=touches, where="converted = 1"))
    paths = add_paths(converting, null_paths(pd.read_parquet(base / "paths.parquet")))
    anonymous = 0 if split is None else _anonymous_touches(base.with_name(split))
    conversions = f"read_parquet({_sql_path(base / 'conversions.parquet')})"
    recon = _reconciliation(eng, conversions, touches, anonymous)
    with _staged(folder) as tmp:
        paths.sort_values("path", kind="stable").reset_index(drop=True).to_parquet(tmp / "paths.parquet",
                                                                                  index=False)
        recon.to_parquet(tmp / "reconciliation.parquet", index=False)
        written = {**args, "unit_used": stored.get("unit_used", "person"),
                   "within": {"build": base.name, "lookback_days": days}}
        (tmp / "arguments.json").write_text(json.dumps(written, indent=2), "utf-8")


def read_journeys(con: Any, folder: Path, prefix: str) -> Journeys:
    """Journeys stored by :func:`write_journeys`, their touches a view ``{prefix}_journey_touches``."""
    table = f"{prefix}_journey_touches"
    con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {touches_relation(folder)}")
    paths = pd.read_parquet(folder / "paths.parquet")
    recon = pd.read_parquet(folder / "reconciliation.parquet")
    args = json.loads((folder / "arguments.json").read_text("utf-8"))
    return Journeys(paths, recon, _DuckDB(con=con), _table=table, conversion=args["conversion"],
                    unit=args.get("unit_used", "person"))


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


def _check_inputs(eng: Any, items: dict[str, Any], conversion: str, level: str,
                  unit: str = "person") -> None:
    from closedloop_nb.errors import DataValidationError, Problem

    needs = {**_NEEDS, **_CONVERSION_NEEDS[conversion]}
    needs["touchpoints"] = (*needs["touchpoints"], level)
    if unit != "person" and "deal_contacts" in items:
        needs["deal_contacts"] = ("deal_id", "person_id")
    if unit == "account":  # everyone at the deal's account: people and deals carry it
        needs["leads"] = ("person_id", "account_id")
        needs["deals"] = (*needs["deals"], "account_id")
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


class _Steps:
    """An engine whose table builds and reads each advance a progress bar of the journey build
    (:func:`closedloop_nb.progress.bar`): tqdm's (a widget in a notebook) when someone watches (a
    notebook kernel or a terminal), the status line of ``closedloop report`` inside a report batch,
    none in scripts and logs. DuckDB's own bar shows the progress of each long query on a terminal.
    """

    def __init__(self, eng: Any, args: dict[str, Any], items: dict[str, Any], progress: bool = True) -> None:
        import sys

        from closedloop_nb.progress import bar

        self._eng = eng
        try:
            total = 4 + (unit_used(args, items) != "person")  # conversions, (people,) touches, paths, recon
        except ValueError:  # refused by the build itself, with its message
            total = 4
        watched = "ipykernel" in sys.modules or sys.stderr.isatty()
        self._bar = iter(bar(range(total), desc=f"journeys ({args['conversion']})", total=total,
                             enabled=progress and watched))
        next(self._bar, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._eng, name)

    def create(self, name: str, sql: str) -> None:
        self._eng.create(name, sql)
        next(self._bar, None)

    def frame(self, sql: str) -> pd.DataFrame:
        out = self._eng.frame(sql)
        next(self._bar, None)
        return out
