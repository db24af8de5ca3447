"""Parameter files: every value checked before anything runs, every parameter reaching every
notebook that declares it, and the manifest hashing only the files a run reads."""

from __future__ import annotations

import json

import nbformat
import pytest

from closedloop_nb.report import (
    ParameterError,
    _inputs,
    check_parameters,
    check_run_name,
    notebooks,
    run_batch,
)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from closedloop_nb.synth import generate

    folder = tmp_path_factory.mktemp("tables")
    generate(300, seed=2).write(folder)
    return folder


def _check(body: dict, tables) -> None:
    check_parameters({"data_dir": str(tables), **body}, notebooks(), source="p.yaml")


@pytest.mark.parametrize("body,sentence", [
    ({"lookback_days": -5}, "'lookback_days' is -5; it must be a whole number of days from 1 to 3650"),
    ({"lookback_days": 90.0}, "'lookback_days' should be int"),
    ({"lookback_days": True}, "'lookback_days' should be int"),
    ({"n_boot": 0}, "'n_boot' is 0; it must be a number of bootstrap replicates from 10 to 100000"),
    ({"calibration_end": "2024-13-01"}, "'calibration_end' is '2024-13-01'; it must be a date"),
    ({"report_month": "Dec 2024"}, "'report_month' is 'Dec 2024'; it must be a month written YYYY-MM"),
    ({"timezone": "Mars/Olympus"}, "'timezone' is 'Mars/Olympus'; it must be empty or an IANA time zone"),
    ({"model": "magic"}, "'model' is 'magic'; it must be the name of an attribution model"),
    ({"models": "markov,magic"}, "'models' is 'markov,magic'; it must be attribution model names"),
    ({"conversion": "purchase"}, "'conversion' is 'purchase'; it must be one of the conversions"),
    ({"annual_discount": 1.5}, "'annual_discount' is 1.5; it must be a yearly rate"),
    ({"horizon_months": 0}, "'horizon_months' is 0"),
    ({"annual_discount": float("nan")}, "'annual_discount' is nan; it must be a finite number"),
    ({"look_back": 30}, "unknown parameter 'look_back': no notebook declares it"),
])
def test_each_value_is_checked_with_a_sentence(tables, body, sentence):
    with pytest.raises(ParameterError) as err:
        _check(body, tables)
    assert sentence in str(err.value) and str(err.value).startswith("p.yaml: ")
    assert "^^^" not in str(err.value) and "Traceback" not in str(err.value)


def test_good_values_pass(tables):
    _check({"lookback_days": 30, "n_boot": 50, "timezone": "Europe/London", "calibration_end": "2024-09-30",
            "report_month": "2024-12", "model": "markov", "models": "linear, markov", "conversion": "mql",
            "annual_discount": 0.0, "budget_move": -500}, tables)


def test_data_dir_is_required():
    with pytest.raises(ParameterError, match="'data_dir' is required"):
        check_parameters({"lookback_days": 30}, notebooks(), source="p.yaml")


def test_a_folder_without_canonical_tables_is_refused_naming_what_it_holds(tmp_path):
    (tmp_path / "passwd").write_text("root:x:0:0")
    (tmp_path / "ssl").mkdir()
    with pytest.raises(ParameterError, match=r"holds no canonical tables .* it holds passwd, ssl/"):
        check_parameters({"data_dir": str(tmp_path)}, notebooks(), source="p.yaml")
    with pytest.raises(ParameterError, match="is a file, not a folder"):
        check_parameters({"data_dir": str(tmp_path / "passwd")}, notebooks(), source="p.yaml")


def test_the_manifest_hashes_only_the_tables_read(tables, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(tables, folder)
    (folder / "notes.txt").write_text("not a table")
    (folder / "archive").mkdir()
    (folder / "archive" / "touchpoints.parquet").write_bytes(b"old")
    hashed = _inputs({"data_dir": str(folder), "lookback_days": 30})
    names = sorted(p.rsplit("/", 1)[1] for p in hashed)
    assert names == sorted(p.name for p in folder.glob("*.parquet") if not p.name.startswith("ground_truth"))
    assert not any("archive" in p or "notes" in p for p in hashed)


@pytest.mark.parametrize("name", [".", "..", "a/b", "../x", ".hidden", "", "a b", "x" * 101, 5, "/abs"])
def test_run_names_are_plain_names(name):
    with pytest.raises(ParameterError, match="not a plain name"):
        check_run_name(name, "p.yaml")


@pytest.mark.parametrize("name", ["sample", "sample_2024-11", "v1.2", "Q4-2024", "_x"])
def test_plain_run_names_pass(name):
    assert check_run_name(name) == name


def test_run_dot_never_touches_the_reports_folder(tables, tmp_path):
    out = tmp_path / "reports"
    (out / "sample").mkdir(parents=True)
    (out / "sample" / "report.html").write_text("previous")
    for name in (".", "../x", "a/b"):
        param = tmp_path / "p.yaml"
        param.write_text(json.dumps({"run": name, "data_dir": str(tables)}))
        with pytest.raises(ParameterError, match="not a plain name"):
            run_batch([param], out_dir=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["sample"]
    assert (out / "sample" / "report.html").read_text() == "previous"
    assert not (tmp_path / "x").exists()


def _parameter_cell(nb):
    return next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def test_every_notebook_that_loads_data_declares_and_uses_the_timezone():
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        declared = _parameter_cell(nb).source
        rest = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and c is not _parameter_cell(nb))
        if "data_dir" in declared:
            assert "timezone =" in declared, path.name
            assert "timezone=timezone" in rest, path.name


def test_every_declared_parameter_is_used_by_its_notebook():
    import re

    from closedloop_nb.report import declared_parameters

    for path, names in zip(notebooks(), declared_parameters(notebooks()).values(), strict=True):
        nb = nbformat.read(path, as_version=4)
        rest = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and c is not _parameter_cell(nb))
        unused = [n for n in names if not re.search(rf"\b{n}\b", rest)]
        assert not unused, f"{path.name} declares but never uses {unused}"
