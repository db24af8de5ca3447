"""The batch runner's fixed cost: one kernel kept across a run's notebooks (each sees a fresh kernel's
state), and a notebook's executed result reused when nothing it depends on changed.

Small notebooks of their own (a parameters cell and a few lines), so a batch takes seconds. A
notebook records its kernel's process id as a headline: a new id means a new kernel, the same id
on a second run means the result was reused, not executed again."""

from __future__ import annotations

import json
import os

import nbformat
import pytest

from closedloop_nb import report
from closedloop_nb.report import run_batch


def _notebook(path, params, *cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, path)


PID = "import os\nfrom closedloop_nb.report import record\nrecord('pid_{}', os.getpid())"


def _manifest(out, run="r"):
    return json.loads((out / run / "manifest.json").read_text())


def _heads(out, run="r"):
    return json.loads((out / run / "headlines.json").read_text())


def test_one_kernel_per_run_and_each_notebook_sees_a_fresh_one(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    (tmp_path / "warner.py").write_text(
        "import warnings\n\ndef warn():\n    warnings.warn('shown every time')\n")
    _notebook(nbs / "01_a.ipynb", 'label = "x"', PID.format("a"),
              f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport warner\nwarner.warn()",
              "leak = 1\nos.environ['CL_LEAK'] = '1'\nimport warnings\nwarnings.simplefilter('ignore')\n"
              "os.chdir('/')\nimport matplotlib.pyplot as plt\nplt.figure()")
    _notebook(nbs / "02_b.ipynb", 'label = "x"', PID.format("b"),
              "assert 'leak' not in globals(), 'a variable of the notebook before leaked'\n"
              "assert 'CL_LEAK' not in os.environ and os.getcwd().endswith('staging')\n"
              f"assert {str(tmp_path)!r} not in sys.path\n"  # `sys` from the profile, as in a fresh kernel
              "import matplotlib.pyplot as plt\nassert not plt.get_fignums()",
              "import warner\nwarner.warn()")  # in sys.modules already; its warning must show again
    _notebook(nbs / "03_fails.ipynb", 'label = "x"', PID.format("c"), "leak = 2\nraise ValueError('boom')")
    _notebook(nbs / "04_after.ipynb", 'label = "x"', PID.format("d"),
              "assert 'leak' not in globals()")
    param = tmp_path / "r.yaml"
    param.write_text("run: r\nlabel: y\n")
    (result,) = run_batch([param], out_dir=tmp_path / "out", progress=False, notebook_dir=nbs)
    status = {n["notebook"]: n["status"] for n in result.notebooks}
    assert status == {"01_a.ipynb": "ok", "02_b.ipynb": "ok", "03_fails.ipynb": "failed",
                      "04_after.ipynb": "ok"}, result.notebooks
    heads = _heads(tmp_path / "out")
    assert heads["pid_a"] == heads["pid_b"] == heads["pid_c"]  # one kernel for the run ...
    assert heads["pid_d"] != heads["pid_c"]  # ... until a notebook fails: the next gets a fresh one
    for name in ("01_a", "02_b"):
        nb = nbformat.read(tmp_path / "out" / "r" / f"{name}.ipynb", 4)
        notes = [o.get("text", "") for c in nb.cells for o in c.get("outputs", [])]
        assert "Note: shown every time\n" in notes, (name, notes)
        assert [c.execution_count for c in nb.cells] == list(range(1, len(nb.cells) + 1))


@pytest.fixture()
def project(tmp_path):
    """Two notebooks, a data folder with one canonical table, a parameter file; a first run done."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "touchpoints.csv").write_text("touch_id\n1\n")
    _notebook(nbs / "01_a.ipynb", 'data_dir = "data"\nlabel = "x"', PID.format("a"),
              "open('extra.txt', 'w').write(label)")
    _notebook(nbs / "02_b.ipynb", 'other = 1', PID.format("b"), "record('other', other)")
    param = tmp_path / "r.yaml"
    param.write_text(f"run: r\ndata_dir: {data}\nlabel: y\nother: 2\n")
    out = tmp_path / "out"
    run_batch([param], out_dir=out, progress=False, notebook_dir=nbs)
    return {"nbs": nbs, "data": data, "param": param, "out": out, "first": _heads(out),
            "manifest": _manifest(out)}


def _again(project, **kw):
    (result,) = run_batch([project["param"]], out_dir=project["out"], progress=False,
                          notebook_dir=project["nbs"], **kw)
    assert result.status == "ok", result.error
    return _manifest(project["out"]), _heads(project["out"])


def test_a_rerun_on_unchanged_inputs_reuses_every_result(project):
    # the files each notebook wrote (reused with it): not the pages, written while the next one runs
    assert [n["files"] for n in project["manifest"]["notebooks"]] == [["extra.txt"], []]
    manifest, heads = _again(project)
    assert manifest["reused"] == ["01_a.ipynb", "02_b.ipynb"] and not manifest["forced"]
    assert heads == project["first"]  # same kernel ids: nothing was executed again
    assert list(heads) == list(project["first"])  # in the same order (the index shows the first ones)
    first = {n["notebook"]: n for n in project["manifest"]["notebooks"]}
    for n in manifest["notebooks"]:
        assert n["reused"] and n["executed_at"] == first[n["notebook"]]["executed_at"]
    assert (project["out"] / "r" / "extra.txt").read_text() == "y"  # the files a notebook wrote, too
    assert manifest["rerun"]["same_figures"]
    # reused twice: still from the first execution
    manifest, _ = _again(project)
    assert [n["executed_at"] for n in manifest["notebooks"]] == \
        [n["executed_at"] for n in project["manifest"]["notebooks"]]


def test_force_executes_every_notebook(project):
    manifest, heads = _again(project, force=True)
    assert manifest["reused"] == [] and manifest["forced"]
    assert heads["pid_a"] != project["first"]["pid_a"]
    assert heads["other"] == project["first"]["other"] == 2


def test_a_changed_notebook_or_parameter_executes_only_what_depends_on_it(project):
    _notebook(project["nbs"] / "02_b.ipynb", 'other = 1', PID.format("b"), "record('other', other * 10)")
    manifest, heads = _again(project)
    assert manifest["reused"] == ["01_a.ipynb"] and heads["other"] == 20
    assert heads["pid_a"] == project["first"]["pid_a"] != heads["pid_b"]
    project["param"].write_text(project["param"].read_text().replace("label: y", "label: z"))
    manifest, heads = _again(project)
    assert manifest["reused"] == ["02_b.ipynb"]  # only 01 declares label
    assert (project["out"] / "r" / "extra.txt").read_text() == "z"


def test_changed_input_data_executes_again(project):
    (project["data"] / "touchpoints.csv").write_text("touch_id\n1\n2\n")
    manifest, _ = _again(project)
    assert manifest["reused"] == []


def test_changed_package_code_or_engine_executes_again(project, monkeypatch):
    real = report._package_hash()
    monkeypatch.setattr(report, "_package_hash", lambda: real + "-edited")
    manifest, _ = _again(project)
    assert manifest["reused"] == []
    manifest, _ = _again(project)
    assert manifest["reused"] == ["01_a.ipynb", "02_b.ipynb"]
    manifest, _ = _again(project, engine="spark")  # the kernels' engine is part of the key
    assert manifest["reused"] == []


def test_a_failed_notebook_is_executed_again(project):
    _notebook(project["nbs"] / "02_b.ipynb", 'other = 1', "raise ValueError('not yet')")
    (result,) = run_batch([project["param"]], out_dir=project["out"], progress=False,
                          notebook_dir=project["nbs"])
    assert result.status == "failed"
    (result,) = run_batch([project["param"]], out_dir=project["out"], progress=False,
                          notebook_dir=project["nbs"])
    assert [n.get("reused", False) for n in result.notebooks] == [True, False]
    assert "not yet" in result.error


def test_the_package_hash_covers_every_package_file_but_compiled_ones(tmp_path, monkeypatch):
    """Any file of the package (code, rules, templates) changes the key; byte code does not."""
    pkg = tmp_path / "pkg"
    (pkg / "rules").mkdir(parents=True)
    (pkg / "__pycache__").mkdir()
    (pkg / "report.py").write_text("x = 1\n")
    (pkg / "rules" / "default.yaml").write_text("name: a\n")
    monkeypatch.setattr(report, "__file__", str(pkg / "report.py"))
    first = report._package_hash()
    (pkg / "__pycache__" / "report.cpython-311.pyc").write_bytes(b"\0")
    assert report._package_hash() == first
    (pkg / "rules" / "default.yaml").write_text("name: b\n")
    second = report._package_hash()
    assert second != first
    (pkg / "rules" / "default.yaml").rename(pkg / "rules" / "other.yaml")  # a renamed file, same bytes
    assert report._package_hash() not in (first, second)


def test_the_runner_processes_skip_the_slow_optional_iri_check_and_still_validate_notebooks(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom closedloop_nb._report_child import skip_slow_optional_imports\n"
            "skip_slow_optional_imports()\nimport nbformat\n"
            "nb = nbformat.v4.new_notebook()\nnbformat.validate(nb)\n"
            "bad = nbformat.from_dict({'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5,"
            " 'bogus': 1})\n"
            "try:\n    nbformat.validate(bad)\nexcept nbformat.ValidationError:\n    print('refused')\n"
            "print('rfc3987_syntax' in sys.modules and sys.modules['rfc3987_syntax'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.split() == ["refused", "False"]


def test_runs_started_together_build_different_workspaces_and_journeys():
    """Runs sharing a workspace wait on one another's builds: the first run of each workspace goes
    first, in turn, then within a workspace the runs with journeys no earlier run builds, then the rest
    (the order of the files otherwise)."""
    from closedloop_nb.config import resolve
    from closedloop_nb.report import schedule

    base = {"data_dir": "data/sample", "lookback_days": 90}
    runs = [base, {**base, "report_month": "2024-11"}, {**base, "lookback_days": 30},
            {**base, "data_dir": str(resolve("data/sample")), "timezone": ""},  # the same folder, no tz
            {**base, "reporting_currency": "EUR"}, {**base, "reporting_currency": "EUR", "lookback_days": 30}]
    #          workspace A: 0 (90), 2 (30), then 1, 3 (90 again); workspace B: 4 (90), 5 (30)
    assert schedule(runs) == [0, 4, 2, 5, 1, 3]
    assert schedule([base, base]) == [0, 1]
    # a run on Spark builds a workspace of its own
    assert schedule([base, base, {**base, "engine": "spark"}]) == [0, 2, 1]
    assert schedule([base, base, {**base, "engine": "spark"}], engine="duckdb") == [0, 1, 2]


RUN_CELL = ("import os\nimport tempfile\nfrom closedloop_nb.report import record\n"
            "assert 'leak' not in globals(), 'a variable of the run before leaked'\n"
            "open(os.environ['CL_ORDER'], 'a').write('cell\\n')\n"
            "record('pid', os.getpid())\nrecord('tmp', tempfile.gettempdir())\nrecord('cwd', os.getcwd())\n"
            "record('progress', os.environ.get('CLOSEDLOOP_PROGRESS_FILE'))\n"
            "record('engine', os.environ.get('CLOSEDLOOP_ENGINE'))\nleak = label")


@pytest.fixture()
def warm_module(tmp_path, monkeypatch):
    """A module the notebooks import that notes when it is imported, in the order file."""
    (tmp_path / "warmmod.py").write_text(
        "import os\nopen(os.environ['CL_ORDER'], 'a').write('imported\\n')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH"))
                                                     if p))
    monkeypatch.setenv("CL_ORDER", str(tmp_path / "order.txt"))
    return tmp_path / "order.txt"


def test_a_job_slot_keeps_one_kernel_across_runs_each_run_in_its_own_folder_and_environment(
        tmp_path, warm_module):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_a.ipynb", 'label = "x"', RUN_CELL, "import warmmod")
    files = []
    for run in ("r1", "r2"):
        files.append(tmp_path / f"{run}.yaml")
        files[-1].write_text(f"run: {run}\nlabel: {run}\n")
    out = tmp_path / "out"
    results = run_batch(files, jobs=1, out_dir=out, progress=False, notebook_dir=nbs)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    one, two = _heads(out, "r1"), _heads(out, "r2")
    assert one["pid"] == two["pid"]  # one kernel for the slot's runs
    for run, heads in (("r1", one), ("r2", two)):  # each run in its own folders, as a kernel of its own
        work = out / ".closedloop" / run
        assert heads["cwd"] == str(work / "staging") and heads["tmp"] == str(work / "tmp")
        assert heads["progress"] == str(work / "tmp" / "progress.txt") and heads["engine"] == "duckdb"
    # the kernel imported what the notebooks import before the first cell ran, and once
    assert warm_module.read_text().split() == ["imported", "cell", "cell"]
    assert not list((out / ".closedloop").glob(".slot-*"))  # the slot's folder goes with the batch


def test_a_run_on_another_engine_gets_a_fresh_kernel(tmp_path, warm_module):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_a.ipynb", 'label = "x"', RUN_CELL)
    (tmp_path / "r1.yaml").write_text("run: r1\nlabel: a\n")
    (tmp_path / "r2.yaml").write_text("run: r2\nlabel: b\nengine: spark\n")
    out = tmp_path / "out"
    results = run_batch([tmp_path / "r1.yaml", tmp_path / "r2.yaml"], jobs=1, out_dir=out, progress=False,
                        notebook_dir=nbs)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    one, two = _heads(out, "r1"), _heads(out, "r2")
    assert (one["engine"], two["engine"]) == ("duckdb", "spark") and one["pid"] != two["pid"]


def test_a_rerun_that_reuses_every_result_starts_no_notebook_process(project, monkeypatch):
    started = []
    spawn = report._Notebooks._spawn
    monkeypatch.setattr(report._Notebooks, "_spawn", lambda self: started.append(1) or spawn(self))
    manifest, _ = _again(project)
    assert manifest["reused"] == ["01_a.ipynb", "02_b.ipynb"] and started == []
    manifest, _ = _again(project, force=True)
    assert manifest["reused"] == [] and started == [1]  # started ahead, then used by both notebooks


def test_a_notebook_alike_in_two_runs_of_a_batch_is_executed_once(tmp_path):
    """Runs differing only in parameters a notebook does not declare (or giving a declared one its
    default value): the later run copies that notebook's result from the earlier one (its page
    written again under its own name)."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_a.ipynb", 'label = "x"', PID.format("a"), "print(label)")
    _notebook(nbs / "02_b.ipynb", 'other = 1', PID.format("b"), "record('other', other)")
    files = []
    for run, text in (("r1", "label: x\nother: 1\n"), ("r2", "other: 2\n")):  # r2: 01's default label
        files.append(tmp_path / f"{run}.yaml")
        files[-1].write_text(f"run: {run}\n{text}")
    out = tmp_path / "out"
    results = run_batch(files, jobs=1, out_dir=out, progress=False, notebook_dir=nbs)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    one, two = _heads(out, "r1"), _heads(out, "r2")
    manifest = _manifest(out, "r2")
    assert manifest["reused"] == ["01_a.ipynb"] and manifest["notebooks"][0]["reused_from"] == "r1"
    assert two["pid_a"] == one["pid_a"] and (one["other"], two["other"]) == (1, 2)
    assert list(two) == list(one)  # the figures in the order the notebooks give them
    page = (out / "r2" / "01_a.html").read_text()
    assert "r2: 01_a" in page and "r1: 01_a" not in page
    run_batch(files, jobs=1, out_dir=out, progress=False, notebook_dir=nbs, force=True)
    assert _manifest(out, "r2")["reused"] == [] and _heads(out, "r2")["pid_a"] != one["pid_a"]
