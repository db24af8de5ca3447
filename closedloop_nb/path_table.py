"""Path tables: unique journeys (channel sequences) with their conversions, value and nulls.

The path table is what a journey build makes (:meth:`closedloop_nb.journeys.Journeys.path_table`,
``closedloop paths``) and what every attribution model reads, so it lives here, beside the journeys,
rather than inside :mod:`closedloop_nb.attribution` (which re-exports it from
``closedloop_nb.attribution.paths`` for existing code). It needs numpy and pyarrow only; pandas is
imported when a DataFrame goes in or comes out.

The interchange format is ChannelAttribution's: one row per unique path, ``path`` holding channels
joined by ``>`` (spaces around it allowed), ``total_conversions``, ``total_conversion_value`` and
``total_null`` (journeys on that path that did not convert). A channel name cannot hold the separator:
validation replaces ``>`` in names that become steps by ``›`` (see :mod:`closedloop_nb.validation`),
and :meth:`PathTable.from_sequences` refuses such names. :func:`read_paths` reads CSV straight to
Arrow with a vectorised, multi-threaded reader. In memory a :class:`PathTable` holds the
paths as integer codes in one flat array with offsets, so models work on arrays, not strings, and
memory grows with the number of unique paths, not journeys.

Examples
--------
>>> import pandas as pd
>>> pt = PathTable.from_frame(pd.DataFrame({
...     "path": ["A > B", "B", "A>B"], "total_conversions": [1, 0, 2], "total_null": [3, 4, 0]}))
>>> pt
<PathTable 2 unique paths over 2 channels: 3 conversions, 7 nulls>
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from closedloop_nb.path_codes import build, check_columns, checked, encode, merge_duplicates

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PathTable", "read_paths"]


@dataclass(frozen=True)
class PathTable:
    """Unique paths as integer codes, with conversions, value and nulls per path.

    Attributes
    ----------
    channels
        Channel names; code ``i`` is ``channels[i]``.
    codes
        All paths' channel codes, concatenated.
    offsets
        Path ``p`` is ``codes[offsets[p]:offsets[p + 1]]``.
    conversions, value, nulls
        Per path: conversions, conversion value, journeys that did not convert.
    """

    channels: tuple[str, ...]
    codes: np.ndarray
    offsets: np.ndarray
    conversions: np.ndarray
    value: np.ndarray
    nulls: np.ndarray

    @classmethod
    def from_frame(cls, df: pd.DataFrame, path: str = "path", conversions: str = "total_conversions",
                   value: str | None = "total_conversion_value", nulls: str | None = "total_null",
                   sep: str = ">") -> PathTable:
        """Build from a DataFrame in ChannelAttribution's format (other column names allowed).

        Rows with the same path are added together; empty paths and negative counts are refused.
        """
        check_columns(list(df.columns), path, conversions)
        conv = _numbers(df, conversions)
        val = _numbers(df, value) if value and value in df else np.zeros(len(df))
        nul = _numbers(df, nulls) if nulls and nulls in df else np.zeros(len(df))
        return cls(*build(pa.array(df[path], from_pandas=True), conv, val, nul, sep))

    @classmethod
    def from_arrow(cls, table: pa.Table, path: str = "path", conversions: str = "total_conversions",
                   value: str | None = "total_conversion_value", nulls: str | None = "total_null",
                   sep: str = ">") -> PathTable:
        """Build from an Arrow table in ChannelAttribution's format (as :func:`read_paths` reads it).

        Examples
        --------
        >>> import pyarrow as pa
        >>> PathTable.from_arrow(pa.table({"path": ["A > B", "B"], "total_conversions": [1, 0]})).n_paths
        2
        """
        return cls(*encode(table, path, conversions, value, nulls, sep))

    @classmethod
    def from_sequences(cls, paths: list[list[str]], conversions, value=None, nulls=None) -> PathTable:
        """Build from lists of channel names (one per unique path); names may not hold ``>``."""
        import pandas as pd

        bad = sorted({step for p in paths for step in p if ">" in str(step)})
        if bad:
            raise ValueError(f"channel names {bad[:3]} hold '>', the path separator; replace it (validation "
                             "turns it into '›')")
        df = pd.DataFrame({"path": [" > ".join(p) for p in paths], "total_conversions": conversions,
                           "total_conversion_value": value if value is not None else 0.0,
                           "total_null": nulls if nulls is not None else 0.0})
        return cls.from_frame(df)

    @property
    def n_paths(self) -> int:
        """Number of unique paths."""
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Touches per path."""
        return np.diff(self.offsets)

    @cached_property
    def path_index(self) -> np.ndarray:
        """For every element of :attr:`codes`, the path it belongs to (computed once)."""
        return np.repeat(np.arange(self.n_paths, dtype=np.int32), self.lengths)

    @cached_property
    def position(self) -> np.ndarray:
        """For every element of :attr:`codes`, its 0-based position in its path (computed once)."""
        starts = np.repeat(self.offsets[:-1].astype(np.int32), self.lengths)
        return np.arange(len(self.codes), dtype=np.int32) - starts

    def path(self, p: int) -> list[str]:
        """Path ``p`` as channel names."""
        return [self.channels[c] for c in self.codes[self.offsets[p]:self.offsets[p + 1]]]

    def collapse_repeats(self, merge: bool = True) -> PathTable:
        """The same table with consecutive repeats of a channel merged (A > A > B becomes A > B).

        With ``merge=False`` paths that become identical stay separate rows (cheaper, and enough
        for anything that only adds transitions up).
        """
        keep = np.ones(len(self.codes), dtype=bool)
        keep[1:] = self.codes[1:] != self.codes[:-1]
        keep[self.offsets[:-1][self.lengths > 0]] = True
        lengths = np.bincount(self.path_index[keep], minlength=self.n_paths)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        if not merge:
            return PathTable(self.channels, self.codes[keep], offsets, self.conversions, self.value,
                             self.nulls)
        return PathTable(*merge_duplicates(self.channels, self.codes[keep], offsets, self.conversions,
                                           self.value, self.nulls))

    def to_frame(self, sep: str = " > ") -> pd.DataFrame:
        """ChannelAttribution's format: path, total_conversions, total_conversion_value, total_null."""
        import pandas as pd

        names = np.array(self.channels, dtype=object)
        parts = np.split(names[self.codes], self.offsets[1:-1])
        return pd.DataFrame({
            "path": [sep.join(p) for p in parts],
            "total_conversions": self.conversions,
            "total_conversion_value": self.value,
            "total_null": self.nulls,
        })

    def __repr__(self) -> str:
        return (f"<PathTable {self.n_paths:,} unique paths over {len(self.channels)} channels: "
                f"{self.conversions.sum():,.0f} conversions, {self.nulls.sum():,.0f} nulls>")


def _numbers(df: pd.DataFrame, col: str) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(df[col], errors="coerce")
    return checked(values.to_numpy(float, na_value=np.nan), col)


def read_paths(path: str | Path, sep: str = ">") -> PathTable:
    """Read a path table in ChannelAttribution's format from CSV (plain or gzipped) or Parquet.

    CSV goes straight to Arrow (pyarrow's reader, in pieces that threads parse while the file is
    being decompressed: :mod:`closedloop_nb.path_stream`); nothing passes through pandas.

    Raises
    ------
    DataValidationError
        For a missing, empty, malformed or truncated file (naming it).
    KeyError, ValueError
        For a missing column, a header-only table, empty paths or counts that are not finite and
        non-negative (naming the rows).
    """
    from closedloop_nb.path_stream import read_parts

    return PathTable(*read_parts(path, sep=sep))
