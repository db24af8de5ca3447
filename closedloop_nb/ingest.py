"""Validation in the engine: canonical tables checked chunk by chunk into DuckDB, with the report
:func:`closedloop_nb.validation.load_dataset` gives.

One implementation of the rules. The checks that look at one row at a time (types, ranges, allowed
values, missing values, time zones: everything :class:`closedloop_nb.validation._TableCheck` does
before its key check) run as they are, in pandas, on chunks of ``chunk_rows`` rows streamed from the
file; a rule added to ``validation.py`` is therefore mirrored here with no change. The checks that
compare rows with each other run as SQL over the whole table in DuckDB:

* exact duplicate rows (folded into the first), then duplicate keys with different values (every
  copy rejected), as ``_TableCheck._check_keys``;
* references to unknown rows of another table (orphans), in the order ``validate_tables`` follows,
  so that a lead rejected makes its deals orphans;
* the channel rules for touches without a channel, evaluated once per distinct combination.

The report is the same as the pandas one: when a table spans several chunks, the problems of its
rows are recomputed from the flagged rows alone (plus one unflagged row per column, so that
whole-column decisions such as "no value is a number" come out as on the whole table), which gives
the same reasons, examples, counts, first rows and money. A chunk with a fatal problem sends its
table through the whole-table pandas check, the reference.

Examples
--------
>>> import duckdb
>>> from closedloop_nb.config import SAMPLE_DIR
>>> con = duckdb.connect()
>>> report = ingest({"leads": SAMPLE_DIR / "leads.parquet"}, con)
>>> con.sql("SELECT COUNT(*) FROM leads").fetchall()[0][0] == report.counts["leads"]["rows_kept"]
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.channels import UNASSIGNED, ChannelRules, group_channels
from closedloop_nb.errors import Problem
from closedloop_nb.loaders import FILE, ROW, apply_mapping, read_mapped
from closedloop_nb.privacy import mask_contact_details
from closedloop_nb.schema import CURRENCY_COLUMNS, TABLES, TableSpec, pandas_dtype, table_spec
from closedloop_nb.validation import (
    _SHOW,
    PATH_SEP,
    PATH_SEP_SUBSTITUTE,
    ValidationReport,
    _counts,
    _show,
    _TableCheck,
    _upstream_rows,
)

__all__ = ["CHUNK_ROWS", "ORDER", "ingest", "to_pandas"]

#: Rows checked in pandas at a time (about 0.5 GB of touchpoints in memory at once).
CHUNK_ROWS = 1_000_000
#: The order tables are checked against each other in (parents before the rows that point at them).
ORDER = ("touchpoints", "leads", "identities", "deals", "stage_history", "deal_contacts", "orders",
         "subscriptions", "spend", "fx_rates")
_DUCK_TYPES = {"string": "VARCHAR", "timestamp": "TIMESTAMPTZ", "date": "DATE", "float": "DOUBLE",
               "int": "BIGINT", "bool": "BOOLEAN"}


class _RowCheck(_TableCheck):
    """The pandas checks of one chunk, without the key check (done in SQL over the whole table),
    remembering every row any problem touched."""

    def __init__(self, frame: pd.DataFrame, spec: TableSpec, timezone: str | None):
        super().__init__(frame, spec, timezone)
        self.flagged = np.zeros(len(self.df), dtype=bool)

    def add(self, column: str | None, reason: str, mask: np.ndarray | None = None,
            severity: str = "rejected") -> None:
        if mask is not None:
            self.flagged |= mask
        super().add(column, reason, mask, severity)

    def _check_keys(self) -> None:
        return


def _fetch(con: Any, sql: str) -> pd.DataFrame:
    """A query's result as pandas, through Arrow (NULL as NaN/None, not masked arrays)."""
    return con.sql(sql).to_arrow_table().to_pandas()


def pa_table(columns: dict[str, list]) -> Any:
    import pyarrow as pa

    return pa.table({k: pa.array(v, pa.int64()) for k, v in columns.items()})


def _scalar(con: Any, sql: str) -> Any:
    return con.execute(sql).fetchall()[0][0]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _chunks(path: Path, table: str, chunk_rows: int, found: list[Problem]):
    """Mapped raw chunks of one canonical file (``_file`` and ``_row`` as :func:`read_file` sets).

    Parquet files larger than one chunk are streamed by row groups; anything else is read whole by
    the loader (so every reading rule of ``loaders.read_file`` applies, its problems added to
    ``found``) and cut into chunks.
    """
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")) and path.is_file() and path.stat().st_size > 0:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if pf.metadata.num_rows > chunk_rows:
            wanted = [c for c in pf.schema_arrow.names if c in table_spec(table).names]
            start = 0
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=wanted):
                raw = batch.to_pandas()
                raw[FILE] = str(path)
                raw[ROW] = np.arange(start + 1, start + len(raw) + 1)
                start += len(raw)
                yield apply_mapping(raw, None, table)[0]
            return
    frame, problems = read_mapped(path, table)
    found.extend(problems)
    for start in range(0, max(len(frame), 1), chunk_rows):
        yield frame.iloc[start:start + chunk_rows].reset_index(drop=True)


class _Table:
    """One table's way through the engine: chunks checked in pandas, kept rows staged in DuckDB."""

    def __init__(self, name: str, path: Path, con: Any, timezone: str | None, chunk_rows: int):
        self.name, self.path, self.con, self.timezone = name, path, con, timezone
        self.spec = table_spec(name)
        self.chunk_rows = chunk_rows
        self.stage = f"_stage_{name}"
        self.problems: list[Problem] = []
        self.counts: dict[str, float] = {}
        self.fatal = False
        self.file = str(path)
        self.upstream: list[Problem] = []  # problems found while reading (ragged rows, delimiters, ...)
        self.currencies: set[str] = set()
        self.collapsed = 0

    # -- pass 1: row checks per chunk -----------------------------------------------------------
    def check_rows(self) -> None:
        flagged_raw: list[pd.DataFrame] = []
        witnesses: dict[str, pd.DataFrame] = {}
        chunk_problems: list[Problem] = []
        values: list[np.ndarray] = []
        n_rows = n_chunks = 0
        vc = self.spec.value_column
        cur = CURRENCY_COLUMNS.get(self.name)
        self.upstream, self.currencies = [], set()
        self.con.execute(f"DROP TABLE IF EXISTS {self.stage}")
        for raw in _chunks(self.path, self.name, self.chunk_rows, self.upstream):
            n_chunks += 1
            check = _RowCheck(raw, self.spec, self.timezone)
            check.run()
            if check.fatal:
                return self._whole_table()
            self.file = check.file
            n_rows += len(check.df)
            chunk_problems.extend(check.problems)
            if vc and vc in check.df and pd.api.types.is_numeric_dtype(check.df[vc]):
                values.append(check.df[vc].to_numpy(float))
            if cur and cur in check.df:
                self.currencies.update(check.df[cur].dropna().unique().tolist())
            if check.flagged.any():
                flagged_raw.append(raw.loc[check.flagged])
            for col in self.spec.names:
                if col not in witnesses and col in raw:
                    good = np.flatnonzero(raw[col].notna().to_numpy() & ~check.flagged)
                    if len(good):
                        witnesses[col] = raw.iloc[good[:1]]
            self._stage(check)
        if n_chunks > 1 and flagged_raw:
            subset = pd.concat([*flagged_raw, *witnesses.values()], ignore_index=True)
            subset = subset.drop_duplicates(ROW).sort_values(ROW, kind="stable").reset_index(drop=True)
            recheck = _RowCheck(subset, self.spec, self.timezone)
            recheck.run()
            if recheck.fatal:  # e.g. one bad number per chunk and no good one: fatal on the whole table
                return self._whole_table()
            chunk_problems = recheck.problems
        elif n_chunks > 1:
            chunk_problems = [p for p in chunk_problems if p.n_rows]  # "no data rows" only once
        self.problems = chunk_problems
        self.n_rows = n_rows
        self.values = np.concatenate(values) if values else None

    def _stage(self, check: _RowCheck) -> None:
        import pyarrow as pa

        keep = ~check.reject
        cols = [c for c in self.spec.names if c in check.df]
        frame = check.df[[*cols, ROW]] if keep.all() else check.df.loc[keep, [*cols, ROW]]
        self.con.register("_chunk", pa.Table.from_pandas(frame, preserve_index=False))
        select = ", ".join(f"CAST({_quote(c)} AS {_DUCK_TYPES[self.spec.column(c).dtype]}) AS {_quote(c)}"
                           for c in cols) + f", CAST({ROW} AS BIGINT) AS {ROW}"
        exists = _scalar(self.con, f"SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = '{self.stage}'")
        if exists:
            self.con.execute(f"INSERT INTO {self.stage} SELECT {select} FROM _chunk")
        else:
            self.con.execute(f"CREATE TABLE {self.stage} AS SELECT {select} FROM _chunk")
        self.con.unregister("_chunk")

    def _whole_table(self) -> None:
        """The reference: the whole table checked by ``validation._TableCheck`` (keys included)."""
        frame, found = read_mapped(self.path, self.name)
        check = _TableCheck(frame, self.spec, self.timezone)
        check.run()
        self.file = check.file
        if check.fatal:
            self.fatal = True
            self.upstream = found
            self.problems = check.problems
            self.counts = _counts(check, *self._upstream_counts())
            return
        # a fatal problem of one chunk only (e.g. a chunk with no valid number): one chunk is the table
        self.chunk_rows = max(len(frame), 1)
        self.check_rows()

    # -- pass 2: keys and references in SQL ------------------------------------------------------
    def _problem(self, column: str, reason: str, severity: str, rows_sql: str) -> list[int] | None:
        """Add a problem for the rows ``rows_sql`` selects (a query returning ``_row``)."""
        vc = self.spec.value_column
        value_sel = f", {_quote(vc)}" if vc and vc in self.columns else ""
        found = _fetch(self.con, f"SELECT {ROW}{value_sel} FROM {self.stage} WHERE {ROW} IN ({rows_sql}) "
                              f"ORDER BY {ROW}")
        rows = found[ROW].to_numpy()
        if not len(rows):
            return None
        value = float(found[vc].astype(float).abs().sum()) if value_sel else 0.0
        if self.mixed:
            value = float("nan")  # money in several currencies has no single total
        self.problems.append(Problem(self.name, self.file, column, reason, severity,  # type: ignore[arg-type]
                                     len(rows), tuple(int(r) for r in rows[:_SHOW]), value))
        return [int(r) for r in rows]

    @property
    def mixed(self) -> bool:
        """Whether the table's money is in several currencies (as ``validation._mixed``)."""
        return len(self.currencies) > 1

    def _upstream_counts(self) -> tuple[int, int, int]:
        """Rows the reader filtered, folded and rejected (``validation._counts``' arguments)."""
        return tuple(_upstream_rows(self.upstream, self.name, s)  # type: ignore[return-value]
                     for s in ("info", "collapsed", "rejected"))

    @property
    def columns(self) -> list[str]:
        return [r[0] for r in self.con.execute(f"DESCRIBE {self.stage}").fetchall() if r[0] != ROW]

    def check_keys(self) -> None:
        """``_TableCheck._check_keys`` in SQL: exact duplicate rows folded into the first, then keys
        that still repeat rejected in every copy. Only the rows of repeated keys are compared."""
        self.collapsed = 0
        key = [k for k in self.spec.key if k in self.columns]
        if not key or len(key) != len(self.spec.key):
            return
        keys = ", ".join(_quote(k) for k in key)
        same = " AND ".join(f"s.{_quote(k)} IS NOT DISTINCT FROM d.{_quote(k)}" for k in key)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE _dup AS SELECT s.* FROM {self.stage} s SEMI JOIN ("
                         f"SELECT {keys} FROM {self.stage} GROUP BY ALL HAVING COUNT(*) > 1) d ON {same}")
        if not _scalar(self.con, "SELECT COUNT(*) FROM _dup"):
            self.con.execute("DROP TABLE _dup")
            return
        cols = ", ".join(_quote(c) for c in self.columns)
        exact = (f"SELECT {ROW} FROM (SELECT {ROW}, ROW_NUMBER() OVER (PARTITION BY {cols} ORDER BY {ROW}) "
                 f"AS _n FROM _dup) WHERE _n > 1")
        folded = self._problem(", ".join(key), "exact duplicate row (kept once)", "collapsed", exact)
        if folded:
            self.collapsed = len(folded)
            self._delete(folded)
            self.con.execute(f"DELETE FROM _dup WHERE {ROW} IN ({exact})")
        dup = (f"SELECT {ROW} FROM (SELECT {ROW}, COUNT(*) OVER (PARTITION BY {keys}) AS _n FROM _dup) "
               f"WHERE _n > 1")
        first = self.con.sql(f"SELECT {keys} FROM _dup WHERE {ROW} IN ({dup}) ORDER BY {ROW} LIMIT 1")
        first_row = to_pandas(first.to_arrow_table(), self.spec)
        if len(first_row):
            shown = "/".join(mask_contact_details(str(v))[0][:40] for v in first_row.iloc[0].tolist())
            reason = f"duplicate {'/'.join(key)} with different values (e.g. {shown}); all copies rejected"
            self._delete(self._problem(", ".join(key), reason, "rejected", dup) or [])
        self.con.execute("DROP TABLE _dup")

    def _delete(self, rows: list[int]) -> None:
        self.con.register("_gone", pa_table({ROW: rows}))
        self.con.execute(f"DELETE FROM {self.stage} WHERE {ROW} IN (SELECT {ROW} FROM _gone)")
        self.con.unregister("_gone")

    def check_references(self, usable: dict[str, str]) -> None:
        for fk in self.spec.foreign_keys:
            if fk.ref_table not in usable:
                continue
            col, ref = _quote(fk.column), _quote(fk.ref_column)
            unknown = (f"SELECT {ROW} FROM {self.stage} WHERE {col} IS NOT NULL AND {col} NOT IN "
                       f"(SELECT {ref} FROM {usable[fk.ref_table]} WHERE {ref} IS NOT NULL)")
            reason = f"{fk.column} not found in {fk.ref_table}.{fk.ref_column}"
            if fk.reject:
                self._delete(self._problem(fk.column, reason, "rejected", unknown) or [])
            else:
                self._problem(fk.column, reason + " (kept)", "warning", unknown)

    def finish_counts(self) -> None:
        if self.fatal:
            return
        kept = _scalar(self.con, f"SELECT COUNT(*) FROM {self.stage}")
        filtered, folded, rejected = self._upstream_counts()
        self.counts = {"rows_in": self.n_rows + filtered + folded + rejected, "rows_filtered": filtered,
                       "rows_collapsed": self.collapsed + folded,
                       "rows_rejected": self.n_rows - kept - self.collapsed + rejected, "rows_kept": kept}
        vc = self.spec.value_column
        if self.values is not None and not self.mixed:  # money as validation._counts: unsigned, finite
            def total(v: np.ndarray) -> float:
                v = np.abs(np.nan_to_num(v.astype(float), nan=0.0, posinf=0.0, neginf=0.0))
                with np.errstate(over="ignore"):
                    return float(v.sum())

            value_in = total(self.values)
            kept_values = _fetch(self.con, f"SELECT {_quote(vc)} FROM {self.stage} ORDER BY {ROW}")[vc]
            value_kept = total(kept_values.to_numpy(float))
            self.counts.update(value_in=value_in, value_kept=value_kept, value_rejected=value_in - value_kept)


def ingest(items: dict[str, Path], con: Any, timezone: str | None = None,
           channel_rules: ChannelRules | None = None, chunk_rows: int = CHUNK_ROWS) -> ValidationReport:
    """Validate canonical table files into ``con``: one table per usable input, named as in
    :mod:`closedloop_nb.schema`, typed as it says, rows in file order.

    Parameters
    ----------
    items
        ``{table: path}`` of canonical files (CSV or Parquet, columns named as in the data model).
    con
        A DuckDB connection to write into.
    timezone
        Time zone of naive timestamps.
    channel_rules
        Rules for touches without a channel (GA4 default channel group when omitted).
    chunk_rows
        Rows checked in pandas at a time.

    Returns
    -------
    ValidationReport
        The same problems and counts as ``load_dataset(items, timezone=...).report``.

    Raises
    ------
    DataValidationError
        When a file cannot be read at all, as :func:`~closedloop_nb.validation.load_dataset`.
    """
    unknown = sorted(set(items) - set(TABLES))
    if unknown:
        raise KeyError(f"unknown tables {unknown}; the canonical tables are {', '.join(TABLES)}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")
    tables = {name: _Table(name, Path(path), con, timezone, chunk_rows) for name, path in items.items()}
    _read_all(tables)
    for t in tables.values():
        if not t.fatal:
            t.check_keys()
    usable: dict[str, str] = {}
    for name in [n for n in ORDER if n in tables]:
        t = tables[name]
        if not t.fatal:
            t.check_references(usable)
            usable[name] = t.stage
    report = ValidationReport()
    for t in tables.values():  # what reading found comes first, as load_dataset passes it upstream
        report.problems.extend(t.upstream)
    for name, t in tables.items():
        t.finish_counts()
        report.problems.extend(t.problems)
        report.counts[name] = t.counts
    if "touchpoints" in usable:
        _fill_channels(con, tables["touchpoints"], channel_rules, report)
    for name, t in tables.items():
        if name in usable:
            cols = ", ".join(_quote(c) for c in t.spec.names)
            # staged in file order, and deletes and updates keep it (preserve_insertion_order)
            con.execute(f"CREATE TABLE {_quote(name)} AS SELECT {cols} FROM {t.stage}")
        con.execute(f"DROP TABLE IF EXISTS {t.stage}")
    return report


def _read_all(tables: dict[str, _Table]) -> None:
    """Pass 1 over every table; unreadable files are all reported together, as load_dataset does."""
    from closedloop_nb.errors import DataValidationError

    fatal: list[Problem] = []
    for name, t in tables.items():
        try:
            t.check_rows()
        except DataValidationError as exc:
            fatal.extend(Problem(name, p.file, p.column, p.reason, p.severity) for p in exc.problems)
    if fatal:
        raise DataValidationError(fatal)


def _fill_channels(con: Any, t: _Table, rules: ChannelRules | None, report: ValidationReport) -> None:
    """``validation._fill_channels`` over the distinct (source, medium, campaign, click id type) of
    the touches without a channel: the rules see them in the order of their first touch, as many
    times as they occur, so the counts and the unassigned examples are those of the whole table."""
    from closedloop_nb.channels import FIELDS

    have = [f for f in FIELDS if f in t.columns]
    cols = ", ".join(_quote(f) for f in have)
    combos = con.sql(f"SELECT {cols}, COUNT(*) AS _n, MIN({ROW}) AS _first FROM {t.stage} "
                     f"WHERE channel IS NULL GROUP BY ALL ORDER BY _first").to_arrow_table()
    if combos.num_rows == 0:
        return
    combos = to_pandas(combos.drop(["_n", "_first"]), t.spec).assign(
        _n=combos.column("_n").to_numpy())
    expanded = combos.loc[combos.index.repeat(combos["_n"].to_numpy())].drop(columns="_n")
    result = group_channels(expanded, rules)
    channel = result.channel.astype(str).groupby(level=0, sort=False).first()
    combos["channel"] = channel.reindex(combos.index).to_numpy()
    con.register("_combos", combos[[*have, "channel"]])
    match = " AND ".join(f"s.{_quote(f)} IS NOT DISTINCT FROM c.{_quote(f)}" for f in have)
    rows: tuple[int, ...] = ()
    if result.n_unassigned:
        first = con.sql(f"SELECT s.{ROW} FROM {t.stage} AS s JOIN _combos AS c ON {match} WHERE "
                        f"s.channel IS NULL AND c.channel = '{UNASSIGNED}' ORDER BY s.{ROW} LIMIT {_SHOW}")
        rows = tuple(int(r[0]) for r in first.fetchall())
    sub = PATH_SEP_SUBSTITUTE.replace("'", "''")
    con.execute(f"UPDATE {t.stage} AS s SET channel = replace(c.channel, '{PATH_SEP}', '{sub}') "
                f"FROM _combos AS c WHERE s.channel IS NULL AND {match}")
    con.unregister("_combos")
    if result.n_unassigned:
        top = result.unassigned_combos.head(3)
        examples = "; ".join(f"{_show([r.source], 1)[1:-1]} / {_show([r.medium], 1)[1:-1]}"
                             for r in top.itertuples())
        report.problems.append(Problem(
            "touchpoints", t.file, "channel",
            f"no channel rule matched (e.g. {examples}): grouped as {UNASSIGNED} (kept); fix the "
            "tagging or add a rule", "warning", result.n_unassigned, rows))


def to_pandas(table: Any, spec: TableSpec) -> pd.DataFrame:
    """An Arrow table of (some) columns of canonical table ``spec`` as pandas, with the dtypes
    :mod:`closedloop_nb.schema` gives (what ``load_dataset`` returns)."""
    frame = table.to_pandas()
    for col in frame.columns:
        if col not in spec.names:
            continue
        dtype = spec.column(col).dtype
        s = frame[col]
        if dtype == "timestamp":
            s = pd.to_datetime(s, utc=True)
        elif dtype == "date":
            s = pd.to_datetime(s)
        frame[col] = s.astype(pandas_dtype(dtype))
    return frame
