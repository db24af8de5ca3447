"""Problems found in input data, and the exception that carries the fatal ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DataValidationError", "NotFittedError", "Problem", "Severity"]

#: ``error``: the table cannot be used at all; ``rejected``: these rows cannot be used and were
#: removed (counted); ``collapsed``: duplicate rows folded into one (counted); ``warning``: kept, but
#: worth knowing; ``info``: rows a mapping filtered out by design (counted).
Severity = Literal["error", "rejected", "collapsed", "warning", "info"]

_MAX_ROWS_SHOWN = 10


@dataclass(frozen=True)
class Problem:
    """One problem with an input: where it is, how many rows it touches, and why.

    ``rows`` holds the first row numbers concerned (1-based data rows of the file, header
    excluded); ``n_rows`` how many there are in all; ``value`` the money on those rows, if any.
    """

    table: str
    file: str
    column: str | None
    reason: str
    severity: Severity
    n_rows: int = 0
    rows: tuple[int, ...] = field(default=())
    value: float = 0.0

    def message(self) -> str:
        """One line naming file, column, rows and reason."""
        where = self.file
        if self.column:
            where += f", column '{self.column}'"
        if self.n_rows and not self.rows:  # counted, row numbers not known
            where += f", {self.n_rows:,} {'row' if self.n_rows == 1 else 'rows'}"
        elif self.n_rows:
            shown = ", ".join(str(r) for r in self.rows[:_MAX_ROWS_SHOWN])
            more = f" and {self.n_rows - _MAX_ROWS_SHOWN} more" if self.n_rows > _MAX_ROWS_SHOWN else ""
            noun = "row" if self.n_rows == 1 else "rows"
            where += f", {noun} {shown}{more}"
        return f"{where}: {self.reason}"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.message()}"


class DataValidationError(ValueError):
    """Input data cannot be used; ``problems`` lists every fatal problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = [p.message() for p in self.problems]
        super().__init__("\n".join(lines) if lines else "invalid input")


class NotFittedError(RuntimeError):
    """A model's fitted-only attribute or method was used before ``fit``."""
