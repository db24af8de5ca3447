"""The acceptance check of Spark end to end: the sample run (every notebook, through papermill, as
``closedloop report`` runs it) gives the same headline figures on Spark as on DuckDB, key by key
(the notebooks round money to the cent and ratios to four places before recording them)."""

from __future__ import annotations

import json

import yaml

from closedloop_nb.config import PROJECT_DIR, SAMPLE_DIR
from closedloop_nb.report import run_batch


def test_sample_run_on_spark_records_the_headlines_of_the_duckdb_run(tmp_path, cache_dir, spark_ws, duck_ws,
                                                                     monkeypatch):
    # the kernels reuse the workspaces the fixtures built (same inputs, same code: same keys)
    monkeypatch.setenv("CLOSEDLOOP_WORKSPACE_DIR", str(cache_dir))
    params = yaml.safe_load((PROJECT_DIR / "parameters" / "sample.yaml").read_text("utf-8"))
    params["data_dir"] = str(SAMPLE_DIR)
    path = tmp_path / "sample.yaml"
    path.write_text(yaml.safe_dump(params), "utf-8")
    headlines, status = {}, {}
    for engine in ("duckdb", "spark"):
        run_batch([path], out_dir=tmp_path / engine, progress=False, engine=engine)
        run = tmp_path / engine / params["run"]
        manifest = json.loads((run / "manifest.json").read_text("utf-8"))
        status[engine] = [(nb["notebook"], nb["status"], nb.get("error")) for nb in manifest["notebooks"]]
        headlines[engine] = json.loads((run / "headlines.json").read_text("utf-8"))
    # every notebook ends alike on both engines (a failure that is not the engine's, such as one in
    # the explorer, which reads the tables in pandas whatever the engine, fails both runs alike)
    assert status["spark"] == status["duckdb"]
    assert [s for _, s, _ in status["spark"]].count("ok") >= 4, status["spark"]
    duck, spark = headlines["duckdb"], headlines["spark"]
    assert len(duck) >= 15  # every notebook recorded its figures
    assert sorted(spark) == sorted(duck)
    for key in duck:
        assert spark[key] == duck[key], key
