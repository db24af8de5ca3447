"""How a run chooses its engine: ``engine:`` in the parameter file (a runner key, never passed to a
notebook), ``--engine`` on the command line over it; a wrong value is refused before anything runs."""

from __future__ import annotations

import pytest

from closedloop_nb.cli import _parser as build_parser
from closedloop_nb.report import RUNNER_KEYS, ParameterError, check_parameters, notebooks


def test_engine_is_a_runner_key_checked_before_the_run():
    assert {"engine", "spark_master"} <= set(RUNNER_KEYS)
    nbs = notebooks()
    check_parameters({"data_dir": "data/sample", "engine": "spark", "spark_master": "local[1]"}, nbs)
    with pytest.raises(ParameterError, match="'engine' is 'polars'; it must be duckdb or spark"):
        check_parameters({"data_dir": "data/sample", "engine": "polars"}, nbs)


def test_remote_data_dir_is_left_to_the_spark_workspace():
    check_parameters({"data_dir": "s3a://bucket/run/", "engine": "spark"}, notebooks())


def test_report_command_takes_an_engine():
    args = build_parser().parse_args(["report", "parameters/sample.yaml", "--engine", "spark"])
    assert args.engine == "spark"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "parameters/sample.yaml", "--engine", "pandas"])
