"""Reading a CSV path table in pieces, decompressing, parsing and tokenising at the same time.

:func:`read_parts` gives the parts of a path table (see :mod:`closedloop_nb.path_codes`) exactly as
``encode(read_arrow(path))`` does, faster: the file is decompressed block by block by a thread of
its own (:mod:`closedloop_nb.path_text`), cut into pieces where a record ends (a few MB of text
each) by the calling thread, and worker threads parse each piece with
pyarrow's CSV reader and split and dictionary-encode its paths (zlib and pyarrow's kernels release
the GIL, so the pieces run on every core). Small pieces also keep the temporaries small: memory is
reused from piece to piece instead of being taken from the operating system, page by page, for
whole-table arrays (the page faults alone cost a third of a second on a 757k-path table).

The pieced route covers the usual table, ChannelAttribution's own format: a CSV file (plain or
gzipped) whose counts are numbers and whose paths are written ``A > B``, with clean channel names.
Anything else (Parquet, text in a count, a missing value, ``A>B`` or stray spaces, an empty path, a
newline inside a quoted field, a damaged file) goes the general route,
:func:`~closedloop_nb.path_codes.read_arrow` and :func:`~closedloop_nb.path_codes.encode`, which
normalise what can be and name the file, column and rows of what cannot.

Examples
--------
>>> import tempfile, pathlib
>>> f = pathlib.Path(tempfile.mkdtemp()) / "paths.csv"
>>> _ = f.write_text("path,total_conversions,total_null\\nB > A,1,0\\nA,0,3\\nB > A,2,1\\n")
>>> channels, codes, offsets, conv, value, nulls = read_parts(f)
>>> channels, codes.tolist(), offsets.tolist(), conv.tolist(), nulls.tolist()
(('A', 'B'), [1, 0, 0], [0, 2, 3], [3.0, 0.0], [1.0, 3.0])
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

try:  # the kernels themselves: importing pyarrow.compute makes a Python function for every one of them
    from pyarrow._compute import call_function  # (0.03-0.04 s of CPU time), which the pieces do without
except ImportError:  # pragma: no cover - pyarrow.compute re-exports it
    from pyarrow.compute import call_function

from closedloop_nb.path_codes import _COLUMNS, Parts, as_numpy, encode, merge_duplicates, read_arrow
from closedloop_nb.path_text import Fallback, TextBlocks

__all__ = ["Fallback", "TextBlocks", "pieced", "read_parts"]

_TYPES = {"path": pa.string(), **{c: pa.float64() for c in _COLUMNS[1:]}}


def read_parts(path: str | Path, sep: str = ">", blocks: TextBlocks | None = None) -> Parts:
    """The parts of the path table in ``path``: ``encode(read_arrow(path), sep=sep)``, in pieces
    where the table allows it (see the module's description).

    Parameters
    ----------
    blocks
        The file's text, already being read (:meth:`TextBlocks.start`); by default read here.

    Raises
    ------
    DataValidationError, KeyError, ValueError
        As :func:`~closedloop_nb.path_codes.read_arrow` and :func:`~closedloop_nb.path_codes.encode`.
    """
    blocks = blocks or TextBlocks.start(path, sep)
    if blocks is not None:
        try:
            return pieced(blocks, sep)
        except Exception:  # noqa: BLE001, S110 - Fallback, or anything unforeseen: the general route
            pass  # (it names the file, column and rows of what is wrong, if anything is)
    return encode(read_arrow(path), sep=sep)


def pieced(blocks: TextBlocks, sep: str = ">", workers: int | None = None) -> Parts:
    """The pieced route itself; raises :class:`Fallback` where the table needs the general route.

    ``workers`` threads parse the pieces (default: one per core, at most four) while the calling
    thread cuts the text into pieces of whole records.
    """
    if workers is None:
        workers = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else os.cpu_count() or 1))
    spaced = f" {sep.strip()} "
    records = _records(blocks)
    try:
        names = _header(next(records, b""))
    except BaseException:
        blocks.close()
        raise
    todo: queue.Queue = queue.Queue(maxsize=2 * workers)
    done: dict[int, _Piece] = {}
    errors: list[BaseException] = []

    def work() -> None:
        while (item := todo.get()) is not None:
            if errors:
                continue
            try:
                done[item[0]] = _Piece(item[1], names, spaced, sep.strip())
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread below
                errors.append(exc)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    try:
        for i, piece in enumerate(records):
            if errors:
                break
            todo.put((i, piece))
    except BaseException as exc:  # noqa: BLE001 - a damaged file: stop the workers first
        errors.append(exc)
    finally:
        for _ in threads:
            todo.put(None)
        for t in threads:
            t.join()
    if errors:
        blocks.close()
        raise errors[0]
    return _assemble([done[i] for i in range(len(done))])


def _header(line: bytes) -> list[str]:
    """Column names of the header line, as pyarrow parses them; the columns the parts need."""
    if not line.strip(b"\r\n"):
        raise Fallback("no header line")
    try:
        names = pcsv.read_csv(pa.BufferReader(line)).column_names
    except pa.ArrowException as exc:
        raise Fallback(str(exc)) from exc
    if (len(set(names)) < len(names) or "path" not in names or "total_conversions" not in names
            or any("\n" in n for n in names)):
        raise Fallback("columns")
    return names


def _records(texts):
    """The text cut after newlines: first the header line, then pieces of whole lines.

    A record can hold a newline only inside a quoted field; :class:`_Piece` sends a piece whose
    values hold one to the general route, so that every piece starts where a record starts.
    """
    pending: list[bytes] = []
    header = True
    for text in texts:
        if header:
            cut = text.find(b"\n") + 1
            if not cut:
                pending.append(text)
                continue
            pending.append(text[:cut])
            yield b"".join(pending)
            pending, text, header = [], text[cut:], False
        cut = text.rfind(b"\n") + 1
        if not cut:
            pending.append(text)
            continue
        pending.append(text[:cut])
        yield b"".join(pending)
        pending = [text[cut:]]
    if any(pending):
        yield b"".join(pending)


class _Piece:
    """One piece's rows: counts, path lengths, dictionary indices of the steps and their names."""

    __slots__ = ("conv", "hashes", "idx", "lengths", "names", "nul", "val")

    def __init__(self, text: bytes, columns: list[str], spaced: str, bare: str):
        if not text.strip():  # blank lines only (the reader skips them)
            self.conv = self.val = self.nul = np.empty(0)
            self.lengths = self.idx = np.empty(0, dtype=np.int32)
            self.hashes = np.empty(0, dtype=np.uint64)
            self.names = []
            return
        try:
            table = pcsv.read_csv(
                pa.BufferReader(text),
                read_options=pcsv.ReadOptions(column_names=columns, use_threads=False,
                                              block_size=len(text) + 1),
                convert_options=pcsv.ConvertOptions(column_types=_TYPES))
            table.validate(full=True)
        except pa.ArrowException as exc:  # malformed, text in a count, not UTF-8: the general route
            raise Fallback(str(exc)) from exc
        n = table.num_rows
        self.conv = _counts(table.column("total_conversions"))
        self.val = _counts(table.column(_COLUMNS[2])) if _COLUMNS[2] in columns else np.zeros(n)
        self.nul = _counts(table.column(_COLUMNS[3])) if _COLUMNS[3] in columns else np.zeros(n)
        if b'"' in text and _quoted_newline(table):
            # a quoted newline: perhaps a record that runs on into the next piece
            raise Fallback("newline in a quoted field")
        text_col = table.column("path").combine_chunks()
        del table
        if text_col.null_count:
            raise Fallback("missing path")
        if len(bare.encode()) == 1:  # one byte, as ">": the steps are cut out of the text in place
            self.names, self.idx, self.lengths = _cut_steps(text_col, spaced, bare)
        else:
            import pyarrow.compute as pc

            lists = pc.split_pattern(text_col, spaced)
            encoded = pc.dictionary_encode(pc.list_flatten(lists))
            self.names = encoded.dictionary.to_pylist()
            self.idx = as_numpy(encoded.indices)
            self.lengths = as_numpy(pc.list_value_length(lists))
        if not all(s and s == s.strip() and bare not in s for s in self.names):
            raise Fallback("steps written otherwise than 'A > B'")
        self.hashes = _path_hashes(self.names, self.idx, self.lengths)


def _cut_steps(paths: pa.Array, spaced: str, bare: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Step names (with repeats), each step's index into them and the steps per path of paths
    written ``A > B`` (``spaced``, around the one-byte separator ``bare``), without splitting them.

    A step ends where a path ends or two bytes after a separator byte, so the steps are strings
    over the paths' own text (``"A > "``, ``"B"``) whose offsets are those boundaries; they are
    dictionary-encoded as they are, and a step's name is its text without the trailing
    ``spaced``. The names are checked by the caller: non-empty, no stray spaces, no separator.
    When they pass, every path is its names joined by ``spaced`` (each separator byte is inside
    one, and a path ending in a separator leaves an empty step), so the steps are those a split
    on ``spaced`` gives; anything else raises :class:`Fallback`.

    Examples
    --------
    >>> import pyarrow as pa
    >>> names, idx, lengths = _cut_steps(pa.array(["A > B", "B > A > B"]), " > ", ">")
    >>> [names[i] for i in idx], lengths.tolist()
    (['A', 'B', 'B', 'A', 'B'], [2, 3])
    """
    _, offsets_buffer, data = paths.buffers()
    n = len(paths)
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=n + 1, offset=paths.offset * 4)
    lo, hi = int(offsets[0]), int(offsets[-1])
    text = np.frombuffer(data, dtype=np.uint8, count=hi - lo, offset=lo) if hi > lo else None
    if text is None or text[-1] == ord(bare):  # empty paths only, or the last path ends in a separator
        raise Fallback("empty step")
    boundary = np.zeros(hi - lo + 1, dtype=bool)  # a step starts before byte i of the text
    np.equal(text[:-1], ord(bare), out=boundary[2:])
    cuts = int(np.count_nonzero(boundary))
    boundary[offsets - lo] = True
    bounds = np.flatnonzero(boundary)
    if len(bounds) != cuts + n + 1:  # a step would start where a path starts: an empty step
        raise Fallback("empty step")
    bounds += lo
    bounds = bounds.astype(np.int32)
    steps = pa.Array.from_buffers(pa.string(), len(bounds) - 1, [None, pa.py_buffer(bounds), data])
    encoded = call_function("dictionary_encode", [steps])
    names = [s[:-len(spaced)] if s.endswith(spaced) else s for s in encoded.dictionary.to_pylist()]
    lengths = np.diff(np.searchsorted(bounds, offsets)).astype(np.int32)
    return names, as_numpy(encoded.indices), lengths


def _quoted_newline(table: pa.Table) -> bool:
    """Whether a text value holds a newline (it was quoted in the CSV): a look at the bytes of
    every text column."""
    for i, field in enumerate(table.schema):
        if field.type != pa.string():
            continue
        for chunk in table.column(i).chunks:
            if not len(chunk):
                continue
            _, offsets, data = chunk.buffers()
            ends = np.frombuffer(offsets, dtype=np.int32, count=len(chunk) + 1, offset=chunk.offset * 4)
            lo, hi = int(ends[0]), int(ends[-1])
            if hi > lo and (np.frombuffer(data, dtype=np.uint8, count=hi - lo, offset=lo) == 10).any():
                return True
    return False


#: Base of the paths' polynomial hashes (odd, so invertible modulo 2**64), and its inverse.
_BASE = 0x9E3779B97F4A7C15
_INVERSE = pow(_BASE, -1, 2**64)
_powers_lock = threading.Lock()
_powers: list[np.ndarray] = [np.ones(0, dtype=np.uint64), np.ones(0, dtype=np.uint64)]


def _path_hashes(names: list[str], idx: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each path's sequence of step names (equal paths, equal hashes).

    Path ``p`` of steps ``s_0 .. s_k`` at element ``j_0 .. j_k`` of the piece hashes to
    ``sum(h(s_i) * B**j_i) * B**-j_0`` modulo 2**64, i.e. ``sum(h(s_i) * B**i)``, where ``h`` is
    Python's string hash (the same for the same name throughout one process). Different hashes
    prove paths different; equal ones are checked exactly (:func:`merge_duplicates`).
    """
    n = len(idx)
    with _powers_lock:
        if len(_powers[0]) < n:
            for i, base in enumerate((_BASE, _INVERSE)):
                table = np.full(max(n, 2 * len(_powers[i])), base, dtype=np.uint64)
                table[0] = 1
                _powers[i] = np.cumprod(table, out=table)
        power, inverse = _powers
    steps = np.array([hash(s) for s in names], dtype=np.int64).view(np.uint64)
    values = steps[idx]
    values *= power[:n]
    starts = np.zeros(len(lengths), dtype=np.intp)
    np.cumsum(lengths[:-1], out=starts[1:])
    hashes = np.add.reduceat(values, starts)
    hashes *= inverse[starts]
    return hashes


def _counts(column: pa.ChunkedArray) -> np.ndarray:
    """A float64 column's values; missing, negative or non-finite ones go the general route."""
    if column.null_count:
        raise Fallback("missing count")
    values = np.concatenate([as_numpy(c) for c in column.chunks]) if column.num_chunks != 1 else \
        as_numpy(column.chunk(0))
    if not np.isfinite(values).all() or (values < 0).any():
        raise Fallback("count out of range")
    return values


def _assemble(pieces: list[_Piece]) -> Parts:
    """The pieces as one table's parts: channel codes in sorted name order, duplicates added up."""
    found = sorted({s for p in pieces for s in p.names})
    if not found:
        raise Fallback("no rows")
    names = np.array(found, dtype=object)
    order = np.argsort(names.astype(str), kind="stable")  # the order encode() gives
    channels = tuple(str(s) for s in names[order])
    rank = {s: i for i, s in enumerate(channels)}
    codes = np.empty(sum(len(p.idx) for p in pieces), dtype=np.int32)
    at = 0
    for p in pieces:
        if len(p.idx):
            lut = np.array([rank[s] for s in p.names], dtype=np.int32)
            np.take(lut, p.idx, out=codes[at:at + len(p.idx)], mode="clip")  # unbuffered (valid anyway)
            at += len(p.idx)
    lengths = np.concatenate([p.lengths for p in pieces])
    offsets = np.empty(len(lengths) + 1, dtype=np.int64)
    offsets[0] = 0
    np.cumsum(lengths, dtype=np.int64, out=offsets[1:])
    conv, val, nul = (np.concatenate([getattr(p, k) for p in pieces]) for k in ("conv", "val", "nul"))
    hashes = np.concatenate([p.hashes for p in pieces])
    hashes.sort()
    if not (hashes[1:] == hashes[:-1]).any():  # every path differs from every other: nothing to add up
        return channels, codes, offsets, conv, val, nul
    return merge_duplicates(channels, codes, offsets, conv, val, nul)
