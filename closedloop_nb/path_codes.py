"""Path tables as integer codes, with pyarrow and numpy only (no pandas, no models).

Tokenising ChannelAttribution's path strings (``"A > B"``) into channel codes, adding up duplicate
paths and reading path-table files straight to Arrow live here, apart from
:class:`closedloop_nb.path_table.PathTable` (which wraps the parts this module returns), so that
``closedloop attribute`` can read and parse its table in a background thread while it imports the
models (:class:`Reading`). Arrow arrays become numpy arrays through their buffers (:func:`as_numpy`):
pyarrow's own ``to_numpy``, ``pa.array`` and scalars import pandas, a quarter of a second that a
command without a DataFrame does not need.

The parts of a path table are ``(channels, codes, offsets, conversions, value, nulls)``: channel
names in sorted order, every path's channel codes concatenated, where each path starts, and per path
the conversions, conversion value and non-converting journeys.

Examples
--------
>>> import pyarrow as pa
>>> channels, codes, offsets, conv, value, nulls = encode(pa.table({
...     "path": ["B > A", "A", "B>A"], "total_conversions": [1, 0, 2], "total_null": [0, 3, 1]}))
>>> channels, codes.tolist(), offsets.tolist(), conv.tolist()
(('A', 'B'), [1, 0, 0], [0, 2, 3], [3.0, 0.0])
"""

from __future__ import annotations

import threading
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from closedloop_nb.errors import DataValidationError, Problem

__all__ = ["Parts", "Reading", "build", "encode", "merge_duplicates", "read_arrow"]

#: channels, codes, offsets, conversions, value, nulls
Parts = tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

_COLUMNS = ("path", "total_conversions", "total_conversion_value", "total_null")


def check_columns(names: list[str], path: str, conversions: str) -> None:
    missing = [c for c in (path, conversions) if c not in names]
    if missing:
        raise KeyError(f"path table misses column(s) {missing}; it has {list(names)}. Expected "
                       f"ChannelAttribution's columns: {', '.join(_COLUMNS)}")


def build(paths: pa.Array | pa.ChunkedArray, conv: np.ndarray, val: np.ndarray, nul: np.ndarray,
          sep: str) -> Parts:
    """Tokenise the path strings and add up duplicate paths: a path table's parts."""
    import pyarrow.compute as pc  # here: the pieced reader (path_stream) does without it

    if len(paths) == 0:
        raise ValueError("the path table has no rows (a header only): no paths to attribute")
    arr = paths.combine_chunks() if isinstance(paths, pa.ChunkedArray) else paths
    text = arr if arr.type in (pa.string(), pa.large_string()) else pc.cast(arr, pa.string())
    if text.null_count:  # a missing path is an empty one (refused below, with its row)
        text = text.fill_null("")
    codes, lengths, channels = _tokenise(text, sep)
    if (lengths == 0).any():
        rows = (np.flatnonzero(lengths == 0) + 1)[:10].tolist()
        raise ValueError(f"empty path in rows {rows} (1-based) of the path table")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return merge_duplicates(channels, codes.astype(np.int32, copy=False), offsets, conv, val, nul)


def _tokenise(text: pa.Array, sep: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Channel codes (sorted channel names), path lengths and channel names of ``sep``-joined paths.

    Paths written the usual way (``"A > B"``) are split on the spaced separator and encoded in one
    pass; the channel names found are then checked, and anything else (``"A>B"``, stray spaces,
    doubled separators) takes the general route: split on ``sep``, trim, drop empty steps.
    """
    import pyarrow.compute as pc

    spaced = f" {sep.strip()} "
    if sep.strip() and spaced != sep:
        lists = pc.split_pattern(text, spaced)
        encoded = pc.dictionary_encode(pc.list_flatten(lists))
        names = encoded.dictionary.to_pylist()
        if all(n and n == n.strip() and sep.strip() not in n for n in names):
            return _ranked(encoded, pc.list_value_length(lists))
    lists = pc.split_pattern(text, sep)
    steps = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    lengths = as_numpy(pc.list_value_length(lists)).astype(np.int64)
    empty = as_numpy(pc.utf8_length(steps)) == 0
    if empty.any():  # "A >> B", trailing separators: drop the empty steps
        keep = np.flatnonzero(~empty)
        owner = np.repeat(np.arange(len(text)), lengths)[keep]
        steps = steps.take(as_arrow(keep))
        lengths = np.bincount(owner, minlength=len(text))
    return _ranked(pc.dictionary_encode(steps), lengths)


def _ranked(encoded: pa.DictionaryArray, lengths) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Dictionary codes renumbered so that code ``i`` is the ``i``-th channel name in sorted order."""
    names = np.array(encoded.dictionary.to_pylist(), dtype=object)
    order = np.argsort(names.astype(str), kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    codes = rank[as_numpy(encoded.indices)]
    lengths = np.asarray(as_numpy(lengths) if isinstance(lengths, pa.Array) else lengths, dtype=np.int64)
    return codes, lengths, tuple(str(n) for n in names[order])


def merge_duplicates(channels: tuple[str, ...], codes: np.ndarray, offsets: np.ndarray, conv: np.ndarray,
                     val: np.ndarray, nul: np.ndarray) -> Parts:
    """Add up paths with the same channel sequence; unique paths keep their first-seen order.

    Each path's codes are viewed, without copying, as one binary value, so grouping is a hash
    group-by on bytes rather than on Python tuples.
    """
    width = 1 if len(channels) < 2**8 else 2 if len(channels) < 2**16 else 4
    data = codes.astype({1: np.uint8, 2: np.uint16, 4: np.uint32}[width])
    keys = pa.Array.from_buffers(pa.binary(), len(offsets) - 1,
                                 [None, pa.py_buffer((offsets * width).astype(np.int32)),
                                  pa.py_buffer(data)])
    group = as_numpy(keys.dictionary_encode().indices)  # numbered in first-seen order
    n_groups = int(group.max()) + 1 if len(group) else 0
    if n_groups == len(keys):  # already unique: nothing to add up
        return (tuple(channels), codes.astype(np.int32, copy=False), offsets, np.asarray(conv, float),
                np.asarray(val, float), np.asarray(nul, float))
    seen = np.maximum.accumulate(group)
    first = np.flatnonzero(np.concatenate([[True], seen[1:] > seen[:-1]]))
    lengths = np.diff(offsets)[first]
    new_offsets = np.concatenate([[0], np.cumsum(lengths)])
    within = np.arange(new_offsets[-1]) - np.repeat(new_offsets[:-1], lengths)
    idx = np.repeat(offsets[first], lengths) + within
    total = [np.bincount(group, weights=np.asarray(x, float), minlength=n_groups) for x in (conv, val, nul)]
    return (tuple(channels), codes[idx].astype(np.int32), new_offsets, *total)


def checked(values: np.ndarray, col: str) -> np.ndarray:
    """``values`` if every one is a finite non-negative number, else a ValueError naming the rows."""
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        rows = (np.flatnonzero(bad) + 1)[:10].tolist()
        raise ValueError(f"column '{col}' of the path table, rows {rows} (1-based): "
                         "not a finite non-negative number")
    return values


def numbers(column: pa.Array | pa.ChunkedArray, col: str) -> np.ndarray:
    """A count or value column as floats (text columns converted value by value), checked."""
    import pyarrow.compute as pc

    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return checked(_floats(pc.cast(column, pa.float64(), safe=False)), col)  # nulls: NaN, refused
    try:
        values = _floats(pc.cast(pc.cast(column, pa.string()), pa.float64(), safe=False))
    except (pa.ArrowException, TypeError, ValueError):  # some text is not a number: find which
        values = np.array([_number(v) for v in column.to_pylist()], dtype=float)
    return checked(values, col)


def _floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A float64 column as a writable numpy array, nulls as NaN."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = as_numpy(arr).copy()
    if arr.null_count:
        values[~_valid(arr)] = np.nan
    return values


def _valid(arr: pa.Array) -> np.ndarray:
    """The validity bitmap of ``arr`` as booleans."""
    bits = np.unpackbits(np.frombuffer(arr.buffers()[0], dtype=np.uint8), bitorder="little")
    return bits[arr.offset:arr.offset + len(arr)].astype(bool)


def as_numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed-width Arrow array (integers, floats) as a read-only numpy view of its data buffer.

    pyarrow's ``to_numpy`` imports pandas; this does not. The slots of nulls hold anything: the
    caller deals with them (:func:`numbers` turns them into NaN).

    Examples
    --------
    >>> as_numpy(as_arrow(np.arange(4))[1:]).tolist()
    [1, 2, 3]
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    dtype = np.dtype(arr.type.to_pandas_dtype())
    if len(arr) == 0:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def as_arrow(values: np.ndarray) -> pa.Array:
    """A one-dimensional numeric numpy array as an Arrow array sharing its memory (no pandas import)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                 [None, pa.py_buffer(values)])


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def encode(table: pa.Table, path: str = "path", conversions: str = "total_conversions",
           value: str | None = "total_conversion_value", nulls: str | None = "total_null",
           sep: str = ">") -> Parts:
    """The parts of a path table (see :class:`closedloop_nb.attribution.PathTable`) from an Arrow table."""
    names = table.column_names
    check_columns(names, path, conversions)
    conv = numbers(table.column(conversions), conversions)
    val = numbers(table.column(value), value) if value and value in names else np.zeros(table.num_rows)
    nul = numbers(table.column(nulls), nulls) if nulls and nulls in names else np.zeros(table.num_rows)
    return build(table.column(path), conv, val, nul, sep)


def read_arrow(path: str | Path) -> pa.Table:
    """A path table file (CSV, gzipped CSV or Parquet) as an Arrow table, read by pyarrow.

    Raises
    ------
    DataValidationError
        For a missing, empty, malformed, truncated or damaged (not UTF-8) file, naming it.
    """
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
            table = _read_csv(path)
        table.validate(full=True)  # text that is not UTF-8 (a damaged file) is refused here
        table.column_names  # noqa: B018 - decodes the names, which can be damaged too
    except (pa.ArrowException, OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise refuse(f"not a readable path table (malformed or truncated?): {first[:300]}") from None
    return table


def _read_csv(path: Path) -> pa.Table:
    """Counts typed as floats up front (no type inference); text in them: read again, untyped, so
    that :func:`numbers` can name the rows.

    A gzipped file is decompressed in one go by the standard library into memory and parsed from
    there: half the CPU time of pyarrow's own decompressing stream (0.28 s against 0.42 s on the
    757k-path benchmark table).
    """
    import pyarrow.csv as pcsv

    source: Path | pa.BufferReader = path
    if path.name.lower().endswith(".gz"):
        import gzip

        data = pa.py_buffer(gzip.decompress(path.read_bytes()))
        source = pa.BufferReader(data)
    types = {"path": pa.string(), **{c: pa.float64() for c in _COLUMNS[1:]}}
    try:
        return pcsv.read_csv(source, convert_options=pcsv.ConvertOptions(column_types=types))
    except pa.ArrowInvalid as exc:
        if "conversion error" not in str(exc).lower():
            raise
    if isinstance(source, pa.BufferReader):
        source = pa.BufferReader(data)
    return pcsv.read_csv(source, convert_options=pcsv.ConvertOptions(column_types={"path": pa.string()}))


class Reading:
    """:func:`closedloop_nb.path_stream.read_parts` (:func:`read_arrow` and :func:`encode`, in
    pieces) in a background thread (pyarrow and zlib release the GIL), so that a command can
    import its models meanwhile; :meth:`result` returns the parts or raises. ``blocks``: the
    file's text, if a :class:`closedloop_nb.path_text.TextBlocks` is reading it already.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "paths.csv"
    >>> _ = f.write_text("path,total_conversions\\nA > B,1\\nB,0\\n")
    >>> Reading(f).result()[0]
    ('A', 'B')
    """

    def __init__(self, path: str | Path, sep: str = ">", blocks=None):
        self._parts: Parts | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path, sep, blocks), daemon=True)
        self._thread.start()

    def _run(self, path: str | Path, sep: str, blocks) -> None:
        from closedloop_nb.path_stream import read_parts  # which imports this module

        try:
            self._parts = read_parts(path, sep=sep, blocks=blocks)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> Parts:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._parts is not None
        return self._parts
