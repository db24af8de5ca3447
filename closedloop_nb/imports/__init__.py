"""Vendors' export files in, canonical tables out.

``closedloop import SOURCE INPUT... --out DATA_DIR`` and :func:`import_source` read one tool's export
files (a folder of them, recognised by their names, or the files themselves), map them onto the
canonical tables of :mod:`closedloop_nb.schema`, validate them, and write each table as
``DATA_DIR/<table>.parquet`` beside ``import_report.json`` and ``import_report.txt`` (rows in, kept,
rejected, collapsed and filtered per table, and every problem with file, column, rows and reason).

Each source lives in one module of this package with one reader function,
``read(inputs: list[Path], options: ImportOptions) -> Imported``; :data:`SOURCES` names it as
``"module:function"`` so that a command imports only the reader it runs.

Examples
--------
>>> sorted(SOURCES)[:3]
['callrail', 'chartmogul', 'ga4']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the readers and validation load pandas: imported only when an import runs
    from closedloop_nb.imports._common import Imported, ImportOptions, ImportResult

__all__ = ["SOURCES", "import_source", "reader"]

#: Command name -> ``"module:function"`` of its reader in this package.
SOURCES: dict[str, str] = {
    # CRM and revenue
    "salesforce": "salesforce:read",
    "hubspot": "hubspot:read",
    "pipedrive": "pipedrive:read",
    "stripe": "stripe:read",
    "chartmogul": "chartmogul:read",
    # marketing side
    "ga4": "ga4:read",
    "google-ads": "ads:read_google_ads",
    "meta-ads": "ads:read_meta_ads",
    "microsoft-ads": "ads:read_microsoft_ads",
    "linkedin-ads": "ads:read_linkedin_ads",
    "callrail": "callrail:read",
}


def reader(source: str) -> Callable[[list[Path], ImportOptions], Imported]:
    """The reader function of ``source``; a clear error for an unknown or unavailable source."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(sorted(SOURCES))}")
    module, func = SOURCES[source].split(":")
    try:
        mod = importlib.import_module(f"closedloop_nb.imports.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"closedloop_nb.imports.{module}":
            raise ValueError(f"the {source} import is not available in this version") from None
        raise
    return getattr(mod, func)


def import_source(
    source: str,
    inputs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    timezone: str | None = None,
    encoding: str | None = None,
    config: str | Path | dict[str, Any] | None = None,
) -> ImportResult:
    """Read a tool's export files into validated canonical tables (and write them when ``out`` is given).

    Parameters
    ----------
    source
        One of :data:`SOURCES` (``salesforce``, ``hubspot``, ``ga4``, ...).
    inputs
        A folder of the tool's export files, or the files themselves.
    out
        Folder to write ``<table>.parquet`` and the import report to; nothing is written when omitted.
    timezone
        Time zone of timestamps the export writes without an offset (IANA name, e.g. ``Europe/London``).
    encoding
        Text encoding of CSV exports (e.g. ``cp1252``); UTF-8 when omitted.
    config
        The import's options: a YAML file or a dict (stage maps, date formats, decimal comma, ...;
        each source documents its keys).

    Returns
    -------
    ImportResult
        ``tables`` (validated canonical tables), ``report`` (a
        :class:`~closedloop_nb.validation.ValidationReport`) and ``notes`` (what the import decided,
        e.g. the stage mapping it used).
    """
    from closedloop_nb.imports._common import ImportOptions, finish, write

    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    options = ImportOptions.make(timezone=timezone, encoding=encoding, config=config)
    imported = reader(source)(paths, options)
    result = finish(source, imported, options)
    if out is not None:
        write(result, out)
    return result
