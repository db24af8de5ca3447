"""closedloop-nb: closed-loop marketing reporting in Jupyter.

Touches of anonymous visitors are stitched to the leads they become, followed through the CRM
pipeline and subscription revenue, and attributed back to channels, campaigns and keywords.

The data model is in :mod:`closedloop_nb.schema`; start with :func:`load_dataset`.
"""

from closedloop_nb.channels import ChannelRules, assign_channels, group_channels
from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.explore import explore
from closedloop_nb.imports import import_source
from closedloop_nb.loaders import Mapping, list_mappings
from closedloop_nb.schema import TABLES, describe, table_spec
from closedloop_nb.sources import load_hubspot, load_salesforce
from closedloop_nb.synth import generate
from closedloop_nb.validation import Dataset, ValidationReport, load_dataset, validate_tables

__version__ = "0.1.0.dev0"

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
]
