"""One local Spark session for every Spark test (start-up is the slow part), and the bundled sample
opened once as a Spark workspace and once as a DuckDB workspace, in one cache folder the report
kernels of the headline test reuse."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def spark():
    """A local-mode SparkSession (two cores), shared by the whole session."""
    try:
        from closedloop_nb.spark_sql import spark_session
    except ImportError as exc:  # pragma: no cover - pyspark and sqlglot are in .[dev]
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"Spark tests need the spark extra: {exc}")
    return spark_session("local[2]")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("workspaces")


@pytest.fixture(scope="session")
def spark_ws(spark, cache_dir):
    from closedloop_nb.config import SAMPLE_DIR
    from closedloop_nb.workspace import open_workspace

    return open_workspace(SAMPLE_DIR, cache_dir=cache_dir, engine="spark", spark=spark)


@pytest.fixture(scope="session")
def duck_ws(cache_dir):
    from closedloop_nb.config import SAMPLE_DIR
    from closedloop_nb.workspace import open_workspace

    return open_workspace(SAMPLE_DIR, cache_dir=cache_dir, engine="duckdb")
