"""Paths and defaults, defined once."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PROJECT_DIR", "REPORTS_DIR", "SAMPLE_DIR", "SAMPLE_SEED", "SAMPLE_VISITORS", "resolve"]

#: The repository root (the folder holding ``closedloop_nb/``).
PROJECT_DIR = Path(__file__).resolve().parent.parent
#: The bundled sample data (regenerate with ``make sample-data``).
SAMPLE_DIR = PROJECT_DIR / "data" / "sample"
#: Where reports are written; override with ``CLOSEDLOOP_REPORTS_DIR``.
REPORTS_DIR = Path(os.environ.get("CLOSEDLOOP_REPORTS_DIR", PROJECT_DIR / "reports"))
#: How the bundled sample was generated.
SAMPLE_SEED = 20240101
SAMPLE_VISITORS = 40_000


def resolve(path: str | Path) -> Path:
    """A path from a parameter file: absolute as given, relative to the project folder otherwise
    (notebooks run in a working directory of their own). A URL (``s3a://...``) or ``catalog:<db>``,
    which a Spark workspace reads, is returned as given (a string)."""
    if isinstance(path, str) and ("://" in path or path.startswith("catalog:")):
        return path  # type: ignore[return-value]
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_DIR / p
