"""closedloop-nb: closed-loop marketing reporting in Jupyter.

Touches of anonymous visitors are stitched to the leads they become, followed through the CRM
pipeline and subscription revenue, and attributed back to channels, campaigns and keywords.

The data model is in :mod:`closedloop_nb.schema`; start with :func:`load_dataset`.

The names below are imported on first use (PEP 562), so ``import closedloop_nb`` and a command
that needs one module (``closedloop attribute``) do not pay for pandas, DuckDB and the rest.

Examples
--------
>>> import closedloop_nb as cl
>>> cl.table_spec("deals").key
('deal_id',)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

#: Public name -> the module that defines it.
_LAZY: dict[str, str] = {
    "ChannelRules": "closedloop_nb.channels",
    "assign_channels": "closedloop_nb.channels",
    "group_channels": "closedloop_nb.channels",
    "DataValidationError": "closedloop_nb.errors",
    "Problem": "closedloop_nb.errors",
    "Mapping": "closedloop_nb.loaders",
    "list_mappings": "closedloop_nb.loaders",
    "TABLES": "closedloop_nb.schema",
    "describe": "closedloop_nb.schema",
    "table_spec": "closedloop_nb.schema",
    "load_hubspot": "closedloop_nb.sources",
    "load_salesforce": "closedloop_nb.sources",
    "generate": "closedloop_nb.synth",
    "Dataset": "closedloop_nb.validation",
    "ValidationReport": "closedloop_nb.validation",
    "load_dataset": "closedloop_nb.validation",
    "validate_tables": "closedloop_nb.validation",
    "import_source": "closedloop_nb.imports",
    "Workspace": "closedloop_nb.workspace",
    "open_workspace": "closedloop_nb.workspace",
    "explore": "closedloop_nb.explorer",
}

__all__ = [
    "TABLES",
    "ChannelRules",
    "DataValidationError",
    "Dataset",
    "Mapping",
    "Problem",
    "ValidationReport",
    "__version__",
    "assign_channels",
    "describe",
    "explore",
    "generate",
    "group_channels",
    "import_source",
    "list_mappings",
    "load_dataset",
    "load_hubspot",
    "load_salesforce",
    "table_spec",
    "validate_tables",
    "Workspace",
    "explore",
    "open_workspace",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from closedloop_nb.channels import ChannelRules, assign_channels, group_channels
    from closedloop_nb.errors import DataValidationError, Problem
    from closedloop_nb.explorer import explore
    from closedloop_nb.imports import import_source
    from closedloop_nb.loaders import Mapping, list_mappings
    from closedloop_nb.schema import TABLES, describe, table_spec
    from closedloop_nb.sources import load_hubspot, load_salesforce
    from closedloop_nb.synth import generate
    from closedloop_nb.validation import Dataset, ValidationReport, load_dataset, validate_tables
    from closedloop_nb.workspace import Workspace, open_workspace


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'closedloop_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
