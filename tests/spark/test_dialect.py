"""The dialect layer: DuckDB SQL translated to Spark gives DuckDB's answer (checked on both engines)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from closedloop_nb.spark_sql import SparkConnection, engine_env, to_spark

TOUCHES = pd.DataFrame({
    "journey_id": ["j1", "j1", "j1", "j2", "j2", "j3"],
    "touch_id": ["t3", "t1", "t2", "t5", "t4", "t6"],
    "ts": pd.to_datetime(["2024-01-03", "2024-01-01", "2024-01-01", "2024-02-02", "2024-02-01",
                          "2024-03-01"], utc=True),
    "step": ["Email", "Direct", "Paid Search", "Display", "Email", "Direct"],
    "n": [1, 2, 3, 4, 5, 6],
})

QUERIES = {
    # ties on ts broken by touch_id: j1 starts with t1 (Direct), then t2, then t3
    "first in order": "SELECT journey_id, first(step ORDER BY ts, touch_id) AS s FROM t GROUP BY ALL",
    "list in order": "SELECT journey_id, list(step ORDER BY ts, touch_id) AS s FROM t GROUP BY ALL",
    "string_agg in order": "SELECT journey_id, string_agg(step, ' > ' ORDER BY ts, touch_id) AS s "
                           "FROM t GROUP BY journey_id",
    "decimal arithmetic": "SELECT journey_id, SUM(0.1 / n + 0.3) AS s FROM t GROUP BY journey_id",
    "days between": "SELECT journey_id, CAST(floor(date_diff('microsecond', MIN(ts), MAX(ts)) "
                    "/ 86400000000.0) AS BIGINT) AS s FROM t GROUP BY journey_id",
    "interval and semi join": "SELECT COUNT(*) AS s FROM t a SEMI JOIN t b ON a.journey_id = b.journey_id "
                              "AND a.ts >= b.ts - INTERVAL 1 DAY",
}


def test_ordered_aggregates_are_rewritten_for_spark():
    assert to_spark("SELECT first(x ORDER BY a) FROM t") == "SELECT MIN_BY(x, a) FROM t"
    sql = to_spark("SELECT list(x ORDER BY a, b) FROM t")
    assert "ARRAY_SORT(COLLECT_LIST(STRUCT(a AS k0, b AS k1, x AS v)))" in sql
    with pytest.raises(ValueError, match="descending"):
        to_spark("SELECT first(x ORDER BY a DESC) FROM t")


@pytest.mark.parametrize("name", list(QUERIES))
def test_spark_answers_as_duckdb(spark, name):
    sql = QUERIES[name]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("t", TOUCHES)
    want = con.sql(sql + (" ORDER BY 1" if "GROUP BY" in sql else "")).to_arrow_table().to_pandas()
    sc = SparkConnection(spark)
    sc.register("t", TOUCHES)
    got = sc.sql(sql + (" ORDER BY 1" if "GROUP BY" in sql else "")).df()
    if name == "list in order":
        got["s"], want["s"] = got["s"].map(list), want["s"].map(list)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    if name == "first in order":
        assert got.set_index("journey_id")["s"].to_dict() == {"j1": "Direct", "j2": "Email", "j3": "Direct"}


def test_two_connections_on_one_session_each_see_their_own_views(spark):
    a, b = SparkConnection(spark), SparkConnection(spark)
    a.register("same_name", pd.DataFrame({"x": [1]}))
    b.register("same_name", pd.DataFrame({"x": [2, 3]}))
    assert a.sql("SELECT COUNT(*) FROM same_name").fetchall() == [(1,)]
    assert b.sql("SELECT COUNT(*) FROM same_name").fetchall() == [(2,)]


def test_engine_env_command_line_over_parameter_file_over_environment(monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_ENGINE", "spark")
    assert engine_env({}) == {"CLOSEDLOOP_ENGINE": "spark"}
    assert engine_env({"engine": "duckdb"}) == {"CLOSEDLOOP_ENGINE": "duckdb"}
    assert engine_env({"engine": "duckdb"}, "spark")["CLOSEDLOOP_ENGINE"] == "spark"
    with pytest.raises(ValueError, match="engine must be"):
        engine_env({"engine": "polars"})
