"""Setup promises: one dependency list for pip and conda, data files shipped, notebooks clean."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# PyPI name -> conda-forge name, where they differ
CONDA_NAMES = {"duckdb": "python-duckdb", "isal": "python-isal"}


def _split(requirement: str) -> tuple[str, str]:
    m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", requirement.strip())
    assert m, requirement
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    wanted = {CONDA_NAMES.get(k, k): v for k, v in wanted.items()}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(_split(d) for d in env["dependencies"] if isinstance(d, str))
    conda.pop("python"), conda.pop("pip")
    assert conda == wanted


def test_package_data_is_shipped():
    import closedloop_nb

    pkg = Path(closedloop_nb.__file__).parent
    assert (pkg / "rules" / "ga4_default.yaml").is_file()
    assert len(list((pkg / "mappings").glob("*.yaml"))) >= 7


def test_public_api_is_explicit():
    import closedloop_nb

    for name in closedloop_nb.__all__:
        assert hasattr(closedloop_nb, name), name


def test_committed_notebooks_carry_no_outputs():
    for path in ROOT.glob("notebooks/*.ipynb"):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and not cell.get("execution_count"), path.name
        assert "papermill" not in nb.get("metadata", {}), path.name


def test_sample_data_is_small_and_validates():
    from closedloop_nb.config import SAMPLE_DIR
    from closedloop_nb.validation import load_dataset

    size = sum(p.stat().st_size for p in SAMPLE_DIR.iterdir())
    assert size < 5 * 2**20
    ds = load_dataset(SAMPLE_DIR)
    assert not ds.report.errors
    assert len(ds.tables["touchpoints"]) > 50_000 and len(ds.tables["deals"]) > 200
