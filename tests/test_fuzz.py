"""Property-based fuzzing of the file loaders and of path-table parsing (hypothesis).

Good files are broken at random (truncated at any byte, bytes flipped, columns shuffled, a column's
values swapped for another type's) and read. The property: the result is a clear refusal (a
`DataValidationError` naming the file) or a dataset whose counts reconcile
(rows_in = kept + rejected + collapsed + filtered, money kept never above money in); never any other
exception. Examples are bounded so the module runs in well under 30 s.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop_nb import DataValidationError, load_dataset
from closedloop_nb.attribution import PathTable, read_paths

N = int(os.environ.get("CLOSEDLOOP_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=N, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

DEALS = pd.DataFrame({
    "deal_id": ["D1", "D2", "D3", "D4"],
    "person_id": ["P1", "P2", "P1", "P3"],
    "created_at": ["2024-01-05T10:00:00Z", "2024-01-06T11:30:00+01:00", "2024-02-01T00:00:00Z",
                   "2024-03-01T09:00:00Z"],
    "amount": ["1000", "250.5", "", "1,200.00"],
    "currency": ["GBP", "GBP", "EUR", "GBP"],
    "stage": ["closed_won", "opportunity", "closed_lost", "proposal"],
    "won": ["true", "", "false", ""],
})
TOUCHES = pd.DataFrame({
    "touch_id": ["T1", "T2", "", "T4"],
    "visitor_id": ["v1", "v1", "v2", "NULL"],
    "timestamp": ["2024-01-05T10:00:00Z", "2024-01-05T11:00:00Z", "2024-01-06T10:00:00Z",
                  "2024-01-07T10:00:00Z"],
    "source": ["google", "(direct)", "newsletter", "bing"],
    "medium": ["cpc", "(none)", "email", "cpc"],
    "campaign": ["brand > eu", "", "=spring", "x" * 30],
})
GOOD = {"deals": DEALS, "touchpoints": TOUCHES}

# values of other types, to swap into a column
SWAPS = st.sampled_from([
    ["1", "2", "3", "4"], ["1e309", "-inf", "nan", "1.000,50"], ["9999-12-31T00:00:00Z"] * 4,
    ["0001-01-01", "2024-13-45", "yesterday", ""], ["true", "no", "", "maybe"], ["", "", "", ""],
    ["ann@example.com", "+44 20 7946 0958", "None", "null"], ["é\u0000\u202e", "\t=1", "\"", ","],
])


def check(result_or_exc, path) -> None:
    """The property: a clear refusal naming the file, or counts that reconcile."""
    if isinstance(result_or_exc, BaseException):
        assert type(result_or_exc) is DataValidationError, repr(result_or_exc)
        assert str(path) in str(result_or_exc)
        return
    for table, c in result_or_exc.report.counts.items():
        accounted = c["rows_kept"] + c["rows_rejected"] + c["rows_collapsed"] + c["rows_filtered"]
        assert c["rows_in"] == accounted, (table, c)
        assert len(result_or_exc.tables.get(table, [])) == (c["rows_kept"] if table in result_or_exc.tables
                                                            else 0)
        if "value_in" in c:
            assert np.isfinite(c["value_in"]) and c["value_kept"] <= c["value_in"] + 1e-9, c


def load(path, table):
    try:
        return load_dataset({table: path})
    except DataValidationError as exc:
        return exc


@st.composite
def broken_frame(draw):
    table = draw(st.sampled_from(sorted(GOOD)))
    df = GOOD[table].copy()
    if draw(st.booleans()):  # column shuffle (and maybe a column dropped or duplicated)
        cols = draw(st.permutations(list(df.columns)))
        if draw(st.booleans()):
            cols = cols[: draw(st.integers(1, len(cols)))]
        df = df[cols]
    for _ in range(draw(st.integers(0, 2))):  # type swaps
        col = draw(st.sampled_from(list(df.columns)))
        df[col] = draw(SWAPS)
    return table, df


def mutate(data: bytes, draw) -> bytes:
    if draw(st.booleans()):  # truncation anywhere
        data = data[: draw(st.integers(0, len(data)))]
    flips = draw(st.lists(st.tuples(st.integers(0, max(len(data) - 1, 0)), st.integers(0, 255)),
                          max_size=3))
    buf = bytearray(data)
    for pos, byte in flips:
        if buf:
            buf[pos] = byte
    return bytes(buf)


@FUZZ
@given(case=broken_frame(), data=st.data(), sep=st.sampled_from([",", ";"]))
def test_csv_loader_refuses_clearly_or_reconciles(tmp_path, case, data, sep):
    table, df = case
    raw = df.to_csv(index=False, sep=sep).encode("utf-8")
    path = tmp_path / f"{table}.csv"
    path.write_bytes(mutate(raw, data.draw))
    check(load(path, table), path)


@FUZZ
@given(case=broken_frame(), data=st.data(), numeric=st.booleans())
def test_parquet_loader_refuses_clearly_or_reconciles(tmp_path, case, data, numeric):
    table, df = case
    if numeric and "amount" in df:  # typed Parquet columns, not only text
        df = df.assign(amount=pd.to_numeric(df["amount"], errors="coerce"))
    if numeric and "timestamp" in df:
        df = df.assign(timestamp=pd.to_datetime(df["timestamp"], errors="coerce", utc=True, format="ISO8601"))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    raw = buf.getvalue()
    path = tmp_path / f"{table}.parquet"
    path.write_bytes(mutate(raw, data.draw) if data.draw(st.booleans()) else raw)
    check(load(path, table), path)


PATHS = ("path,total_conversions,total_conversion_value,total_null\n"
         '"Paid Search > Email",5,500,5\nEmail,1,100,9\n"Paid Search > Direct > Email",2,150.5,8\n'
         '"A>B",0,0,3\n')
CELLS = st.sampled_from(["", "-1", "inf", "1e309", "x", "2.5", '"A > > B"', '" > "', "=1", "NaN", "3"])


@FUZZ
@given(data=st.data(), suffix=st.sampled_from([".csv", ".csv.gz", ".parquet"]))
def test_path_table_parsing_refuses_clearly_or_is_valid(tmp_path, data, suffix):
    lines = PATHS.splitlines()
    header, rows = lines[0].split(","), [line for line in lines[1:]]
    if data.draw(st.booleans()):  # column shuffle
        order = data.draw(st.permutations(range(4)))
        frame = pd.read_csv(io.StringIO(PATHS)).iloc[:, list(order)]
        text = frame.to_csv(index=False)
    else:
        text = "\n".join([",".join(header), *rows]) + "\n"
    if data.draw(st.booleans()):  # a type swap in one cell
        frame = pd.read_csv(io.StringIO(text), dtype=str)
        r, c = data.draw(st.integers(0, len(frame) - 1)), data.draw(st.integers(0, 3))
        frame.iat[r, c] = data.draw(CELLS)
        text = frame.to_csv(index=False)
    path = tmp_path / f"paths{suffix}"
    if suffix == ".parquet":
        try:
            frame = pd.read_csv(io.StringIO(text))
        except Exception:
            frame = pd.DataFrame({"path": []})
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        raw = buf.getvalue()
    elif suffix == ".csv.gz":
        import gzip

        raw = gzip.compress(text.encode())
    else:
        raw = text.encode()
    path.write_bytes(mutate(raw, data.draw))
    try:
        table = read_paths(path)
    except (DataValidationError, ValueError, KeyError) as exc:
        assert type(exc) in (DataValidationError, ValueError, KeyError), repr(exc)  # not pyarrow's own
        assert str(exc).strip()
        return
    assert isinstance(table, PathTable) and table.n_paths >= 1
    for x in (table.conversions, table.value, table.nulls):
        assert np.isfinite(x).all() and (x >= 0).all()
    assert table.offsets[-1] == len(table.codes) and (np.diff(table.offsets) >= 1).all()
    assert all(">" not in c and c == c.strip() and c for c in table.channels)


@pytest.mark.parametrize("table", sorted(GOOD))
def test_the_unbroken_files_load(tmp_path, table):
    path = tmp_path / f"{table}.csv"
    GOOD[table].to_csv(path, index=False)
    ds = load_dataset({table: path})
    assert ds.report.counts[table]["rows_in"] == 4
