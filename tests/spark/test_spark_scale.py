"""What lets the Spark workspace ingest a company's volume on one machine's default session: the
local session's shuffles are adaptive (merged by size), the ingest keeps its intermediate tables on
disk rather than in the JVM's memory, and the key check (one aggregation, then the rows that carry a
repeated key) folds and rejects duplicates exactly as ``load_dataset`` does."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop_nb.spark_sql import ENV_DRIVER_MEMORY
from closedloop_nb.spark_workspace import open_spark_workspace
from closedloop_nb.synth import generate
from closedloop_nb.validation import load_dataset


def test_local_session_merges_small_shuffle_partitions_and_keeps_a_2g_heap(spark):
    """A tiny aggregation over 64 shuffle partitions is read back as one coalesced partition (what
    adaptive execution does with ``parallelismFirst`` off); the heap is the 2g default unless the
    environment asks for another."""
    assert int(spark.conf.get("spark.sql.shuffle.partitions")) >= 64
    frame = spark.range(10_000).selectExpr("id % 7 AS k").groupBy("k").count()
    # by hand: 10,000 = 7 x 1,428 + 4, the four left over (9,996-9,999) having k = 0, 1, 2, 3
    assert sorted(r["count"] for r in frame.collect()) == [1428] * 3 + [1429] * 4
    plan = frame._jdf.queryExecution().executedPlan()
    assert plan.nodeName() == "AdaptiveSparkPlan"
    assert "coalesced" in plan.toString()
    heap = spark.sparkContext.getConf().get("spark.driver.memory")
    assert heap == (os.environ.get(ENV_DRIVER_MEMORY) or "2g")


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory):
    """Touchpoints as Parquet with three kinds of repeated ``touch_id``, and their leads and identities.

    By hand: 1 exact copy of touch A (folded), touch B twice with different sources (both rejected),
    touch C three times, two of them equal (one folded, then the two left differ: both rejected).
    """
    out = tmp_path_factory.mktemp("duplicated")
    frames = generate(300, seed=7).frames()
    tp = frames["touchpoints"].drop_duplicates("touch_id").reset_index(drop=True)  # synth adds a repeat
    a, b, c = tp.iloc[[10]], tp.iloc[[20]], tp.iloc[[30]]
    extra = pd.concat([a, b.assign(source="elsewhere"), c, c.assign(medium="other")], ignore_index=True)
    tp = pd.concat([tp, extra], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(tp, preserve_index=False), out / "touchpoints.parquet")
    for name in ("leads", "identities"):
        pq.write_table(pa.Table.from_pandas(frames[name], preserve_index=False), out / f"{name}.parquet")
    return out, len(tp)


def test_key_check_folds_exact_copies_and_rejects_every_copy_of_a_conflicting_key(spark, tmp_path,
                                                                                   duplicated):
    folder, n = duplicated
    cached_before = spark.sparkContext._jsc.getPersistentRDDs().size()
    ws = open_spark_workspace(folder, cache_dir=tmp_path, spark=spark)
    counts = ws.report.counts["touchpoints"]
    assert counts["rows_in"] == n
    assert counts["rows_collapsed"] == 2                      # one copy of A, one of C
    assert counts["rows_rejected"] == 2 + 2                   # both Bs, the two Cs left
    assert counts["rows_kept"] == n - 2 - 4
    assert ws.rows("touchpoints") == n - 6
    rows = {p.severity: p.rows for p in ws.report.problems if p.table == "touchpoints"}
    folded, rejected = rows["collapsed"], rows["rejected"]
    base = n - 4                                              # the rows before the four added
    assert folded == (base + 1, base + 3)                     # the second A, the second C (1-based rows)
    assert rejected == (21, 31, base + 2, base + 4)           # B and its other copy, C and its other copy
    # the same problems and counts as the pandas reference
    want = load_dataset(folder).report
    got = ws.report
    assert [(p.table, p.severity, p.reason, p.n_rows, p.rows) for p in got.problems] == \
        [(p.table, p.severity, p.reason, p.n_rows, p.rows) for p in want.problems]
    for table, expected in want.counts.items():
        assert got.counts[table] == pytest.approx(expected), table
    # nothing of the ingest stays in the JVM's memory, nor its scratch files in the workspace
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == cached_before
    assert not (ws.path / "_scratch").exists()
