"""What every import shares: its options, what a reader returns, validation and writing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.validation import ValidationReport, validate_tables

__all__ = ["ImportOptions", "ImportResult", "Imported", "finish", "input_files", "write"]


@dataclass(frozen=True)
class ImportOptions:
    """Options of one import run: ``timezone``, ``encoding`` and the source's ``config`` mapping."""

    timezone: str | None = None
    encoding: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        timezone: str | None = None,
        encoding: str | None = None,
        config: str | Path | dict[str, Any] | None = None,
    ) -> ImportOptions:
        """Options from arguments as given on the command line (``config`` may be a YAML path)."""
        if isinstance(config, (str, Path)):
            path = Path(config)
            try:
                loaded = yaml.safe_load(path.read_text("utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                why = f"cannot read the import config: {exc}"
                raise DataValidationError([Problem("config", str(path), None, why, "error")]) from None
            if not isinstance(loaded, dict):
                why = "the import config must be a mapping of options"
                raise DataValidationError([Problem("config", str(path), None, why, "error")])
            config = loaded
        return cls(timezone=timezone, encoding=encoding, config=dict(config or {}))


@dataclass
class Imported:
    """What a reader returns: mapped frames (canonical names plus ``_file``/``_row``), problems, notes.

    ``frames`` go through :func:`closedloop_nb.validation.validate_tables`; ``problems`` found while
    reading and mapping (rows filtered or folded, files not recognised) are passed to it as upstream
    problems so the report counts them; ``notes`` are sentences on what the import decided.
    """

    frames: dict[str, pd.DataFrame]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    """Validated canonical tables of one import, its report and notes."""

    source: str
    tables: dict[str, pd.DataFrame]
    report: ValidationReport
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name} {len(df):,}" for name, df in self.tables.items())
        return f"<ImportResult {self.source}: {sizes}; {len(self.report.problems)} problems>"

    def to_text(self) -> str:
        """The report as plain text, notes first."""
        lines = [f"Import from {self.source}"]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join([*lines, "", self.report.to_text()])


_SUFFIXES = (".csv", ".parquet", ".json", ".jsonl", ".ndjson", ".avro", ".gz", ".tsv")


def input_files(inputs: list[Path], suffixes: tuple[str, ...] = _SUFFIXES) -> list[Path]:
    """Files named by ``inputs``: folders expanded to their files (sorted), missing paths refused."""
    files: list[Path] = []
    missing = [p for p in inputs if not p.exists()]
    if missing:
        raise DataValidationError(
            [Problem("?", str(p), None, "no such file or folder", "error") for p in missing]
        )
    for p in inputs:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(suffixes))
        else:
            files.append(p)
    return files


def finish(source: str, imported: Imported, options: ImportOptions) -> ImportResult:
    """Validate a reader's frames together (references between them included)."""
    ds = validate_tables(imported.frames, timezone=options.timezone, upstream=imported.problems)
    return ImportResult(source, ds.tables, ds.report, list(imported.notes))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    return value


def write(result: ImportResult, out: str | Path) -> Path:
    """Write ``<table>.parquet`` for every table, ``import_report.json`` and ``import_report.txt``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in result.tables.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)
    counts = {t: {k: _jsonable(v) for k, v in c.items()} for t, c in result.report.counts.items()}
    payload = {
        "source": result.source,
        "notes": result.notes,
        "counts": counts,
        "problems": [
            {
                "table": p.table,
                "file": p.file,
                "column": p.column,
                "reason": p.reason,
                "severity": p.severity,
                "n_rows": p.n_rows,
                "rows": list(p.rows),
                "value": _jsonable(p.value),
            }
            for p in result.report.problems
        ],
    }
    (folder / "import_report.json").write_text(json.dumps(payload, indent=2, allow_nan=False), "utf-8")
    (folder / "import_report.txt").write_text(result.to_text() + "\n", "utf-8")
    return folder
