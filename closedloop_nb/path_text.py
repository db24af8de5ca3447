"""The text of a CSV path table in blocks, read and decompressed by a background thread.

Standard library only (and ISA-L's gunzip, ``isal``, where installed: two and a half times as fast
as zlib's, the same bytes), so that ``closedloop attribute`` can start reading (and gunzipping: both
release the GIL) its table before it imports numpy and pyarrow, which take as long on a small
machine. :mod:`closedloop_nb.path_stream` parses the blocks.

Examples
--------
>>> import gzip, tempfile, pathlib
>>> f = pathlib.Path(tempfile.mkdtemp()) / "paths.csv.gz"
>>> _ = f.write_bytes(gzip.compress(b"path,total_conversions\\nA > B,1\\n"))
>>> b"".join(TextBlocks.start(f, ">"))
b'path,total_conversions\\nA > B,1\\n'
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

try:  # ISA-L's inflate: 0.05 s of CPU time against zlib's 0.12 s for the 757k-path benchmark table
    from isal import isal_zlib as _inflate

    _INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflate.error)
except ImportError:  # pragma: no cover - a dependency; the standard library does the same, slower
    _inflate = zlib
    _INFLATE_ERRORS = (zlib.error,)

__all__ = ["PIECE_BYTES", "Fallback", "TextBlocks"]

#: Text per block: small enough that the arrays made from a block are reused memory (and stay in
#: cache), large enough that the calls per block cost little.
PIECE_BYTES = 1 << 21


class Fallback(Exception):
    """The table needs the general route (:func:`closedloop_nb.path_codes.read_arrow` and
    :func:`~closedloop_nb.path_codes.encode`), which raises the errors that name a problem."""


class TextBlocks:
    """Blocks of a CSV file's text (gunzipped if its name ends in ``.gz``), in order, cut anywhere.

    Iterating yields the blocks as the background thread makes them (at most ``max_blocks`` ahead),
    then raises :class:`Fallback` if the file is not what the pieced route reads (a truncated or
    damaged gzip stream, more than one gzip member). :meth:`close` stops the thread early.
    """

    def __init__(self, path: str | Path, size: int = PIECE_BYTES, max_blocks: int = 32):
        self.path = Path(path)
        self._queue: queue.Queue = queue.Queue(maxsize=max_blocks)
        self._error: BaseException | None = None
        self._stop = False
        gz = self.path.name.lower().endswith(".gz")
        self._thread = threading.Thread(target=self._run, args=(_gunzipped if gz else _plain, size),
                                        daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, path: str | Path, sep: str, size: int = PIECE_BYTES) -> TextBlocks | None:
        """Start reading a table the pieced route can read: a non-empty CSV file, paths written
        ``A > B`` (``sep`` without spaces around it); None for anything else."""
        path = Path(path)
        spaced = f" {sep.strip()} "
        try:
            readable = path.is_file() and path.stat().st_size > 0
        except OSError:
            return None
        if not sep.strip() or spaced == sep or not readable or path.suffix.lower() in (".parquet", ".pq"):
            return None
        return cls(path, size)

    def _run(self, blocks, size: int) -> None:
        try:
            for block in blocks(self.path, size):
                if self._stop:
                    break
                self._queue.put(block)
        except BaseException as exc:  # noqa: BLE001 - raised where the blocks are read
            self._error = exc
        finally:
            self._queue.put(None)

    def __iter__(self) -> Iterator[bytes]:
        while (block := self._queue.get()) is not None:
            yield block
        self._queue.put(None)  # a second reader (or close) ends at once
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop reading: the thread ends after the block it is making."""
        self._stop = True
        while self._queue.get() is not None:
            pass
        self._queue.put(None)


def _plain(path: Path, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(size):
            yield block


def _gunzipped(path: Path, size: int) -> Iterator[bytes]:
    """The decompressed text of a one-member gzip file, about ``size`` bytes at a time (what the
    standard library's gzip.decompress gives, in blocks)."""
    raw = memoryview(path.read_bytes())
    d = _inflate.decompressobj(wbits=31)  # gzip only, as gzip.decompress
    step = max(size // 8, 1 << 14)  # compressed bytes per call: text is typically 5-8 times larger
    try:
        for start in range(0, len(raw), step):
            data = raw[start:start + step]
            while data and not d.eof:
                out = d.decompress(data, 4 * size)
                if out:
                    yield out
                data = d.unconsumed_tail
            if d.eof:
                if data or d.unused_data or start + step < len(raw):  # more members, or trailing bytes
                    raise Fallback("gzip stream")
                break
    except _INFLATE_ERRORS as exc:
        raise Fallback(str(exc)) from exc
    if not d.eof or d.unused_data:  # truncated, or more members / trailing bytes: the general route
        raise Fallback("gzip stream")
