"""The run workspace on Apache Spark: ingest, journeys and the metrics' SQL on a cluster (or local mode).

:func:`open_spark_workspace` is :func:`closedloop_nb.workspace.open_workspace` with Spark as the
engine (``open_workspace(..., engine="spark")``, or ``CLOSEDLOOP_ENGINE=spark`` as the report runner
sets it for ``engine: spark``). It reads each canonical table where it lives (a local file, a Parquet
path Spark can read such as ``s3a://bucket/touchpoints.parquet``, or a catalog table name), validates
it in Spark and keeps the validated tables as Parquet in the workspace folder, keyed as the DuckDB
workspace is, so the next notebook of the run reads them instead of validating again.

Validation is :class:`closedloop_nb.validation._TableCheck` itself, as in :mod:`closedloop_nb.ingest`:

* the row checks run in pandas inside each Spark task (``mapInArrow``), batch by batch;
* the rows any check touched (and one clean row per column) go to the driver, where the same
  checks run again on them alone to write the report's problems (reasons, examples, counts, first
  rows and money come out as on the whole table: the DuckDB ingest does the same);
* duplicates, duplicate keys, orphans and the channel fill of untagged touches are Spark SQL (the
  channel rules see only the distinct untagged combinations, on the driver).

What still runs on the driver, by design or as a fallback: CSV files (read by the loader, whose
reading rules are pandas; convert big CSV to Parquet first), a table whose row check is fatal in
some batch (checked whole by ``_TableCheck``, as the DuckDB ingest does), the rows with problems
(for the report), and the per-deal / per-lead tables ``ws["deals"]`` materialises. The touchpoints
and the journeys' touches never come to the driver unless asked for (``ws["touchpoints"]``).

Examples
--------
Not run here (it starts a JVM)::

    ws = open_spark_workspace("data/sample")                       # local[2]
    ws = open_spark_workspace({"touchpoints": "s3a://lake/tp.parquet", "leads": "crm.leads", ...},
                              spark=session)
    ws.con.sql("SELECT channel, COUNT(*) FROM touchpoints GROUP BY ALL").df()
    ws.journeys(conversion="lead", lookback_days=90)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.channels import UNASSIGNED, ChannelRules
from closedloop_nb.errors import Problem
from closedloop_nb.schema import CURRENCY_COLUMNS, TABLES, table_spec
from closedloop_nb.validation import ValidationReport
from closedloop_nb.workspace import TableMapping, _code_hash

__all__ = ["SparkWorkspace", "open_spark_workspace"]

#: Bumped when the layout of a Spark workspace folder changes.
FORMAT = 1
_CODE = ("schema.py", "loaders.py", "validation.py", "channels.py", "ingest.py", "spark_workspace.py")
_JOURNEY_CODE = ("journey_sql.py", "journeys.py", "spark_workspace.py")
_ROW, _FILE = "_row", "_file"
_SPARK_TYPES = {"string": "string", "timestamp": "timestamp", "date": "date", "float": "double",
                "int": "bigint", "bool": "boolean"}
_FORMATS = (".parquet", ".pq", ".csv", ".csv.gz", ".tsv")


# -- where the tables are --------------------------------------------------------------------------
def _is_path(location: str) -> bool:
    return "://" in location or location.startswith(("/", ".", "~")) or "/" in location or \
        location.lower().endswith(_FORMATS)


def _sources(spark: Any, data_dir: Any) -> dict[str, tuple[str, str]]:
    """``{table: (kind, location)}``: kind ``file`` (a local file), ``path`` (Parquet Spark reads: a
    URL, or a local folder of Parquet parts) or ``table`` (a catalog table)."""
    from closedloop_nb.validation import _find_table_files

    if isinstance(data_dir, Mapping):
        out = {}
        for table, loc in data_dir.items():
            loc = str(loc)
            if not _is_path(loc):
                out[table] = ("table", loc)
            elif ("://" not in loc or loc.startswith("file:")) and not Path(
                    loc.removeprefix("file:")).expanduser().is_dir():
                out[table] = ("file", str(Path(loc.removeprefix("file:")).expanduser()))
            else:
                out[table] = ("path", loc)
        return out
    text = str(data_dir)
    if text.startswith("catalog:"):  # catalog:<database>: each canonical table <database>.<table>
        db = text.removeprefix("catalog:")
        return {t: ("table", f"{db}.{t}") for t in TABLES if spark.catalog.tableExists(f"{db}.{t}")}
    if "://" in text and not text.startswith("file:"):
        jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()
        out = {}
        for t in TABLES:
            p = jvm.org.apache.hadoop.fs.Path(f"{text.rstrip('/')}/{t}.parquet")
            if p.getFileSystem(conf).exists(p):
                out[t] = ("path", str(p))
        if not out:
            raise FileNotFoundError(f"{text} holds no canonical <table>.parquet")
        return out
    directory = Path(text.removeprefix("file:")).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory of canonical tables")
    found = {t: ("file", str(p)) for t, p in _find_table_files(directory).items()}
    if not found:
        raise FileNotFoundError(f"{directory} holds no canonical table files (expected names like "
                                f"{', '.join(t + '.parquet' for t in list(TABLES)[:3])}, ...)")
    return found


def _fingerprint(spark: Any, kind: str, location: str) -> dict[str, Any]:
    """What the key holds of one input: a local file's bytes (SHA-256, as the DuckDB workspace), else
    the length and modification time of every file Spark reads for it."""
    if kind == "file":
        from closedloop_nb.workspace import _file_hash

        return {"name": Path(location).name, "sha256": _file_hash(Path(location))}
    frame = spark.table(location) if kind == "table" else spark.read.parquet(location)
    jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()
    files = []
    for f in sorted(frame.inputFiles()):
        p = jvm.org.apache.hadoop.fs.Path(f)
        st = p.getFileSystem(conf).getFileStatus(p)
        files.append([f, int(st.getLen()), int(st.getModificationTime())])
    if not files:  # not backed by files Spark lists: nothing to tell a change by, so never reused
        files.append(["opened", time.time()])
    return {"name": location, "files": files}


def open_spark_workspace(data_dir: str | Path | Mapping[str, str | Path], *, timezone: str | None = None,
                         channel_rules: ChannelRules | None = None, cache_dir: str | Path | None = None,
                         spark: Any = None, master: str | None = None) -> SparkWorkspace:
    """Validate the canonical tables of ``data_dir`` once on Spark, or reuse the workspace that did.

    Parameters
    ----------
    data_dir
        A local folder of ``<table>.parquet`` / ``.csv``; a folder URL Spark reads
        (``s3a://bucket/run/``, holding ``<table>.parquet``); ``catalog:<database>`` (tables
        ``<database>.<table>``); or ``{table: location}`` with locations of any of these kinds
        (a local file, a Parquet path or URL, a catalog table name such as ``crm.leads``).
    timezone, channel_rules
        As :func:`closedloop_nb.workspace.open_workspace`.
    cache_dir
        Folder of workspaces (:func:`closedloop_nb.workspace.default_cache_dir` when None). On a
        cluster it must be a folder the driver and the executors share.
    spark
        A SparkSession; else the active one, else a new one on ``master``.
    master
        Spark master URL (``$CLOSEDLOOP_SPARK_MASTER``, else ``local[2]``).
    """
    from closedloop_nb.spark_sql import spark_session
    from closedloop_nb.workspace import _locked, _rules_hash, default_cache_dir

    spark = spark or spark_session(master)
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    sources = _sources(spark, data_dir)
    missing = [(t, loc) for t, (kind, loc) in sources.items() if kind == "file" and not Path(loc).is_file()]
    if missing:
        from closedloop_nb.errors import DataValidationError

        raise DataValidationError([Problem(t, loc, None, "file not found", "error") for t, loc in missing])
    unknown = sorted(set(sources) - set(TABLES))
    if unknown:
        raise KeyError(f"unknown tables {unknown}; the canonical tables are {', '.join(TABLES)}")
    parts = {"format": FORMAT, "engine": "spark", "code": _code_hash(_CODE), "timezone": timezone or "",
             "channel_rules": _rules_hash(channel_rules),
             "inputs": {t: _fingerprint(spark, kind, loc) for t, (kind, loc) in sources.items()}}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.spark"
    built = False
    if not (path / "workspace.json").is_file():
        with _locked(folder / f"{key}.spark.lock"):
            if not (path / "workspace.json").is_file():
                _build(spark, path, sources, timezone, channel_rules, parts)
                built = True
    os.utime(path)
    return SparkWorkspace(path, key, spark, built=built)


# -- the ingest ------------------------------------------------------------------------------------
def _arrow_schema(spec: Any) -> Any:
    import pyarrow as pa

    types = {"string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"), "date": pa.date32(),
             "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
    fields = [pa.field(c.name, types[c.dtype]) for c in spec.columns]
    return pa.schema([*fields, pa.field(_ROW, pa.int64()), pa.field("_keep", pa.bool_()),
                      pa.field("_flag", pa.bool_()), pa.field("_wit", pa.string()),
                      pa.field("_fatal", pa.bool_())])


def _to_arrow(s: pd.Series, dtype: str, arrow_type: Any) -> Any:
    import pyarrow as pa

    if dtype == "string":
        return pa.array(s.astype("string"), type=pa.string(), from_pandas=True)
    if dtype == "timestamp":
        return pa.array(pd.to_datetime(s, utc=True), from_pandas=True).cast(arrow_type, safe=False)
    if dtype == "date":
        t = pd.to_datetime(s)
        if getattr(t.dt, "tz", None) is not None:
            t = t.dt.tz_localize(None)
        return pa.array(t, from_pandas=True).cast(pa.timestamp("us"), safe=False).cast(pa.date32())
    if dtype == "float":
        return pa.array(pd.to_numeric(s, errors="coerce").astype(float), type=pa.float64(), from_pandas=True)
    if dtype == "int":
        return pa.array(s.astype("Int64"), type=pa.int64(), from_pandas=True)
    return pa.array(s.astype("boolean"), type=pa.bool_(), from_pandas=True)


def _check_batches(table: str, timezone: str | None, file: str = ""):
    """The function each Spark task runs over its Arrow batches: ``_RowCheck`` on each, the typed
    rows out with ``_keep`` (not rejected by a row check), ``_flag`` (touched by any check),
    ``_wit`` (the columns this row is the batch's clean witness for) and ``_fatal``. Batches without
    a ``_file`` column get ``file`` (the same for every row, so not sent from the JVM row by row)."""
    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from closedloop_nb.ingest import _RowCheck
        from closedloop_nb.loaders import apply_mapping

        spec = table_spec(table)
        schema = _arrow_schema(spec)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            raw = batch.to_pandas()
            if _FILE not in raw:
                raw[_FILE] = file
            frame = apply_mapping(raw, None, table)[0]
            check = _RowCheck(frame, spec, timezone)
            check.run()
            if check.fatal:
                cols = [pa.nulls(1, f.type) for f in schema]
                cols[-1] = pa.array([True])
                yield pa.RecordBatch.from_arrays(cols, schema=schema)
                continue
            df, n = check.df, len(check.df)
            keep = ~check.reject
            witness = [""] * n
            for col in spec.names:
                if col in frame:
                    good = np.flatnonzero(frame[col].notna().to_numpy() & ~check.flagged)
                    if len(good):
                        i = int(good[0])
                        witness[i] = (witness[i] + "\x1f" + col) if witness[i] else col
            arrays = []
            for c in spec.columns:
                field = schema.field(c.name)
                try:
                    arrays.append(_to_arrow(df[c.name], c.dtype, field.type))
                except (TypeError, ValueError, pa.ArrowException):  # junk on rejected rows only
                    arrays.append(_to_arrow(df[c.name].where(keep), c.dtype, field.type))
            arrays += [pa.array(df[_ROW].to_numpy(np.int64)), pa.array(keep), pa.array(check.flagged),
                       pa.array([w or None for w in witness], type=pa.string()), pa.array(np.zeros(n, bool))]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return run


def _spark_schema(spec: Any) -> str:
    cols = [f"`{c.name}` {_SPARK_TYPES[c.dtype]}" for c in spec.columns]
    return ", ".join([*cols, f"{_ROW} bigint", "_keep boolean", "_flag boolean", "_wit string",
                      "_fatal boolean"])


def _numbered(spark: Any, frame: Any, cols: list[str]) -> Any:
    """Columns ``cols`` of ``frame`` (as read) with ``_row``: 1, 2, ... in file order (files in name
    order), from Spark's file metadata; for sources without it, in the order Spark reads the
    partitions."""
    from pyspark.sql import functions as F

    wanted = [F.col(f"`{c}`") for c in cols]
    try:
        if len(frame.inputFiles()) == 1:  # one file: its own row index (no job to count rows per file)
            return frame.select(*wanted, (F.col("_metadata.row_index") + 1).alias(_ROW))
        meta = frame.select(*wanted, F.col("_metadata.file_path").alias("_path"),
                            F.col("_metadata.row_index").alias("_idx"))
        sizes = sorted((r["_path"], r["count"]) for r in meta.groupBy("_path").count().collect())
        offsets, total = [], 0
        for p, n in sizes:
            offsets.append((p, total))
            total += n
        off = spark.createDataFrame(offsets, "_path string, _off bigint")
        return (meta.join(F.broadcast(off), "_path")
                .withColumn(_ROW, F.col("_off") + F.col("_idx") + 1).drop("_path", "_idx", "_off"))
    except Exception:  # noqa: BLE001  (no file metadata: number by partition, then position in it)
        tagged = frame.select(*wanted).withColumn("_pid", F.spark_partition_id()).withColumn(
            "_mono", F.monotonically_increasing_id())
        counts = sorted((r["_pid"], r["count"]) for r in tagged.groupBy("_pid").count().collect())
        offsets, total = [], 0
        for pid, n in counts:
            offsets.append((pid, total))
            total += n
        off = spark.createDataFrame(offsets, "_pid int, _off bigint")
        return (tagged.join(F.broadcast(off), "_pid")
                .withColumn(_ROW, F.col("_off") + 1
                            + (F.col("_mono") - F.shiftleft(F.col("_pid").cast("bigint"), 33)))
                .drop("_pid", "_mono", "_off"))


class _SparkTable:
    """One table's way through Spark: row checks in tasks, keys and references in Spark SQL."""

    def __init__(self, spark: Any, name: str, kind: str, location: str, timezone: str | None,
                 scratch: str) -> None:
        self.spark, self.name, self.kind, self.location, self.timezone = spark, name, kind, location, timezone
        self.scratch = scratch.rstrip("/")
        self._saved = 0
        self.spec = table_spec(name)
        self.file = location
        self.problems: list[Problem] = []
        self.upstream: list[Problem] = []
        self.counts: dict[str, float] = {}
        self.fatal = False
        self.collapsed = 0
        self.currencies: set[str] = set()
        self.value_in: float | None = None
        self.kept: Any = None
        self.whole: pd.DataFrame | None = None  # a table checked whole on the driver (fallback)

    def _save(self, frame: Any, label: str) -> Any:
        """``frame`` written once as Parquet in the scratch folder and read back from there.

        The ingest's intermediate tables (the checked rows, the keys that repeat, the rows a problem
        touches) live on disk, not in the JVM's memory: a 10M-row table cached or checkpointed in
        memory is several copies of it in the heap (deserialized rows), and what is left for the
        aggregations of the key check runs out (``AGGREGATE_OUT_OF_MEMORY`` at a 2g driver). Parquet
        is compressed and columnar, so each later step reads only the columns it needs.
        """
        self._saved += 1
        where = f"{self.scratch}/{self.name}.{self._saved}.{label}"
        frame.write.mode("overwrite").parquet(where)
        return self.spark.read.parquet(where)

    # -- reading ----------------------------------------------------------------------------------
    def raw(self) -> Any:
        """The raw table in Spark, canonical columns only, with ``_file`` and ``_row``."""
        from pyspark.sql import functions as F

        if self.kind == "file" and not self.location.lower().endswith((".parquet", ".pq")):
            # CSV and other text: the loader's reading rules are pandas, so the file is read on the driver
            from closedloop_nb.loaders import read_mapped

            frame, found = read_mapped(Path(self.location), self.name)
            self.upstream = found
            body = frame.drop(columns=[_FILE]).assign(**{_ROW: frame[_ROW].to_numpy(np.int64)})
            return self.spark.createDataFrame(_arrow_of(body)).withColumn(_FILE, F.lit(self.location))
        frame = self.spark.table(self.location) if self.kind == "table" else self.spark.read.parquet(
            self.location)
        from closedloop_nb.loaders import unknown_columns

        self.upstream = unknown_columns(list(frame.columns), self.name, self.location)  # as read_mapped
        wanted = [c for c in frame.columns if c in self.spec.names]
        numbered = _numbered(self.spark, frame, wanted)
        return numbered.withColumn(_FILE, F.lit(self.location))

    # -- pass 1: row checks -----------------------------------------------------------------------
    def check_rows(self) -> None:
        from pyspark.sql import functions as F

        from closedloop_nb.ingest import _RowCheck
        from closedloop_nb.loaders import apply_mapping

        raw = self.raw()
        self._raw = raw
        checked = raw.drop(_FILE).mapInArrow(_check_batches(self.name, self.timezone, self.location),
                                             _spark_schema(self.spec))
        staged = self._save(checked, "checked")
        vc, cur = self.spec.value_column, CURRENCY_COLUMNS.get(self.name)
        extra = []
        if vc:
            v = F.col(f"`{vc}`")
            extra.append(F.sum(F.when(v.isNull() | F.isnan(v) | (F.abs(v) == float("inf")), 0.0)
                               .otherwise(F.abs(v))).alias("value_in"))
        if cur:
            extra.append(F.collect_set(F.col(f"`{cur}`")).alias("currencies"))
        summary = staged.agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("_fatal").cast("int")).alias("fatal"),
                             F.sum(F.col("_flag").cast("int")).alias("flagged"), *extra).collect()[0]
        if summary["fatal"]:
            return self._whole_table()
        self.n_rows = int(summary["n"])
        if self.n_rows == 0:
            frame = apply_mapping(raw.toArrow().to_pandas(), None, self.name)[0]
            check = _RowCheck(frame, self.spec, self.timezone)
            check.run()
            if check.fatal:
                return self._whole_table()
            self.problems = check.problems
        elif summary["flagged"]:
            wit = (staged.filter(~F.col("_flag") & F.col("_wit").isNotNull())
                   .select(_ROW, F.explode(F.split("_wit", "\x1f")).alias("col"))
                   .groupBy("col").agg(F.min(_ROW).alias(_ROW)).select(_ROW))
            rows = staged.filter("_flag").select(_ROW).union(wit).distinct()
            small = summary["flagged"] < 1_000_000
            subset = raw.join(F.broadcast(rows) if small else rows, _ROW, "left_semi")
            sub = subset.toArrow().to_pandas().sort_values(_ROW, kind="stable").reset_index(drop=True)
            sub[_ROW] = sub[_ROW].astype(np.int64)
            recheck = _RowCheck(apply_mapping(sub, None, self.name)[0], self.spec, self.timezone)
            recheck.run()
            if recheck.fatal:  # e.g. one bad number per batch and no good one: fatal on the whole table
                return self._whole_table()
            self.problems = [p for p in recheck.problems if not _is_mixed(p)]
        self.file = self.location
        self.value_in = float(summary["value_in"] or 0.0) if vc else None
        self.currencies = set(summary["currencies"]) if cur else set()
        self._mixed_problem(staged)
        cols = [f"`{c}`" for c in self.spec.names]
        self.kept = staged.filter("_keep").select(*cols, _ROW)

    def _currency_and_money(self, staged: Any) -> None:
        """The currencies and the money in (every row checked), then :meth:`_mixed_problem`."""
        from pyspark.sql import functions as F

        vc, cur = self.spec.value_column, CURRENCY_COLUMNS.get(self.name)
        if cur:
            found = staged.filter(F.col(f"`{cur}`").isNotNull()).select(cur).distinct().collect()
            self.currencies = {r[0] for r in found}
        if vc:
            v = F.col(f"`{vc}`")
            finite = F.when(v.isNull() | F.isnan(v) | (F.abs(v) == float("inf")), 0.0).otherwise(F.abs(v))
            self.value_in = float(staged.agg(F.sum(finite)).collect()[0][0] or 0.0)
        self._mixed_problem(staged)

    def _mixed_problem(self, staged: Any) -> None:
        """The mixed-currency warning, which ``_TableCheck`` computes over the rows its row checks
        kept (per-currency totals from Spark, worded by
        :func:`closedloop_nb.money.mixed_currency_problem`)."""
        from pyspark.sql import functions as F

        vc, cur = self.spec.value_column, CURRENCY_COLUMNS.get(self.name)
        if cur and len(self.currencies) > 1:
            from closedloop_nb.money import mixed_currency_problem

            kept = staged.filter("_keep")
            agg = kept.groupBy(F.upper(F.col(f"`{cur}`")).alias("c")).agg(
                F.count(F.lit(1)).alias("n"), *([F.sum(f"`{vc}`").alias("v")] if vc else [])).collect()
            rows = []
            for r in agg:
                if r["c"] is None:
                    rows += [{cur: None, **({vc: 0.0} if vc else {})}] * int(r["n"])
                    if vc and rows:
                        rows[-1] = {cur: None, vc: float(r["v"] or 0.0)}
                else:
                    rows.append({cur: r["c"], **({vc: float(r["v"] or 0.0)} if vc else {})})
            frame = pd.DataFrame(rows, columns=[cur, *([vc] if vc else [])])
            if vc:
                frame[vc] = frame[vc].astype(float)
            mixed = mixed_currency_problem(frame, self.name, self.location, cur, vc)
            if mixed is not None:
                self.problems.append(mixed)

    def _whole_table(self) -> None:
        """The reference, on the driver: the whole table checked by ``validation._TableCheck``."""
        from closedloop_nb.ingest import _RowCheck
        from closedloop_nb.loaders import apply_mapping
        from closedloop_nb.validation import _counts, _TableCheck, _upstream_rows

        raw = self._raw.toArrow().to_pandas().sort_values(_ROW, kind="stable").reset_index(drop=True)
        frame = apply_mapping(raw, None, self.name)[0]
        check = _TableCheck(frame, self.spec, self.timezone)
        check.run()
        if check.fatal:
            self.fatal = True
            self.problems = check.problems
            up = tuple(_upstream_rows(self.upstream, self.name, s) for s in ("info", "collapsed", "rejected"))
            self.counts = _counts(check, *up)
            return
        rows = _RowCheck(frame, self.spec, self.timezone)
        rows.run()
        self.problems = [p for p in rows.problems if not _is_mixed(p)]
        self.n_rows = len(rows.df)
        import pyarrow as pa

        batches = _check_batches(self.name, self.timezone)(iter(_arrow_of(raw).to_batches()))
        table = pa.Table.from_batches(list(batches), schema=_arrow_schema(self.spec))
        staged = self._save(self.spark.createDataFrame(table, _spark_schema(self.spec)), "checked")
        self._currency_and_money(staged)
        cols = [f"`{c}`" for c in self.spec.names]
        self.kept = staged.filter("_keep").select(*cols, _ROW)
        self.file = self.location

    # -- pass 2: keys and references --------------------------------------------------------------
    def _problem(self, column: str, reason: str, severity: str, rows: Any) -> Any:
        """Add a problem for the kept rows whose ``_row`` is in ``rows``; returns their ``_row`` (and
        value) as saved (or None)."""
        from pyspark.sql import functions as F

        vc = self.spec.value_column
        hit = self._save(self.kept.join(rows.select(_ROW).distinct(), _ROW, "left_semi")
                         .select(_ROW, *([f"`{vc}`"] if vc else [])), "hit")
        agg = hit.agg(F.count(F.lit(1)).alias("n"),
                      *([F.sum(F.abs(F.col(f"`{vc}`"))).alias("v")] if vc else [])).collect()[0]
        n = int(agg["n"])
        if not n:
            return None
        from closedloop_nb.validation import _SHOW

        first = [int(r[0]) for r in hit.select(_ROW).orderBy(_ROW).limit(_SHOW).collect()]
        value = float(agg["v"] or 0.0) if vc else 0.0
        if len(self.currencies) > 1:
            value = float("nan")
        self.problems.append(Problem(self.name, self.file, column, reason, severity,  # type: ignore[arg-type]
                                     n, tuple(first), value))
        return hit

    def _delete(self, rows: Any) -> None:
        """Drop the rows ``rows`` (saved by :meth:`_problem`: few, as a rule, so the anti join is a
        broadcast) from the kept rows, lazily: the final write (or the next check) applies it."""
        if rows is not None:
            self.kept = self.kept.join(rows.select(_ROW), _ROW, "left_anti")

    def check_keys(self) -> None:
        """``_TableCheck._check_keys`` in Spark: exact duplicate rows folded into the first, then keys
        that still repeat rejected in every copy."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        from closedloop_nb.ingest import to_pandas
        from closedloop_nb.privacy import mask_contact_details

        key = list(self.spec.key)
        if not key:
            return
        kcols = [F.col(f"`{k}`") for k in key]
        # one aggregation over the key columns alone (read from Parquet), spilling as it must; the
        # keys that repeat are saved, so the rows that carry them are found without aggregating again
        repeated = self._save(self.kept.groupBy(*kcols).count().filter("count > 1").drop("count"), "repeated")
        if not repeated.head(1):
            return
        cond = [self.kept[f"`{k}`"].eqNullSafe(repeated[f"`{k}`"]) for k in key]
        dup = self._save(self.kept.join(repeated, cond, "left_semi"), "duplicates")
        every = [F.col(f"`{c}`") for c in self.spec.names]
        exact = dup.withColumn("_n", F.row_number().over(Window.partitionBy(*every).orderBy(_ROW))) \
            .filter("_n > 1").select(_ROW)
        folded = self._problem(", ".join(key), "exact duplicate row (kept once)", "collapsed", exact)
        if folded is not None:
            self.collapsed = int(folded.count())
            dup = dup.join(folded.select(_ROW), _ROW, "left_anti")
            self._delete(folded)
        again = dup.withColumn("_n", F.count(F.lit(1)).over(Window.partitionBy(*kcols))).filter("_n > 1")
        first = again.orderBy(_ROW).select(*kcols).limit(1).toArrow()
        if first.num_rows:
            row = to_pandas(first, self.spec)
            shown = "/".join(mask_contact_details(str(v))[0][:40] for v in row.iloc[0].tolist())
            reason = f"duplicate {'/'.join(key)} with different values (e.g. {shown}); all copies rejected"
            self._delete(self._problem(", ".join(key), reason, "rejected", again.select(_ROW)))

    def check_references(self, usable: dict[str, _SparkTable]) -> None:
        from pyspark.sql import functions as F

        for fk in self.spec.foreign_keys:
            if fk.ref_table not in usable:
                continue
            parent = usable[fk.ref_table].kept
            refs = (parent.select(F.col(f"`{fk.ref_column}`").alias("_ref"))
                    .filter("_ref IS NOT NULL").distinct())
            child = self.kept.filter(F.col(f"`{fk.column}`").isNotNull())
            unknown = child.join(refs, child[f"`{fk.column}`"] == refs["_ref"], "left_anti").select(_ROW)
            reason = f"{fk.column} not found in {fk.ref_table}.{fk.ref_column}"
            if fk.reject:
                self._delete(self._problem(fk.column, reason, "rejected", unknown))
            else:
                self._problem(fk.column, reason + " (kept)", "warning", unknown)

    def finish_counts(self) -> None:
        from pyspark.sql import functions as F

        from closedloop_nb.validation import _upstream_rows

        if self.fatal:
            return
        vc = self.spec.value_column
        money = vc and self.value_in is not None and len(self.currencies) <= 1
        aggs = [F.count(F.lit(1)).alias("n")]
        if money:
            v = F.col(f"`{vc}`")
            aggs.append(F.sum(F.when(v.isNull() | F.isnan(v) | (F.abs(v) == float("inf")), 0.0)
                              .otherwise(F.abs(v))).alias("v"))
        row = self.kept.agg(*aggs).collect()[0]
        kept = int(row["n"])
        filtered, folded, rejected = (_upstream_rows(self.upstream, self.name, s)
                                      for s in ("info", "collapsed", "rejected"))
        self.counts = {"rows_in": self.n_rows + filtered + folded + rejected, "rows_filtered": filtered,
                       "rows_collapsed": self.collapsed + folded,
                       "rows_rejected": self.n_rows - kept - self.collapsed + rejected, "rows_kept": kept}
        if money:
            value_kept = float(row["v"] or 0.0)
            self.counts.update(value_in=self.value_in, value_kept=value_kept,
                               value_rejected=self.value_in - value_kept)


def _arrow_of(frame: pd.DataFrame) -> Any:
    """A raw pandas frame as Arrow for Spark: text columns as plain strings (values as read)."""
    import pyarrow as pa

    arrays, names = [], []
    for c in frame.columns:
        s = frame[c]
        if s.dtype == object or isinstance(s.dtype, (pd.StringDtype, pd.CategoricalDtype)):
            text = s.astype(object).where(s.notna(), None)
            arrays.append(pa.array([None if v is None else str(v) for v in text], type=pa.string()))
        else:
            arr = pa.array(s, from_pandas=True)
            if pa.types.is_large_string(arr.type):
                arr = arr.cast(pa.string())
            arrays.append(arr)
        names.append(str(c))
    return pa.Table.from_arrays(arrays, names=names)


def _is_mixed(p: Problem) -> bool:
    return p.severity == "warning" and p.reason.startswith("several currencies in one table")


def _fill_channels(spark: Any, t: _SparkTable, rules: ChannelRules | None, report: ValidationReport) -> None:
    """``validation._fill_channels`` over the distinct untagged combinations (as the DuckDB ingest)."""
    from pyspark.sql import functions as F

    from closedloop_nb.channels import FIELDS, group_channels
    from closedloop_nb.ingest import to_pandas, unassigned_problem
    from closedloop_nb.validation import _SHOW, PATH_SEP, PATH_SEP_SUBSTITUTE

    have = [f for f in FIELDS if f in t.spec.names]
    untagged = t.kept.filter(F.col("channel").isNull())
    combos = (untagged.groupBy(*[F.col(f"`{f}`") for f in have])
              .agg(F.count(F.lit(1)).alias("_n"), F.min(_ROW).alias("_first")).orderBy("_first").toArrow())
    if combos.num_rows == 0:
        return
    frame = to_pandas(combos.drop(["_n", "_first"]), t.spec).assign(_n=combos.column("_n").to_numpy())
    expanded = frame.loc[frame.index.repeat(frame["_n"].to_numpy())].drop(columns="_n")
    result = group_channels(expanded, rules)
    channel = result.channel.astype(str).groupby(level=0, sort=False).first()
    frame["_channel"] = channel.reindex(frame.index).to_numpy()
    lookup = spark.createDataFrame(frame[[*have, "_channel"]].astype(object).where(
        frame[[*have, "_channel"]].notna(), None), ", ".join(f"`{f}` string" for f in [*have, "_channel"]))
    lookup = lookup.select(*[F.col(f"`{f}`").alias(f"_c_{f}") for f in have], "_channel")
    cond = [t.kept[f"`{f}`"].eqNullSafe(lookup[f"_c_{f}"]) for f in have]
    joined = t.kept.join(F.broadcast(lookup), cond, "left")
    rows: tuple[int, ...] = ()
    if result.n_unassigned:
        first = (joined.filter(F.col("channel").isNull() & (F.col("_channel") == UNASSIGNED))
                 .select(_ROW).orderBy(_ROW).limit(_SHOW).collect())
        rows = tuple(int(r[0]) for r in first)
    filled = joined.withColumn("channel", F.coalesce(
        F.col("channel"), F.replace(F.col("_channel"), F.lit(PATH_SEP), F.lit(PATH_SEP_SUBSTITUTE))))
    t.kept = filled.select(*[F.col(f"`{c}`") for c in t.spec.names], _ROW)  # applied by the final write
    if result.n_unassigned:
        report.problems.append(unassigned_problem(t.file, result, rows))


def ingest_spark(spark: Any, sources: dict[str, tuple[str, str]], timezone: str | None = None,
                 channel_rules: ChannelRules | None = None, *,
                 scratch: str | Path) -> tuple[dict[str, Any], ValidationReport]:
    """Validate every source in Spark: the kept rows of each usable table (lazy Spark DataFrames with
    ``_row`` over the Parquet files the checks saved in ``scratch``, a folder the driver and the
    executors share; keep it until they are written) and the report (as ``load_dataset``'s)."""
    from closedloop_nb.ingest import ORDER, _read_all

    tables = {name: _SparkTable(spark, name, kind, loc, timezone, str(scratch))
              for name, (kind, loc) in sources.items()}
    _read_all(tables)  # pass 1 over every table, unreadable files reported together (as the DuckDB ingest)
    for t in tables.values():
        if not t.fatal:
            t.check_keys()
    usable: dict[str, _SparkTable] = {}
    for name in [n for n in ORDER if n in tables]:
        t = tables[name]
        if not t.fatal:
            t.check_references(usable)
            usable[name] = t
    report = ValidationReport()
    for t in tables.values():
        report.problems.extend(t.upstream)
    for name, t in tables.items():
        t.finish_counts()
        report.problems.extend(t.problems)
        report.counts[name] = t.counts
    if "touchpoints" in usable:
        _fill_channels(spark, tables["touchpoints"], channel_rules, report)
    return {name: t.kept for name, t in usable.items()}, report


def _build(spark: Any, path: Path, sources: dict[str, tuple[str, str]], timezone: str | None,
           rules: ChannelRules | None, parts: dict) -> None:
    """Ingest into a temporary folder beside ``path`` (Parquet per table), then rename it into place."""
    from closedloop_nb.workspace import _report_to_json

    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        kept, report = ingest_spark(spark, sources, timezone, rules, scratch=tmp / "_scratch")
        for name, frame in kept.items():
            frame.write.parquet(str(tmp / name))
        if "identities" in kept:
            spark.read.parquet(str(tmp / "identities")).createOrReplaceTempView("_cl_identities")
            spark.sql("SELECT visitor_id, person_id FROM (SELECT visitor_id, person_id, ROW_NUMBER() OVER "
                      "(PARTITION BY visitor_id ORDER BY matched_at, person_id) AS rn FROM _cl_identities) "
                      "WHERE rn = 1").write.parquet(str(tmp / "identity_map"))
            spark.catalog.dropTempView("_cl_identities")
        shutil.rmtree(tmp / "_scratch", ignore_errors=True)
        (tmp / "workspace.json").write_text(json.dumps(
            {"report": json.loads(_report_to_json(report)), "key": parts, "tables": list(kept)},
            sort_keys=True), "utf-8")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the workspace ---------------------------------------------------------------------------------
class _SparkJourneyEngine:
    """The journey engine of :mod:`closedloop_nb.journeys` (``_Spark``) over a workspace's views.

    With ``stage`` (a folder being built), each table it creates is written there as Parquet and
    read back (the journey touches straight to ``stage/journey_touches``, where they are kept; the
    others to ``stage/_<name>``, removed before the folder is renamed into place): the touches are
    computed once, and the path table and reconciliation read them from disk rather than from a
    copy in the JVM's memory. Without it, tables are cached (small, later queries).
    """

    def __init__(self, con: Any, stage: Path | None = None) -> None:
        from closedloop_nb.journeys import _Spark

        self._spark = _Spark(con.spark)
        self.spark = con.spark
        self.con = con
        self.stage = stage

    def create(self, name: str, sql: str) -> None:
        self.con._claim()
        frame = self.spark.sql(sql)
        if self.stage is None:
            frame = frame.cache()
        else:
            where = self.stage / ("journey_touches" if name.endswith("journey_touches") else f"_{name}")
            frame.write.parquet(str(where))
            frame = self.spark.read.parquet(str(where))
        self.con.view(name, frame)

    def frame(self, sql: str) -> pd.DataFrame:
        self.con._claim()
        return self.spark.sql(sql).toArrow().to_pandas()

    def columns(self, name: str) -> dict[str, str]:
        return {f.name: f.dataType.simpleString() for f in self.con.table(name).schema.fields}

    def naive(self, type_name: str) -> bool:
        return type_name == "timestamp_ntz"


class SparkWorkspace(TableMapping):
    """A run's validated tables on Spark, readable as a ``Mapping[str, pandas.DataFrame]``, with the
    interface of :class:`closedloop_nb.workspace.Workspace`: ``ws.con`` runs the metrics' (DuckDB
    dialect) SQL on Spark (:class:`closedloop_nb.spark_sql.SparkConnection`), ``ws.spark`` is the
    session, ``ws.table(name)`` a table as a Spark DataFrame, ``ws.journeys(...)`` builds on Spark.

    Attributes
    ----------
    path, key, report, built, inputs
        As :class:`~closedloop_nb.workspace.Workspace` (``path``: the folder of Parquet tables).
    """

    engine = "spark"
    #: Money is as recorded: conversion to a reporting currency (``fx_rates``) is not built on Spark.
    reporting_currency: str | None = None
    only_currency: str | None = None

    def __init__(self, path: Path, key: str, spark: Any, built: bool = False) -> None:
        from closedloop_nb.ingest import ORDER
        from closedloop_nb.spark_sql import SparkConnection
        from closedloop_nb.workspace import _report_from_json

        self.path, self.key, self.spark, self.built = Path(path), key, spark, built
        meta = json.loads((self.path / "workspace.json").read_text("utf-8"))
        self.report: ValidationReport = _report_from_json(json.dumps(meta["report"]))
        self.inputs: dict[str, Any] = meta["key"]
        self._tables = [t for t in ORDER if t in meta["tables"]]
        self._numbered = {t: spark.read.parquet(str(self.path / t)) for t in self._tables}
        views = {t: frame.drop(_ROW) for t, frame in self._numbered.items()}
        if (self.path / "identity_map").is_dir():
            views["identity_map"] = spark.read.parquet(str(self.path / "identity_map"))
        self.con = SparkConnection(spark, views)
        if "identity_map" in views and "touchpoints" in views:
            self.con.view("stitched_touches", self.con.sql(
                "SELECT tp.*, m.person_id FROM touchpoints tp LEFT JOIN identity_map m "
                "ON tp.visitor_id = m.visitor_id").frame)
        self._frames: dict[str, pd.DataFrame] = {}
        self._journeys: dict[str, Any] = {}

    # -- Mapping ----------------------------------------------------------------------------------
    def _arrow(self, name: str) -> Any:
        return self._numbered[name].orderBy(_ROW).drop(_ROW).toArrow()

    # -- money ------------------------------------------------------------------------------------
    def currencies(self) -> list[str]:
        """The currencies of the money tables' rows, sorted (``(no currency)`` last when some rows
        have one and others none), counted in Spark."""
        from closedloop_nb.money import UNKNOWN

        found: set[str] = set()
        blank = False
        for name, col in CURRENCY_COLUMNS.items():
            if name in self._tables:
                for (code,) in self.con.sql(f'SELECT DISTINCT "{col}" FROM "{name}"').fetchall():
                    blank |= code is None
                    if code is not None:
                        found.add(str(code).upper())
        return sorted(found) + ([UNKNOWN] if blank and found else [])

    def in_currency(self, currency: str) -> SparkWorkspace:
        """Not built on Spark: report one currency at a time on the DuckDB engine."""
        raise NotImplementedError("per-currency slices of a Spark workspace are not built; money in several "
                                  "currencies: run this report with engine: duckdb")

    # -- queries ----------------------------------------------------------------------------------
    def table(self, name: str) -> Any:
        """Table ``name`` as a Spark DataFrame (validated; no ``_row``)."""
        return self.con.table(name)

    def rows(self, name: str) -> int:
        """Number of validated rows of table ``name``."""
        if name not in self._tables:
            raise KeyError(f"no table {name!r} in this workspace; it has {', '.join(self._tables)}")
        return int(self._numbered[name].count())

    def value_counts(self, name: str, column: str) -> pd.Series:
        """``ws[name][column].value_counts()``, counted in Spark."""
        if column not in table_spec(name).names:
            raise KeyError(f"table {name!r} has no column {column!r}")
        frame = self.con.sql(f'SELECT "{column}", COUNT(*) AS count FROM "{name}" '
                             f'WHERE "{column}" IS NOT NULL GROUP BY ALL '
                             f'ORDER BY count DESC, "{column}"').df()
        return frame.set_index(column)["count"]

    def journeys(self, conversion: str = "lead", lookback_days: int = 90, level: str = "channel",
                 **options: Any):
        """The journeys ending at ``conversion``, built on Spark once per set of arguments and kept as
        Parquet beside the tables (the next notebook reads them); options as
        :meth:`closedloop_nb.workspace.Workspace.journeys` (``engine`` and ``spark`` are ignored:
        this workspace is on Spark)."""
        from closedloop_nb import journeys as jmod
        from closedloop_nb.workspace import _locked

        for ignored in ("engine", "spark", "progress", "memory_limit"):
            options.pop(ignored, None)
        args = jmod.journey_arguments(conversion, lookback_days, level, **options)
        jkey = hashlib.sha256(json.dumps({"workspace": self.key, "code": _code_hash(_JOURNEY_CODE), **args},
                                         sort_keys=True).encode()).hexdigest()[:16]
        if jkey in self._journeys:
            return self._journeys[jkey]
        folder = self.path.with_name(f"{self.key}.spark.journeys") / jkey
        prefix = f"_j{jkey}"
        if not folder.is_dir():
            with _locked(folder.with_name(f"{jkey}.lock")):
                if not folder.is_dir():
                    self._write_journeys(args, folder, prefix)
        touches = self.spark.read.parquet(str(folder / "journey_touches"))
        self.con.view(f"{prefix}_journey_touches", touches)
        paths = pd.read_parquet(folder / "paths.parquet")
        recon = pd.read_parquet(folder / "reconciliation.parquet")
        j = jmod.Journeys(paths, recon, _SparkJourneyEngine(self.con), _table=f"{prefix}_journey_touches")
        self._journeys[jkey] = j
        return j

    def _write_journeys(self, args: dict[str, Any], folder: Path, prefix: str) -> None:
        from closedloop_nb import journeys as jmod

        items = {t: f"<workspace table {t}>" for t in jmod._TABLES if t in self._tables}
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        eng = _SparkJourneyEngine(self.con, stage=tmp)
        made = [f"{prefix}_{n}" for n in ("conversions", "conversion_people", "journey_touches")]
        try:
            paths, recon = jmod._run(eng, items, args, "spark", prefix=f"{prefix}_")
            for scratch in tmp.glob("_*"):
                shutil.rmtree(scratch, ignore_errors=True)
            paths.to_parquet(tmp / "paths.parquet", index=False)
            recon.to_parquet(tmp / "reconciliation.parquet", index=False)
            (tmp / "arguments.json").write_text(json.dumps(args, indent=2), "utf-8")
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            for name in made:
                frame = self.con.views.pop(name, None)
                if frame is not None:
                    frame.unpersist()
                    self.spark.catalog.dropTempView(name)

    def close(self) -> None:
        """Drop this workspace's views (the session stays: it may be the caller's)."""
        for name in list(self.con.views):
            with contextlib.suppress(Exception):
                self.con.unregister(name)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}={self.rows(t):,}" for t in self._tables)
        state = "built" if self.built else "reused"
        return f"<SparkWorkspace {self.key} ({state}): {sizes}; {self.report!r}>"

    def _repr_html_(self) -> str:
        return self.report.to_html()
