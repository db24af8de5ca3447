"""Compatibility: :class:`PathTable` and :func:`read_paths` live in :mod:`closedloop_nb.path_table`,
beside the journeys that make path tables; this module re-exports them for existing imports.

Examples
--------
>>> from closedloop_nb.attribution.paths import PathTable
>>> PathTable.__module__
'closedloop_nb.path_table'
"""

from closedloop_nb.path_table import PathTable, read_paths

__all__ = ["PathTable", "read_paths"]
