"""The check both the workspace tests and the SQL row-check tests make: the engine's ingest gives
``load_dataset``'s report and tables (validation.py is the reference) on the same files."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from closedloop_nb import load_dataset
from closedloop_nb.ingest import ingest, to_pandas
from closedloop_nb.schema import table_spec


def assert_same(items, chunk_rows: int, exact_counts: bool = False, **kw) -> None:
    """The engine's report and tables equal load_dataset's on the same files; the counts to the last
    bit with ``exact_counts``, else to ``pytest.approx`` (money summed chunk by chunk)."""
    ds = load_dataset(items, **kw)
    con = duckdb.connect()
    report = ingest(items, con, chunk_rows=chunk_rows, **kw)
    assert [p.message() for p in report.problems] == [p.message() for p in ds.report.problems]
    for got, want in zip(report.problems, ds.report.problems, strict=True):
        assert (got.severity, got.n_rows, got.rows) == (want.severity, want.n_rows, want.rows)
        assert got.value == pytest.approx(want.value, nan_ok=True)
    if exact_counts:
        assert report.counts == ds.report.counts
    assert report.counts.keys() == ds.report.counts.keys()
    for table, counts in ds.report.counts.items():
        assert report.counts[table] == pytest.approx(counts), table
    for name, frame in ds.tables.items():
        got = to_pandas(con.sql(f"SELECT * FROM {name}").to_arrow_table(), table_spec(name))
        pd.testing.assert_frame_equal(got, frame.reset_index(drop=True))
    assert set(ds.tables) == {r[0] for r in con.execute("SHOW TABLES").fetchall()}
