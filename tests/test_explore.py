"""The explorer driven programmatically: a control's new value redraws tables equal to what the package's
functions give when called directly, save as run writes a file the runner accepts, the background
bootstrap fills the intervals."""

from __future__ import annotations

import importlib
from html import escape as html_escape

import pandas as pd
import pytest

from closedloop_nb.attribution.compare import compare_models, rank_flips
from closedloop_nb.journeys import build_journeys
from closedloop_nb.metrics import channel_performance, deal_credits, lead_credits
from closedloop_nb.report import check_parameters, load_parameters, notebooks

ex = importlib.import_module("closedloop_nb.explorer")


@pytest.fixture(scope="module")
def tables(sample) -> dict[str, pd.DataFrame]:
    return sample.tables


@pytest.fixture
def app(tables) -> ex.Explorer:
    # background=False: the intervals are computed in the callback, so each test sees them done
    return ex.Explorer(tables, ex.Settings(models=("first_touch", "last_touch"), n_boot=5), background=False)


def _same(a: pd.DataFrame, b: pd.DataFrame, cols=("conversions", "share", "rank")) -> None:
    key = ["model", "channel"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[[*key, *cols]], b[[*key, *cols]], check_dtype=False)


def test_model_control_redraws_the_credit_as_compare_models_gives_it(app, tables):
    paths = build_journeys(tables, lookback_days=90, progress=False).paths
    _same(app.views.credit, compare_models(paths, ["first_touch", "last_touch"], progress=False))
    before = app.credit_html.value
    app.controls["models"].value = ("linear", "markov")
    direct = compare_models(paths, ["linear", "markov"], progress=False)
    _same(app.views.credit, direct)
    assert app.credit_html.value != before and "markov" in app.credit_html.value
    flips = rank_flips(direct)
    assert app.views.flips["channel"].tolist() == flips["channel"].tolist()


def test_lookback_and_journey_options_rebuild_the_journeys(app, tables):
    app.controls["lookback_days"].value = 20
    app.controls["drop_direct"].value = True
    paths = build_journeys(tables, lookback_days=20, drop_direct=True, progress=False).paths
    _same(app.views.credit, compare_models(paths, ["first_touch", "last_touch"], progress=False))
    assert "Direct" not in set(app.views.credit["channel"])


def test_time_decay_uses_the_half_life_control(app, tables):
    from closedloop_nb.attribution import TimeDecay

    app.controls["models"].value = ("time_decay",)
    app.controls["half_life_days"].value = 2.0
    touches = build_journeys(tables, progress=False).touch_table()
    direct = TimeDecay(half_life_days=2.0).fit(touches).credits_
    got = app.views.credit.set_index("channel")[["conversions", "value", "share"]].sort_index()
    pd.testing.assert_frame_equal(got, direct.set_index("channel")[["conversions", "value", "share"]]
                                  .sort_index(), check_names=False)


@pytest.mark.parametrize("model", ["first_touch", "markov"])
def test_pipeline_and_revenue_are_channel_performance_of_deal_credits(app, tables, model):
    app.controls["models"].value = (model, "linear")
    app.controls["collapse_repeats"].value = True
    credits = deal_credits(tables, model, lookback_days=90, collapse_repeats=True)
    direct = channel_performance(tables, credits, lead_credits=lead_credits(tables, "lead_source"))
    pd.testing.assert_frame_equal(app.views.performance, direct)
    # the totals are the CRM's whatever the model (independent of the attribution)
    assert app.views.performance.loc["Total", "pipeline"] == pytest.approx(tables["deals"]["amount"].sum())


def test_drill_down_lists_the_channel_deals_with_their_shares(app, tables):
    app.controls["models"].value = ("linear",)
    channel = app.views.credit.sort_values("conversions").iloc[-1]["channel"]
    app.controls["channel"].value = channel
    drill = app.views.drill
    credits = deal_credits(tables, "linear")
    mine = credits[credits["channel"] == channel].set_index("deal_id")["share"]
    assert set(drill["deal_id"]) == set(mine.index)
    got = drill.set_index("deal_id")["share"].sort_index()
    assert got.tolist() == pytest.approx(mine.sort_index().tolist())
    # a deal credited to the channel under a linear model has the channel on its trail
    assert all(channel in trail.split(" > ") for trail in drill["trail"])
    assert channel in app.drill_html.value


def test_segment_keeps_that_segment_people(app, tables):
    segment = tables["leads"]["segment"].dropna().astype(str).value_counts().index[-1]
    app.controls["segment"].value = segment
    n_leads = int((tables["leads"]["segment"] == segment).sum())
    assert app.views.performance.loc["Total", "leads"] == pytest.approx(n_leads)
    assert app.views.credit.groupby("model")["conversions"].sum().max() <= n_leads + 1e-9


def test_cache_returns_the_same_views_for_a_setting_seen_before(app, monkeypatch):
    calls = []
    real = ex.credit_by_model
    monkeypatch.setattr(ex, "credit_by_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = app.views.credit
    app.controls["models"].value = ("linear",)
    app.controls["models"].value = ("first_touch", "last_touch")
    assert len(calls) == 1  # only the new setting was computed
    pd.testing.assert_frame_equal(app.views.credit, first)


def test_save_as_run_writes_a_file_the_runner_accepts(tables, tmp_path):
    app = ex.Explorer(tables, ex.Settings(models=("markov", "linear"), n_boot=10), data_dir="data/sample",
                      parameters_dir=tmp_path, background=False)
    app.controls["lookback_days"].value = 45
    app.run_name.value = "from_explorer"
    path = app.save()
    assert path == tmp_path / "from_explorer.yaml"
    params = load_parameters(path)
    check_parameters(params, notebooks())  # raises ParameterError when the runner would refuse it
    assert params["lookback_days"] == 45 and params["models"] == "markov,linear"
    assert params["data_dir"] == "data/sample" and params["run"] == "from_explorer"
    app.run_name.value = "../escape"
    assert app.save() is None and "Not saved" in app.save_status.value


def test_background_bootstrap_fills_the_intervals_without_blocking(tables):
    app = ex.Explorer(tables, ex.Settings(models=("first_touch", "linear"), n_boot=30))
    assert app.wait(timeout=120)
    assert app.progress.value == app.progress.max == 2
    credit = app.views.credit
    assert {"lower", "upper"} <= set(credit.columns)
    assert (credit["lower"] <= credit["conversions"] + 1e-9).all()
    assert (credit["conversions"] <= credit["upper"] + 1e-9).all()
    direct = compare_models(build_journeys(tables, progress=False).paths, ["first_touch", "linear"], ci=True,
                            n_boot=30, progress=False)
    _same(credit, direct, cols=("conversions", "lower", "upper"))
    assert "[" in app.credit_html.value  # intervals drawn in the table


def test_a_control_change_during_the_bootstrap_wins(tables):
    app = ex.Explorer(tables, ex.Settings(models=("shapley", "markov", "linear"), n_boot=40))
    app.controls["models"].value = ("first_touch",)  # while the first bootstrap still runs
    assert app.wait(timeout=120)
    assert set(app.views.credit["model"]) == {"first_touch"}


def test_static_path_renders_tables_and_pngs(tables):
    assert not ex.is_interactive()
    views = ex.explore(tables, interactive=False, models="linear,markov")
    assert isinstance(views, ex.Views)
    html = views._repr_html_()
    assert html.count("data:image/png;base64,") == 2 and "<table" in html and "markov" in html


def test_static_path_reads_the_workspace_journeys_without_wide_builds(tmp_path, monkeypatch):
    # a batch run's one static draw uses the journeys its notebook built (the workspace's cache): the
    # app's wide builds (every level, a year's lookback) would cost a 10M run two more builds
    from closedloop_nb import journey_derive
    from closedloop_nb.config import SAMPLE_DIR
    from closedloop_nb.workspace import open_workspace

    ws = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws")
    built = ws.journeys(conversion="lead", lookback_days=90)

    def refuse(*args, **kwargs):
        raise AssertionError("the static path made a wide build")

    monkeypatch.setattr(journey_derive, "wide_journeys", refuse)
    views = ex.explore(ws, interactive=False, models="linear,markov")
    want = compare_models(built.paths, ["linear", "markov"], progress=False)
    _same(views.credit, want)


def test_interactive_override(monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_INTERACTIVE", "1")
    assert ex.is_interactive()
    monkeypatch.setenv("CLOSEDLOOP_INTERACTIVE", "0")
    assert not ex.is_interactive()


def test_every_model_a_notebook_may_ask_for_is_a_choice():
    # notebook 03's models parameter is passed to cl.explore: a model the control lacks breaks the app
    from closedloop_nb.attribution import MODELS
    from closedloop_nb.report import declared_parameters

    assert set(MODELS) | {"time_decay"} <= set(ex.MODEL_CHOICES)
    declared = declared_parameters(notebooks())
    for per_notebook in declared.values():
        if "models" in per_notebook:
            default = str(per_notebook["models"]["default"]).strip("\"'")
            assert set(default.split(",")) <= set(ex.MODEL_CHOICES)


@pytest.mark.parametrize(("argv", "batch"), [
    (["/v/bin/python", "-m", "closedloop_nb._report_child", "03.ipynb", "out.ipynb"], True),
    (["/usr/bin/python3", "-u", "/v/bin/papermill", "in.ipynb", "out.ipynb"], True),
    (["/v/bin/python", "-m", "pytest", "-q"], True),
    (["/v/bin/python", "/v/bin/jupyter-lab", "--ServerApp.root_dir=/tmp/pytest-of-root/pytest-3/lab"], False),
    (["/v/bin/python", "-m", "jupyterlab", "--notebook-dir", "/home/me/papermill-runs"], False),
    (["/v/bin/jupyter-lab"], False),
])
def test_batch_runners_are_known_by_their_program_not_their_arguments(argv, batch):
    assert ex.batch_parent(argv) is batch


def test_a_kernel_of_the_report_runner_takes_the_static_path(tmp_path):
    # the kernel's parent is the runner's own notebook process (closedloop_nb._report_child): the
    # explorer must not draw widgets there, even without the runner's environment
    import json
    import os
    import subprocess
    import sys

    from closedloop_nb.progress import ENV

    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "a", "metadata": {}, "outputs": [],
                     "source": ["from closedloop_nb.explorer import is_interactive\n",
                                "print('interactive:', is_interactive())"]}],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "in.ipynb").write_text(json.dumps(nb), "utf-8")
    (tmp_path / "p.yaml").write_text("{}\n", "utf-8")
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "CLOSEDLOOP_INTERACTIVE")}
    env.update(IPYTHONDIR=str(tmp_path / "ipython"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    subprocess.run([sys.executable, "-m", "closedloop_nb._report_child", "in.ipynb", "out.ipynb", "p.yaml",
                    str(tmp_path), "120"], cwd=tmp_path, env=env, check=True, timeout=180,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = json.loads((tmp_path / "out.ipynb").read_text("utf-8"))
    assert "".join(out["cells"][0]["outputs"][0]["text"]).strip() == "interactive: False"


def test_a_saved_run_is_run_by_closedloop_report(tables, tmp_path):
    # "save as run" end to end: the file the explorer writes, given to the real command line, runs
    # notebooks 02 and 03 (both end with the explorer's static views) with the explorer's settings
    import json
    import os
    import subprocess
    import sys

    app = ex.Explorer(tables, ex.Settings(models=("linear", "first_touch"), n_boot=10),
                      data_dir="data/sample", parameters_dir=tmp_path, background=False)
    app.controls["lookback_days"].value = 30
    app.run_name.value = "saved_in_lab"
    path = app.save()
    env = {**os.environ, "CLOSEDLOOP_WORKSPACE_DIR": str(tmp_path / "workspaces")}
    out = tmp_path / "reports"
    done = subprocess.run([sys.executable, "-m", "closedloop_nb.cli", "report", str(path), "--notebooks",
                           "02,03", "--out", str(out), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    manifest = json.loads((out / "saved_in_lab" / "manifest.json").read_text("utf-8"))
    assert manifest["parameters"]["lookback_days"] == 30
    assert manifest["parameters"]["models"] == "linear,first_touch"
    for page in ("02_journeys.html", "03_attribution.html"):
        html = (out / "saved_in_lab" / page).read_text("utf-8")
        assert "Explorer</b> (static)" in html and "widget-view" not in html


@pytest.mark.parametrize("narrowing", [
    {"segment": "SMB", "level": "source_medium"},
    {"date_from": "2024-03-01", "date_to": "2024-08-31", "models": ("linear", "time_decay")},
])
def test_a_workspace_narrows_as_the_tables_do_without_its_touchpoints_in_pandas(synthetic, tmp_path,
                                                                                 narrowing, monkeypatch):
    from closedloop_nb import load_dataset, open_workspace

    synthetic.write(tmp_path / "data")
    ws = open_workspace(tmp_path / "data", cache_dir=tmp_path / "ws")
    tables = load_dataset(tmp_path / "data").tables
    s = ex.Settings(models=narrowing.pop("models", ("first_touch", "markov")), **narrowing)
    assert s.segment is None or s.segment in set(tables["leads"]["segment"].astype(str))
    direct = ex.compute(tables, s)
    real = type(ws).__getitem__

    def getitem(self, name):
        assert name != "touchpoints", "the touchpoints were read into pandas"
        return real(self, name)

    monkeypatch.setattr(type(ws), "__getitem__", getitem)
    views = ex.compute(ws, s)
    _same(views.credit, direct.credit)
    pd.testing.assert_frame_equal(views.performance, direct.performance)
    pd.testing.assert_frame_equal(views.paths, direct.paths)
    ws.close()


@pytest.mark.parametrize("conversion, has_value", [("lead", False), ("opportunity", True)])
def test_top_paths_show_a_value_only_for_conversions_that_carry_one(tables, conversion, has_value):
    # lead journeys carry no money: their top paths show counts, not a column of zeros in pounds; a
    # deal's journeys carry its amount, shown as money
    s = ex.Settings(conversion=conversion, models=("first_touch",))
    views = ex.compute(tables, s)
    html = views.paths_html()
    top = views.paths.iloc[0]
    assert html_escape(top["path"]) in html and f"{int(top['total_conversions']):,}" in html
    assert bool(top["total_conversion_value"] > 0) is has_value
    assert ("£" in html) is has_value and "<table" in html
