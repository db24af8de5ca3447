"""Read CSV or Parquet exports and map them onto the canonical tables through YAML column mappings.

A mapping says, for each canonical column, where its values come from in the export::

    name: hubspot_deals
    table: deals
    columns:
      deal_id: Record ID                      # a column of the export
      amount: {from: Amount}
      stage: {from: Deal Stage, values: {closedwon: closed_won, closedlost: closed_lost}}
      closed_at: {from: Close Date, null_unless: {column: Deal Stage, in: [closedwon, closedlost]}}
      currency: {const: GBP}
    pii: {person_id: email}                   # hashed at ingest (closedloop_nb.privacy)

Column specs accept ``from`` (a name, or a list whose first non-empty value wins per row),
``const``, ``join`` (several columns joined by ``sep``), ``values`` (recode; unlisted values pass
through unless ``default`` is given), ``unit`` (epoch numbers: ``s``, ``ms``, ``us``, ``ns``),
``scale`` (multiply numbers, e.g. 0.01 for cents), ``fill`` (a value for empty cells),
``null_unless`` (empty unless another export column is true, one of ``in``, or with ``not_null``
present), ``split`` (a separator: keep the first item of a list such as ``"12;34"``) and ``money``
(``true`` or ``{decimal: ","}``: amounts such as ``$12,000.00``; ambiguous ones are refused).

``where`` keeps only rows whose raw column has one of the listed values (or, with
``not_null: true``, any value); the others are counted as filtered. ``dedupe`` folds rows sharing a
key, keeping the earliest, and counts them.

Ready mappings for real exports ship in ``closedloop_nb/mappings/`` (see :func:`list_mappings`).
Loading returns canonical-named columns holding the raw values plus two provenance columns,
``_file`` and ``_row``; :mod:`closedloop_nb.validation` types and checks them.
"""

from __future__ import annotations

import csv
import difflib
import gzip
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.privacy import hash_identifiers
from closedloop_nb.schema import TABLES, table_spec

__all__ = ["Mapping", "apply_mapping", "list_mappings", "read_file", "read_mapped", "unknown_columns"]

FILE = "_file"
#: Appended to an amount refused for its decimal separator (``1.200,50``: 1,200.50 or 1.2005?).
AMBIGUOUS_DECIMAL = " (ambiguous; set decimal)"
ROW = "_row"
_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".tsv")


@dataclass
class Mapping:
    """How the columns of one export map onto one canonical table.

    Attributes
    ----------
    name, table, description
        Identify the mapping and its target table.
    columns
        ``{canonical column: spec}``; a bare string spec names the export's column.
    pii
        ``{canonical column: kind}`` of direct identifiers to hash at ingest.
    where
        ``{export column: [kept values]}`` or ``{export column: {not_null: true}}``.
    dedupe
        ``{"key": [...], "order_by": column}``: rows sharing the key fold into the earliest.
    keep
        ``{extra name: export column}`` carried along for joins (e.g. a converted-opportunity id).
    """

    name: str
    table: str
    columns: dict[str, Any] = field(default_factory=dict)
    pii: dict[str, str] = field(default_factory=dict)
    where: dict[str, Any] = field(default_factory=dict)
    dedupe: dict[str, Any] | None = None
    keep: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def load(cls, name_or_path: str | Path) -> Mapping:
        """A shipped mapping by name (e.g. ``"hubspot_deals"``) or a YAML file by path."""
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") or path.exists():
            text, origin = path.read_text("utf-8"), str(path)
        else:
            shipped = resources.files("closedloop_nb").joinpath(f"mappings/{name_or_path}.yaml")
            if not shipped.is_file():
                raise FileNotFoundError(
                    f"no mapping {name_or_path!r}: not a file, and not one of the shipped mappings "
                    f"({', '.join(list_mappings())})"
                )
            text, origin = shipped.read_text("utf-8"), f"mappings/{name_or_path}.yaml"
        data = yaml.safe_load(text) or {}
        unknown = set(data) - {"name", "table", "columns", "pii", "where", "dedupe", "keep",
                               "description"}
        if unknown:
            raise ValueError(f"{origin}: unknown mapping keys {sorted(unknown)}")
        if data.get("table") not in TABLES:
            raise ValueError(
                f"{origin}: 'table' must be one of {', '.join(TABLES)}, got {data.get('table')!r}"
            )
        spec = table_spec(data["table"])
        bad = sorted(set(data.get("columns") or {}) - set(spec.names))
        if bad:
            raise ValueError(f"{origin}: {bad} are not columns of {spec.name}; columns: {spec.names}")
        return cls(
            name=data.get("name", path.stem),
            table=data["table"],
            columns=dict(data.get("columns") or {}),
            pii=dict(data.get("pii") or {}),
            where=dict(data.get("where") or {}),
            dedupe=data.get("dedupe"),
            keep=dict(data.get("keep") or {}),
            description=data.get("description", ""),
        )

    def __repr__(self) -> str:
        return f"<Mapping {self.name} -> {self.table}: {len(self.columns)} columns>"


def list_mappings() -> list[str]:
    """Names of the mappings shipped for real exports."""
    folder = resources.files("closedloop_nb").joinpath("mappings")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _first_bad_utf8(path: Path) -> Problem | None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return Problem(
            "?", str(path), None,
            f"not UTF-8: byte 0x{data[exc.start]:02x} at line {line}, offset {exc.start}; "
            "re-export as UTF-8 (in Excel: 'CSV UTF-8'), or convert with iconv -f cp1252 -t utf-8",
            "error",
        )
    return None


#: Delimiters tried, in order, when the expected one is not in a CSV file's header line.
_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def _header_line(path: Path) -> str:
    """The first non-empty line of a text file (a gzipped one read through); "" when there is none."""
    try:
        with _open_text(path) as f:
            for line in f:
                if line.strip():
                    return line.rstrip("\r\n")
    except UnicodeDecodeError:
        raise
    except (OSError, EOFError):  # a broken gzip stream: the reader says more
        return "?"
    return ""


def _delimiter(header: str, expected: str) -> str:
    """``expected`` when it is in the header line, else the first other delimiter that is."""
    if expected in header:
        return expected
    return next((d for d in _DELIMITERS if d in header), expected)


def _duplicate_columns(df: pd.DataFrame, table: str, path: Path, problems: list[Problem]) -> pd.DataFrame:
    """Refuse a header naming one column twice, unless the copies hold the same values (kept once)."""
    names = [str(c) for c in df.columns]
    dupes = sorted({n for n in names if names.count(n) > 1}, key=names.index)
    if not dupes:
        return df
    fatal = []
    drop = []
    for name in dupes:
        where = [i for i, n in enumerate(names) if n == name]
        copies = [df.iloc[:, i] for i in where]
        positions = ", ".join(str(i + 1) for i in where)
        if all(c.equals(copies[0]) for c in copies[1:]):
            problems.append(Problem(table, str(path), name, f"the header names this column {len(where)} "
                                    f"times (columns {positions}) with the same values: kept once",
                                    "warning"))
            drop.extend(where[1:])
        else:
            fatal.append(Problem(table, str(path), name, f"the header names this column {len(where)} "
                                 f"times (columns {positions}) with different values; rename or remove "
                                 "the copies so that one column holds the data", "error"))
    if fatal:
        raise DataValidationError(fatal)
    return df.iloc[:, [i for i in range(len(names)) if i not in drop]]


def _read_csv_fast(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    """Vectorised read (pyarrow) of every column as text; raises ``pa.ArrowInvalid`` on ragged rows."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(encoding="utf8"),
        parse_options=pcsv.ParseOptions(delimiter=sep, newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                            strings_can_be_null=True, null_values=[""],
                                            quoted_strings_can_be_null=True),
    )
    return table.to_pandas()


def _read_csv_records(path: Path, sep: str, table: str, problems: list[Problem]) -> pd.DataFrame:
    """Record by record (Python's csv module), for files with rows of the wrong length.

    Rows with fewer or more fields than the header are left out and reported with their data-row
    numbers (1-based, header excluded), so the rows around them keep their own numbers.
    """
    short: list[int] = []
    long: list[int] = []
    kept: list[list[str]] = []
    rows: list[int] = []
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=sep)
        header = next((r for r in reader if r), [])
        n = len(header)
        number = 0
        for record in reader:
            if not record:  # blank line, skipped as the fast reader does
                continue
            number += 1
            if len(record) < n:
                short.append(number)
            elif len(record) > n:
                long.append(number)
            else:
                kept.append(record)
                rows.append(number)
    for bad, what in ((short, "fewer"), (long, "more")):
        if bad:
            hint = ("the file may be cut short, or a delimiter is missing" if what == "fewer"
                    else "an unquoted delimiter inside a value, or a stray delimiter")
            problems.append(Problem(table, str(path), None,
                                    f"row has {what} fields than the header's {n} ({hint}); row left out",
                                    "rejected", len(bad), tuple(bad[:10])))
    df = pd.DataFrame(kept, columns=header, dtype=object)
    df = df.mask(df == "")
    df.index = pd.Index(rows, dtype=np.int64)
    df.attrs["last_record"] = number
    return df


def read_file(path: str | Path, table: str = "?", problems: list[Problem] | None = None) -> pd.DataFrame:
    """Read a CSV (all columns as text) or Parquet file, adding ``_file`` and ``_row``.

    CSV files are read with a vectorised reader (pyarrow). A file whose header has no comma but
    semicolons (or tabs, or pipes) is read with that delimiter, and the report says so. Rows with
    fewer or more fields than the header (a file cut mid-row, a stray delimiter) are left out and
    counted as rejected; a header that names a column twice is refused (unless both copies hold
    the same values); a last row without a line break after it is flagged as possibly cut short.

    Parameters
    ----------
    path
        ``.csv``, ``.csv.gz``, ``.tsv``, ``.parquet`` or ``.pq``.
    table
        The canonical table it holds, for messages.
    problems
        A list to append row-level problems to (rows left out, notes). Without it, rows that had
        to be left out raise :class:`DataValidationError` (never a silent drop).

    Raises
    ------
    DataValidationError
        For a missing, empty, truncated or non-UTF-8 file, an unknown file type or a duplicated
        header column.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "leads.csv"
    >>> _ = f.write_text("person_id;created_at\\nP1;2024-01-02T09:00:00Z\\n")
    >>> found = []
    >>> read_file(f, "leads", found)[["person_id", "_row"]].values.tolist()
    [['P1', 1]]
    >>> found[0].reason
    "semicolon-delimited file: read with ';' as the delimiter"
    """
    path = Path(path)
    name = path.name.lower()
    found: list[Problem] = []
    if not path.is_file():
        raise DataValidationError([Problem(table, str(path), None, "file not found", "error")])
    if path.stat().st_size == 0:
        raise DataValidationError([Problem(table, str(path), None, "empty file (0 bytes)", "error")])
    if name.endswith((".parquet", ".pq")):
        df = _read_parquet(path, table)
        rows = np.arange(1, len(df) + 1)
    elif name.endswith((".csv", ".tsv", ".csv.gz")):
        df = _read_csv(path, table, found)
        rows = df.index.to_numpy() if len(df) else np.arange(0)
    else:
        raise DataValidationError(
            [Problem(table, str(path), None, f"unknown file type; use one of {', '.join(_SUFFIXES)}",
                     "error")]
        )
    df = _duplicate_columns(df, table, path, found)
    df = df.reset_index(drop=True)
    df[FILE] = str(path)
    df[ROW] = np.asarray(rows, dtype=np.int64)
    if problems is not None:
        problems.extend(found)
    else:
        rejected = [p for p in found if p.severity == "rejected"]
        if rejected:
            raise DataValidationError(rejected)
    return df


def _read_parquet(path: Path, table: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        table.validate(full=True)  # a flipped byte inside a page can leave text that is not UTF-8
        return table.to_pandas()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError or its own errors for broken files
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise DataValidationError([Problem(
            table, str(path), None,
            f"not a readable Parquet file (truncated or corrupt?): {first[:300]}; write it again", "error",
        )]) from None


def _read_csv(path: Path, table: str, found: list[Problem]) -> pd.DataFrame:
    import pyarrow as pa

    name = path.name.lower()
    if not name.endswith(".gz"):
        bad = _first_bad_utf8(path)
        if bad:
            raise DataValidationError([Problem(table, str(path), None, bad.reason, "error")])
    try:
        header = _header_line(path)
    except UnicodeDecodeError as exc:
        raise DataValidationError([Problem(table, str(path), None, f"not UTF-8 ({exc.reason} in the header); "
                                           "re-export as UTF-8", "error")]) from None
    if not header:
        raise DataValidationError(
            [Problem(table, str(path), None, "empty file (no header row)", "error")])
    expected = "\t" if name.endswith(".tsv") else ","
    sep = _delimiter(header, expected)
    if sep != expected:
        found.append(Problem(table, str(path), None, f"{_DELIMITER_NAMES[sep]}-delimited file: read "
                             f"with {sep!r} as the delimiter", "warning"))
    names = next(csv.reader([header], delimiter=sep))
    try:
        df = _read_csv_fast(path, sep, names)
        df.index = pd.RangeIndex(1, len(df) + 1)
    except pa.ArrowInvalid as exc:
        if "columns, got" not in str(exc):
            raise DataValidationError([Problem(
                table, str(path), None, f"malformed CSV: {_first_line(exc)}", "error")]) from None
        try:
            df = _read_csv_records(path, sep, table, found)
        except csv.Error as err:
            raise DataValidationError([Problem(
                table, str(path), None, f"malformed CSV: {err}", "error")]) from None
    except (OSError, EOFError) as exc:  # a broken gzip stream
        raise DataValidationError([Problem(
            table, str(path), None, f"unreadable file: {_first_line(exc)}", "error")]) from None
    last = df.attrs.pop("last_record", len(df))
    if len(df) and int(df.index[-1]) == last and not _ends_with_newline(path):
        found.append(Problem(table, str(path), None, "no line break after the last row: the file may be "
                             "cut short (check that row)", "warning", 1, (int(df.index[-1]),)))
    return df


def _first_line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:300]


def _ends_with_newline(path: Path) -> bool:
    if path.name.lower().endswith(".gz"):
        return True  # compressed by a tool, not cut by hand: the gzip stream's own end is checked
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) in (b"\n", b"\r")


def _truthy(values: pd.Series, allowed: list[Any] | None) -> np.ndarray:
    if allowed is None:
        allowed = [True, "true", "True", "TRUE", "1", 1, "yes", "t"]
    return values.isin(allowed).to_numpy(bool)


def _column_values(raw: pd.DataFrame, spec: Any) -> pd.Series:
    if isinstance(spec, str):
        spec = {"from": spec}
    if "const" in spec:
        values = pd.Series([spec["const"]] * len(raw), index=raw.index, dtype=object)
    elif "join" in spec:
        parts = [raw[c].astype("string").fillna("") for c in spec["join"]]
        out = parts[0]
        for p in parts[1:]:
            out = out + spec.get("sep", "-") + p
        values = out
    else:
        sources = spec["from"] if isinstance(spec["from"], list) else [spec["from"]]
        present = [c for c in sources if c in raw]
        values = raw[present[0]].copy()
        for c in present[1:]:
            values = values.where(values.notna(), raw[c])
    if "split" in spec:
        values = values.astype("string").str.split(spec["split"]).str[0].str.strip()
    if "values" in spec:
        recode = {str(k).lower(): v for k, v in spec["values"].items()}
        low = values.astype("string").str.strip().str.lower()
        mapped = low.map(recode)
        fallback = spec["default"] if "default" in spec else values
        values = mapped.astype(object).where(mapped.notna(), fallback)
        if "default" in spec:
            values = values.where(pd.Series(low.notna().to_numpy(), index=values.index), None)
    if "money" in spec:
        values = _money_values(values, spec["money"])
    if "unit" in spec:
        num = pd.to_numeric(values, errors="coerce")
        values = pd.to_datetime(num, unit=spec["unit"], utc=True).astype(object).where(
            num.notna(), values
        )
    if "scale" in spec:
        num = pd.to_numeric(values, errors="coerce")
        values = (num * float(spec["scale"])).astype(object).where(num.notna(), values)
    if "null_unless" in spec:
        cond = spec["null_unless"]
        col = raw[_first_present(raw, cond["column"])]
        keep = col.notna().to_numpy() if cond.get("not_null") else _truthy(col, cond.get("in"))
        values = values.where(keep, None)
    if "fill" in spec:
        values = values.where(values.notna(), spec["fill"])
    return values


def _money_values(values: pd.Series, option: Any) -> pd.Series:
    """``money: true`` (or ``money: {decimal: ","}``): amounts with currency symbols and separators.

    ``$12,000.00`` is 12000; a decimal comma only with ``decimal: ","``; an ambiguous value such as
    ``1.200,50`` stays text naming the reason, so validation rejects its row instead of misreading it.
    """
    from closedloop_nb.imports._crm import parse_money

    decimal = option.get("decimal") if isinstance(option, dict) else None
    num, bad, ambiguous = parse_money(values, decimal)
    out = num.astype(object)
    # refused values reach validation as text, shown in its "not a number" reason (kept short: it cuts
    # examples at 40 characters)
    out[ambiguous] = values[ambiguous].astype(str) + AMBIGUOUS_DECIMAL
    out[bad] = values[bad]
    return out


def _first_present(raw: pd.DataFrame, names: str | list[str]) -> str:
    names = [names] if isinstance(names, str) else names
    return next((n for n in names if n in raw), names[0])


def _missing_sources(raw: pd.DataFrame, mapping: Mapping) -> list[tuple[str, list[str]]]:
    spec_cols = table_spec(mapping.table)
    out = []
    for target, spec in mapping.columns.items():
        if isinstance(spec, str):
            spec = {"from": spec}
        needed = spec.get("join") or ([spec["from"]] if isinstance(spec.get("from"), str)
                                      else spec.get("from") or [])
        if not needed:
            continue
        cond = spec.get("null_unless", {}).get("column")
        if cond is not None and not isinstance(cond, str):
            cond = _first_present(raw, cond)
        if "join" in spec:
            lacking = [c for c in needed if c not in raw]
        else:
            lacking = [] if any(c in raw for c in needed) else list(needed)
        if cond and cond not in raw:
            lacking.append(cond)
        if lacking and spec_cols.column(target).required:
            out.append((target, lacking))
    for extra, col in mapping.keep.items():
        if col not in raw:
            out.append((extra, [col]))
    for col in mapping.where:
        if col not in raw:
            out.append(("where", [col]))
    return out


def apply_mapping(raw: pd.DataFrame, mapping: Mapping | None, table: str,
                  hash_key: bytes | None = None) -> tuple[pd.DataFrame, list[Problem]]:
    """Turn a raw export (from :func:`read_file`) into canonical-named columns.

    Without a mapping, columns already named as in the data model are taken as they are.

    Returns
    -------
    (frame, problems)
        The mapped frame (raw values, canonical names, plus ``_file`` and ``_row``) and the rows
        filtered or folded by the mapping, counted.

    Raises
    ------
    DataValidationError
        When an export column that the mapping needs is missing.
    """
    spec = table_spec(table)
    file = str(raw[FILE].iloc[0]) if len(raw) else "?"
    problems: list[Problem] = []
    if mapping is None:
        out = raw[[c for c in spec.names if c in raw] + [FILE, ROW]].copy()
        return out, problems
    if mapping.table != table:
        raise ValueError(f"mapping {mapping.name} is for table {mapping.table}, not {table}")
    lacking = _missing_sources(raw, mapping)
    if lacking:
        raise DataValidationError([
            Problem(table, file, cols[0] if len(cols) == 1 else ", ".join(cols),
                    f"missing column needed for '{target}' by mapping {mapping.name}; "
                    f"the file has: {', '.join(c for c in raw.columns if c not in (FILE, ROW))}",
                    "error")
            for target, cols in lacking
        ])
    raw = _filter_rows(raw, mapping, table, file, problems)
    out = pd.DataFrame(index=raw.index)
    for target, col_spec in mapping.columns.items():
        if _sources_present(raw, col_spec):  # optional columns may be absent from an export
            out[target] = _column_values(raw, col_spec)
    for extra, col in mapping.keep.items():
        out[extra] = raw[col]
    for target, kind in mapping.pii.items():
        if target in out:
            out[target] = hash_identifiers(out[target], kind, key=hash_key)  # type: ignore[arg-type]
    out[FILE] = raw[FILE]
    out[ROW] = raw[ROW]
    if mapping.dedupe:
        out = _dedupe(out, mapping, table, file, problems)
    return out.reset_index(drop=True), problems


def _sortable_time(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values
    as_text = values.map(lambda v: v.isoformat() if isinstance(v, pd.Timestamp) else v)
    return pd.to_datetime(as_text, utc=True, errors="coerce", format="ISO8601")


def _dedupe(out: pd.DataFrame, mapping: Mapping, table: str, file: str,
            problems: list[Problem]) -> pd.DataFrame:
    """Fold rows sharing the dedupe key into the earliest, counting the folded ones."""
    key = list(mapping.dedupe["key"])  # type: ignore[index]
    order = mapping.dedupe.get("order_by")  # type: ignore[union-attr]
    sort_cols = [*key, "_t", ROW] if order else [*key, ROW]
    tmp = out.assign(_t=_sortable_time(out[order])) if order else out
    tmp = tmp.sort_values(sort_cols, kind="stable", na_position="last")
    folded = tmp.duplicated(subset=key, keep="first")
    if folded.any():
        rows = tmp.loc[folded, ROW].to_numpy()
        problems.append(Problem(table, file, ", ".join(key),
                                f"later rows for the same {'/'.join(key)} folded into the earliest "
                                f"(mapping {mapping.name})", "collapsed", len(rows),
                                tuple(int(r) for r in np.sort(rows)[:10])))
    return tmp.loc[~folded].drop(columns=["_t"], errors="ignore").sort_values(ROW)


def _sources_present(raw: pd.DataFrame, spec: Any) -> bool:
    if isinstance(spec, str):
        return spec in raw
    cond = spec.get("null_unless", {}).get("column")
    if cond is not None and _first_present(raw, cond) not in raw:
        return False
    if "const" in spec:
        return True
    if "join" in spec:
        return all(c in raw for c in spec["join"])
    sources = spec["from"] if isinstance(spec["from"], list) else [spec["from"]]
    return any(c in raw for c in sources)


def _filter_rows(raw: pd.DataFrame, mapping: Mapping, table: str, file: str,
                 problems: list[Problem]) -> pd.DataFrame:
    for col, rule in mapping.where.items():
        if isinstance(rule, dict) and rule.get("not_null"):
            keep = raw[col].notna().to_numpy()
            why = f"filtered by mapping {mapping.name}: {col} is empty"
        else:
            allowed = [str(v) for v in (rule if isinstance(rule, list) else [rule])]
            keep = raw[col].astype("string").isin(allowed).fillna(False).to_numpy(bool)
            why = f"filtered by mapping {mapping.name}: {col} not in {allowed}"
        if (~keep).any():
            rows = raw.loc[~keep, ROW].to_numpy()
            problems.append(Problem(table, file, col, why, "info", len(rows), tuple(rows[:10])))
        raw = raw.loc[keep]
    return raw


def read_mapped(path: str | Path, table: str, mapping: str | Path | Mapping | None = None,
                hash_key: bytes | None = None) -> tuple[pd.DataFrame, list[Problem]]:
    """Read one export and apply its mapping (see :func:`apply_mapping`)."""
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = Mapping.load(mapping)
    found: list[Problem] = []
    raw = read_file(path, table, found)
    if mapping is None:
        found.extend(unknown_columns([c for c in raw.columns if c not in (FILE, ROW)], table, str(path)))
    frame, problems = apply_mapping(raw, mapping, table, hash_key=hash_key)
    return frame, found + problems


def unknown_columns(columns: list[str], table: str, file: str) -> list[Problem]:
    """Warnings for columns that are not in the data model, with the likely intended name.

    A misspelled optional column (``campaing``) would otherwise be ignored while ``campaign``
    stays empty.

    Examples
    --------
    >>> [p.reason for p in unknown_columns(["visitor_id", "campaing"], "touchpoints", "t.csv")]
    ["not a column of touchpoints, ignored: did you mean 'campaign'?"]
    """
    spec = table_spec(table) if table in TABLES else None
    if spec is None:
        return []
    absent = [n for n in spec.names if n not in columns]
    out = []
    for col in columns:
        if col in spec.names:
            continue
        close = difflib.get_close_matches(str(col).strip().lower(), absent, n=1, cutoff=0.75)
        if close:
            out.append(Problem(table, file, str(col), f"not a column of {table}, ignored: did you mean "
                               f"{close[0]!r}?", "warning"))
    return out
