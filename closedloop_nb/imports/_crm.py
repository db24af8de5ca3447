"""What the CRM and billing imports share: reading exports in any encoding, headers matched loosely,
booleans, dates in the forms CRMs write them, money with symbols and separators, and folding rows.

Every function here keeps row numbers (``_row``, 1-based data rows) so that problems name them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.imports._common import ImportOptions
from closedloop_nb.loaders import FILE, ROW, read_file
from closedloop_nb.schema import DEAL_STAGES

__all__ = ["canonical_stage", "column", "fold", "fold_earliest", "parse_bool", "parse_dates", "parse_money",
           "read_export", "recognise", "stem_key"]

_BOOL_TRUE = {"true", "t", "1", "yes", "y", "on"}
_BOOL_FALSE = {"false", "f", "0", "no", "n", "off"}


def stem_key(path: Path) -> str:
    """A file's name reduced for recognition: ``Opportunity_History.csv`` -> ``opportunityhistory``."""
    name = path.name.lower()
    for suffix in (".gz", ".csv", ".tsv", ".parquet", ".pq", ".json"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^a-z0-9]", "", name)


def recognise(
    files: Iterable[Path], kind_of: Callable[[str], str | None], source: str, expected: str,
    required: Sequence[str] = (), inputs: Sequence[Path] = (),
) -> tuple[dict[str, Path], list[Problem]]:
    """Each export file's kind, recognised by its name; the same rules for every CRM and billing import.

    Parameters
    ----------
    files
        The input files (folders already expanded by ``_common.input_files``).
    kind_of
        The kind of a file from its :func:`stem_key` (``"deals"``, ``"Opportunity"``, ...), or None.
    source, expected
        The tool's name and what its files are called (``"HubSpot"``, ``"contacts or deals
        exports"``), for the messages.
    required
        Kinds of which at least one must be there (none: no requirement).
    inputs
        What the user named, for the message when nothing required is found.

    Returns
    -------
    (files, problems)
        ``{kind: path}`` and a warning per file not recognised (skipped, never read).

    Raises
    ------
    DataValidationError
        When two files are of one kind (both named: keeping either would lose the other's rows
        without a word; merge them, or import them one at a time), or when none of ``required`` is
        found. The same file named twice (a folder and a file in it) is one file.

    Examples
    --------
    >>> kind = lambda key: "deals" if "deal" in key else None
    >>> found, skipped = recognise([Path("deals.csv"), Path("notes.txt")], kind, "Pipedrive", "deals")
    >>> {k: str(v) for k, v in found.items()}, skipped[0].reason
    ({'deals': 'deals.csv'}, 'not recognised as Pipedrive deals (by its name); skipped')
    """
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    twice: list[Problem] = []
    seen: set[Path] = set()
    for f in files:
        same = f.resolve()
        if same in seen:
            continue
        seen.add(same)
        kind = kind_of(stem_key(f))
        if kind is None:
            why = f"not recognised as {source} {expected} (by its name); skipped"
            problems.append(Problem("?", str(f), None, why, "warning"))
        elif kind in found:
            why = (f"two {source} {kind} exports: {found[kind]} and {f}; one is read per kind, so "
                   "merge them into one file (one header row) or import them one at a time")
            twice.append(Problem("?", str(f), None, why, "error"))
        else:
            found[kind] = f
    if twice:
        raise DataValidationError(twice)
    if required and not set(required) & set(found):
        named = ", ".join(map(str, inputs)) or "the inputs"
        why = f"no {source} {' or '.join(required)} export found (by the files' names)"
        raise DataValidationError([Problem("?", named, None, why, "error")])
    return found, problems


def _header_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def column(raw: pd.DataFrame, *names: str) -> pd.Series | None:
    """The first of ``names`` present in ``raw``, matched ignoring case, spaces and punctuation.

    Data Loader writes API names upper-case (``CONVERTEDOPPORTUNITYID``), reports write labels
    (``Opportunity ID``); both find ``ConvertedOpportunityId`` / ``Id``.
    """
    keys = {_header_key(c): c for c in raw.columns if c not in (FILE, ROW)}
    for n in names:
        hit = keys.get(_header_key(n))
        if hit is not None:
            return raw[hit]
    return None


def read_export(path: Path, options: ImportOptions, table: str = "?") -> pd.DataFrame:
    """Read one export (all columns as text) in ``options.encoding``, adding ``_file`` and ``_row``.

    Without an encoding, UTF-8 (a byte-order mark is dropped); a file that is not UTF-8 is refused
    with the byte, line and the option to pass.
    """
    name = path.name.lower()
    if not name.endswith((".csv", ".tsv", ".csv.gz")) or (options.encoding is None and name.endswith(".gz")):
        return read_file(path, table)
    if path.stat().st_size == 0:
        raise DataValidationError([Problem(table, str(path), None, "empty file (0 bytes)", "error")])
    encoding = options.encoding or "utf-8-sig"
    if options.encoding is None:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            why = (
                f"not UTF-8: byte 0x{data[exc.start]:02x} at line {line}; say which encoding the "
                "export is in (--encoding cp1252 for Windows/Excel exports, encoding='cp1252' in Python)"
            )
            raise DataValidationError([Problem(table, str(path), None, why, "error")]) from None
    try:
        df = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding=encoding,
            sep="\t" if name.endswith(".tsv") else ",",
        )
    except UnicodeDecodeError as exc:
        why = f"cannot be read as {encoding}: {exc.reason} at byte {exc.start}"
        raise DataValidationError([Problem(table, str(path), None, why, "error")]) from None
    except LookupError:
        why = f"unknown encoding {encoding!r} (use a Python codec name such as cp1252, latin-1, utf-16)"
        raise DataValidationError([Problem(table, str(path), None, why, "error")]) from None
    except pd.errors.EmptyDataError:
        raise DataValidationError(
            [Problem(table, str(path), None, "empty file (no header row)", "error")]
        ) from None
    except pd.errors.ParserError as exc:
        raise DataValidationError(
            [Problem(table, str(path), None, f"malformed CSV: {exc}", "error")]
        ) from None
    df = df.reset_index(drop=True)
    df[FILE] = str(path)
    df[ROW] = np.arange(1, len(df) + 1)
    return df


def parse_bool(values: pd.Series | None, index: pd.Index | None = None) -> pd.Series:
    """``true/false``, ``TRUE/FALSE``, ``1/0``, ``yes/no``, ``on/off`` (as Data Loader reads them)."""
    if values is None:
        return pd.Series(pd.NA, index=index, dtype="boolean")
    low = values.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    out[low.isin(_BOOL_TRUE).fillna(False).to_numpy(bool)] = True
    out[low.isin(_BOOL_FALSE).fillna(False).to_numpy(bool)] = False
    return out


# --- dates ---------------------------------------------------------------------------------------

_SLASH = re.compile(
    r"^(\d{1,2})[./-](\d{1,2})[./-](\d{4}|\d{2})"
    r"(?:[ T,]+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp]\.?[Mm]\.?)?)?$"
)
_ORDERS = {"MDY": "month/day/year", "DMY": "day/month/year"}


def _date_order(config_format: str | None) -> str | None:
    if not config_format:
        return None
    fmt = str(config_format).strip()
    if fmt.upper() in _ORDERS:
        return fmt.upper()
    if "%" in fmt:
        m, d = fmt.find("%m"), fmt.find("%d")
        if m >= 0 and d >= 0:
            return "MDY" if m < d else "DMY"
    raise DataValidationError(
        [
            Problem(
                "config",
                "date_format",
                None,
                f"date_format {config_format!r}: use MDY (02/23/26), DMY (23/02/26) "
                "or a format such as '%m/%d/%y %I:%M %p'",
                "error",
            )
        ]
    )


def parse_dates(
    frame: pd.DataFrame, columns: dict[str, pd.Series | None], table: str, date_format: str | None = None
) -> tuple[dict[str, pd.Series], list[str]]:
    """Dates of one export as ISO text, naive unless the export wrote an offset.

    ISO values (with or without an offset, date-only or with a time) pass unchanged; slash forms
    such as report exports' ``02/23/26 08:55 PM`` become ``2026-02-23T20:55:00``. Whether ``a/b/yy``
    is month/day or day/month comes from ``date_format`` (``MDY``, ``DMY`` or a ``%m/%d/%y`` style
    format), else from the file itself: a value with a first part above 12 says day first, a second
    part above 12 says month first.

    Returns
    -------
    (columns, notes)
        The parsed columns (same keys) and sentences on the order decided.

    Raises
    ------
    DataValidationError
        When slash dates are ambiguous (no value above 12 in either place, no ``date_format``), or
        when the file holds both orders; the message names the column and rows.
    """
    file = str(frame[FILE].iloc[0]) if len(frame) else "?"
    order = _date_order(date_format)
    parts: dict[str, pd.DataFrame] = {}
    evidence: dict[str, list[tuple[str, int, str]]] = {"MDY": [], "DMY": []}
    for name, values in columns.items():
        if values is None:
            continue
        text = values.astype("string").str.strip()
        m = text.str.extract(_SLASH)
        parts[name] = m
        first = pd.to_numeric(m[0], errors="coerce")
        second = pd.to_numeric(m[1], errors="coerce")
        for mask, key in (((first > 12).fillna(False), "DMY"), ((second > 12).fillna(False), "MDY")):
            if mask.any():
                i = int(np.flatnonzero(mask.to_numpy())[0])
                evidence[key].append((name, int(frame[ROW].iloc[i]), str(text.iloc[i])))
    notes: list[str] = []
    any_slash = any(p[0].notna().any() for p in parts.values())
    if order is None and any_slash:
        if evidence["MDY"] and evidence["DMY"]:
            (c1, r1, v1), (c2, r2, v2) = evidence["MDY"][0], evidence["DMY"][0]
            why = (
                f"dates in two orders: {v1!r} ({c1}, row {r1}) is month/day, {v2!r} ({c2}, row {r2}) is "
                "day/month; set date_format (MDY or DMY) in the import config"
            )
            raise DataValidationError([Problem(table, file, c1, why, "error")])
        for key in ("MDY", "DMY"):
            if evidence[key]:
                order = key
                c, r, v = evidence[key][0]
                notes.append(
                    f"{Path(file).name}: dates read as {_ORDERS[key]}, as {v!r} ({c}, row {r}) shows"
                )
        if order is None:
            name, p = next((n, p) for n, p in parts.items() if p[0].notna().any())
            rows = frame.loc[p[0].notna().to_numpy(), ROW].to_numpy()
            example = str(columns[name][p[0].notna()].iloc[0])
            why = (
                f"ambiguous date {example!r}: month/day or day/month? No value in the file tells; set "
                "date_format: MDY (or DMY) in the import config"
            )
            raise DataValidationError(
                [Problem(table, file, name, why, "error", len(rows), tuple(int(r) for r in rows[:10]))]
            )
    elif order is not None and any_slash:
        notes.append(f"{Path(file).name}: dates read as {_ORDERS[order]} (date_format)")
    out: dict[str, pd.Series] = {}
    for name, values in columns.items():
        if values is None:
            continue
        out[name] = _midnight(_slash_to_iso(values, parts[name], order))
    return out, notes


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _midnight(values: pd.Series) -> pd.Series:
    """``2026-02-23`` as ``2026-02-23T00:00:00``: a date-only value is midnight local time, not an offset."""
    text = values.astype("string").str.strip()
    bare = text.str.match(_DATE_ONLY).fillna(False).to_numpy(bool)
    return values.astype(object).where(~bare, (text + "T00:00:00").astype(object))


def _slash_to_iso(values: pd.Series, m: pd.DataFrame, order: str | None) -> pd.Series:
    hit = m[0].notna().to_numpy()
    if not hit.any():
        return values
    a, b = pd.to_numeric(m[0]), pd.to_numeric(m[1])
    month, day = (a, b) if order == "MDY" else (b, a)
    year = pd.to_numeric(m[2])
    year = year.where(year >= 100, np.where(year < 70, 2000 + year, 1900 + year))
    hour = pd.to_numeric(m[3]).fillna(0)
    ampm = m[6].astype("string").str.lower().str[0]
    hour = hour.where(~((ampm == "p") & (hour < 12)).fillna(False), hour + 12)
    hour = hour.where(~((ampm == "a") & (hour == 12)).fillna(False), 0)
    minute, second = pd.to_numeric(m[4]).fillna(0), pd.to_numeric(m[5]).fillna(0)
    iso = pd.Series(
        [
            f"{int(y):04d}-{int(mo):02d}-{int(d):02d}"
            + (f"T{int(h):02d}:{int(mi):02d}:{int(s):02d}" if has_t else "")
            if ok
            else None
            for ok, y, mo, d, h, mi, s, has_t in zip(
                hit,
                year.fillna(0),
                month.fillna(0),
                day.fillna(0),
                hour,
                minute,
                second,
                m[3].notna().to_numpy(),
                strict=True,
            )
        ],
        index=values.index,
        dtype=object,
    )
    return values.astype(object).where(~hit, iso)


# --- money ---------------------------------------------------------------------------------------

_SYMBOLS = re.compile(r"[$€£¥₹₩₽₺₫₱₪¢]|R\$|S/\.?|US\$|CA\$|A\$|MX\$|COL\$|\b[A-Z]{3}\b")


def parse_money(values: pd.Series, decimal: str | None = None) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Amounts as written by CRMs (``$12,000.00``, ``12000``, ``1.200,50`` with ``decimal=","``).

    Currency symbols and codes and spaces are dropped. With ``decimal="."`` (or ``None``) commas
    are thousands separators; with ``decimal=","`` dots are. Without ``decimal``, only the US form
    is read (``12,000.50``, ``12000.5``); anything else with digits (``1.200,50``, ``12,5``, and
    ``1.200``, which is 1,200 where dots group thousands) is *ambiguous*: NaN and flagged in the third
    mask, never misread.

    Returns
    -------
    (amounts, unparseable, ambiguous)
        Floats (NaN where not read), and boolean masks of values that are not numbers at all and of
        values refused as ambiguous.
    """
    text = values.astype("string").str.strip()
    bare = text.str.replace(_SYMBOLS, "", regex=True).str.replace(r"[\s\u00a0']", "", regex=True)
    negative = bare.str.match(r"^\(.*\)$").fillna(False) | bare.str.startswith("-").fillna(False)
    bare = bare.str.strip("()").str.lstrip("-+")
    ambiguous = np.zeros(len(values), dtype=bool)
    if decimal == ",":
        cleaned = bare.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        if decimal is None:
            # a comma after the last dot (1.200,50), or dots as thousands groups (1.200 / 1.200.000)
            # read as written in the US: commas group thousands in threes, one dot marks decimals
            us = bare.str.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?|\d+(\.\d+)?").fillna(True)
            # ... but "1.200" (one dot, three digits after it) is 1,200 where dots group thousands
            dot_thousands = bare.str.fullmatch(r"\d{1,3}\.\d{3}").fillna(False)
            has_digits = bare.str.contains(r"\d").fillna(False)
            ambiguous = (has_digits & (~us | dot_thousands)).to_numpy(bool)
        cleaned = bare.str.replace(",", "", regex=False)
    num = pd.to_numeric(cleaned.where(~pd.Series(ambiguous, index=values.index)), errors="coerce")
    num = num.where(~negative.to_numpy(bool), -num)
    filled = text.notna().to_numpy() & (text.fillna("") != "").to_numpy()
    unparseable = filled & num.isna().to_numpy() & ~ambiguous
    return num.astype("float64"), unparseable, ambiguous


# --- folding -------------------------------------------------------------------------------------


def canonical_stage(value: object, where: str) -> str:
    """A stage map's value as a canonical stage (``Closed Won`` -> ``closed_won``); anything that is
    not one of :data:`~closedloop_nb.schema.DEAL_STAGES` refuses the config, naming the entry."""
    v = str(value).strip().lower().replace(" ", "_")
    if v not in DEAL_STAGES:
        why = f"stage map value {value!r} is not one of {', '.join(DEAL_STAGES)}"
        raise DataValidationError([Problem("config", "stages", where, why, "error")])
    return v


def fold_earliest(people: pd.DataFrame, reason: str) -> tuple[pd.DataFrame, list[Problem]]:
    """Leads sharing a ``person_id`` (the keyed hash of one e-mail) folded into the earliest created,
    the others counted as collapsed with ``reason``."""
    people = people.assign(_t=pd.to_datetime(people["created_at"], errors="coerce", utc=True,
                                             format="ISO8601"))
    folded, found = fold(people, ["person_id"], ["_t"], "leads", reason)
    return folded.drop(columns="_t"), found


def fold(
    frame: pd.DataFrame,
    key: Iterable[str],
    order_by: Iterable[str],
    table: str,
    reason: str,
    ascending: Iterable[bool] | bool = True,
) -> tuple[pd.DataFrame, list[Problem]]:
    """Keep the first row per ``key`` in ``order_by`` order; the others are counted as collapsed.

    Rows with an empty key are kept as they are (validation deals with them).
    """
    key, order_by = list(key), list(order_by)
    if frame.empty:
        return frame, []
    work = frame.sort_values(
        [*order_by, ROW],
        ascending=ascending if isinstance(ascending, bool) else [*ascending, True],
        kind="stable",
        na_position="last",
    )
    has_key = work[key].notna().all(axis=1).to_numpy()
    dup = work.duplicated(subset=key, keep="first").to_numpy() & has_key
    problems: list[Problem] = []
    if dup.any():
        gone = work.loc[dup]
        for file, rows in gone.groupby(FILE, sort=False)[ROW]:
            r = np.sort(rows.to_numpy())
            problems.append(
                Problem(
                    table,
                    str(file),
                    ", ".join(key),
                    reason,
                    "collapsed",
                    len(r),
                    tuple(int(x) for x in r[:10]),
                )
            )
    return work.loc[~dup].sort_values([FILE, ROW], kind="stable"), problems


# --- JSON API objects ----------------------------------------------------------------------------


def read_records(path: Path, options: ImportOptions, table: str = "?") -> list[dict]:
    """The objects of an API export: a JSON list, a list object (``{"data": [...]}``, ChartMogul's
    ``{"entries": [...]}``) or JSON lines. Refused with the file named when it is none of these."""
    import json

    text = path.read_text(options.encoding or "utf-8-sig")
    try:
        if path.name.lower().endswith((".jsonl", ".ndjson")):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        why = f"not JSON: {exc.msg} at line {exc.lineno}"
        raise DataValidationError([Problem(table, str(path), None, why, "error")]) from None
    if isinstance(data, dict):
        for key in ("data", "entries", "customers", "subscriptions", "invoices"):
            if isinstance(data.get(key), list):
                return data[key]
    if isinstance(data, list):
        return data
    why = 'expected a list of objects (a JSON array, {"data": [...]} or JSON lines)'
    raise DataValidationError([Problem(table, str(path), None, why, "error")])


def nested(obj: dict | None, *keys: str, default=None):
    """``obj[k1][k2]...`` or ``default`` when any level is missing or null."""
    for k in keys:
        if not isinstance(obj, dict) or obj.get(k) is None:
            return default
        obj = obj[k]
    return obj
