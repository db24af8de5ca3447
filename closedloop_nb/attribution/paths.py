"""Path tables: unique journeys (channel sequences) with their conversions, value and nulls.

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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from closedloop_nb.errors import DataValidationError, Problem

__all__ = ["PathTable", "read_paths"]

_COLUMNS = ("path", "total_conversions", "total_conversion_value", "total_null")


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
        _check_columns(list(df.columns), path, conversions)
        conv = _numbers(df, conversions)
        val = _numbers(df, value) if value and value in df else np.zeros(len(df))
        nul = _numbers(df, nulls) if nulls and nulls in df else np.zeros(len(df))
        return _build(pa.array(df[path], from_pandas=True), conv, val, nul, sep)

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
        names = table.column_names
        _check_columns(names, path, conversions)
        conv = _arrow_numbers(table, conversions)
        val = _arrow_numbers(table, value) if value and value in names else np.zeros(table.num_rows)
        nul = _arrow_numbers(table, nulls) if nulls and nulls in names else np.zeros(table.num_rows)
        return _build(table.column(path), conv, val, nul, sep)

    @classmethod
    def from_sequences(cls, paths: list[list[str]], conversions, value=None, nulls=None) -> PathTable:
        """Build from lists of channel names (one per unique path); names may not hold ``>``."""
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
        return _merge_duplicates(self.channels, self.codes[keep], offsets, self.conversions, self.value,
                                 self.nulls)

    def to_frame(self, sep: str = " > ") -> pd.DataFrame:
        """ChannelAttribution's format: path, total_conversions, total_conversion_value, total_null."""
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


def _check_columns(names: list[str], path: str, conversions: str) -> None:
    missing = [c for c in (path, conversions) if c not in names]
    if missing:
        raise KeyError(f"path table misses column(s) {missing}; it has {list(names)}. Expected "
                       f"ChannelAttribution's columns: {', '.join(_COLUMNS)}")


def _build(paths: pa.Array | pa.ChunkedArray, conv: np.ndarray, val: np.ndarray, nul: np.ndarray,
           sep: str) -> PathTable:
    """Tokenise the path strings and add up duplicate paths."""
    if len(paths) == 0:
        raise ValueError("the path table has no rows (a header only): no paths to attribute")
    arr = paths.combine_chunks() if isinstance(paths, pa.ChunkedArray) else paths
    text = pc.cast(arr, pa.string()).fill_null("")
    codes, lengths, channels = _tokenise(text, sep)
    if (lengths == 0).any():
        rows = (np.flatnonzero(lengths == 0) + 1)[:10].tolist()
        raise ValueError(f"empty path in rows {rows} (1-based) of the path table")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return _merge_duplicates(channels, codes.astype(np.int32), offsets, conv, val, nul)


def _tokenise(text: pa.Array, sep: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Channel codes (sorted channel names), path lengths and channel names of ``sep``-joined paths.

    Paths written the usual way (``"A > B"``) are split on the spaced separator and encoded in one
    pass; the channel names found are then checked, and anything else (``"A>B"``, stray spaces,
    doubled separators) takes the general route: split on ``sep``, trim, drop empty steps.
    """
    spaced = f" {sep.strip()} "
    if sep.strip() and spaced != sep:
        lists = pc.split_pattern(text, spaced)
        encoded = pc.dictionary_encode(pc.list_flatten(lists))
        names = encoded.dictionary.to_pylist()
        if all(n and n == n.strip() and sep.strip() not in n for n in names):
            return _ranked(encoded, pc.list_value_length(lists))
    lists = pc.split_pattern(text, sep)
    steps = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    empty = pc.equal(steps, "")
    if pc.any(empty).as_py():  # "A >> B", trailing separators: drop the empty steps
        keep = ~empty.to_numpy(zero_copy_only=False)
        owner = np.repeat(np.arange(len(text)), lengths)[keep]
        steps = steps.filter(pa.array(keep))
        lengths = np.bincount(owner, minlength=len(text))
    return _ranked(pc.dictionary_encode(steps), lengths)


def _ranked(encoded: pa.DictionaryArray, lengths) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Dictionary codes renumbered so that code ``i`` is the ``i``-th channel name in sorted order."""
    names = np.array(encoded.dictionary.to_pylist(), dtype=object)
    order = np.argsort(names.astype(str), kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    lengths = np.asarray(lengths.to_numpy(zero_copy_only=False) if isinstance(lengths, pa.Array) else lengths,
                         dtype=np.int64)
    return codes, lengths, tuple(str(n) for n in names[order])


def _merge_duplicates(channels: tuple[str, ...], codes: np.ndarray, offsets: np.ndarray, conv: np.ndarray,
                      val: np.ndarray, nul: np.ndarray) -> PathTable:
    """Add up paths with the same channel sequence; unique paths keep their first-seen order.

    Each path's codes are viewed, without copying, as one binary value, so grouping is a hash
    group-by on bytes rather than on Python tuples.
    """
    width = 1 if len(channels) < 2**8 else 2 if len(channels) < 2**16 else 4
    data = codes.astype({1: np.uint8, 2: np.uint16, 4: np.uint32}[width])
    keys = pa.Array.from_buffers(pa.binary(), len(offsets) - 1,
                                 [None, pa.py_buffer((offsets * width).astype(np.int32)),
                                  pa.py_buffer(data)])
    group = keys.dictionary_encode().indices.to_numpy(zero_copy_only=False)  # numbered in first-seen order
    n_groups = int(group.max()) + 1 if len(group) else 0
    if n_groups == len(keys):  # already unique: nothing to add up
        return PathTable(tuple(channels), codes.astype(np.int32), offsets, np.asarray(conv, float),
                         np.asarray(val, float), np.asarray(nul, float))
    seen = np.maximum.accumulate(group)
    first = np.flatnonzero(np.concatenate([[True], seen[1:] > seen[:-1]]))
    lengths = np.diff(offsets)[first]
    new_offsets = np.concatenate([[0], np.cumsum(lengths)])
    within = np.arange(new_offsets[-1]) - np.repeat(new_offsets[:-1], lengths)
    idx = np.repeat(offsets[first], lengths) + within
    total = [np.bincount(group, weights=np.asarray(x, float), minlength=n_groups) for x in (conv, val, nul)]
    return PathTable(tuple(channels), codes[idx].astype(np.int32), new_offsets, *total)


def _numbers(df: pd.DataFrame, col: str) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce")
    return _checked(values.to_numpy(float, na_value=np.nan), col)


def _checked(values: np.ndarray, col: str) -> np.ndarray:
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        rows = (np.flatnonzero(bad) + 1)[:10].tolist()
        raise ValueError(f"column '{col}' of the path table, rows {rows} (1-based): "
                         "not a finite non-negative number")
    return values


def _arrow_numbers(table: pa.Table, col: str) -> np.ndarray:
    column = table.column(col)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        values = pc.cast(column, pa.float64()).to_numpy()  # nulls become NaN, refused below
        return _checked(np.asarray(values, dtype=float), col)
    return _numbers(pd.DataFrame({col: column.to_pandas()}), col)  # text: row by row, like pandas


def read_paths(path: str | Path, sep: str = ">") -> PathTable:
    """Read a path table in ChannelAttribution's format from CSV (plain or gzipped) or Parquet.

    CSV goes straight to Arrow (pyarrow's multi-threaded reader); nothing passes through pandas.

    Raises
    ------
    DataValidationError
        For a missing, empty, malformed or truncated file (naming it).
    KeyError, ValueError
        For a missing column, a header-only table, empty paths or counts that are not finite and
        non-negative (naming the rows).
    """
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = Path(path)

    def refuse(reason: str) -> DataValidationError:
        return DataValidationError([Problem("paths", str(path), None, reason, "error")])

    if not path.is_file():
        raise refuse("file not found")
    if path.stat().st_size == 0:
        raise refuse("empty file (0 bytes)")
    try:
        if path.name.lower().endswith((".parquet", ".pq")):
            table = pq.read_table(path)
        else:
            options = pcsv.ConvertOptions(column_types={"path": pa.string()})
            table = pcsv.read_csv(path, convert_options=options)
        table.validate(full=True)  # text that is not UTF-8 (a damaged file) is refused here
        table.column_names  # noqa: B018 - decodes the names, which can be damaged too
    except (pa.ArrowException, OSError, EOFError, UnicodeDecodeError) as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise refuse(f"not a readable path table (malformed or truncated?): {first[:300]}") from None
    return PathTable.from_arrow(table, sep=sep)
