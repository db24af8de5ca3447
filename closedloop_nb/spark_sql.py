"""The metrics' SQL on Apache Spark: a DuckDB-to-Spark dialect layer and a connection that looks like
DuckDB's to the code that queries it.

The metrics (:mod:`closedloop_nb.metrics`) and the stitching summary write their SQL once, in
DuckDB's dialect. :func:`to_spark` translates it with `sqlglot <https://sqlglot.com>`_ (types, casts,
``GROUP BY ALL``, ``date_diff``, ``string_agg ... ORDER BY``), plus two rewrites sqlglot leaves to
the caller because Spark has no ordered form of them:

* ``first(x ORDER BY a, b)`` becomes ``min_by(x, struct(a, b))`` (the value at the smallest key);
* ``list(x ORDER BY a, b)`` becomes ``transform(array_sort(collect_list(named_struct(...))), ...)``
  (the values in key order; sqlglot alone drops the order);

and decimal literals (``0.3``) become doubles, as DuckDB's arithmetic on them is (Spark would keep
quotients as decimals of six places).

:class:`SparkConnection` runs such SQL on a SparkSession with the methods of a DuckDB connection the
metrics use (``sql(...).to_arrow_table()``, ``execute(...).fetchall()``, ``register``), over the
temporary views it was given: every result comes back as Arrow, and only results (aggregates, per
deal or per channel) ever reach the driver.

Examples
--------
>>> to_spark("SELECT person_id, first(step ORDER BY ts, touch_id) AS s FROM t GROUP BY ALL")
'SELECT person_id, MIN_BY(step, STRUCT(ts, touch_id)) AS s FROM t GROUP BY ALL'
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

__all__ = ["ENGINES", "ENV_DRIVER_MEMORY", "ENV_ENGINE", "ENV_MASTER", "LOCAL_CONF", "SparkConnection",
           "engine_env", "spark_session", "to_spark"]

#: Environment variable naming the engine of run workspaces (``duckdb``, ``spark``); the report
#: runner sets it for its kernels from a parameter file's ``engine:``.
ENV_ENGINE = "CLOSEDLOOP_ENGINE"
#: Environment variable naming the Spark master URL (``local[2]`` when unset).
ENV_MASTER = "CLOSEDLOOP_SPARK_MASTER"
#: The engines a run workspace can be on.
ENGINES = ("duckdb", "spark")
#: Environment variable giving the local session's driver memory (the JVM's heap; ``2g`` when unset).
ENV_DRIVER_MEMORY = "CLOSEDLOOP_SPARK_DRIVER_MEMORY"

#: The settings of a local-mode session (:func:`spark_session`), sized for one machine whose processes
#: keep under 3 GiB. Shuffles start at 64 partitions and adaptive query execution merges them
#: to about 32 MB each (by size, not to keep every core busy on tiny partitions), so a sample's
#: shuffle is one or two tasks and a 10M-touch one a few dozen, each small enough for an aggregation
#: or sort to fit the 2g heap's share of two concurrent tasks (they spill when not).
LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "64",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.parallelismFirst": "false",
    "spark.sql.adaptive.advisoryPartitionSizeInBytes": "32m",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "200000",
}


def engine_env(params: dict[str, Any], engine: str | None = None) -> dict[str, str]:
    """The environment variables that put a run's kernels on its engine: ``engine`` (the command
    line's ``--engine``), else the parameter file's ``engine:``, else ``$CLOSEDLOOP_ENGINE``, else
    ``duckdb``; and ``spark_master:`` as ``$CLOSEDLOOP_SPARK_MASTER``.

    Examples
    --------
    >>> engine_env({"engine": "spark", "spark_master": "spark://head:7077"})
    {'CLOSEDLOOP_ENGINE': 'spark', 'CLOSEDLOOP_SPARK_MASTER': 'spark://head:7077'}
    """
    chosen = engine or params.get("engine") or os.environ.get(ENV_ENGINE) or "duckdb"
    if chosen not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {chosen!r}")
    env = {ENV_ENGINE: str(chosen)}
    if params.get("spark_master"):
        env[ENV_MASTER] = str(params["spark_master"])
    return env


@functools.lru_cache(maxsize=512)
def to_spark(sql: str) -> str:
    """``sql`` written for DuckDB, as Spark SQL (cached per text).

    Raises
    ------
    ValueError
        For an ordered aggregate Spark cannot express this way (a descending ``first``/``list`` key).
    """
    import sqlglot
    from sqlglot import exp

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Literal) and not node.is_string and any(c in node.this for c in ".eE"):
            # a literal like 0.3 is DECIMAL in both dialects, but Spark keeps decimal quotients to six
            # places where DuckDB divides in DOUBLE: as a double it is DuckDB's arithmetic
            return exp.Cast(this=node.copy(), to=exp.DataType.build("double"))
        if isinstance(node, (exp.First, exp.ArrayAgg)) and isinstance(node.this, exp.Order):
            value, keys = node.this.this, node.this.expressions
            if any(k.args.get("desc") for k in keys):
                raise ValueError(f"no Spark form for a descending ordered aggregate: {node.sql('duckdb')}")
            parts = [k.this for k in keys]
            if isinstance(node, exp.First):
                key = parts[0] if len(parts) == 1 else exp.Struct(expressions=parts)
                return exp.ArgMin(this=value, expression=key)
            fields = ", ".join(f"'k{i}', {p.sql('spark')}" for i, p in enumerate(parts))
            return sqlglot.parse_one(
                f"TRANSFORM(ARRAY_SORT(COLLECT_LIST(NAMED_STRUCT({fields}, 'v', {value.sql('spark')}))), "
                "_e -> _e.v)", read="spark")
        return node

    trees = sqlglot.parse(sql, read="duckdb")
    return ";\n".join(t.transform(rewrite).sql("spark") for t in trees if t is not None)


def spark_session(master: str | None = None) -> Any:
    """The active SparkSession, or a new one on ``master`` (``$CLOSEDLOOP_SPARK_MASTER``, else local
    mode on two cores), with session time zone UTC (timestamps are instants, as in DuckDB)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        active.conf.set("spark.sql.session.timeZone", "UTC")
        return active
    master = master or os.environ.get(ENV_MASTER) or "local[2]"
    if master.startswith("local"):  # the validating tasks run this interpreter (its packages)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        # the JVM started next inherits it: glibc's per-thread malloc arenas (one per core x 8 by
        # default) hold freed native buffers (shuffle, Arrow) as resident memory beyond the heap
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    builder = (SparkSession.builder.master(master).appName("closedloop")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.showConsoleProgress", "false"))
    if master.startswith("local"):
        for name, value in LOCAL_CONF.items():
            builder = builder.config(name, value)
        builder = builder.config("spark.driver.memory", os.environ.get(ENV_DRIVER_MEMORY) or "2g")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class SparkResult:
    """A query's result: as Arrow (``to_arrow_table``), rows (``fetchall``) or pandas (``df``)."""

    def __init__(self, frame: Any) -> None:
        self.frame = frame

    def to_arrow_table(self) -> Any:
        return self.frame.toArrow()

    arrow = to_arrow_table

    def fetchall(self) -> list[tuple]:
        return [tuple(r) for r in self.frame.collect()]

    def df(self) -> Any:
        return self.to_arrow_table().to_pandas()


class SparkConnection:
    """A SparkSession seen through the DuckDB connection methods the metrics call.

    Parameters
    ----------
    spark
        The session.
    views
        ``{name: DataFrame}`` registered as temporary views. Before each query they are registered
        again if another connection used the session since (two workspaces in one session each see
        their own tables).
    """

    def __init__(self, spark: Any, views: dict[str, Any] | None = None) -> None:
        self.spark = spark
        self.views: dict[str, Any] = {}
        for name, frame in (views or {}).items():
            self.view(name, frame)

    def view(self, name: str, frame: Any) -> None:
        """Register ``frame`` (a Spark DataFrame) as view ``name``."""
        self.views[name] = frame
        frame.createOrReplaceTempView(name)
        self.spark._closedloop_owner = self

    def _claim(self) -> None:
        if getattr(self.spark, "_closedloop_owner", None) is not self:
            for name, frame in self.views.items():
                frame.createOrReplaceTempView(name)
            self.spark._closedloop_owner = self

    def table(self, name: str) -> Any:
        """View ``name`` as a Spark DataFrame."""
        self._claim()
        return self.spark.table(name)

    def sql(self, sql: str, params: list | None = None) -> SparkResult:
        """Run DuckDB-dialect ``sql`` (``?`` parameters allowed) on Spark."""
        self._claim()
        text = to_spark(sql)
        return SparkResult(self.spark.sql(text, args=list(params)) if params else self.spark.sql(text))

    execute = sql

    def register(self, name: str, frame: Any) -> None:
        """A pandas DataFrame as view ``name`` (through Arrow; small frames only: results, keys)."""
        import pandas as pd

        if isinstance(frame, pd.DataFrame):
            frame = self.spark.createDataFrame(frame)
        self.view(name, frame)

    def unregister(self, name: str) -> None:
        self.views.pop(name, None)
        self.spark.catalog.dropTempView(name)
