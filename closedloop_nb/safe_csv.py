"""CSV outputs that a spreadsheet opens as text, never as formulas (CSV injection).

A cell beginning with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return, which some
spreadsheets skip before one of those) is run as a formula when the file is opened in Excel,
LibreOffice Calc or Google Sheets. Channel, campaign and keyword names come from tagging that anyone
can set (``utm_campaign==HYPERLINK(...)``), so every CSV this package writes goes through
:func:`neutralise`: following OWASP's guidance on CSV injection
(https://owasp.org/www-community/attacks/CSV_Injection), such text cells are prefixed with a single
quote, which spreadsheets show as text, and cells are quoted as RFC 4180 says when they hold the
delimiter, a quote or a line break. Numbers (a negative amount) are left as numbers.

Examples
--------
>>> import pandas as pd
>>> neutralise(pd.DataFrame({"channel": ["=HYPERLINK(1)", "Email", "-x"], "value": [-1.5, 2, 3]}))
          channel  value
0  '=HYPERLINK(1)   -1.5
1           Email    2.0
2             '-x    3.0
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMULA_PREFIXES", "neutralise", "neutralise_text", "write_csv", "write_rows"]

#: First characters that make a spreadsheet read a cell as a formula (OWASP).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise_text(value: str) -> str:
    """``value`` with a leading single quote if it would start a formula.

    >>> neutralise_text("@SUM(A1)"), neutralise_text("Paid Search")
    ("'@SUM(A1)", 'Paid Search')
    """
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def neutralise(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells cannot start a formula; numeric columns unchanged."""
    import pandas as pd

    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or \
                pd.api.types.is_datetime64_any_dtype(s):
            continue
        text = s.map(lambda v: neutralise_text(v) if isinstance(v, str) else v)
        out[col] = text
    out.columns = [neutralise_text(c) if isinstance(c, str) else c for c in out.columns]
    return out


def write_csv(frame: pd.DataFrame, target: str | Path | IO[str], **kwargs) -> None:
    """Write ``frame`` as CSV (no index) after :func:`neutralise`; ``.gz`` paths are compressed.

    Cells holding a carriage return are quoted too (the csv module quotes only the line terminator's
    characters, ``\n`` here): then every text cell is quoted, as RFC 4180 allows.
    """
    safe = neutralise(frame)
    has_cr = any(safe[c].map(lambda v: isinstance(v, str) and "\r" in v).any()
                 for c in safe.columns if safe[c].dtype == object or str(safe[c].dtype) in ("str", "string"))
    quoting = csv.QUOTE_NONNUMERIC if has_cr else csv.QUOTE_MINIMAL
    safe.to_csv(target, index=False, quoting=quoting, **kwargs)


def write_rows(header: Sequence[str], rows: Iterable[Sequence[object]], target: str | Path | IO[str]) -> None:
    """Write rows of text and numbers as CSV, byte for byte as :func:`write_csv` writes the same
    table as a DataFrame (text neutralised, the same quoting), without pandas; ``.gz`` paths are
    compressed. For small outputs of commands that make no DataFrame (``closedloop attribute``).

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> write_rows(["channel", "conversions"], [["=1+1", 2.5], ["Email", 0.0]], out)
    >>> print(out.getvalue(), end="")
    channel,conversions
    '=1+1,2.5
    Email,0.0
    """
    table = [[neutralise_text(v) if isinstance(v, str) else v for v in row] for row in rows]
    has_cr = any(isinstance(v, str) and "\r" in v for row in table for v in row)
    quoting = csv.QUOTE_NONNUMERIC if has_cr else csv.QUOTE_MINIMAL

    def write(stream: IO[str]) -> None:
        writer = csv.writer(stream, quoting=quoting, lineterminator="\n")
        writer.writerow([neutralise_text(h) for h in header])
        writer.writerows(table)

    if not isinstance(target, str | Path):
        write(target)
    elif str(target).lower().endswith(".gz"):
        with gzip.open(target, "wt", encoding="utf-8", newline="") as stream:
            write(stream)
    else:
        with open(target, "w", encoding="utf-8", newline="") as stream:
            write(stream)
