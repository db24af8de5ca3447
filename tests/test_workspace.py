"""The run workspace: the engine's validation gives load_dataset's report and tables (validation.py is
the reference), a re-open on unchanged inputs validates nothing, a changed input rebuilds, two
processes opening at once build it once, and journeys read from it equal build_journeys' own."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from ingest_reference import assert_same

import closedloop_nb.ingest as ingest_mod
import closedloop_nb.journeys as journeys_mod
from closedloop_nb import load_dataset, open_workspace
from closedloop_nb.config import SAMPLE_DIR
from closedloop_nb.ingest import ingest
from closedloop_nb.journeys import build_journeys, stitching_summary
from closedloop_nb.metrics import acquisition_channel
from closedloop_nb.schema import TABLES
from closedloop_nb.synth import generate

BAD = Path(__file__).parent / "data" / "bad"


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, Path]:
    """Small synthetic tables as CSV with problems injected, several near chunk boundaries."""
    out = tmp_path_factory.mktemp("broken")
    frames = generate(1_500, seed=3).frames()
    tp = frames["touchpoints"].astype(object).copy()
    tp.loc[[5, 40], "timestamp"] = "yesterday"                      # unparseable
    tp.loc[[7, 11, 300], "channel"] = None                          # filled by the channel rules
    tp.loc[300, ["source", "medium"]] = ["weird-source", "weird-medium"]  # no rule matches
    tp.loc[12, "interaction_type"] = "telepathy"                    # not an allowed value
    tp = pd.concat([tp, tp.iloc[[3, 3, 61]]], ignore_index=True)    # exact duplicates (folded)
    dup = tp.iloc[[100]].assign(source="other")                     # same touch_id, other values
    tp = pd.concat([tp, dup], ignore_index=True)
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


@pytest.mark.parametrize("chunk_rows", [1_000_000, 997, 64])
def test_engine_report_equals_validation_on_injected_problems(broken, chunk_rows):
    assert_same(broken, chunk_rows)


def test_injected_problems_are_all_found(broken):
    report = ingest(broken, duckdb.connect(), chunk_rows=64)
    found = {(p.table, p.severity, p.reason.split(":")[0].split(" (")[0]) for p in report.problems}
    assert ("touchpoints", "collapsed", "exact duplicate row") in found
    assert ("deals", "rejected", "negative amount") in found
    assert ("deals", "rejected", "person_id not found in leads.person_id") in found
    assert any(p.table == "touchpoints" and "no channel rule matched" in p.reason for p in report.problems)


def _table_of(name: str) -> str | None:
    """The canonical table a corpus file is for, from its name (``deals_negative.csv``: deals)."""
    found = [t for t in TABLES if name == f"{t}.csv" or name.startswith(f"{t}_")]
    return max(found, key=len) if found else None


_CORPUS = sorted(p.name for p in BAD.glob("*.csv") if _table_of(p.name))


@pytest.mark.parametrize("chunk_rows", [1_000_000, 2])
@pytest.mark.parametrize("name", _CORPUS)
def test_engine_report_equals_validation_on_the_bad_corpus(name, chunk_rows):
    from closedloop_nb import DataValidationError

    table = _table_of(name)
    items = {table: BAD / name}
    if table == "deals" and (BAD / "leads.csv").is_file():
        items["leads"] = BAD / "leads.csv"
    try:
        load_dataset(items)
    except DataValidationError as want:  # unreadable files: refused alike
        with pytest.raises(DataValidationError) as got:
            ingest(items, duckdb.connect(), chunk_rows=chunk_rows)
        assert str(got.value) == str(want)
        return
    assert_same(items, chunk_rows)
    if table == "touchpoints":
        assert_same(items, chunk_rows, timezone="Europe/London")


def test_engine_report_equals_validation_on_parquet_streamed_in_chunks(tmp_path):
    data = generate(2_000, seed=11)
    data.write(tmp_path)
    items = {p.stem: p for p in tmp_path.glob("*.parquet") if p.stem in TABLES}
    assert_same(items, 1_000)  # touchpoints (~5k rows) streamed by row batches


def test_one_bad_number_per_chunk_and_no_good_one_is_fatal_as_on_the_whole_table(tmp_path):
    deals = pd.DataFrame({"deal_id": ["D1", "D2", "D3"], "person_id": ["P1", "P2", "P3"],
                          "created_at": ["2024-01-01T00:00:00Z"] * 3, "amount": ["ten", None, "five"]})
    deals.to_csv(tmp_path / "deals.csv", index=False)
    items = {"deals": tmp_path / "deals.csv"}
    assert_same(items, 1)
    assert load_dataset(items).report.errors  # the reference finds it fatal


def test_unreadable_files_are_refused_as_load_dataset_refuses_them(tmp_path):
    from closedloop_nb import DataValidationError

    items = {"leads": BAD / "leads_non_utf8.csv"}
    with pytest.raises(DataValidationError) as want:
        load_dataset(items)
    with pytest.raises(DataValidationError) as got:
        open_workspace(items, cache_dir=tmp_path)
    assert str(got.value) == str(want.value)


# --- the workspace ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_ws(tmp_path_factory):
    return open_workspace(SAMPLE_DIR, cache_dir=tmp_path_factory.mktemp("ws"))


def test_workspace_is_a_mapping_of_the_validated_tables(sample_ws):
    ds = load_dataset(SAMPLE_DIR)
    assert list(sample_ws) == list(ds.tables)
    assert "orders" in sample_ws and "nope" not in sample_ws
    for name, frame in ds.tables.items():
        pd.testing.assert_frame_equal(sample_ws[name], frame)
    assert sample_ws["deals"] is sample_ws["deals"]  # materialised once
    assert sample_ws.report.counts == ds.report.counts
    assert sample_ws.report.problems == ds.report.problems
    types = dict(sample_ws.con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                       "WHERE table_name = 'touchpoints'").fetchall())
    assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE"
    assert sample_ws.rows("touchpoints") == ds.report.counts["touchpoints"]["rows_kept"]
    with pytest.raises(KeyError, match="no table 'nope'"):
        sample_ws["nope"]


def test_reopen_on_unchanged_inputs_does_no_validation_work(tmp_path, monkeypatch):
    first = open_workspace(SAMPLE_DIR, cache_dir=tmp_path)
    assert first.built

    def refuse(*args, **kwargs):
        raise AssertionError("validated again")

    monkeypatch.setattr(ingest_mod, "ingest", refuse)
    monkeypatch.setattr(ingest_mod._RowCheck, "run", refuse)
    again = open_workspace(SAMPLE_DIR, cache_dir=tmp_path)
    assert not again.built and again.key == first.key and again.path == first.path
    assert again.report.counts == first.report.counts


def test_a_killed_build_leaves_nothing_behind_after_the_next_build(tmp_path):
    # a kernel killed mid-build (SIGKILL: no cleanup) leaves its temporary database and spill folder;
    # the next build of that workspace, under its lock, removes them
    first = open_workspace(SAMPLE_DIR, cache_dir=tmp_path)
    first.close()
    first.path.unlink()  # as if the build had never finished
    stale = first.path.with_name(f".{first.path.name}.999999.tmp")
    stale.write_bytes(b"half a database")
    first.path.with_name(f".{first.path.name}.999999.tmp.wal").write_bytes(b"")
    spill = first.path.with_name(f".{first.path.stem}.999999.spill")
    spill.mkdir()
    again = open_workspace(SAMPLE_DIR, cache_dir=tmp_path)
    assert again.built and again.path == first.path
    assert sorted(p.name for p in tmp_path.iterdir() if ".999999." in p.name) == []


def test_changing_one_input_rebuilds(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for f in SAMPLE_DIR.glob("*.parquet"):
        shutil.copy(f, data / f.name)
    cache = tmp_path / "cache"
    first = open_workspace(data, cache_dir=cache)
    leads = pd.read_parquet(data / "leads.parquet")
    leads.iloc[:-1].to_parquet(data / "leads.parquet", index=False)
    second = open_workspace(data, cache_dir=cache)
    assert second.built and second.key != first.key
    assert second.rows("leads") == first.rows("leads") - 1
    assert open_workspace(data, cache_dir=cache, timezone="Europe/London").key != second.key


def test_cache_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_WORKSPACE_DIR", str(tmp_path / "from-env"))
    ws = open_workspace({"leads": SAMPLE_DIR / "leads.parquet"})
    assert ws.path.parent == tmp_path / "from-env"


def _open_in_child(cache: str) -> tuple[bool, str]:
    ws = open_workspace(SAMPLE_DIR, cache_dir=cache)
    return ws.built, ws.key


def test_two_processes_opening_at_once_build_it_once(tmp_path):
    import multiprocessing

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_open_in_child, [str(tmp_path)] * 2))
    assert sorted(built for built, _ in results) == [False, True]
    assert results[0][1] == results[1][1]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries left


def test_journeys_from_the_workspace_equal_build_journeys(sample_ws, monkeypatch):
    ds = load_dataset(SAMPLE_DIR)
    for conversion, level in [("lead", "channel"), ("closed_won", "campaign")]:
        want = build_journeys(ds.tables, conversion=conversion, level=level, lookback_days=60, progress=False)
        got = sample_ws.journeys(conversion=conversion, level=level, lookback_days=60)
        pd.testing.assert_frame_equal(got.paths, want.paths)
        pd.testing.assert_frame_equal(got.reconciliation, want.reconciliation)
        pd.testing.assert_frame_equal(got.touches, want.touches, check_dtype=False)
        assert build_journeys(sample_ws, conversion=conversion, level=level, lookback_days=60) is got
    # another process (a new Workspace on the same file) reads them instead of building them
    monkeypatch.setattr(journeys_mod, "write_journeys", lambda *a, **k: pytest.fail("built again"))
    other = open_workspace(SAMPLE_DIR, cache_dir=sample_ws.path.parent)
    again = other.journeys(conversion="lead", lookback_days=60)
    assert np.array_equal(again.paths["total_conversions"], want_lead_conversions(ds))


def want_lead_conversions(ds) -> np.ndarray:
    return build_journeys(ds.tables, conversion="lead", lookback_days=60, progress=False).paths[
        "total_conversions"].to_numpy()


def test_metrics_read_cached_journeys_in_sql_not_in_pandas(sample_ws, monkeypatch):
    """Journeys a workspace reads back from its cache keep their touches in a view over Parquet:
    the metrics query that view and never materialise the touch table (at 10M touchpoints that
    copy held 4 GB and more), with the figures of a fresh build."""
    import closedloop_nb.metrics as m
    from closedloop_nb.metrics._engine import journey_touches

    ds = load_dataset(SAMPLE_DIR)
    want = m.acquisition_channel(ds.tables)
    other = open_workspace(SAMPLE_DIR, cache_dir=sample_ws.path.parent)
    other.journeys(conversion="lead")  # built or read back: either way a cached build
    other = open_workspace(SAMPLE_DIR, cache_dir=sample_ws.path.parent)
    cached = other.journeys(conversion="lead")
    monkeypatch.setattr(type(cached), "touches", property(lambda self: pytest.fail("touches in pandas")))
    touches = journey_touches(cached, other)
    assert touches.con is other.con and touches.name == cached.table
    got = m.acquisition_channel(other)
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)


def test_stitching_summary_in_the_engine_equals_pandas(sample_ws):
    ds = load_dataset(SAMPLE_DIR)
    pd.testing.assert_frame_equal(stitching_summary(sample_ws), stitching_summary(ds.tables))


def test_value_counts_in_the_engine(sample_ws):
    want = load_dataset(SAMPLE_DIR).tables["touchpoints"]["channel"].value_counts()
    got = sample_ws.value_counts("touchpoints", "channel")
    assert got.to_dict() == want.to_dict()


def test_journeys_on_spark_from_the_workspace_equal_duckdb(sample_ws):
    pyspark = pytest.importorskip("pyspark", reason="the spark extra is part of .[dev]")
    spark = (pyspark.sql.SparkSession.builder.master("local[2]").appName("closedloop-tests")
             .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    on_spark = build_journeys(sample_ws, conversion="closed_won", lookback_days=90, engine="spark",
                              spark=spark)
    on_duckdb = sample_ws.journeys(conversion="closed_won", lookback_days=90)
    pd.testing.assert_frame_equal(on_spark.paths, on_duckdb.paths, check_dtype=False)
    pd.testing.assert_frame_equal(on_spark.reconciliation, on_duckdb.reconciliation, check_dtype=False)
    written = sorted(p.name for p in sample_ws.to_parquet().iterdir())
    assert written == sorted(f"{t}.parquet" for t in sample_ws)


def test_prune_deletes_workspaces_not_opened_for_a_while(tmp_path):
    from closedloop_nb.workspace import prune_workspaces

    old = open_workspace({"leads": SAMPLE_DIR / "leads.parquet"}, cache_dir=tmp_path)
    recent = open_workspace({"orders": SAMPLE_DIR / "orders.parquet"}, cache_dir=tmp_path)
    long_ago = time.time() - 40 * 86400
    os.utime(old.path, (long_ago, long_ago))
    assert prune_workspaces(tmp_path, older_than_days=30) == [old.key]
    assert not old.path.exists() and recent.path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([recent.path.name, f"{recent.key}.lock"])


@pytest.mark.parametrize("conversion", ["lead", "opportunity"])
@pytest.mark.parametrize("options", [{}, {"drop_direct": True, "lookback_days": 30}])
def test_a_level_is_the_channel_build_with_its_steps_renamed(tmp_path, monkeypatch, conversion, options):
    # a campaign (keyword...) build stitches and cuts exactly the touches the channel build does: the
    # workspace renames the stored channel build's steps instead of building again, and the result is
    # what a fresh build at that level gives (paths, reconciliation, every touch)
    ws = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws")
    args = {"conversion": conversion, "lookback_days": 90, **options}
    ws.journeys(**args)  # the channel build, stored

    def refuse(*a, **k):
        raise AssertionError("journeys built again for another level")

    monkeypatch.setattr(journeys_mod, "write_journeys", refuse)
    got = ws.journeys(**args, level="campaign")
    want = build_journeys(load_dataset(SAMPLE_DIR).tables, **args, level="campaign", progress=False)
    pd.testing.assert_frame_equal(got.paths, want.paths)
    pd.testing.assert_frame_equal(got.reconciliation, want.reconciliation)
    cols = ["journey_id", "touch_id", "ts", "step", "channel", "converted", "conversion_at", "value"]
    a, b = (j.touches[cols].sort_values(["journey_id", "touch_id"]).reset_index(drop=True)
            for j in (got, want))
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert (got.paths["path"].str.contains("(not set)", regex=False)).any()  # campaign-less touches named


def test_a_level_without_a_channel_build_or_with_collapsed_repeats_is_built(tmp_path):
    # renaming steps is exact only without collapse_repeats (which compares steps): those are built
    ws = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws")
    ws.journeys(collapse_repeats=True)
    got = ws.journeys(collapse_repeats=True, level="campaign")
    want = build_journeys(load_dataset(SAMPLE_DIR).tables, collapse_repeats=True, level="campaign",
                          progress=False)
    pd.testing.assert_frame_equal(got.paths, want.paths)
    alone = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws2").journeys(level="campaign")
    fresh = build_journeys(load_dataset(SAMPLE_DIR).tables, level="campaign", progress=False)
    pd.testing.assert_frame_equal(alone.paths, fresh.paths)


@pytest.mark.parametrize("level", ["campaign", "keyword", "source"])
def test_lead_source_at_a_level_is_the_channel_builds_first_touch_renamed(tmp_path, monkeypatch, level):
    # each lead's first touch is the same touch at every level: the workspace names the channel build's
    # first touches at the level (no journeys at that level built or re-levelled), and the lead sources
    # are those of journeys built at that level from the tables
    ws = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws")
    ws.journeys(conversion="lead")

    def refuse(*a, **k):
        raise AssertionError("journeys built again for another level")

    monkeypatch.setattr(journeys_mod, "write_journeys", refuse)
    monkeypatch.setattr(journeys_mod, "write_relevelled", refuse)
    got = acquisition_channel(ws, level=level)
    monkeypatch.undo()
    want = acquisition_channel(load_dataset(SAMPLE_DIR).tables, level=level)
    pd.testing.assert_series_equal(got, want)
    assert got.nunique() > 5 and (got != "(no touches)").any()


@pytest.mark.parametrize("conversion", ["lead", "opportunity"])
@pytest.mark.parametrize("options", [{}, {"drop_direct": True, "level": "campaign"},
                                     {"restart_after_conversion": False}])
def test_a_shorter_lookback_is_the_wide_build_with_older_touches_left_out(tmp_path, monkeypatch,
                                                                          conversion, options):
    # the workspace builds once at WIDE_LOOKBACK_DAYS and leaves out of each converting journey the
    # touches older than a shorter lookback (non-converting journeys are the same at every lookback):
    # paths, reconciliation and every touch are what a fresh build with that lookback gives
    from closedloop_nb.workspace import WIDE_LOOKBACK_DAYS

    ws = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws")
    ws.journeys(conversion=conversion, lookback_days=WIDE_LOOKBACK_DAYS, **options)

    def refuse(*a, **k):
        raise AssertionError("journeys built again for a shorter lookback")

    monkeypatch.setattr(journeys_mod, "write_journeys", refuse)
    monkeypatch.setattr(journeys_mod, "write_relevelled", refuse)
    tables = load_dataset(SAMPLE_DIR).tables
    cols = ["journey_id", "touch_id", "ts", "step", "channel", "converted", "conversion_at", "value"]
    for days in (7, 30, 90):
        got = ws.journeys(conversion=conversion, lookback_days=days, **options)
        want = build_journeys(tables, conversion=conversion, lookback_days=days, progress=False, **options)
        pd.testing.assert_frame_equal(got.paths, want.paths)
        pd.testing.assert_frame_equal(got.reconciliation, want.reconciliation)
        a, b = (j.touches[cols].sort_values(["journey_id", "touch_id"]).reset_index(drop=True)
                for j in (got, want))
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
        unattributed = got.reconciliation.set_index("bucket")["n"]
        assert unattributed["unattributed: no touches in the lookback window"] > 0 or days == 90
    # a new process reads the derived journeys from the store
    again = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws").journeys(conversion=conversion,
                                                                            lookback_days=30, **options)
    pd.testing.assert_frame_equal(again.paths, ws.journeys(conversion=conversion, lookback_days=30,
                                                           **options).paths)


def test_lookbacks_past_the_wide_one_and_collapsed_repeats_are_built(tmp_path):
    from closedloop_nb.workspace import WIDE_LOOKBACK_DAYS

    ws = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws")
    tables = load_dataset(SAMPLE_DIR).tables
    for options in ({"lookback_days": WIDE_LOOKBACK_DAYS + 1},
                    {"lookback_days": 30, "collapse_repeats": True}):
        got = ws.journeys(**options)
        stored = json.loads((ws._folder(journeys_mod.journey_arguments(**options)) / "arguments.json")
                            .read_text("utf-8"))
        assert "within" not in stored
        pd.testing.assert_frame_equal(got.paths, build_journeys(tables, progress=False, **options).paths)


def test_shorter_lookbacks_of_deal_journeys_with_committees_and_earlier_deals(tmp_path, monkeypatch):
    # the sample has one deal per person and no buying committees: here some people get an earlier
    # deal (the journey of the later one restarts after it) and some deals a second contact (a
    # journey gathers both people's touches); derived lookbacks must still equal fresh builds
    from closedloop_nb.workspace import WIDE_LOOKBACK_DAYS

    tables = load_dataset(SAMPLE_DIR).tables
    rng = np.random.default_rng(7)
    deals = tables["deals"]
    first = deals.sample(200, random_state=1)
    earlier = first.assign(deal_id="DX" + first["deal_id"].str[1:],
                           created_at=first["created_at"] - pd.to_timedelta(rng.integers(10, 60, 200), "D"),
                           closed_at=first["created_at"] - pd.Timedelta(days=5))
    people = tables["leads"]["person_id"].to_numpy()
    committee = deals.sample(300, random_state=2)[["deal_id", "person_id"]]
    others = committee.assign(person_id=rng.choice(people, len(committee)))
    contacts = pd.concat([committee, others]).drop_duplicates(["deal_id", "person_id"])
    folder = tmp_path / "data"
    folder.mkdir()
    for name, frame in {**tables, "deals": pd.concat([deals, earlier], ignore_index=True),
                        "deal_contacts": contacts.reset_index(drop=True)}.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    ws = open_workspace(folder, cache_dir=tmp_path / "ws")
    fresh_tables = load_dataset(folder).tables
    cols = ["journey_id", "touch_id", "ts", "step", "converted", "conversion_at", "value"]
    for conversion in ("opportunity", "closed_won"):
        for restart in (True, False):
            options = {"conversion": conversion, "restart_after_conversion": restart}
            ws.journeys(lookback_days=WIDE_LOOKBACK_DAYS, **options)
            monkeypatch.setattr(journeys_mod, "write_journeys", None)  # derived, never built
            for days in (20, 45):
                got = ws.journeys(lookback_days=days, **options)
                want = build_journeys(fresh_tables, lookback_days=days, progress=False, **options)
                assert got.unit == want.unit == "deal_contacts"
                pd.testing.assert_frame_equal(got.paths, want.paths)
                pd.testing.assert_frame_equal(got.reconciliation, want.reconciliation)
                a, b = (j.touches[cols].sort_values(["journey_id", "touch_id"]).reset_index(drop=True)
                        for j in (got, want))
                pd.testing.assert_frame_equal(a, b, check_dtype=False)
            monkeypatch.undo()


def test_journeys_derived_from_a_build_removed_since_are_built_again(tmp_path):
    ws = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws")
    want = ws.journeys(lookback_days=30).paths
    args = journeys_mod.journey_arguments(lookback_days=30)
    within = json.loads((ws._folder(args) / "arguments.json").read_text("utf-8"))["within"]
    shutil.rmtree(ws._folder(args).with_name(within["build"]))
    again = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws").journeys(lookback_days=30)
    pd.testing.assert_frame_equal(again.paths, want)


def test_anonymous_journeys_are_counted_once_and_read_from_the_touchpoints(tmp_path, monkeypatch):
    # the visitors no identity names make the same journeys whatever the conversion or lookback: a
    # build stores its people's touches alone, the anonymous paths are counted once per level and
    # shared, and paths, reconciliation and every touch still equal a fresh build's
    from closedloop_nb.workspace import WIDE_LOOKBACK_DAYS

    ws = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws")
    tables = load_dataset(SAMPLE_DIR).tables
    anonymous = set(tables["touchpoints"]["visitor_id"]) - set(tables["identities"]["visitor_id"])
    ws.journeys(conversion="lead", lookback_days=WIDE_LOOKBACK_DAYS)
    made = []
    real = journeys_mod.write_anonymous
    monkeypatch.setattr(journeys_mod, "write_anonymous", lambda *a, **k: made.append(a[1:3]) or real(*a, **k))
    cols = ["journey_id", "touch_id", "ts", "step", "channel", "converted", "conversion_at", "value"]
    for conversion, level in [("opportunity", "channel"), ("closed_won", "channel"),
                              ("opportunity", "campaign")]:
        args = {"conversion": conversion, "lookback_days": WIDE_LOOKBACK_DAYS, "level": level}
        got = ws.journeys(**args)
        folder = ws._folder(journeys_mod.journey_arguments(**args))
        own = pd.read_parquet(folder / "journey_touches.parquet")
        assert own["person_id"].notna().all() and len(own) < 0.5 * ws.rows("touchpoints")
        want = build_journeys(tables, **args, progress=False)
        pd.testing.assert_frame_equal(got.paths, want.paths)
        pd.testing.assert_frame_equal(got.reconciliation, want.reconciliation)
        a, b = (j.touches[cols].sort_values(["journey_id", "touch_id"]).reset_index(drop=True)
                for j in (got, want))
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
        visitors = got.touches.loc[got.touches["journey_id"].str.startswith("visitor:"), "visitor_id"]
        assert set(visitors) == anonymous
    assert made == [("campaign", False)]  # the channel level's were counted with the lead build
    # the anonymous paths removed by hand: the builds that add them are built again, not misread
    for stale in folder.parent.glob("anonymous-*"):
        if stale.is_dir():
            shutil.rmtree(stale)
    args = {"conversion": "opportunity", "level": "campaign"}
    again = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws").journeys(**args)
    pd.testing.assert_frame_equal(again.paths, build_journeys(tables, **args, progress=False).paths)


def test_a_money_table_in_several_currencies_read_in_chunks_is_flagged_as_on_the_whole_table(tmp_path):
    # a chunk, or the recheck of the rows chunks flag, sees only its own rows: the warning that a table
    # holds several currencies (with each one's total) is about every kept row, as on the whole table
    frames = generate(1_500, seed=5).frames()
    deals = frames["deals"].astype(object).copy()
    n = len(deals)
    assert n > 10
    deals["currency"] = np.where(np.arange(n) % 3 == 0, "EUR", "GBP")
    deals.loc[deals.index[n - 2], "currency"] = "eur"                  # read as EUR
    flagged = deals.copy()
    flagged.loc[flagged.index[1], "amount"] = -5                       # a flagged row, in GBP
    no_code = deals.copy()
    no_code.loc[no_code.index[n - 1], "currency"] = None               # counted as "no currency"
    for case, table in {"flagged": flagged, "clean": deals, "no_code": no_code}.items():
        items = {}
        for name, frame in {"leads": frames["leads"], "deals": table}.items():
            items[name] = tmp_path / case / f"{name}.csv"
            items[name].parent.mkdir(exist_ok=True)
            frame.to_csv(items[name], index=False)
        found = load_dataset(items).report.problems
        want = [p.message() for p in found if "several currencies" in p.message()]
        assert len(want) == 1 and "EUR" in want[0] and "GBP" in want[0], case
        for chunk_rows in (1_000_000, 5):
            assert_same(items, chunk_rows)
