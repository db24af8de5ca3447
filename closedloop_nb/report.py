"""Batch runs of the report notebooks: papermill executes, nbconvert renders stakeholder HTML.

One *run* is one parameter file (a month, a business unit): every notebook in ``notebooks/`` is
executed with the parameters it declares, in a working directory of its own, then rendered to HTML
without code (images embedded, one file to e-mail). Runs go in parallel in separate processes; a
failing notebook keeps its executed copy with the error, marks the run failed, and does not stop
the other runs. Outputs land in ``reports/<run>/`` atomically (a re-run replaces them whole), with
``headlines.json`` (figures the notebooks recorded), ``manifest.json`` (parameters, input hashes,
package version and commit) and ``reports/index.html`` linking every run.

Known papermill pitfalls designed out: parameter files are checked against the notebooks' declared
parameters before anything runs (papermill itself only warns about unknown ones); dates stay strings
in notebooks and are parsed by the package; each run gets its own ``cwd``; kernels start in separate
processes with a retry on start-up failure and a per-cell timeout.
"""

from __future__ import annotations

import ast
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from closedloop_nb.config import PROJECT_DIR, REPORTS_DIR, resolve

__all__ = ["ParameterError", "RunResult", "check_parameters", "notebooks", "record", "run_batch"]

NOTEBOOK_DIR = PROJECT_DIR / "notebooks"
HEADLINES = "headlines.json"
# scripts that would fetch from the web (require.js, MathJax, mermaid): not in a self-contained file
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?https?://(?:(?!</script>).)*?</script>"
                              r"|<script[^>]*\ssrc=[\"']https?://[^>]*>\s*</script>",
                              re.IGNORECASE | re.DOTALL)
KERNEL = "python3"


class ParameterError(ValueError):
    """A parameter file does not fit the notebooks' declared parameters."""


@dataclass
class RunResult:
    """What one run produced."""

    run: str
    status: str
    directory: str
    notebooks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


def notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The report notebooks, in reading order (file names start with a number)."""
    return sorted(p for p in directory.glob("[0-9]*.ipynb"))


def record(name: str, value: Any, directory: str | Path = ".") -> None:
    """Record a headline figure of the running notebook in ``headlines.json`` (read by the index,
    month-over-month comparisons and tests without parsing HTML)."""
    path = Path(directory) / HEADLINES
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = value.item() if hasattr(value, "item") else value
    path.write_text(json.dumps(data, indent=2, default=str))


def declared_parameters(nbs: list[Path]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{notebook name: {parameter: {default, type}}}`` from each notebook's ``parameters`` cell."""
    import papermill

    return {nb.name: {name: {"default": p["default"], "type": _type_of(p), "help": p.get("help", "")}
                      for name, p in papermill.inspect_notebook(str(nb)).items()} for nb in nbs}


def _type_of(param: dict[str, Any]) -> str:
    """A parameter's type: its annotation if any, else the type of its literal default."""
    if param.get("inferred_type_name") not in (None, "None"):
        return str(param["inferred_type_name"])
    try:
        return type(ast.literal_eval(str(param["default"]))).__name__
    except (ValueError, SyntaxError):
        return "unknown"


_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "list": list, "dict": dict}


def check_parameters(params: dict[str, Any], nbs: list[Path], source: str = "parameters") -> None:
    """Refuse unknown keys, values of the wrong type and data paths that do not exist.

    Raises
    ------
    ParameterError
        Naming the file, the key and what is wrong, before anything is executed.
    """
    declared = declared_parameters(nbs)
    known: dict[str, dict[str, Any]] = {}
    for per_nb in declared.values():
        known.update(per_nb)
    problems = []
    for key, value in params.items():
        if key == "run":
            continue
        if key not in known:
            problems.append(f"unknown parameter '{key}'; the notebooks declare: {', '.join(sorted(known))}")
            continue
        expected = _TYPES.get(known[key]["type"])
        if expected and not (isinstance(value, expected) and not (
                expected is not bool and isinstance(value, bool))):
            problems.append(f"'{key}' should be {known[key]['type']} (default {known[key]['default']}),"
                            f" got {type(value).__name__} {value!r}")
        if key.endswith(("_dir", "_path")) and isinstance(value, str) and not resolve(value).exists():
            problems.append(f"'{key}': {value} does not exist")
    if problems:
        raise ParameterError(f"{source}: " + "; ".join(problems))


def load_parameters(path: str | Path) -> dict[str, Any]:
    """A parameter file as a dict, with ``run`` (its name) defaulting to the file's stem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"{path}: cannot read parameters: {exc}") from exc
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: parameters must be a mapping of names to values")
    data.setdefault("run", path.stem)
    return data


def _inputs(params: dict[str, Any]) -> dict[str, str]:
    hashes = {}
    for key, value in params.items():
        if key.endswith(("_dir", "_path")) and isinstance(value, str):
            root = resolve(value)
            files = sorted(root.rglob("*")) if root.is_dir() else [root]
            for f in files:
                if f.is_file():
                    hashes[str(f.relative_to(PROJECT_DIR) if f.is_relative_to(PROJECT_DIR) else f)] = \
                        hashlib.sha256(f.read_bytes()).hexdigest()
    return hashes


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _render_html(notebook: Path, target: Path, title: str) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4),
                                          resources={"metadata": {"name": title}})
    # one self-contained file: no scripts fetched from the web (require.js, MathJax)
    body = _EXTERNAL_SCRIPT.sub("", body)
    target.write_text(body, "utf-8")


def _execute(nb: Path, out: Path, params: dict[str, Any], cwd: Path, cell_timeout: int) -> None:
    import papermill

    for attempt in range(2):
        try:
            papermill.execute_notebook(str(nb), str(out), parameters=params, cwd=str(cwd),
                                       kernel_name=KERNEL, progress_bar=False,
                                       execution_timeout=cell_timeout, start_timeout=120)
            return
        except RuntimeError as exc:  # kernel died or failed to start: retry once
            if attempt or "Kernel" not in str(exc) or out.exists():
                raise


def _run_one(param_file: str, out_root: str, cell_timeout: int) -> dict[str, Any]:
    params = load_parameters(param_file)
    run = str(params.pop("run"))
    nbs = notebooks()
    declared = declared_parameters(nbs)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{run}-", dir=out_root))
    result = RunResult(run, "ok", str(Path(out_root) / run))
    for nb in nbs:
        own = {k: v for k, v in params.items() if k in declared[nb.name]}
        executed = staging / nb.name
        entry: dict[str, Any] = {"notebook": nb.name, "html": nb.stem + ".html", "status": "ok"}
        try:
            _execute(nb, executed, own, staging, cell_timeout)
        except Exception as exc:  # the executed copy keeps the error; the run goes on
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
            result.status, result.error = "failed", entry["error"]
        if executed.exists():
            _render_html(executed, staging / entry["html"], f"{run}: {nb.stem}")
        result.notebooks.append(entry)
    result.seconds = time.perf_counter() - started
    from closedloop_nb import __version__

    manifest = {"run": run, "status": result.status, "parameters": params,
                "inputs_sha256": _inputs(params), "package_version": __version__, "commit": _commit(),
                "notebooks": result.notebooks, "seconds": round(result.seconds, 1)}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), "utf-8")
    final = Path(out_root) / run
    old = final.with_name(f".{run}-old")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return asdict(result)


def run_batch(param_files: list[str | Path], jobs: int = 1, out_dir: str | Path = REPORTS_DIR,
              cell_timeout: int = 600, progress: bool = True) -> list[RunResult]:
    """Check every parameter file, then execute every run (``jobs`` at a time) and write the index.

    Raises
    ------
    ParameterError
        Before anything runs, if a parameter file is unreadable or does not fit the notebooks.
    """
    nbs = notebooks()
    if not nbs:
        raise FileNotFoundError(f"no report notebooks in {NOTEBOOK_DIR}")
    runs = []
    for f in param_files:
        params = load_parameters(f)
        check_parameters({k: v for k, v in params.items() if k != "run"}, nbs, source=str(f))
        runs.append(str(params["run"]))
    if len(set(runs)) != len(runs):
        raise ParameterError(f"two parameter files name the same run: {runs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(_run_one, str(f), str(out), cell_timeout) for f in param_files]
            iterator = futures
            if progress:
                from tqdm.auto import tqdm

                iterator = tqdm(futures, desc="report runs", unit="run")
            results = [RunResult(**f.result()) for f in iterator]
    finally:
        if env_before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_before
    _write_index(out)
    return results


def _write_index(out: Path) -> Path:
    rows = []
    for manifest in sorted(out.glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        heads = manifest.parent / HEADLINES
        figures = json.loads(heads.read_text()) if heads.exists() else {}
        links = " · ".join(f"<a href='{html.escape(m['run'])}/{html.escape(n['html'])}'>"
                           f"{html.escape(n['notebook'].removesuffix('.ipynb'))}</a>"
                           f"{'' if n['status'] == 'ok' else ' (failed)'}" for n in m["notebooks"])
        top = ", ".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in list(figures.items())[:4])
        colour = "#2e7d32" if m["status"] == "ok" else "#c62828"
        rows.append(f"<tr><td>{html.escape(m['run'])}</td><td style='color:{colour}'>{m['status']}</td>"
                    f"<td>{links}</td><td>{top}</td></tr>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>closedloop reports</title>"
            "<style>body{font-family:sans-serif;margin:2em}"
            "td,th{padding:4px 10px;border-bottom:1px solid #ddd}</style></head><body>"
            "<h1>Closed-loop reports</h1><table><tr><th>run</th><th>status</th><th>reports</th>"
            "<th>headlines</th></tr>" + "".join(rows) + "</table></body></html>")
    index = out / "index.html"
    index.write_text(page, "utf-8")
    return index
