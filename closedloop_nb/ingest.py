"""Validation in the engine: canonical tables checked chunk by chunk into DuckDB, with the report
:func:`closedloop_nb.validation.load_dataset` gives.

One implementation of the rules. The checks that look at one row at a time (types, ranges, allowed
values, missing values, time zones: everything :class:`closedloop_nb.validation._TableCheck` does
before its key check) run as they are, in pandas, on chunks of ``chunk_rows`` rows streamed from the
file; a rule added to ``validation.py`` is therefore mirrored here with no change. A Parquet file
with more rows than one chunk, whose columns are stored as their canonical types and that holds no
money (touchpoints, identities, leads, ...), is read straight into DuckDB instead, and a SQL
condition (:func:`suspect_sql`) picks out every row those pandas checks could flag or change: pandas
checks only these (plus one good row per column), their problems are the table's, and the values
they change are written back; a new row rule needs its condition there too. The checks that
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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.channels import UNASSIGNED, ChannelRules, group_channels
from closedloop_nb.errors import Problem
from closedloop_nb.loaders import FILE, ROW, apply_mapping, read_mapped, unknown_columns
from closedloop_nb.privacy import mask_contact_details
from closedloop_nb.schema import CURRENCY_COLUMNS, TABLES, TableSpec, pandas_dtype, table_spec
from closedloop_nb.validation import (
    _PATH_LEVELS,
    _SHOW,
    NULL_TOKENS,
    PATH_SEP,
    PATH_SEP_SUBSTITUTE,
    InputLimits,
    ValidationReport,
    _counts,
    _is_id,
    _show,
    _TableCheck,
    _upstream_rows,
)

__all__ = ["CHUNK_ROWS", "FX_DATE_SQL", "MAX_GAP_DAYS", "ORDER", "convert_money", "ingest", "to_pandas"]

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


# -- the row checks of a large Parquet file in SQL --------------------------------------------------

def _native(dtype: str, typ: Any) -> bool:
    """Whether Parquet (Arrow) type ``typ`` of a column of canonical type ``dtype`` is one the row
    checks can run on in SQL: values that need no parsing (text, UTC-aware microsecond timestamps,
    doubles, booleans), so that the pandas checks change or flag a row only in the ways
    :func:`suspect_sql` looks for. (Dates and whole numbers are only in tables with money, which
    stay in pandas.)"""
    import pyarrow as pa

    if dtype == "string":
        return bool(pa.types.is_string(typ) or pa.types.is_large_string(typ))
    if dtype == "timestamp":
        return bool(pa.types.is_timestamp(typ) and typ.unit == "us" and typ.tz is not None)
    if dtype == "float":
        return bool(pa.types.is_float64(typ))
    return dtype == "bool" and bool(pa.types.is_boolean(typ))


def _generated_key(spec: TableSpec) -> str | None:
    """The key column that ``_TableCheck`` fills from the row where it is empty (``touch_id``)."""
    key = spec.key[0] if len(spec.key) == 1 else None
    return key if key and key in spec.names and not spec.column(key).required else None


def _sql_list(values: Any) -> str:
    return ", ".join(_literal(str(v)) for v in values)


def suspect_sql(spec: TableSpec, present: Any, limits: InputLimits | None = None) -> str:
    """A SQL condition true for every row of a natively typed table (:func:`_native`) that
    ``validation._TableCheck`` would flag or change: the rows the pandas checks are run on.

    It errs on the side of picking a row out (a text starting or ending with anything but a printable
    ASCII character, a timestamp outside the date window), never the other way: a row it leaves is
    one whose values pandas keeps as they are, with no problem. A rule added to ``validation.py``
    that flags other rows needs its condition here (``tests/test_validation_sql.py`` compares the
    two on crafted and random files).

    Examples
    --------
    >>> import duckdb
    >>> con = duckdb.connect()
    >>> _ = con.execute("CREATE TABLE t AS FROM (VALUES ('v1', 'form'), (' v2', 'form'), ('v3', 'fax')) "
    ...                 "AS x(visitor_id, method)")
    >>> where = suspect_sql(table_spec("identities"), ["visitor_id", "method"])
    >>> con.sql(f"SELECT visitor_id FROM t WHERE {where}").fetchall()
    [(' v2',), ('v3',)]
    """
    limits = limits or InputLimits()
    generated = _generated_key(spec)
    tokens = _sql_list(sorted(NULL_TOKENS))
    parts = []
    for col in spec.columns:
        if col.name not in present:
            continue
        c = _quote(col.name)
        bad = []  # conditions on a value that is there
        if col.dtype == "string":
            # trimmed (Unicode white space), empty: missing; ASCII 33-126 at both ends is neither
            bad.append(f"ord({c}[1]) NOT BETWEEN 33 AND 126 OR ord({c}[-1]) NOT BETWEEN 33 AND 126")
            if limits.max_text_length is not None:  # bytes: never fewer than characters
                bad.append(f"strlen({c}) > {int(limits.max_text_length)}")
            if _is_id(col.name) or col.name == generated:
                bad.append(f"lower({c}) IN ({tokens})")
            if col.name in _PATH_LEVELS.get(spec.name, ()):
                bad.append(f"contains({c}, {_literal(PATH_SEP)})")
            if col.allowed:
                bad.append(f"{c} NOT IN ({_sql_list(col.allowed)})")
        elif col.dtype == "float":
            bad.append(f"isnan({c}) OR isinf({c})")  # NaN: missing; infinite: rejected
            if limits.max_amount is not None:
                bad.append(f"abs({c}) > {float(limits.max_amount)!r}")
        elif col.dtype == "timestamp":
            if limits.date_window is not None:
                lo, hi = (f"TIMESTAMPTZ '{pd.Timestamp(d).isoformat()}+00'" for d in limits.date_window)
                bad.append(f"{c} < {lo} OR {c} >= {hi}")
        elif col.dtype != "bool":
            raise ValueError(f"{spec.name}.{col.name}: no SQL row checks for {col.dtype} columns")
        if col.non_negative and col.dtype == "float":
            bad.append(f"{c} < 0")
        if not col.nullable:
            parts.append(f"{c} IS NULL")
        if bad:
            parts.append(f"({c} IS NOT NULL AND ({' OR '.join(bad)}))")
    return " OR ".join(parts) or "false"


def _sql_plan(path: Path, spec: TableSpec, chunk_rows: int) -> tuple[list[str], int] | None:
    """``(columns present, rows)`` when ``path``'s rows are checked in SQL (a Parquet file with more
    rows than one chunk, natively typed, every required column there, no money), else None."""
    if not path.name.lower().endswith((".parquet", ".pq")) or not path.is_file() or not path.stat().st_size:
        return None
    if spec.value_column or CURRENCY_COLUMNS.get(spec.name):
        return None  # money: its totals and currencies are whole-table figures, left to pandas
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except Exception:  # noqa: BLE001 - unreadable: the loader's path reports it
        return None
    if pf.metadata.num_rows <= chunk_rows or len(set(schema.names)) != len(schema.names):
        return None
    present = [c.name for c in spec.columns if c.name in schema.names]
    if any(c not in present for c in spec.required):
        return None
    if not all(_native(spec.column(c).dtype, schema.field(c).type) for c in present):
        return None
    return present, pf.metadata.num_rows


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(path).schema_arrow.names)


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
            found.extend(unknown_columns(pf.schema_arrow.names, table, str(path)))  # as read_mapped
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
        self.extra: list[str] = []  # columns the conversion to a reporting currency added

    # -- pass 1: row checks per chunk -----------------------------------------------------------
    def check_rows(self) -> None:
        plan = _sql_plan(self.path, self.spec, self.chunk_rows)
        if plan is not None and self._check_rows_in_sql(*plan):
            return
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
            if cur and cur in raw:
                self._currency_witnesses(raw, cur, ~check.flagged, witnesses)
            self._stage(check)
        chunk_problems = self._table_problems(n_chunks, chunk_problems, flagged_raw, list(witnesses.values()))
        if chunk_problems is None:  # e.g. one bad number per chunk and no good one: fatal on the whole table
            return self._whole_table()
        if n_chunks > 1 and cur:
            chunk_problems = self._mixed_currencies(chunk_problems, cur)
        self.problems = chunk_problems
        self.n_rows = n_rows
        self.values = np.concatenate(values) if values else None

    def _table_problems(self, n_chunks: int, problems: list[Problem], flagged: list[pd.DataFrame],
                        witnesses: list[pd.DataFrame]) -> list[Problem] | None:
        """The table's row-check problems from its chunks' ``problems``: one chunk's are the table's;
        of several, the ``flagged`` rows are checked again together with the ``witnesses`` (so the
        rules about a whole column see the table), or, none flagged, each problem without rows is
        kept once ("no data rows"). None when the recheck is fatal."""
        if n_chunks <= 1:
            return problems
        if not flagged:
            return [p for p in problems if p.n_rows]
        subset = pd.concat([*flagged, *witnesses], ignore_index=True)
        subset = subset.drop_duplicates(ROW).sort_values(ROW, kind="stable").reset_index(drop=True)
        recheck = _RowCheck(subset, self.spec, self.timezone)
        recheck.run()
        return None if recheck.fatal else recheck.problems

    @staticmethod
    def _currency_witnesses(raw: pd.DataFrame, cur: str, good: np.ndarray,
                            witnesses: dict[str, pd.DataFrame], most: int = 200) -> None:
        """One unflagged row of ``raw`` per currency value not seen yet (missing included), so the
        recheck of the flagged rows sees every currency the table holds (at most ``most``)."""
        codes = raw[cur].astype("string").str.strip().str.upper().fillna("\0")
        for code in pd.unique(codes[good]):
            key = f"{cur}\0{code}"
            if key not in witnesses and len(witnesses) < most:
                witnesses[key] = raw.iloc[np.flatnonzero(good & (codes == code).to_numpy())[:1]]

    def _mixed_currencies(self, problems: list[Problem], cur: str) -> list[Problem]:
        """``problems`` with the several-currencies warning made from every staged (kept) row, as the
        whole table's check makes it: a chunk, or the recheck of the flagged rows, sees only its own
        rows' totals. In the recheck's place when it found one, else last."""
        from closedloop_nb.money import mixed_currency_problem

        def mixed(p: Problem) -> bool:
            return p.column == cur and not p.n_rows and p.reason.startswith("several currencies")

        staged = {r[0] for r in self.con.execute(f"DESCRIBE {self.stage}").fetchall()}
        if cur not in staged:
            return problems
        vc = self.spec.value_column if self.spec.value_column in staged else None
        cols = ", ".join(_quote(c) for c in (cur, vc) if c)
        frame = _fetch(self.con, f"SELECT {cols} FROM {self.stage}")
        found = mixed_currency_problem(frame, self.name, self.file, cur, vc)
        at = next((i for i, p in enumerate(problems) if mixed(p)), len(problems))
        rest = [p for p in problems if not mixed(p)]
        return rest if found is None else [*rest[:at], found, *rest[at:]]

    def _check_rows_in_sql(self, present: list[str], n_rows: int) -> bool:
        """Stage the Parquet file straight into DuckDB and run the pandas checks on the rows
        :func:`suspect_sql` picks out (plus one good row per column, as ``check_rows``' recheck),
        a chunk at a time: their problems are the table's, the rows they reject are deleted and the
        values they change written back. False (nothing staged) when DuckDB cannot read the file."""
        import duckdb

        con, stage = self.con, self.stage
        generated = _generated_key(self.spec)
        stem = self.path.name.split(".")[0] or self.name  # as _TableCheck._fill_generated_ids
        select = []
        for col in self.spec.columns:
            q, typ = _quote(col.name), _DUCK_TYPES[col.dtype]
            if col.name in present:
                select.append(f"CAST({q} AS {typ}) AS {q}")
            elif col.name == generated:
                select.append(f"{_literal(stem + ':')} || CAST(file_row_number + 1 AS VARCHAR) AS {q}")
            else:
                select.append(f"CAST(NULL AS {typ}) AS {q}")
        con.execute(f"DROP TABLE IF EXISTS {stage}")
        try:
            con.execute(f"CREATE TABLE {stage} AS SELECT {', '.join(select)}, file_row_number + 1 AS {ROW} "
                        f"FROM read_parquet({_literal(str(self.path))}, file_row_number = true)")
        except duckdb.Error:
            con.execute(f"DROP TABLE IF EXISTS {stage}")
            return False
        suspects = con.execute(f"SELECT {ROW} FROM {stage} WHERE {suspect_sql(self.spec, present)} "
                               f"ORDER BY {ROW}").fetchnumpy()[ROW]
        con.register("_suspects", pa_table({ROW: suspects}))
        cols = ", ".join(_quote(c) for c in present)
        witness_rows = set()
        for c in present:  # one unflagged value per column, so whole-column rules see the table
            found = con.execute(f"SELECT {ROW} FROM {stage} WHERE {_quote(c)} IS NOT NULL AND {ROW} NOT IN "
                                f"(SELECT {ROW} FROM _suspects) LIMIT 1").fetchall()
            witness_rows.update(r[0] for r in found)
        con.unregister("_suspects")
        witnesses = self._rows_of(cols, sorted(witness_rows))
        self.currencies = set()
        self.upstream = unknown_columns(_parquet_columns(self.path), self.name, str(self.path))
        problems: list[Problem] = []
        flagged: list[pd.DataFrame] = []
        n_chunks = 0
        for start in range(0, max(len(suspects), 1), self.chunk_rows):
            n_chunks += 1
            part = self._rows_of(cols, suspects[start:start + self.chunk_rows])
            frame = pd.concat([f for f in (part, witnesses) if len(f)] or [part], ignore_index=True)
            frame = frame.sort_values(ROW, kind="stable").reset_index(drop=True)
            if not len(frame):
                continue
            check = _RowCheck(frame, self.spec, self.timezone)
            check.run()
            if check.fatal:
                con.execute(f"DROP TABLE {stage}")
                self._whole_table()
                return True
            problems.extend(check.problems)
            if check.flagged.any():
                flagged.append(frame.loc[check.flagged])
            self._write_back(check, set(part[ROW].tolist()))
        problems = self._table_problems(n_chunks, problems, flagged, [witnesses])
        if problems is None:
            con.execute(f"DROP TABLE {stage}")
            self._whole_table()
            return True
        self.file = str(self.path)
        self.problems = problems
        self.n_rows = n_rows
        self.values = None
        return True

    def _rows_of(self, cols: str, rows: Any) -> pd.DataFrame:
        """The staged rows ``rows`` as they were read (``_file`` and ``_row`` as :func:`_chunks`)."""
        rows = np.asarray(rows, dtype=np.int64)
        self.con.register("_want", pa_table({ROW: rows}))
        lo, hi = (int(rows.min()), int(rows.max())) if len(rows) else (0, -1)
        frame = _fetch(self.con, f"SELECT {cols}, {ROW} FROM {self.stage} WHERE {ROW} BETWEEN {lo} AND {hi} "
                                 f"AND {ROW} IN (SELECT {ROW} FROM _want) ORDER BY {ROW}")
        self.con.unregister("_want")
        frame.insert(len(frame.columns) - 1, FILE, str(self.path))
        return frame

    def _write_back(self, check: _RowCheck, rows: set[int]) -> None:
        """Of the staged ``rows`` checked by ``check``: the rejected ones deleted, the others given the
        values the checks made (trimmed, ids filled, '>' replaced, ...)."""
        import pyarrow as pa

        mine = check.df[ROW].isin(rows).to_numpy()
        self._delete(check.df.loc[mine & check.reject, ROW].astype(int).tolist())
        kept = check.df.loc[mine & ~check.reject]
        if not len(kept):
            return
        names = self.spec.names
        self.con.register("_fixed", pa.Table.from_pandas(kept[[*names, ROW]], preserve_index=False))
        sets = ", ".join(f"{_quote(c)} = CAST(f.{_quote(c)} AS {_DUCK_TYPES[self.spec.column(c).dtype]})"
                         for c in names)
        self.con.execute(f"UPDATE {self.stage} AS s SET {sets} FROM _fixed AS f WHERE s.{ROW} = f.{ROW}")
        self.con.unregister("_fixed")

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
        vc = self.money_column
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
    def money_column(self) -> str | None:
        """The value column as it was read (its ``original_`` copy once converted): the report's money
        is always the file's own."""
        vc = self.spec.value_column
        return f"original_{vc}" if vc and f"original_{vc}" in self.extra else vc

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
            vc = self.money_column
            kept_values = _fetch(self.con, f"SELECT {_quote(vc)} FROM {self.stage} ORDER BY {ROW}")[vc]
            value_kept = total(kept_values.to_numpy(float))
            self.counts.update(value_in=value_in, value_kept=value_kept, value_rejected=value_in - value_kept)


def ingest(items: dict[str, Path], con: Any, timezone: str | None = None,
           channel_rules: ChannelRules | None = None, chunk_rows: int = CHUNK_ROWS,
           reporting_currency: str | None = None) -> ValidationReport:
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
    reporting_currency
        ISO 4217 code to convert every money column into with the ``fx_rates`` table
        (:func:`convert_money`); ``None``: money stays in the currencies it was recorded in.

    Returns
    -------
    ValidationReport
        The same problems and counts as ``load_dataset(items, timezone=...).report`` (plus, when
        converting, the rows that had no rate, rejected, and one note per converted table).

    Raises
    ------
    DataValidationError
        When a file cannot be read at all, as :func:`~closedloop_nb.validation.load_dataset`; when
        converting, also when the rates cannot be used (naming the ``fx_rates`` rows) or are absent.
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
    if reporting_currency:
        convert_money(tables, con, reporting_currency)
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
            _publish(con, t.stage, name, [*t.spec.names, *t.extra])
        con.execute(f"DROP TABLE IF EXISTS {t.stage}")
    return report


def _publish(con: Any, stage: str, name: str, columns: list[str]) -> None:
    """The staged table as table ``name`` with ``columns``: renamed, with its row numbers dropped,
    when it has those columns in that order (a copy of 10M touchpoints cost ~17 s of CPU, a rename
    nothing), else copied. Staged in file order, and deletes and updates keep it
    (preserve_insertion_order)."""
    have = [r[0] for r in con.execute(f"DESCRIBE {stage}").fetchall()]
    if [c for c in have if c != ROW] == columns:
        if ROW in have:
            con.execute(f"ALTER TABLE {stage} DROP COLUMN {ROW}")
        con.execute(f"ALTER TABLE {stage} RENAME TO {_quote(name)}")
        return
    cols = ", ".join(_quote(c) for c in columns)
    con.execute(f"CREATE TABLE {_quote(name)} AS SELECT {cols} FROM {stage}")


# -- one reporting currency ---------------------------------------------------------------------

#: The day each money table converts at, in SQL over its rows (UTC days, as ``money.fx_dates``): a
#: deal at its close date (its creation date while open: pipeline), an order at its timestamp, an MRR
#: movement at its month, spend at its day.
FX_DATE_SQL = {
    "deals": "CAST(COALESCE(closed_at, created_at) AS DATE)",
    "orders": 'CAST("timestamp" AS DATE)',
    "subscriptions": "CAST(month AS DATE)",
    "spend": 'CAST("date" AS DATE)',
}
_FX_WHEN = {"deals": "the close date (open deals: the creation date)", "orders": "the order date",
            "subscriptions": "the movement's month", "spend": "the spend date"}
#: Daily rates carry over at most this many days (weekends, holidays), as ``money.convert``.
MAX_GAP_DAYS = 7


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def convert_money(tables: dict[str, _Table], con: Any, currency: str) -> None:
    """Every money column of the staged tables in ``currency``, with the ``fx_rates`` table.

    Each money column ``c`` of ``deals``, ``orders``, ``subscriptions`` and ``spend`` is multiplied by
    the rate of its row's currency at the row's date (:data:`FX_DATE_SQL`): monthly rates (every date
    a first of the month, one per currency and month) apply to their month, daily rates to their day
    and up to :data:`MAX_GAP_DAYS` days after it. The amounts as recorded stay in ``original_<c>``
    and ``original_currency``, the rate used in ``fx_rate``; ``currency`` becomes ``currency``
    everywhere. ``stage_history.amount`` is in its deal's currency and converts at its deal's rate.

    A row whose rate is missing (or whose currency is not recorded) is rejected and counted, one
    problem per currency naming the rows and the months or days lacking; it is never kept at a
    guessed rate nor left in its own currency beside converted rows.

    Raises
    ------
    DataValidationError
        When money needs converting and there is no ``fx_rates`` table, or when ``fx_rates`` has rows
        that cannot be used (rejected by validation, a rate of 0, two rates for one day, a rate of
        the reporting currency to itself other than 1), naming the file, column and rows.
    """
    from closedloop_nb.errors import DataValidationError
    from closedloop_nb.money import MONEY_COLUMNS, currency_codes

    currency = currency.strip().upper()
    if currency not in currency_codes():
        raise ValueError(f"reporting_currency {currency!r} is not an ISO 4217 currency code (e.g. USD, EUR)")
    money = [tables[n] for n in MONEY_COLUMNS if n in tables and not tables[n].fatal]
    foreign: dict[str, int] = {}
    for t in money:
        cols = [c for c in MONEY_COLUMNS[t.name] if c in t.columns]
        has_money = " OR ".join(f"{_quote(c)} IS NOT NULL" for c in cols)
        for code, n in con.execute(f"SELECT COALESCE(currency, '(no currency)'), COUNT(*) FROM {t.stage} "
                                   f"WHERE currency IS DISTINCT FROM {_literal(currency)} AND ({has_money}) "
                                   "GROUP BY ALL").fetchall():
            foreign[code] = foreign.get(code, 0) + n
    frequency = _rates(tables.get("fx_rates"), con, currency)
    if foreign and frequency is None:
        held = ", ".join(f"{code} ({n:,} rows)" for code, n in sorted(foreign.items()))
        raise DataValidationError([Problem(
            "fx_rates", "(no fx_rates table)", None,
            f"money in {held} is to be reported in {currency}, but there is no fx_rates table to convert it: "
            "put fx_rates.csv (date, currency, rate) in the data folder or give its file as fx_rates",
            "error")])
    for t in money:
        _convert_table(t, con, currency, frequency or "monthly")
    if "stage_history" in tables and not tables["stage_history"].fatal:
        _convert_stage_history(tables["stage_history"], tables.get("deals"), con)
    con.execute("DROP TABLE IF EXISTS _fx")


def _rates(fx: _Table | None, con: Any, currency: str) -> str | None:
    """Stage the usable rates to ``currency`` as ``_fx`` and say how often they are quoted
    (``monthly``/``daily``); ``None`` without a table. Unusable rates are an error naming them."""
    from closedloop_nb.errors import DataValidationError
    from closedloop_nb.money import currency_codes

    con.execute("CREATE OR REPLACE TEMP TABLE _fx (currency VARCHAR, date DATE, month TIMESTAMP, "
                f"rate DOUBLE, {ROW} BIGINT)")
    if fx is None:
        return None
    how = "fx_rates cannot convert money while rows of it are unusable (a rate is never guessed): "
    bad = [p for p in [*fx.upstream, *fx.problems] if p.severity in ("error", "rejected")]
    if bad:
        raise DataValidationError([Problem(p.table, p.file, p.column, how + p.reason, "error", p.n_rows,
                                           p.rows) for p in bad])

    def refuse(column: str, reason: str, rows_sql: str) -> None:
        rows = [int(r[0]) for r in con.execute(rows_sql).fetchall()]
        if rows:
            raise DataValidationError([Problem("fx_rates", fx.file, column, how + reason, "error", len(rows),
                                               tuple(rows[:_SHOW]))])

    codes = [r[0] for r in con.execute(f"SELECT DISTINCT upper(to_currency) FROM {fx.stage} "
                                       "WHERE to_currency IS NOT NULL").fetchall()]
    for code in codes:
        if code not in currency_codes():
            refuse("to_currency", f"not an ISO 4217 currency code: {code!r}",
                   f"SELECT {ROW} FROM {fx.stage} WHERE upper(to_currency) = {_literal(code)} ORDER BY {ROW}")
    cur = _literal(currency)
    con.execute(f"INSERT INTO _fx SELECT upper(currency), \"date\", date_trunc('month', \"date\"), rate, "
                f"{ROW} FROM {fx.stage} WHERE to_currency IS NULL OR upper(to_currency) = {cur}")
    if codes and not _scalar(con, "SELECT COUNT(*) FROM _fx"):
        raise DataValidationError([Problem(
            "fx_rates", fx.file, "to_currency", f"no rates to {currency}: this table converts to "
            f"{', '.join(sorted(codes))}; give rates to {currency} or report in one of those", "error")])
    refuse("rate", "a rate of 0 converts every amount to nothing",
           f"SELECT {ROW} FROM _fx WHERE rate = 0 ORDER BY {ROW}")
    refuse("rate", f"a rate from {currency} to itself must be 1",
           f"SELECT {ROW} FROM _fx WHERE currency = {cur} AND rate <> 1 ORDER BY {ROW}")
    refuse("date", "two rates for one currency on one day",
           f"SELECT {ROW} FROM (SELECT {ROW}, COUNT(*) OVER (PARTITION BY currency, \"date\") AS n FROM _fx) "
           f"WHERE n > 1 ORDER BY {ROW}")
    con.execute(f"DELETE FROM _fx WHERE currency = {cur}")
    monthly = _scalar(con, "SELECT COUNT(*) = 0 OR (bool_and(day(\"date\") = 1) AND COUNT(*) = "
                           "COUNT(DISTINCT (currency, month))) FROM _fx")
    return "monthly" if monthly else "daily"


def _convert_table(t: _Table, con: Any, currency: str, frequency: str) -> None:
    """Convert one money table's staged rows in place (see :func:`convert_money`)."""
    from closedloop_nb.money import MONEY_COLUMNS

    cols = [c for c in MONEY_COLUMNS[t.name] if c in t.columns]
    cur = _literal(currency)
    t.extra = [*(f"original_{c}" for c in cols), "original_currency", "fx_rate"]
    for c in cols:
        con.execute(f"ALTER TABLE {t.stage} ADD COLUMN {_quote('original_' + c)} DOUBLE")
    con.execute(f"ALTER TABLE {t.stage} ADD COLUMN original_currency VARCHAR")
    con.execute(f"ALTER TABLE {t.stage} ADD COLUMN fx_rate DOUBLE")
    copies = ", ".join(f"{_quote('original_' + c)} = {_quote(c)}" for c in cols)
    con.execute(f"UPDATE {t.stage} SET {copies}, original_currency = currency, "
                f"fx_rate = CASE WHEN currency = {cur} THEN 1.0 END")
    day = FX_DATE_SQL[t.name]
    rows = f"SELECT {ROW}, currency, {day} AS _day FROM {t.stage} WHERE currency IS DISTINCT FROM {cur}"
    if frequency == "monthly":
        lookup = (f"SELECT s.{ROW}, f.rate FROM ({rows}) s JOIN _fx f ON f.currency = s.currency "
                  "AND f.month = date_trunc('month', s._day)")
    else:
        lookup = (f"SELECT s.{ROW}, f.rate FROM ({rows}) s ASOF JOIN _fx f ON f.currency = s.currency "
                  f"AND s._day >= f.date WHERE s._day - f.date <= {MAX_GAP_DAYS}")
    con.execute(f"UPDATE {t.stage} AS s SET fx_rate = r.rate FROM ({lookup}) AS r WHERE s.{ROW} = r.{ROW}")
    has_money = " OR ".join(f"{_quote(c)} IS NOT NULL" for c in cols)
    lacking = f"fx_rate IS NULL AND ({has_money})"
    for code, days in con.execute(
            f"SELECT currency, list(DISTINCT {day} ORDER BY {day}) FROM {t.stage} WHERE {lacking} "
            "GROUP BY ALL ORDER BY currency NULLS LAST").fetchall():
        if code is None:
            reason = (f"no currency recorded, so the {' and '.join(cols)} cannot be converted to {currency} "
                      "(rejected: never assumed to be in any one currency)")
            which = "currency IS NULL"
        else:
            shown = sorted({d.strftime("%Y-%m" if frequency == "monthly" else "%Y-%m-%d") for d in days})
            listed = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
            gap = "" if frequency == "monthly" else f" (or up to {MAX_GAP_DAYS} days before)"
            reason = (f"no {code} to {currency} rate in fx_rates for {listed}{gap}, the {frequency} rate "
                      f"{_FX_WHEN[t.name]} needs (rejected: a rate is never guessed); add it to fx_rates")
            which = f"currency = {_literal(code)}"
        t._delete(t._problem("currency", reason, "rejected",
                             f"SELECT {ROW} FROM {t.stage} WHERE {lacking} AND {which}") or [])
    scaled = ", ".join(f"{_quote(c)} = {_quote(c)} * fx_rate" for c in cols)
    con.execute(f"UPDATE {t.stage} SET {scaled}, currency = {cur}")
    converted = con.execute(f"SELECT original_currency, COUNT(*) FROM {t.stage} WHERE original_currency "
                            f"IS DISTINCT FROM {cur} GROUP BY ALL ORDER BY ALL").fetchall()
    if converted:
        parts = ", ".join(f"{n:,} {code or '(no currency)'}" for code, n in converted)
        t.problems.append(Problem(
            t.name, t.file, "currency", f"converted to {currency} with fx_rates ({frequency} rates, at "
            f"{_FX_WHEN[t.name]}): {parts} rows; the amounts as recorded are kept in "
            f"{', '.join(t.extra[:-1])}, the rate in fx_rate", "info"))


def _convert_stage_history(sh: _Table, deals: _Table | None, con: Any) -> None:
    """``stage_history.amount`` at its deal's rate (it is in the deal's currency)."""
    if "amount" not in sh.columns:
        return
    sh.extra = ["original_amount", "fx_rate"]
    con.execute(f"ALTER TABLE {sh.stage} ADD COLUMN original_amount DOUBLE")
    con.execute(f"ALTER TABLE {sh.stage} ADD COLUMN fx_rate DOUBLE")
    con.execute(f"UPDATE {sh.stage} SET original_amount = amount")
    if deals is None or deals.fatal:
        n = _scalar(con, f"SELECT COUNT(*) FROM {sh.stage} WHERE amount IS NOT NULL")
        con.execute(f"UPDATE {sh.stage} SET amount = NULL")
        if n:
            sh.problems.append(Problem(
                "stage_history", sh.file, "amount", "amounts left empty: they are in their deal's currency "
                "and there is no usable deals table to convert them with (kept in original_amount)",
                "warning", n))
        return
    con.execute(f"UPDATE {sh.stage} AS h SET fx_rate = d.fx_rate FROM {deals.stage} AS d "
                "WHERE h.deal_id = d.deal_id")
    # a deal without an amount needs no rate, but its stages may carry amounts; a deal not in deals is
    # an orphan (rejected next, by the reference check)
    known = f"deal_id IN (SELECT deal_id FROM {deals.stage})"
    sh._delete(sh._problem(
        "amount", "no exchange rate for the currency of its deal at the deal's date, so the amount cannot be "
        "converted (rejected: a rate is never guessed)", "rejected",
        f"SELECT {ROW} FROM {sh.stage} WHERE amount IS NOT NULL AND fx_rate IS NULL AND {known}") or [])
    con.execute(f"UPDATE {sh.stage} SET amount = amount * fx_rate")


def _read_all(tables: Mapping[str, Any]) -> None:
    """Pass 1 over every table (``check_rows`` of the DuckDB ingest's or the Spark workspace's
    tables); unreadable files are all reported together, as load_dataset does."""
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
        report.problems.append(unassigned_problem(t.file, result, rows))


def unassigned_problem(file: str, result: Any, rows: tuple[int, ...]) -> Problem:
    """The warning for touches no channel rule matched (a ``channels.assign`` result), with the first
    combinations as examples and the first rows: the same in the DuckDB and the Spark ingest."""
    top = result.unassigned_combos.head(3)
    examples = "; ".join(f"{_show([r.source], 1)[1:-1]} / {_show([r.medium], 1)[1:-1]}"
                         for r in top.itertuples())
    return Problem("touchpoints", file, "channel",
                   f"no channel rule matched (e.g. {examples}): grouped as {UNASSIGNED} (kept); fix the "
                   "tagging or add a rule", "warning", result.n_unassigned, rows)


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
