"""The Spark workspace validates as load_dataset does (the pandas reference): same problems, same
counts, same tables; and it reads tables where they live (a folder of Parquet parts, a table name)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop_nb.config import SAMPLE_DIR
from closedloop_nb.errors import DataValidationError
from closedloop_nb.spark_workspace import open_spark_workspace
from closedloop_nb.synth import generate
from closedloop_nb.validation import load_dataset

BAD = Path(__file__).parent.parent / "data" / "bad"


def assert_same_report(got, want) -> None:
    assert [p.message() for p in got.problems] == [p.message() for p in want.problems]
    for g, w in zip(got.problems, want.problems, strict=True):
        assert (g.severity, g.n_rows, g.rows) == (w.severity, w.n_rows, w.rows)
        assert g.value == pytest.approx(w.value, nan_ok=True)
    assert got.counts.keys() == want.counts.keys()
    for table, counts in want.counts.items():
        assert got.counts[table] == pytest.approx(counts), table


def assert_same_tables(ws, tables: dict[str, pd.DataFrame], skip: tuple[str, ...] = ()) -> None:
    assert set(ws) == set(tables)
    for name, frame in tables.items():
        if name not in skip:
            pd.testing.assert_frame_equal(ws[name], frame.reset_index(drop=True), obj=name)


def test_sample_report_and_tables_equal_load_datasets(spark_ws):
    ds = load_dataset(SAMPLE_DIR)
    assert_same_report(spark_ws.report, ds.report)
    assert_same_tables(spark_ws, ds.tables, skip=("touchpoints",))  # the big one: compared in Spark
    got = spark_ws.table("touchpoints").toArrow().to_pandas()
    want = ds.tables["touchpoints"]
    assert len(got) == len(want)
    assert got["touch_id"].sort_values().tolist() == sorted(want["touch_id"].tolist())
    assert got.groupby("channel").size().to_dict() == want.groupby("channel", observed=True).size().to_dict()
    recorded = set()
    for name in ("deals", "orders", "subscriptions", "spend"):
        if name in ds.tables and "currency" in ds.tables[name]:
            recorded |= set(ds.tables[name]["currency"].dropna().str.upper())
    assert spark_ws.currencies() == sorted(recorded)
    assert spark_ws.reporting_currency is None  # money as recorded: no conversion on Spark


def test_reopening_on_unchanged_inputs_reuses_the_workspace(spark, cache_dir, spark_ws):
    again = open_spark_workspace(SAMPLE_DIR, cache_dir=cache_dir, spark=spark)
    assert (again.key, again.built) == (spark_ws.key, False)


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, Path]:
    """Small synthetic tables as CSV with problems of every kind injected."""
    out = tmp_path_factory.mktemp("broken")
    frames = generate(500, seed=3).frames()
    tp = frames["touchpoints"].astype(object).copy()
    tp.loc[[5, 40], "timestamp"] = "yesterday"                      # unparseable
    tp.loc[[7, 11, 30], "channel"] = None                           # filled by the channel rules
    tp.loc[30, ["source", "medium"]] = ["weird-source", "weird-medium"]  # no rule matches
    tp.loc[12, "interaction_type"] = "telepathy"                    # not an allowed value
    tp = pd.concat([tp, tp.iloc[[3, 3, 61]]], ignore_index=True)    # exact duplicates (folded)
    tp = pd.concat([tp, tp.iloc[[100]].assign(source="other")], ignore_index=True)  # same id, other values
    deals = frames["deals"].astype(object).copy()
    deals.loc[2, "amount"] = -5                                     # negative amount
    deals.loc[4, "amount"] = "lots"                                 # not a number
    deals.loc[6, "person_id"] = "nobody"                            # orphan
    leads = frames["leads"].astype(object).copy()
    leads.loc[1, "created_at"] = None                               # missing: its deals become orphans
    items = {}
    for name, frame in {**frames, "touchpoints": tp, "deals": deals, "leads": leads}.items():
        items[name] = out / f"{name}.csv"
        frame.to_csv(items[name], index=False)
    return items


def test_injected_problems_are_reported_as_load_dataset_reports_them(spark, tmp_path, broken):
    ds = load_dataset(broken)
    ws = open_spark_workspace(broken, cache_dir=tmp_path, spark=spark)
    assert_same_report(ws.report, ds.report)
    found = {(p.table, p.severity, p.reason.split(":")[0].split(" (")[0]) for p in ws.report.problems}
    assert ("touchpoints", "collapsed", "exact duplicate row") in found
    assert ("deals", "rejected", "negative amount") in found
    assert_same_tables(ws, ds.tables)


@pytest.mark.parametrize("name", ["deals_duplicate_ids.csv", "deals_missing_column.csv",
                                  "touchpoints_unmatched_channel.csv"])
def test_bad_corpus_files_are_reported_as_load_dataset_reports_them(spark, tmp_path, name):
    table = name.split("_")[0]
    items = {table: BAD / name}
    try:
        want = load_dataset(items).report
    except DataValidationError as refused:
        with pytest.raises(DataValidationError) as got:
            open_spark_workspace(items, cache_dir=tmp_path, spark=spark)
        assert str(got.value) == str(refused)
        return
    assert_same_report(open_spark_workspace(items, cache_dir=tmp_path, spark=spark).report, want)


def test_tables_are_read_where_they_live_parquet_parts_and_a_table_name(spark, tmp_path):
    """Touchpoints as a folder of Parquet parts (rows numbered in file-name order), leads as a table
    name (a temporary view stands in for a catalog table), deals as a local Parquet file."""
    data = generate(400, seed=5)
    frames = data.frames()
    parts = tmp_path / "touchpoints"
    parts.mkdir()
    tp = pa.Table.from_pandas(frames["touchpoints"], preserve_index=False)
    for i, start in enumerate(range(0, tp.num_rows, 700)):
        pq.write_table(tp.slice(start, 700), parts / f"part-{i:05d}.parquet")
    for name in ("leads", "deals", "identities"):
        pq.write_table(pa.Table.from_pandas(frames[name], preserve_index=False), tmp_path / f"{name}.parquet")
    spark.read.parquet(str(tmp_path / "leads.parquet")).createOrReplaceTempView("cl_test_leads")
    ws = open_spark_workspace({"touchpoints": str(parts), "leads": "cl_test_leads",
                               "deals": tmp_path / "deals.parquet",
                               "identities": tmp_path / "identities.parquet"},
                              cache_dir=tmp_path / "ws", spark=spark)
    pq.write_table(tp, tmp_path / "touchpoints.parquet")
    ds = load_dataset({t: tmp_path / f"{t}.parquet" for t in ("touchpoints", "leads", "deals", "identities")})
    for table, counts in ds.report.counts.items():
        assert ws.report.counts[table] == pytest.approx(counts), table
    got, want = ws.report.problems, ds.report.problems
    assert [(p.reason, p.rows) for p in got] == [(p.reason, p.rows) for p in want]
    assert_same_tables(ws, ds.tables)


def test_a_misspelled_column_of_a_parquet_table_is_named_as_load_dataset_names_it(spark, tmp_path):
    frames = generate(400, seed=5).frames()
    frames["touchpoints"] = frames["touchpoints"].rename(columns={"campaign": "campaing"})
    frames["deals"] = frames["deals"].assign(stge="won")
    items = {}
    for name in ("touchpoints", "leads", "deals", "identities"):
        items[name] = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pandas(frames[name], preserve_index=False), items[name])
    want = load_dataset(items).report
    assert any("'campaing'" in p.message() and "did you mean 'campaign'" in p.reason for p in want.problems)
    assert_same_report(open_spark_workspace(items, cache_dir=tmp_path / "ws", spark=spark).report, want)
