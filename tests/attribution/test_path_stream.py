"""The pieced reader of path tables (closedloop_nb.path_stream) against the general route it speeds up
(read_arrow + encode, the reader `closedloop attribute` used before): the same parts, byte for byte
and dtype for dtype, whatever the pieces; and every table it does not read goes the general route."""

from __future__ import annotations

import gzip
import re
import zlib

import numpy as np
import pytest

from closedloop_nb import path_stream
from closedloop_nb.path_codes import encode, read_arrow
from closedloop_nb.path_stream import Fallback, TextBlocks, pieced, read_parts

HEADER = "path,total_conversions,total_conversion_value,total_null\n"


def _text(seed: int = 0, n: int = 400, names=("Email", "Paid Search", "Direct", "Ünïcode ✓", "x")) -> str:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        path = " > ".join(rng.choice(names, size=rng.integers(1, 9)))
        conv = int(rng.integers(0, 4))
        rows.append(f"{path},{conv},{conv * rng.uniform(10, 900)!r},{int(rng.integers(0, 30))}\n")
    return HEADER + "".join(rows)


def _write(tmp_path, text: str | bytes, gz: bool, name: str = "paths") -> object:
    data = text.encode() if isinstance(text, str) else text
    path = tmp_path / (f"{name}.csv.gz" if gz else f"{name}.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _same(a, b) -> None:
    assert a[0] == b[0]
    for x, y in zip(a[1:], b[1:], strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(("size", "workers"), [(64, 1), (300, 3), (1 << 21, 2)])
def test_pieces_give_the_general_routes_parts(tmp_path, gz, size, workers):
    """Tiny blocks cut the header and rows anywhere; several workers finish pieces out of order."""
    path = _write(tmp_path, _text(), gz)
    _same(pieced(TextBlocks(path, size=size), workers=workers), encode(read_arrow(path)))


def test_duplicate_paths_are_added_up_as_the_general_route_does(tmp_path):
    text = HEADER + "A > B,1,10.5,2\nB,0,0,4\nA > B,2,0.25,1\nB > A,1,3,0\nB,1,1,1\n"
    path = _write(tmp_path, text, gz=True)
    parts = pieced(TextBlocks(path, size=16), workers=2)
    _same(parts, encode(read_arrow(path)))
    channels, codes, offsets, conv, value, nulls = parts  # checked by hand too
    assert channels == ("A", "B") and codes.tolist() == [0, 1, 1, 1, 0] and offsets.tolist() == [0, 2, 3, 5]
    assert conv.tolist() == [3, 1, 1] and value.tolist() == [10.75, 1, 3] and nulls.tolist() == [3, 5, 0]


def test_a_hash_collision_only_costs_the_exact_group_by(tmp_path, monkeypatch):
    """Equal hashes are not taken for equal paths: every path hashing alike still gives unique paths."""
    path = _write(tmp_path, _text(3, n=50), gz=False)
    monkeypatch.setattr(path_stream, "_path_hashes",
                        lambda names, idx, lengths: np.zeros(len(lengths), dtype=np.uint64))
    _same(pieced(TextBlocks(path, size=128), workers=2), encode(read_arrow(path)))


@pytest.mark.parametrize("text", [
    HEADER.replace("\n", "\r\n") + "A > B,1,2,3\r\nB,0,0,1\r\n",  # Windows line ends
    "\ufeff" + HEADER + "A > B,1,2,3\n",  # a byte-order mark
    HEADER + '"Paid, Search > B",1,2,3\nB,0,0,1\n"say ""hi"" > B",1,1,1\n',  # quoted fields
    "total_null,path,extra,total_conversions\n3,A > B,x,1\n1,B,,0\n",  # other column order, an extra
    "path,total_conversions\nA > B,1\nB,2\n",  # no value, no nulls
    HEADER + "A > B,1,2,3\n\n\nB,0,0,1",  # blank lines, no final newline
])
def test_what_the_pieces_read(tmp_path, text):
    path = _write(tmp_path, text, gz=True)
    _same(pieced(TextBlocks(path, size=8), workers=2), encode(read_arrow(path)))


@pytest.mark.parametrize("text", [
    HEADER + "A>B,1,2,3\n",  # not spaced: the general route normalises it
    HEADER + "A  > B,1,2,3\n",  # a stray space
    HEADER + "A > B >,1,2,3\n",  # an empty step
    HEADER + "A > B > ,1,2,3\n",  # an empty last step
    HEADER + "A > > B,1,2,3\n",  # a doubled separator
    HEADER + "> A,1,2,3\n",  # an empty first step
    HEADER + "A> B,1,2,3\n",  # half spaced
    HEADER + "A >B,1,2,3\nC,0,0,1\n",  # half spaced, at the end of a path
    HEADER + "B,0,0,1\nA >,1,2,3\n",  # a separator ending the last path
    HEADER + "A >,1,2,3\nB > C,0,0,1\n",  # a separator ending a path that another follows
    HEADER + '"A > B\nC",1,2,3\n',  # a newline inside a quoted field
    HEADER + "A > B,1,,3\n",  # a missing value
    HEADER + "A > B,one,2,3\n",  # text in a count
    HEADER + "A > B,1,2,-3\n",  # a negative count
    HEADER + "A > B,1,inf,3\n",  # not finite
    HEADER + ",1,2,3\n",  # an empty path
    HEADER + "A > B,1,2\n",  # a short row
    HEADER,  # the header only
    "paths,total_conversions\nA,1\n",  # no path column
])
def test_the_rest_goes_the_general_route(tmp_path, text):
    path = _write(tmp_path, text, gz=True)
    with pytest.raises(Fallback):
        pieced(TextBlocks(path, size=8), workers=2)
    try:
        expected = encode(read_arrow(path))
    except (KeyError, ValueError) as exc:  # the general route's error, naming the rows
        with pytest.raises(type(exc), match=re.escape(str(exc))):
            read_parts(path)
    else:
        _same(read_parts(path), expected)


@pytest.mark.parametrize("damage", ["truncated", "two members", "not gzip"])
def test_damaged_gzip_files_go_the_general_route(tmp_path, damage):
    data = gzip.compress(_text(n=30).encode())
    data = {"truncated": data[:len(data) // 2], "two members": data + gzip.compress(b"B,1,0,0\n"),
            "not gzip": b"plain text, not gzip\n"}[damage]
    path = tmp_path / "paths.csv.gz"
    path.write_bytes(data)
    with pytest.raises(Fallback):
        pieced(TextBlocks(path, size=64), workers=2)
    try:
        expected = encode(read_arrow(path))
    except Exception as exc:  # noqa: BLE001 - the same error from read_parts
        with pytest.raises(type(exc)):
            read_parts(path)
    else:  # two members: gzip.decompress reads both
        _same(read_parts(path), expected)


def test_only_csv_with_spaced_separators_is_read_in_pieces(tmp_path):
    csv = _write(tmp_path, _text(n=5), gz=False)
    assert TextBlocks.start(csv, ">") is not None
    assert TextBlocks.start(csv, " > ") is None  # the separator given with its spaces: general route
    assert TextBlocks.start(tmp_path / "missing.csv", ">") is None
    (tmp_path / "empty.csv").write_bytes(b"")
    assert TextBlocks.start(tmp_path / "empty.csv", ">") is None
    assert TextBlocks.start(tmp_path / "t.parquet", ">") is None


def test_closing_stops_the_reading_thread(tmp_path):
    blocks = TextBlocks(_write(tmp_path, _text(n=2000), gz=True), size=64, max_blocks=2)
    next(iter(blocks))
    blocks.close()
    blocks._thread.join(timeout=10)
    assert not blocks._thread.is_alive()


@pytest.mark.parametrize(("sep", "joined"), [("|", " | "), ("→", " → ")])
def test_other_separators_read_as_the_general_route_reads_them(tmp_path, sep, joined):
    """A one-byte separator is cut out of the text in place, a longer one split on: the same parts."""
    text = _text(5, n=300).replace(" > ", joined)
    path = _write(tmp_path, text, gz=True)
    _same(pieced(TextBlocks(path, size=256), sep=sep, workers=2), encode(read_arrow(path), sep=sep))
    bad = _write(tmp_path, HEADER + f"A{sep}B,1,2,3\n", gz=True, name="bad")
    with pytest.raises(Fallback):
        pieced(TextBlocks(bad, size=256), sep=sep, workers=2)
    _same(read_parts(bad, sep=sep), encode(read_arrow(bad), sep=sep))


@pytest.mark.parametrize("inflate", ["isal", "zlib"])
def test_both_inflaters_give_the_standard_librarys_text(tmp_path, monkeypatch, inflate):
    """ISA-L's gunzip where installed, zlib's otherwise: the bytes gzip.decompress gives, and a
    damaged stream goes the general route with either."""
    from closedloop_nb import path_text

    if inflate == "zlib":
        monkeypatch.setattr(path_text, "_inflate", zlib)
        monkeypatch.setattr(path_text, "_INFLATE_ERRORS", (zlib.error,))
    else:
        assert path_text._inflate is not zlib  # the dependency is installed
    text = _text(9, n=3000).encode()
    path = _write(tmp_path, text, gz=True)
    assert b"".join(TextBlocks(path, size=1000)) == text
    path.write_bytes(gzip.compress(text)[:-9] + b"garbage!!")
    with pytest.raises(Fallback):
        b"".join(TextBlocks(path, size=1000))
