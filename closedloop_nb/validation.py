"""Type and check canonical tables; count every row that cannot be used, by reason.

:func:`validate_tables` takes mapped tables (from :mod:`closedloop_nb.loaders`, or any DataFrames
with canonical column names) and returns a :class:`Dataset`: the usable rows, typed, plus a
:class:`ValidationReport` that says, per table, how many rows (and how much money) came in, were kept,
and were rejected, and why, with file, column and row numbers.

Fatal problems (a missing column, an empty or non-UTF-8 file, naive timestamps with no time zone
given, a column of the wrong type) are ``error``; :meth:`ValidationReport.raise_for_errors` raises
:class:`~closedloop_nb.errors.DataValidationError` for them. Rows that are unusable on their own
(unparseable or missing values, negative amounts, duplicate ids, references to unknown people or deals)
are ``rejected``: removed and counted, never dropped silently.

Examples
--------
>>> import pandas as pd
>>> leads = pd.DataFrame({"person_id": ["p1", "p2"],
...                       "created_at": ["2024-01-02T10:00:00Z", "not a date"]})
>>> ds = validate_tables({"leads": leads})
>>> len(ds.tables["leads"]), ds.report.n_rejected
(1, 1)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.channels import UNASSIGNED, ChannelRules, group_channels
from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.loaders import FILE, ROW, Mapping, read_mapped, unknown_columns
from closedloop_nb.privacy import MissingHashKeyError, mask_contact_details
from closedloop_nb.schema import CURRENCY_COLUMNS, TABLES, Column, TableSpec, pandas_dtype, table_spec

__all__ = ["Dataset", "InputLimits", "ValidationReport", "load_dataset", "validate_tables"]

# An offset after a time of day: a date alone ("2024-02-15") ends in digits that are not an offset.
_TZ_SUFFIX = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s?(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)
_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}
_SHOW = 10

# Numbers: plain ("1234.5", "-1e3") or with comma thousands separators and a decimal point ("1,234.50").
_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SEPARATED = re.compile(r"^[+-]?[\d.,\s']*\d[\d.,\s']*$")  # digits and separators only
#: Placeholders that exports write for a missing id; read as missing in id columns.
NULL_TOKENS = frozenset({"null", "none", "nan", "nil", "undefined", "n/a", "#n/a"})
#: The separator of steps in path tables; it is replaced by PATH_SEP_SUBSTITUTE in names that become steps.
PATH_SEP = ">"
PATH_SEP_SUBSTITUTE = "\u203a"  # "›", single right-pointing angle quotation mark
#: Text columns whose values can be steps of a path table (journeys' ``level``) or join them (spend).
_PATH_LEVELS = {
    "touchpoints": ("source", "medium", "campaign", "keyword", "landing_page", "interaction_type",
                    "click_id_type", "channel"),
    "spend": ("channel", "campaign"),
    "leads": ("lead_source", "segment"),
}


@dataclass(frozen=True)
class InputLimits:
    """Plausibility limits applied while validating; rows outside them are counted, never silent.

    Attributes
    ----------
    date_window
        ``(first, end)``: timestamps and dates before ``first`` or on/after ``end`` are rejected as
        implausible (a year 1, 1900, 2200 or 9999 is a typo or a placeholder, and would turn a median
        sales cycle into 64,235 days). ``None`` switches the check off.
    max_amount
        Money values (amounts, costs, MRR) whose absolute value is above this are rejected as
        implausible, so that no total can overflow. ``None`` switches the check off (totals that
        still overflow are then refused).
    max_text_length
        Text values longer than this are cut to it and counted (ids that long are rejected: cutting
        them could merge two). ``None`` switches the check off.

    Examples
    --------
    >>> InputLimits(date_window=("2000-01-01", "2031-01-01")).date_window
    ('2000-01-01', '2031-01-01')
    """

    date_window: tuple[str, str] | None = ("1990-01-01", "2100-01-01")
    max_amount: float | None = 1e12
    max_text_length: int | None = 1000

    def __post_init__(self) -> None:
        if self.date_window is not None:
            try:
                first, end = (pd.Timestamp(d) for d in self.date_window)
            except (TypeError, ValueError):
                raise ValueError(f"date_window wants two dates (first, end), got "
                                 f"{self.date_window!r}") from None
            if not first < end:
                raise ValueError(f"date_window: {self.date_window[0]} is not before {self.date_window[1]}")
        if self.max_amount is not None and not self.max_amount > 0:
            raise ValueError(f"max_amount must be positive, got {self.max_amount!r}")
        if self.max_text_length is not None and self.max_text_length < 1:
            raise ValueError(f"max_text_length must be at least 1, got {self.max_text_length!r}")


def _show(values: Any, n: int = 3, width: int = 40) -> str:
    """Up to ``n`` distinct example values for a message: contact details masked, long text cut."""
    out = []
    for v in pd.unique(pd.Series(values, dtype=object).astype(str))[:n]:
        text = mask_contact_details(v)[0]
        out.append(repr(text if len(text) <= width else text[:width] + "..."))
    return ", ".join(out)


def _is_id(name: str) -> bool:
    return name.endswith("_id")


@dataclass
class ValidationReport:
    """What came in, what was kept, and every problem found.

    Attributes
    ----------
    problems
        One :class:`~closedloop_nb.errors.Problem` per (table, column, reason).
    counts
        Per table: ``rows_in``, ``rows_kept``, ``rows_rejected``, ``rows_collapsed``,
        ``rows_filtered`` and, for tables with money, ``value_in``, ``value_kept``,
        ``value_rejected``.
    """

    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        """The fatal problems."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def n_rejected(self) -> int:
        """Rows rejected across all tables."""
        return int(sum(c.get("rows_rejected", 0) for c in self.counts.values()))

    @property
    def ok(self) -> bool:
        """True when nothing is fatal and no row was rejected."""
        return not self.errors and self.n_rejected == 0

    def raise_for_errors(self, rejected: bool = False) -> None:
        """Raise :class:`DataValidationError` for fatal problems (and rejected rows if asked)."""
        bad = [p for p in self.problems
               if p.severity == "error" or (rejected and p.severity == "rejected")]
        if bad:
            raise DataValidationError(bad)

    def to_frame(self) -> pd.DataFrame:
        """Problems as a tidy table (one row per problem)."""
        cols = ["severity", "table", "file", "column", "reason", "n_rows", "value", "rows"]
        rows = [{**{k: getattr(p, k) for k in cols[:-1]},
                 "rows": ", ".join(map(str, p.rows[:_SHOW]))} for p in self.problems]
        return pd.DataFrame(rows, columns=cols)

    @property
    def summary(self) -> pd.DataFrame:
        """Per-table counts of rows (and money) in, kept, rejected, folded and filtered."""
        frame = pd.DataFrame.from_dict(self.counts, orient="index")
        frame.index.name = "table"
        rows = [c for c in frame.columns if c.startswith("rows_")]
        frame[rows] = frame[rows].fillna(0).astype(int)
        return frame

    def to_text(self) -> str:
        """A plain-text report, for terminals and logs."""
        lines = ["Data quality summary", ""]
        if self.counts:
            lines.append(self.summary.to_string())
            lines.append("")
        if not self.problems:
            lines.append("No problems found.")
        for p in self.problems:
            lines.append(str(p))
        return "\n".join(lines)

    def to_html(self) -> str:
        """An HTML fragment: the summary table and the problems table."""
        parts = ["<h3>Rows in, kept and rejected</h3>", self.summary.to_html(float_format="{:,.2f}".format)]
        parts += ["<h3>Problems</h3>",
                  self.to_frame().to_html(index=False) if self.problems else "<p>None.</p>"]
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        n_err = len(self.errors)
        return (f"<ValidationReport {len(self.counts)} tables, {n_err} errors, "
                f"{self.n_rejected:,} rows rejected, {len(self.problems)} problems>")


@dataclass
class Dataset:
    """Validated canonical tables plus the report of what was rejected.

    Attributes
    ----------
    tables
        ``{table name: DataFrame}`` of usable rows, typed as in :mod:`closedloop_nb.schema`.
    report
        The :class:`ValidationReport`.
    """

    tables: dict[str, pd.DataFrame]
    report: ValidationReport

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(f"no table {name!r}; this dataset has {', '.join(tables) or 'none'}")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v):,}" for k, v in self.tables.items())
        return f"<Dataset {sizes}; {self.report!r}>"


# --- typing ------------------------------------------------------------------------------------


class _TableCheck:
    """Types and checks one mapped table, collecting problems and the rows to reject.

    A table may come from several files (an import builds leads from a Lead and a Contact export):
    every problem about rows names the file those rows came from, with their row numbers in that
    file (one problem per file); problems about the whole table name all its files.
    """

    def __init__(self, frame: pd.DataFrame, spec: TableSpec, timezone: str | None,
                 limits: InputLimits | None = None):
        self.spec = spec
        self.timezone = timezone
        self.limits = limits or InputLimits()
        self.placeholders: dict[str, np.ndarray] = {}
        self.generated = np.zeros(len(frame), dtype=bool)  # ids made from the row (touch_id, order_id)
        if FILE not in frame:
            frame = frame.assign(**{FILE: f"<{spec.name} DataFrame>"})
        if ROW not in frame:  # numbered within each file
            frame = frame.assign(**{ROW: frame.groupby(FILE, sort=False).cumcount().to_numpy() + 1})
        self.df = frame.reset_index(drop=True)
        self.raw = self.df.copy(deep=False)  # the values as given, for messages
        codes, files = pd.factorize(self.df[FILE].astype(str), sort=False)
        self._file_codes, self.files = codes, [str(f) for f in files]
        #: The table's file (several: all of them, for problems about the whole table).
        self.file = ", ".join(self.files) if len(self.df) else f"<{spec.name}>"
        self.problems: list[Problem] = []
        self.reject = np.zeros(len(self.df), dtype=bool)
        self.fatal = False

    def add(self, column: str | None, reason: str | Callable[[np.ndarray], str],
            mask: np.ndarray | None = None, severity: str = "rejected") -> None:
        """One problem per file for the rows of ``mask`` (none: the whole table, fatal). A reason that
        shows example values is a function of the rows, so each file's problem shows its own."""
        if mask is None:
            assert isinstance(reason, str)
            self.problems.append(Problem(self.spec.name, self.file, column, reason, "error"))
            self.fatal = True
            return
        if not mask.any():
            return
        vc = self.spec.value_column
        money = bool(vc and vc in self.df and pd.api.types.is_numeric_dtype(self.df[vc]))
        mixed = money and _mixed(self)
        for file, part in self.by_file(mask):
            rows = self.df.loc[part, ROW].to_numpy()
            value = 0.0
            if money:
                value = float(self.df.loc[part, vc].abs().sum()) if not mixed else float("nan")
            why = reason if isinstance(reason, str) else reason(part)
            self.problems.append(Problem(self.spec.name, file, column, why, severity,  # type: ignore[arg-type]
                                         int(part.sum()), tuple(int(r) for r in rows[:_SHOW]), value))
        if severity == "rejected":
            self.reject |= mask

    def by_file(self, mask: np.ndarray):
        """``(file, the rows of mask from that file)`` for each file with such rows, in file order."""
        if len(self.files) <= 1:
            yield self.file, mask
            return
        for code, file in enumerate(self.files):
            part = mask & (self._file_codes == code)
            if part.any():
                yield file, part

    def run(self) -> None:
        if len(self.df) == 0:
            self.problems.append(Problem(self.spec.name, self.file, None, "no data rows", "warning"))
        missing = [c for c in self.spec.required if c not in self.df]
        have = [str(c) for c in self.df.columns if c not in (FILE, ROW)]
        for c in missing:
            close = difflib.get_close_matches(c, [h.strip().lower() for h in have], n=1, cutoff=0.75)
            hint = f" (is {close[0]!r} a misspelling of it?)" if close else ""
            self.add(c, f"missing required column{hint}; the table has: {', '.join(have) or 'none'}. "
                        "Rename it, or load the file with a column mapping")
        if self.fatal:
            return
        if self.file.startswith("<"):  # a DataFrame: its extra columns were not looked at by a loader
            self.problems.extend(unknown_columns(have, self.spec.name, self.file))
        self._fill_generated_ids()
        for col in self.spec.columns:
            if col.name not in self.df:
                self.df[col.name] = pd.Series(None, index=self.df.index, dtype=pandas_dtype(col.dtype))
                continue
            self._coerce(col)
        if self.fatal:
            return
        for col in self.spec.columns:
            self._check_values(col)
        self._check_currency()
        self._check_keys()

    def _fill_generated_ids(self) -> None:
        key = self.spec.key[0] if len(self.spec.key) == 1 else None
        if key and key in self.spec.names and not self.spec.column(key).required:
            stems = [Path(f.strip("<>")).name.split(".")[0] or self.spec.name for f in self.files]
            stem = pd.Series(stems, dtype=object).take(self._file_codes).to_numpy() if stems else []
            generated = pd.Series(stem, index=self.df.index, dtype=object) + ":" + self.df[ROW].astype(str)
            if key not in self.df:
                self.df[key] = generated
                self.generated = np.ones(len(self.df), dtype=bool)
            else:
                text = self.df[key].astype("string").str.strip()
                given = (text.notna() & (text != "") & ~text.str.lower().isin(NULL_TOKENS)).fillna(False)
                self.df[key] = self.df[key].astype(object).where(given.to_numpy(bool), generated)
                self.generated = ~given.to_numpy(bool)

    def _coerce(self, col: Column) -> None:
        s = self.df[col.name]
        if col.dtype == "string":
            self._coerce_text(col, s)
        elif col.dtype in ("float", "int"):
            self._coerce_number(col, s)
        elif col.dtype == "bool":
            self._coerce_bool(col, s)
        elif col.dtype == "timestamp":
            self._coerce_timestamp(col, s)
        elif col.dtype == "date":
            self._coerce_date(col, s)

    def _unparseable(self, col: Column, s: pd.Series, ok: np.ndarray, what: str) -> None:
        filled = (s.astype("string").str.strip() != "").fillna(False).to_numpy(bool)
        bad = s.notna().to_numpy() & ~ok & filled & ~self.reject
        if not bad.any():
            return
        if bad.sum() == s.notna().sum() and bad.sum() > 1:
            self.add(col.name, f"wrong type: no value is {what} (e.g. {_show(s[bad])})")
        else:
            self.add(col.name, lambda m: f"not {what}: {_show(s[m])}", bad)

    def _coerce_text(self, col: Column, s: pd.Series) -> None:
        """Trim; empty is missing; id placeholders are missing; over-long text cut; '>' replaced."""
        out = s.astype("string").str.strip()
        out = out.mask(out == "")
        if _is_id(col.name):
            token = out.str.lower().isin(NULL_TOKENS).fillna(False).to_numpy(bool)
            if token.any():
                self.placeholders[col.name] = token
                out = out.mask(token)
                if col.nullable:
                    self.add(col.name, lambda m: f"placeholder for a missing id ({_show(s[m])}) read as "
                             "missing (kept)", token, "warning")
        limit = self.limits.max_text_length
        if limit is not None:
            long = (out.str.len() > limit).fillna(False).to_numpy(bool)
            if long.any():
                if _is_id(col.name):
                    self.add(col.name, f"id longer than {limit:,} characters", long & ~self.generated)
                else:
                    out = out.where(~long, out.str.slice(0, limit))
                    self.add(col.name, f"text longer than {limit:,} characters: cut to {limit:,} "
                             "(max_text_length; kept)", long, "warning")
        if col.name in _PATH_LEVELS.get(self.spec.name, ()):
            out = self._replace_path_sep(col.name, out)
        self.df[col.name] = out

    def _replace_path_sep(self, column: str, out: pd.Series) -> pd.Series:
        has = out.str.contains(PATH_SEP, regex=False).fillna(False).to_numpy(bool)
        if has.any():
            out = out.str.replace(PATH_SEP, PATH_SEP_SUBSTITUTE, regex=False)
            self.add(column, lambda m: f"'{PATH_SEP}' separates the steps of path tables: replaced by "
                     f"'{PATH_SEP_SUBSTITUTE}' (e.g. {_show(out[m], 1)}; kept)", has, "warning")
        return out

    def _coerce_number(self, col: Column, s: pd.Series) -> None:
        separators = np.zeros(len(s), dtype=bool)
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            num = s.astype("float64")
        else:
            text = s.astype("string").str.strip()
            grouped = text.str.fullmatch(_GROUPED).fillna(False).to_numpy(bool)
            text = text.where(~grouped, text.str.replace(",", "", regex=False))
            num = pd.to_numeric(text.astype(object), errors="coerce").astype("float64")
            separators = (num.isna() & text.str.contains(",", regex=False)
                          & text.str.fullmatch(_SEPARATED)).fillna(False).to_numpy(bool)
            if separators.any():
                self.add(col.name, lambda m: f"ambiguous decimal or thousands separators ({_show(s[m])}): "
                         "a decimal comma? Export numbers with '.' as the decimal mark and no thousands "
                         "separators (or ',' thousands with a '.' decimal, as in 1,234.50)", separators)
        self._unparseable(col, s, num.notna().to_numpy() | separators, "a number")
        infinite = np.isinf(num.to_numpy(float))
        self.add(col.name, lambda m: f"not a finite number ({_show(s[m])})", infinite & ~self.reject)
        limit = self.limits.max_amount
        if limit is not None and col.dtype == "float":
            big = (num.abs() > limit).to_numpy(bool) & ~infinite & ~self.reject
            self.add(col.name, f"implausible amount: above {limit:,.0f} in absolute value (max_amount)", big)
            infinite |= big  # no money is counted on implausible values: totals stay finite
        num = num.where(~infinite)
        if col.dtype == "int":
            frac = num.notna() & (num != np.floor(num))
            self.add(col.name, "not a whole number", frac.to_numpy(bool))
            num = num.where(~frac).round().astype("Int64")
        self.df[col.name] = num

    def _coerce_bool(self, col: Column, s: pd.Series) -> None:
        if pd.api.types.is_bool_dtype(s):
            self.df[col.name] = s.astype("boolean")
            return
        low = s.astype("string").str.strip().str.lower()
        out = pd.Series(pd.NA, index=s.index, dtype="boolean")
        out[low.isin(_TRUE).fillna(False).to_numpy(bool)] = True
        out[low.isin(_FALSE).fillna(False).to_numpy(bool)] = False
        self._unparseable(col, s, out.notna().to_numpy(), "true/false")
        self.df[col.name] = out

    def _coerce_timestamp(self, col: Column, s: pd.Series) -> None:
        if isinstance(s.dtype, pd.DatetimeTZDtype):  # typed with a zone (Parquet, a mapping)
            self.df[col.name] = s.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
            self._check_window(col.name)
            return
        if pd.api.types.is_datetime64_dtype(s):
            if not self.timezone:
                self.add(col.name, _NAIVE_HELP)
                return
            self.df[col.name] = self._localise(s)
            self._check_window(col.name)
            return
        # text (or Timestamps made by a mapping): aware values convert, naive ones need a zone
        obj = s.astype(object)
        text = obj.map(lambda v: v.isoformat() if isinstance(v, pd.Timestamp) else v)
        text = text.astype("string").str.strip()
        text = text.mask(text == "")
        aware = text.str.contains(_TZ_SUFFIX).fillna(False).to_numpy(bool)
        out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]")
        if aware.any():
            out[aware] = pd.to_datetime(text[aware], utc=True, errors="coerce", format="ISO8601")
        rest = text.notna().to_numpy() & ~aware
        naive_values = pd.to_datetime(text[rest], errors="coerce", format="ISO8601")
        naive = np.zeros(len(s), dtype=bool)
        naive[np.flatnonzero(rest)[naive_values.notna().to_numpy()]] = True
        if naive.any():
            if self.timezone:
                out[naive] = self._localise(naive_values[naive_values.notna()])
                gap = naive & out.isna().to_numpy()
                self.add(col.name, f"local time skipped or repeated by a clock change in "
                         f"{self.timezone}; export it with a UTC offset", gap)
                naive &= ~gap
            elif not aware.any():
                self.add(col.name, _NAIVE_HELP)
                return
            else:
                self.add(col.name, "timestamp has no time zone (others in this column do)", naive)
        self._unparseable(col, s, out.notna().to_numpy() | naive, "a timestamp (ISO 8601 expected)")
        self.df[col.name] = out
        self._check_window(col.name)

    def _check_window(self, column: str) -> None:
        """Reject timestamps or dates outside the plausible window (InputLimits.date_window)."""
        window = self.limits.date_window
        values = self.df[column]
        if window is None or not len(values):
            return
        first, end = pd.Timestamp(window[0]), pd.Timestamp(window[1])
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            first, end = first.tz_localize("UTC"), end.tz_localize("UTC")
        outside = (values.notna() & ((values < first) | (values >= end))).to_numpy(bool) & ~self.reject
        def why(m: np.ndarray) -> str:
            years = sorted({int(y) for y in values[m].dt.year})
            shown = ", ".join(map(str, years[:5])) + (", ..." if len(years) > 5 else "")
            return (f"implausible date (year {shown}): outside {window[0]} to {window[1]} "
                    "(date_window); fix the value, or widen the window if it is right")

        if outside.any():
            self.add(column, why, outside)

    def _localise(self, s: pd.Series) -> pd.Series:
        local = s.dt.tz_localize(self.timezone, ambiguous="NaT", nonexistent="NaT")
        return local.dt.tz_convert("UTC").astype("datetime64[us, UTC]")

    def _coerce_date(self, col: Column, s: pd.Series) -> None:
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            s = s.dt.tz_localize(None)
        if pd.api.types.is_datetime64_dtype(s):
            parsed = s
        elif pd.api.types.is_string_dtype(s) or s.map(lambda v: isinstance(v, str)).any():
            parsed = pd.to_datetime(s, errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None)
        else:  # datetime.date objects, as Parquet dates arrive
            parsed = pd.to_datetime(s, errors="coerce")
        self._unparseable(col, s, parsed.notna().to_numpy(), "a date (YYYY-MM-DD expected)")
        parsed = parsed.dt.normalize()
        if col.name == "month":
            parsed = parsed.dt.to_period("M").dt.to_timestamp()
        self.df[col.name] = parsed.astype("datetime64[s]")
        self._check_window(col.name)

    def _check_values(self, col: Column) -> None:
        s = self.df[col.name]
        if not col.nullable:
            missing = s.isna().to_numpy() & ~self.reject
            token = self.placeholders.get(col.name)
            if token is not None and (token & missing).any():
                self.add(col.name, lambda m: "missing value (a placeholder for a missing id, "
                         f"{_show(self.raw_values(col.name, m))})", token & missing)
                missing &= ~token
            self.add(col.name, "missing value", missing)
        if col.allowed:
            bad = s.notna().to_numpy() & ~s.isin(col.allowed).fillna(False).to_numpy(bool) & ~self.reject
            if bad.any():
                allowed = ", ".join(col.allowed)
                self.add(col.name, lambda m: f"unknown value {_show(s[m])}; allowed: {allowed}", bad)
        if col.non_negative and col.dtype in ("float", "int"):
            self.add(col.name, f"negative {col.name}", (s < 0).fillna(False).to_numpy(bool))

    def _check_currency(self) -> None:
        """ISO 4217 codes only (case-insensitive, stored upper-case); a table in several is flagged."""
        name = CURRENCY_COLUMNS.get(self.spec.name)
        if name is None or name not in self.df or self.df[name].isna().all():
            return
        from closedloop_nb.money import currency_codes, mixed_currency_problem

        codes = self.df[name].str.upper()
        self.df[name] = codes
        bad = codes.notna().to_numpy() & ~codes.isin(currency_codes()).fillna(False).to_numpy(bool)
        def why(m: np.ndarray) -> str:
            vals = ", ".join(repr(v) for v in pd.unique(self.df.loc[m, name])[:3])
            return f"not an ISO 4217 currency code: {vals} (three letters, e.g. USD, EUR, MXN)"

        if bad.any():
            self.add(name, why, bad)
        mixed = mixed_currency_problem(self.df.loc[~self.reject], self.spec.name, self.file, name,
                                       self.spec.value_column)
        if mixed is not None:
            self.problems.append(mixed)

    def _check_keys(self) -> None:
        key = [k for k in self.spec.key if k in self.df]
        if not key or len(key) != len(self.spec.key):
            return
        live = ~self.reject
        data_cols = [c for c in self.spec.names if c in self.df]
        sub = self.df.loc[live, data_cols]
        exact = sub.duplicated(keep="first").to_numpy()
        exact_mask = np.zeros(len(self.df), dtype=bool)
        exact_mask[np.flatnonzero(live)[exact]] = True
        self.add(", ".join(key), "exact duplicate row (kept once)", exact_mask, "collapsed")
        self.reject |= exact_mask
        live = ~self.reject
        dup = self.df.loc[live].duplicated(subset=key, keep=False).to_numpy()
        mask = np.zeros(len(self.df), dtype=bool)
        mask[np.flatnonzero(live)[dup]] = True

        def why(m: np.ndarray) -> str:
            first = self.df.loc[m, key].iloc[0].tolist()
            shown = "/".join(mask_contact_details(str(v))[0][:40] for v in first)
            return f"duplicate {'/'.join(key)} with different values (e.g. {shown}); all copies rejected"

        if mask.any():
            self.add(", ".join(key), why, mask)

    def raw_values(self, column: str, mask: np.ndarray) -> pd.Series:
        """The values as they came in (before typing), for messages."""
        return self.raw[column][mask] if column in self.raw else pd.Series([], dtype=object)

    def result(self) -> pd.DataFrame:
        keep = ~self.reject
        cols = self.spec.names
        return self.df.loc[keep, [*cols, FILE, ROW]].reset_index(drop=True)


_NAIVE_HELP = ("timestamps have no time zone; say which zone they are in (timezone='Europe/London', "
               "--timezone on the command line), or export them with a UTC offset")


def _check_references(tables: dict[str, pd.DataFrame], check: _TableCheck) -> None:
    """Flag rows of ``check``'s table whose references are unknown in the (usable) ``tables``."""
    for fk in check.spec.foreign_keys:
        if fk.ref_table not in tables:
            continue
        known = pd.Index(tables[fk.ref_table][fk.ref_column].dropna().unique())
        values = check.df[fk.column]
        unknown = values.notna().to_numpy() & ~values.isin(known).to_numpy(bool) & ~check.reject
        reason = f"{fk.column} not found in {fk.ref_table}.{fk.ref_column}"
        check.add(fk.column, reason if fk.reject else reason + " (kept)", unknown,
                  "rejected" if fk.reject else "warning")


def _mixed(check: _TableCheck) -> bool:
    """Whether the table's money is in several currencies (its value totals are then not summed)."""
    name = CURRENCY_COLUMNS.get(check.spec.name)
    return bool(name and name in check.df and check.df[name].dropna().nunique() > 1)


def _upstream_rows(upstream: list[Problem], table: str, severity: str) -> int:
    """Rows of ``table`` a reader or mapping already filtered (``info``), folded (``collapsed``) or
    rejected (``rejected``)."""
    return sum(p.n_rows for p in upstream if p.table == table and p.severity == severity)


def _counts(check: _TableCheck, filtered: int, folded: int = 0,
            rejected_upstream: int = 0) -> dict[str, float]:
    """Rows in, kept, rejected, folded and filtered; money as sums of absolute values.

    ``rows_in`` counts the file as read: rows a mapping folded or a reader rejected included. Money is
    counted unsigned (a rejected refund of -250 is 250 of money on rejected rows), so ``value_in =
    value_kept + value_rejected`` and nothing kept exceeds what came in; a table in several currencies
    has no money totals (they would add currencies).
    """
    n = len(check.df)
    collapsed = sum(p.n_rows for p in check.problems if p.severity == "collapsed")
    out: dict[str, float] = {
        "rows_in": n + filtered + folded + rejected_upstream,
        "rows_filtered": filtered,
        "rows_collapsed": collapsed + folded,
        "rows_rejected": (int(check.reject.sum()) - collapsed if not check.fatal else n) + rejected_upstream,
        "rows_kept": int((~check.reject).sum()) if not check.fatal else 0,
    }
    vc = check.spec.value_column
    if vc and vc in check.df and pd.api.types.is_numeric_dtype(check.df[vc]) and not _mixed(check):
        v = check.df[vc].astype("float64").fillna(0).abs().to_numpy()
        v = np.where(np.isfinite(v), v, 0.0)  # a table refused before its numbers were checked
        with np.errstate(over="ignore"):
            out["value_in"] = float(v.sum())
            out["value_kept"] = float(v[~check.reject].sum()) if not check.fatal else 0.0
            out["value_rejected"] = float(v[check.reject].sum()) if not check.fatal else out["value_in"]
    return out


def _overflowing_totals(check: _TableCheck) -> None:
    """Refuse a money column whose total is not finite (possible only with max_amount=None)."""
    vc = check.spec.value_column
    if check.fatal or not vc or vc not in check.df or not pd.api.types.is_numeric_dtype(check.df[vc]):
        return
    with np.errstate(over="ignore"):
        total = float(check.df[vc].astype("float64").fillna(0).abs().to_numpy()[~check.reject].sum())
    if not np.isfinite(total):
        check.add(vc, "the column's total overflows (is infinite): some values are implausibly large; "
                      "set InputLimits(max_amount=...) to reject them")


def validate_tables(tables: dict[str, pd.DataFrame], timezone: str | None = None,
                    upstream: list[Problem] | None = None,
                    channel_rules: ChannelRules | None = None,
                    limits: InputLimits | None = None) -> Dataset:
    """Type and check canonical tables, including references between them.

    Parameters
    ----------
    tables
        ``{table name: DataFrame}`` with canonical column names (extra columns are ignored).
    timezone
        Time zone of naive timestamps (IANA name); without it naive timestamps are an error.
    upstream
        Problems already found while reading and mapping (filtered rows, ...), to include.
    channel_rules
        Rules that fill ``touchpoints.channel`` where it is empty (GA4 default group if omitted).
    limits
        Plausibility limits (date window, largest amount, longest text): :class:`InputLimits`'s
        defaults when omitted.

    Returns
    -------
    Dataset
        Usable rows per table and the :class:`ValidationReport`. Rows rejected in a parent table
        (e.g. a lead) make rows that point at it (its deals) orphans, rejected in turn.
    """
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise KeyError(f"unknown tables {unknown}; the canonical tables are {', '.join(TABLES)}")
    upstream = list(upstream or [])
    checks = {name: _TableCheck(df, table_spec(name), timezone, limits) for name, df in tables.items()}
    for check in checks.values():
        check.run()
        _overflowing_totals(check)
    order = ["touchpoints", "leads", "identities", "deals", "stage_history", "deal_contacts", "orders",
             "subscriptions", "spend", "fx_rates"]
    usable: dict[str, pd.DataFrame] = {}
    for name in [t for t in order if t in checks]:
        if not checks[name].fatal:
            _check_references(usable, checks[name])
            usable[name] = checks[name].result()
    report = ValidationReport()
    for p in upstream:
        report.problems.append(p)
    for name, check in checks.items():
        report.problems.extend(check.problems)
        report.counts[name] = _counts(check, _upstream_rows(upstream, name, "info"),
                                      _upstream_rows(upstream, name, "collapsed"),
                                      _upstream_rows(upstream, name, "rejected"))
    clean = {name: df.drop(columns=[FILE, ROW]) for name, df in usable.items()}
    if "touchpoints" in clean:
        clean["touchpoints"] = _fill_channels(clean["touchpoints"], channel_rules, report,
                                              usable["touchpoints"][ROW].to_numpy(),
                                              usable["touchpoints"][FILE].astype(str).to_numpy())
    return Dataset(clean, report)


def _fill_channels(touches: pd.DataFrame, rules: ChannelRules | None, report: ValidationReport,
                   row_numbers: np.ndarray, files: np.ndarray) -> pd.DataFrame:
    """Group touches that carry no channel with the channel rules; count the unassigned ones (per
    file the touches came from, with their examples and rows there)."""
    todo = touches["channel"].isna().to_numpy()
    if not todo.any():
        return touches
    touches = touches.copy()
    for file in pd.unique(files[todo]):
        part = todo & (files == file)
        result = group_channels(touches.loc[part], rules)
        names = result.channel.astype(str).str.replace(PATH_SEP, PATH_SEP_SUBSTITUTE, regex=False)
        touches.loc[part, "channel"] = names.to_numpy()
        if result.n_unassigned:
            top = result.unassigned_combos.head(3)
            examples = "; ".join(f"{_show([r.source], 1)[1:-1]} / {_show([r.medium], 1)[1:-1]}"
                                 for r in top.itertuples())
            unassigned = np.flatnonzero(part)[(result.channel.astype(str) == UNASSIGNED).to_numpy()]
            rows = tuple(int(r) for r in row_numbers[unassigned[:_SHOW]])
            report.problems.append(Problem(
                "touchpoints", str(file), "channel",
                f"no channel rule matched (e.g. {examples}): grouped as {UNASSIGNED} (kept); fix the "
                "tagging or add a rule", "warning", result.n_unassigned, rows))
    return touches


def _find_table_files(directory: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in TABLES:
        for suffix in (".parquet", ".csv", ".csv.gz", ".tsv"):
            path = directory / f"{name}{suffix}"
            if path.is_file():
                found[name] = path
                break
    return found


def load_dataset(
    source: str | Path | dict[str, Any],
    mappings: dict[str, str | Path | Mapping] | None = None,
    timezone: str | None = None,
    hash_key: bytes | None = None,
    channel_rules: ChannelRules | None = None,
    limits: InputLimits | None = None,
) -> Dataset:
    """Load and validate canonical tables from files.

    Parameters
    ----------
    source
        A directory holding ``<table>.parquet`` / ``<table>.csv`` files (as ``closedloop synth``
        writes), or ``{table: path or DataFrame}``.
    mappings
        ``{table: mapping name, YAML path or Mapping}`` for exports not already in canonical form.
    timezone
        Time zone of naive timestamps.
    hash_key
        Key for hashing direct identifiers; from the environment when omitted.
    channel_rules
        Rules for touches without a channel (GA4 default channel group when omitted).
    limits
        Plausibility limits (:class:`InputLimits`: date window, largest amount, longest text).

    Returns
    -------
    Dataset

    Raises
    ------
    DataValidationError
        When a file cannot be read at all (missing, empty, not UTF-8) or lacks a mapped column.
        Other fatal problems are in ``report.errors``; call ``report.raise_for_errors()``.

    Examples
    --------
    >>> from closedloop_nb.config import SAMPLE_DIR
    >>> ds = load_dataset(SAMPLE_DIR)
    >>> sorted(ds.tables)[:3]
    ['deals', 'identities', 'leads']
    """
    mappings = mappings or {}
    if isinstance(source, (str, Path)):
        directory = Path(source)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} is not a directory of canonical tables")
        items: dict[str, Any] = dict(_find_table_files(directory))
        if not items:
            raise FileNotFoundError(
                f"{directory} holds no canonical table files (expected names like "
                f"{', '.join(t + '.parquet' for t in list(TABLES)[:3])}, ...)")
    else:
        items = dict(source)
    frames: dict[str, pd.DataFrame] = {}
    upstream: list[Problem] = []
    fatal: list[Problem] = []
    for table, item in items.items():
        if isinstance(item, pd.DataFrame):
            frames[table] = item
            continue
        try:
            frames[table], found = read_mapped(item, table, mappings.get(table), hash_key=hash_key)
            upstream.extend(found)
        except DataValidationError as exc:
            fatal.extend(Problem(table, p.file, p.column, p.reason, p.severity, p.n_rows, p.rows)
                         for p in exc.problems)
        except MissingHashKeyError as exc:
            mapping = mappings.get(table)
            fatal.append(Problem(table, str(item), None, f"cannot hash its direct identifiers"
                                 f"{f' (mapping {mapping})' if mapping else ''}: {exc}", "error"))
    if fatal:
        raise DataValidationError(fatal)
    return validate_tables(frames, timezone=timezone, upstream=upstream, channel_rules=channel_rules,
                           limits=limits)
