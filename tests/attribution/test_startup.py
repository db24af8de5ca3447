"""`closedloop attribute` imports only what it uses, and its pandas-free route writes what the pandas
route (compare_models + write_csv) writes, byte for byte; the path table lives beside the journeys."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import MODELS, MarkovChain
from closedloop_nb.attribution.compare import compare_models
from closedloop_nb.safe_csv import write_csv, write_rows

from .conftest import random_paths

PROBE = r"""
import json, sys
from closedloop_nb.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("pandas", "scipy", "duckdb")})
models = sorted(m for m in sys.modules if m.startswith("closedloop_nb.attribution."))
compute = "pyarrow.compute" in sys.modules
print(json.dumps({"code": code, "heavy": heavy, "models": models, "compute": compute}), file=sys.stderr)
"""


def _imports(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)
    return json.loads(out.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    """Paths over six channels, one named like a formula and one holding a comma."""
    frame = random_paths(11, n_channels=6, n_paths=200, max_len=7).to_frame()
    frame["path"] = frame["path"].str.replace("c1", "=HYPERLINK(1)").str.replace("c2", "Paid, Search")
    path = tmp_path_factory.mktemp("paths") / "paths.csv.gz"
    frame.to_csv(path, index=False)
    return path, frame


@pytest.mark.parametrize("order", ["1", "2"])
def test_markov_at_low_orders_imports_no_pandas_scipy_or_other_models(table_file, tmp_path, order):
    got = _imports("attribute", str(table_file[0]), "--models", "markov", "--order", order,
                   "--out", str(tmp_path / "x.csv"))
    assert got["code"] == 0
    assert got["heavy"] == []
    assert got["models"] == ["closedloop_nb.attribution.base", "closedloop_nb.attribution.markov"]
    assert not got["compute"]  # the pieced reader calls Arrow's kernels without pyarrow.compute


def test_the_parser_of_every_subcommand_imports_nothing_heavy():
    probe = ("import sys; from closedloop_nb.cli import _parser; _parser(); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'numpy', 'pyarrow', 'scipy', "
             "'duckdb', 'yaml', 'nbformat', 'papermill'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("order", ["1", "3"])
def test_attribute_writes_what_compare_models_and_write_csv_write(table_file, tmp_path, order):
    """The command's arrays-to-CSV route against the DataFrame route it replaced, for every model."""
    path, frame = table_file
    names = list(MODELS)
    out = tmp_path / "credit.csv"
    res = subprocess.run([str(_script()), "attribute", str(path), "--models", ",".join(names),
                          "--order", order, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    models = [MarkovChain(order=int(order)) if m == "markov" else MODELS[m]() for m in names]
    expected = io.StringIO()
    write_csv(compare_models(frame, models, progress=False)[["model", "channel", "conversions", "value"]],
              expected)
    assert out.read_text() == expected.getvalue()
    assert "'=HYPERLINK(1)" in expected.getvalue() and '"Paid, Search"' in expected.getvalue()


def test_write_rows_writes_what_write_csv_writes_for_awkward_text():
    frame = pd.DataFrame({"channel": ["=1+1", "a,b", 'say "hi"', "line\rbreak", "-x", "plain"],
                          "conversions": [0.1 + 0.2, 1e-7, 2.0, -3.5, 1e17, np.float64(1) / 3]})
    for text in (frame, frame.iloc[[0, 1, 2, 4, 5]]):  # with and without a carriage return
        a, b = io.StringIO(), io.StringIO()
        write_csv(text, a)
        write_rows(list(text.columns), text.values.tolist(), b)
        assert b.getvalue() == a.getvalue()


def test_write_rows_compresses_gz_paths(tmp_path):
    write_rows(["a", "b"], [["x", 1.5]], tmp_path / "t.csv.gz")
    assert pd.read_csv(tmp_path / "t.csv.gz").to_dict("records") == [{"a": "x", "b": 1.5}]


def test_the_path_table_lives_beside_the_journeys_and_is_re_exported():
    import closedloop_nb.attribution as attribution
    import closedloop_nb.attribution.paths as old_home
    from closedloop_nb.path_table import PathTable, read_paths

    assert attribution.PathTable is old_home.PathTable is PathTable
    assert attribution.read_paths is old_home.read_paths is read_paths


def test_models_registry_is_a_read_only_mapping_importing_on_lookup():
    probe = ("import sys; from closedloop_nb.attribution import MODELS; "
             "a = 'closedloop_nb.attribution.shapley' in sys.modules; c = MODELS['shapley']; "
             "print(a, c.__name__, 'shapley' in MODELS, len(MODELS))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "ShapleyValue", "True", str(len(list(MODELS)))]
    with pytest.raises(TypeError):
        MODELS["mine"] = MarkovChain  # type: ignore[index]


def _script():
    from pathlib import Path

    return Path(sys.executable).parent / "closedloop"


@pytest.fixture(scope="module")
def large_table_file(tmp_path_factory):
    """~3 MB of text: more than one piece of the pieced reader (closedloop_nb.path_stream)."""
    rng = np.random.default_rng(5)
    names = np.array([f"ch{i:02d}" for i in range(12)] + ["Paid, Search"], dtype=object)
    lengths = rng.integers(1, 12, size=60_000)
    steps = names[rng.integers(0, len(names), size=int(lengths.sum()))]
    paths = [" > ".join(p) for p in np.split(steps, np.cumsum(lengths)[:-1])]
    conv = rng.integers(0, 4, size=len(paths))
    frame = pd.DataFrame({"path": paths, "total_conversions": conv,
                          "total_conversion_value": conv * rng.uniform(10, 900, size=len(paths)),
                          "total_null": rng.integers(0, 40, size=len(paths))})
    path = tmp_path_factory.mktemp("large") / "paths.csv.gz"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("order", ["1", "3"])
def test_attribute_reads_a_table_of_several_pieces_as_the_general_reader_does(large_table_file, tmp_path,
                                                                             order):
    """The command (pieced reader, threads) against the models fitted on the general reader's table
    (read_arrow + encode, what the command read before), written by compare_models + write_csv."""
    from closedloop_nb.path_codes import encode, read_arrow
    from closedloop_nb.path_table import PathTable

    out = tmp_path / "credit.csv"
    res = subprocess.run([str(_script()), "attribute", str(large_table_file), "--models", "markov,linear",
                          "--order", order, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    table = PathTable(*encode(read_arrow(large_table_file)))
    assert table.n_paths < 60_000  # some paths come twice: duplicates were added up
    expected = io.StringIO()
    write_csv(compare_models(table, [MarkovChain(order=int(order)), MODELS["linear"]()], progress=False)[
        ["model", "channel", "conversions", "value"]], expected)
    assert out.read_text() == expected.getvalue()
