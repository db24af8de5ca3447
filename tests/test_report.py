"""The batch runner: notebooks executed with papermill, rendered to code-free HTML, failures contained."""

from __future__ import annotations

import json

import pytest

from closedloop_nb.journeys import lead_paths_reference
from closedloop_nb.metrics import channel_performance, deal_credits
from closedloop_nb.report import ParameterError, notebooks, run_batch
from closedloop_nb.synth import generate
from closedloop_nb.validation import load_dataset


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    data = root / "data"
    generate(3_000, seed=4).write(data)
    broken = root / "broken"
    broken.mkdir()
    (broken / "touchpoints.parquet").write_bytes((data / "touchpoints.parquet").read_bytes())
    good = root / "good.yaml"
    good.write_text(f"run: tiny\ndata_dir: {data}\nn_boot: 20\ncalibration_end: '2024-09-30'\n")
    bad = root / "bad.yaml"
    bad.write_text(f"run: broken\ndata_dir: {broken}\nn_boot: 20\n")
    out = root / "reports"
    results = run_batch([good, bad], jobs=2, out_dir=out, progress=False)
    return {"data": data, "out": out, "results": {r.run: r for r in results}}


def test_good_run_executes_every_notebook(batch):
    r = batch["results"]["tiny"]
    assert r.status == "ok", r.error
    names = {n["notebook"] for n in r.notebooks}
    assert names == {nb.name for nb in notebooks()}
    for nb in notebooks():
        assert (batch["out"] / "tiny" / nb.name).exists()


def test_html_has_no_code_and_embeds_its_images(batch):
    for page in (batch["out"] / "tiny").glob("*.html"):
        text = page.read_text()
        assert "<nav class='toc'>" in text, page.name
        assert "import closedloop_nb" not in text and "resolve(data_dir)" not in text, page.name
        assert "data:image/png;base64" in text, page.name
        assert "https://cdn" not in text and "<script src=\"http" not in text, page.name
        # warnings reach stakeholders as notes, without file paths or source lines
        assert "Warning:" not in text and "closedloop_nb/" not in text, page.name


def test_headlines_match_the_package_computed_directly(batch):
    heads = json.loads((batch["out"] / "tiny" / "headlines.json").read_text())
    ds = load_dataset(batch["data"])
    assert heads["rows_rejected"] == int(ds.report.summary["rows_rejected"].sum())
    assert heads["conversions"] == int(lead_paths_reference(ds.tables)["total_conversions"].sum())
    assert heads["journeys_converting"] == heads["conversions"]
    # the closed-loop report's month: revenue and spend as the metrics give them directly
    credits = deal_credits(ds.tables, heads["model"])
    perf = channel_performance(ds.tables, credits, period=heads["report_month"])
    assert heads["revenue"] == pytest.approx(perf.loc["Total", "revenue"])
    assert heads["spend"] == pytest.approx(perf.loc["Total", "spend"], abs=0.01)


def test_the_index_shows_the_report_figures_in_words_and_in_the_runs_currency(batch):
    from closedloop_nb.present import fmt, month_name, report_currency

    heads = json.loads((batch["out"] / "tiny" / "headlines.json").read_text())
    currency = report_currency(load_dataset(batch["data"]).tables)
    assert heads["currency"] == currency
    index = (batch["out"] / "index.html").read_text()
    row = index[index.index("<td>tiny</td>"):].split("</tr>")[0]
    assert f"month: {month_name(heads['report_month'])}" in row
    assert f"spend: {fmt(heads['spend'], 'money', currency)}" in row   # e.g. £4,180, not 4,180
    assert fmt(heads["spend"], "money", currency) != fmt(heads["spend"], "money")
    if heads["deals_won"] < 3:  # min_cell: the revenue, and the ROAS resting on it, are withheld
        assert "revenue: &lt; 3 deals won" in row and "ROAS" not in row
    else:
        assert f"ROAS: {heads['roas']:.1f}:1" in row
    # the names notebooks record figures under are not what a stakeholder reads
    raw = ("report_month", "deals_won", "pipeline_value", "top_channel_shapley")
    assert not any(key in row for key in raw)


def test_broken_run_fails_cleanly_and_keeps_its_error(batch):
    r = batch["results"]["broken"]
    assert r.status == "failed" and r.error
    failed = [n for n in r.notebooks if n["status"] == "failed"]
    assert failed
    executed = batch["out"] / "broken" / failed[0]["notebook"]
    assert "Traceback" in executed.read_text() or "Error" in executed.read_text()
    index = (batch["out"] / "index.html").read_text()
    assert "broken" in index and "failed" in index and "tiny" in index


def test_manifest_makes_the_run_reproducible(batch):
    m = json.loads((batch["out"] / "tiny" / "manifest.json").read_text())
    assert m["parameters"]["n_boot"] == 20 and m["package_version"]
    assert any(k.endswith("touchpoints.parquet") for k in m["inputs_sha256"])
    assert m["channel_rules"]["name"] == "ga4-default" and len(m["channel_rules"]["sha256"]) == 64
    assert m["libraries"]["pandas"] and m["commit"]


def test_rerun_replaces_outputs_atomically(batch, tmp_path):
    out = batch["out"]
    stale = out / "tiny" / "stale.txt"
    stale.write_text("old")
    # what killed batches left: a non-empty .<run>-old of earlier versions (ENOTEMPTY once) and staging
    (out / ".tiny-old").mkdir()
    (out / ".tiny-old" / "x.html").write_text("left by a killed run")
    (out / ".closedloop" / "tiny" / "staging").mkdir(parents=True)
    (out / ".closedloop" / "tiny" / "tmp" / "closedloop-duckdb-1").mkdir(parents=True)
    param = tmp_path / "again.yaml"
    param.write_text(f"run: tiny\ndata_dir: {batch['data']}\nn_boot: 20\ncalibration_end: '2024-09-30'\n")
    (result,) = run_batch([param], out_dir=out, progress=False)
    assert result.status == "ok" and not stale.exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".closedloop"]
    # the locks, and the run workspaces kept for the next run (never a run folder or staging)
    internal = sorted(p.name for p in (out / ".closedloop").iterdir())
    assert internal == [".workspaces", "broken.lock", "tiny.lock"]
    # the same inputs, parameters and code give the same figures
    rerun = json.loads((out / "tiny" / "manifest.json").read_text())["rerun"]
    assert rerun == {"same_inputs": True, "same_figures": True, "figures_that_differ": []}


@pytest.mark.parametrize("body,message", [
    ("data_dir: data/sample\nlook_back: 30\n", "unknown parameter 'look_back'"),
    ("data_dir: data/sample\nlookback_days: ninety\n", "'lookback_days' should be int"),
    ("data_dir: no/such/folder\n", "does not exist"),
])
def test_bad_parameters_are_refused_before_anything_runs(tmp_path, body, message):
    param = tmp_path / "p.yaml"
    param.write_text(body)
    out = tmp_path / "reports"
    with pytest.raises(ParameterError, match=message):
        run_batch([param], out_dir=out, progress=False)
    assert not out.exists() or not any(out.iterdir())


def test_parameter_files_in_the_repo_fit_the_notebooks():
    from closedloop_nb.config import PROJECT_DIR
    from closedloop_nb.report import check_parameters, load_parameters

    files = sorted((PROJECT_DIR / "parameters").glob("*.yaml"))
    assert files
    for f in files:
        params = load_parameters(f)
        params.pop("run")
        check_parameters(params, notebooks(), source=str(f))


def test_notebooks_have_a_parameters_cell_and_no_definitions():
    import nbformat

    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert sum("parameters" in t for t in tags) == 1, path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert "def " not in cell.source and "class " not in cell.source, path.name
        assert nb.metadata["kernelspec"]["name"] == "python3"


def test_a_run_past_its_time_limit_is_stopped_and_reported(batch, tmp_path):
    param = tmp_path / "slow.yaml"
    param.write_text(f"run: slow\ndata_dir: {batch['data']}\nn_boot: 20\n")
    (result,) = run_batch([param], out_dir=tmp_path / "reports", run_timeout=2, progress=False)
    assert result.status == "failed" and "time limit" in result.error
    assert all(n["status"] == "failed" for n in result.notebooks)
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "slow" in index and "failed" in index


def test_runs_of_a_series_are_compared_with_the_one_before(tmp_path):
    from closedloop_nb.report import _write_changes, _write_index

    runs = (("nov", "2024-11", 100.0), ("dec", "2024-12", 150.0), ("oct", "2024-10", 0.0))
    for run, month, revenue in runs:
        d = tmp_path / run
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({
            "run": run, "series": "monthly", "status": "ok", "notebooks": [],
            "parameters": {"report_month": month}}))
        (d / "headlines.json").write_text(json.dumps({"revenue": revenue, "model": "shapley"}))
    _write_changes(tmp_path)
    dec = json.loads((tmp_path / "dec" / "changes.json").read_text())
    assert dec["previous_run"] == "nov"
    want = {"current": 150.0, "previous": 100.0, "change": 50.0, "pct_change": 0.5}
    assert dec["changes"]["revenue"] == want
    nov = json.loads((tmp_path / "nov" / "changes.json").read_text())
    assert nov["previous_run"] == "oct" and nov["changes"]["revenue"]["pct_change"] is None  # from zero
    assert not (tmp_path / "oct" / "changes.json").exists()  # first of its series
    assert "vs nov: revenue +50%" in _write_index(tmp_path).read_text()


def test_figures_are_png_at_the_fixed_resolution(batch):
    import base64
    import struct

    import nbformat

    from closedloop_nb.report import FIGURE_DPI

    nb = nbformat.read(batch["out"] / "tiny" / "05_closed_loop_report.ipynb", as_version=4)
    outputs = [o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])]
    pngs = [base64.b64decode(d["image/png"]) for d in outputs if "image/png" in d]
    widths = [struct.unpack(">II", png[16:24])[0] for png in pngs]
    assert widths and not any("image/svg+xml" in d for d in outputs)
    # the pipeline picture is 8 inches wide: ~800 px at 100 dpi (less the tight crop), 576 at most at 72
    assert FIGURE_DPI == 100 and max(widths) > 620


def test_report_kernels_show_warnings_as_plain_notes(tmp_path, monkeypatch):
    """Stakeholders see 'Note: ...' where a model warns, not a file path and a source line."""
    import nbformat
    import papermill

    from closedloop_nb.report import _kernel_config

    _kernel_config(tmp_path / "ipython")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import warnings\nwarnings.warn('the data do not identify it')")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                               progress_bar=False)
    outputs = nbformat.read(tmp_path / "out.ipynb", 4).cells[0].outputs
    assert [o.get("text") for o in outputs] == ["Note: the data do not identify it\n"]


def _notebook(path, *cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell('label = "x"')
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, path)


def test_error_summaries_say_the_type_and_the_first_meaningful_line(tmp_path):
    """Never "RuntimeError: ^^^" or a rule of dashes: the exception type and what it says."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "01_sql.ipynb", "import duckdb\nduckdb.sql('select nope from range(1)')")
    _notebook(folder / "02_rule.ipynb",
              "raise RuntimeError('\\n' + '-' * 19 + '\\n  ^^^^\\nthe real reason\\nmore')")
    _notebook(folder / "03_slow.ipynb", "import time\ntime.sleep(60)")
    param = tmp_path / "errs.yaml"
    param.write_text("label: y\n")
    out = tmp_path / "reports"
    (result,) = run_batch([param], out_dir=out, cell_timeout=3, progress=False, notebook_dir=folder)
    errors = [n["error"] for n in result.notebooks]
    assert errors[0].startswith('BinderException: Binder Error: Referenced column "nope" not found')
    assert errors[0].endswith("(cell 3)")  # the parameters, papermill's injected cell, then this one
    assert errors[1] == "RuntimeError: the real reason (cell 3)"
    assert errors[2] == "CellTimeout: cell 3 (import time) did not finish within the 3 s cell time limit"
    manifest = json.loads((out / "errs" / "manifest.json").read_text())
    assert [n["error"] for n in manifest["notebooks"]] == errors and manifest["error"] == errors[2]
    assert "did not finish within the 3 s cell time limit" in (out / "index.html").read_text()
    assert all(n["seconds"] >= 0 for n in manifest["notebooks"])


def test_a_run_being_written_is_locked_naming_its_holder(tmp_path):
    import os

    from closedloop_nb.report import INTERNAL, RunLockedError, _RunLock

    param = tmp_path / "p.yaml"
    param.write_text("run: held\ndata_dir: data/sample\n")
    lock = _RunLock(tmp_path / "reports" / INTERNAL / "held.lock")
    lock.acquire("held")
    try:
        holder = rf"run 'held' is being written by another batch \(pid {os.getpid()}, started"
        with pytest.raises(RunLockedError, match=holder):
            run_batch([param], out_dir=tmp_path / "reports", progress=False)
    finally:
        lock.release()


def test_interrupted_swaps_are_recovered(tmp_path):
    from closedloop_nb.report import INTERNAL, _recover

    old = tmp_path / INTERNAL / "m" / "old"  # killed between moving the outputs aside and replacing them
    old.mkdir(parents=True)
    (old / "report.html").write_text("previous")
    (tmp_path / ".m-a1b2c3d4").mkdir()  # staging of an earlier version
    (tmp_path / ".mx-old").mkdir()  # another run's: left alone
    notes = _recover(tmp_path, "m")
    assert (tmp_path / "m" / "report.html").read_text() == "previous" and notes
    assert not (tmp_path / INTERNAL / "m").exists() and not (tmp_path / ".m-a1b2c3d4").exists()
    assert (tmp_path / ".mx-old").exists()


def test_json_outputs_are_valid_json_and_missing_equals_missing(tmp_path):
    from closedloop_nb.report import _rerun_check, dump_json, record

    record("auc", float("nan"), tmp_path)
    record("revenue", 12.5, tmp_path)
    text = (tmp_path / "headlines.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")) == {"auc": None,
                                                                                          "revenue": 12.5}
    with pytest.raises(ValueError):
        json.dumps(float("nan"), allow_nan=False)
    assert json.loads(dump_json({"x": [float("inf"), 1]})) == {"x": [None, 1]}
    final, staging = tmp_path / "final", tmp_path / "staging"
    final.mkdir()
    staging.mkdir()
    (final / "headlines.json").write_text('{"auc": NaN, "revenue": 12.5}')  # as earlier versions wrote it
    (staging / "headlines.json").write_text(text)
    manifest = {"inputs_sha256": {}, "parameters": {}, "commit": "c"}
    (final / "manifest.json").write_text(json.dumps(manifest))
    assert _rerun_check(final, staging, manifest)["same_figures"] is True


def test_the_index_withholds_revenue_of_a_month_with_fewer_than_min_cell_deals(tmp_path):
    from closedloop_nb.report import _write_changes, _write_index

    # November: 2 deals won (below min_cell 3), so its revenue is one or two deals' amounts
    runs = (("oct", "2024-10", 90_000.0, 12), ("nov", "2024-11", 48_000.0, 2),
            ("dec", "2024-12", 60_000.0, 9))
    for run, month, revenue, won in runs:
        d = tmp_path / run
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({
            "run": run, "series": "monthly", "status": "ok", "notebooks": [],
            "parameters": {"report_month": month, "min_cell": 3}}))
        (d / "headlines.json").write_text(json.dumps({"revenue": revenue, "deals_won": won,
                                                      "leads": 100 + won}))
    _write_changes(tmp_path)
    page = _write_index(tmp_path).read_text()
    nov = page[page.index("<td>nov</td>"):page.index("<td>oct</td>")]
    dec = page[page.index("<td>dec</td>"):page.index("<td>nov</td>")]
    assert "48,000" not in page and "revenue: &lt; 3 deals won" in nov
    assert "revenue -47%" not in nov and "leads" in nov          # vs oct: leads moved, revenue withheld
    assert "60,000" in dec and "revenue +" not in dec             # dec vs nov would reveal nov's revenue


def test_batch_kernels_are_told_they_are_not_interactive(tmp_path, monkeypatch):
    """Under `closedloop report` the kernel's parent is the runner's child process, not papermill:
    the runner says so in the environment, so the explorer cells take their static path."""
    from closedloop_nb.explorer import is_interactive
    from closedloop_nb.report import _child_env

    monkeypatch.delenv("CLOSEDLOOP_INTERACTIVE", raising=False)
    env = _child_env(tmp_path, tmp_path / "workspaces")
    assert env["CLOSEDLOOP_INTERACTIVE"] == "0"
    monkeypatch.setenv("CLOSEDLOOP_INTERACTIVE", env["CLOSEDLOOP_INTERACTIVE"])
    assert is_interactive() is False
