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
processes with a retry on start-up failure, a per-cell timeout and a per-run timeout that stops the
notebook running (kernel included) and reports it like any other failure; HTML is rendered by nbconvert
with inputs excluded, plus a table of contents (nbconvert 7 has none). Runs of one ``series`` are
compared with the run before (``changes.json``, and a column of the index), and a re-run records
whether its figures match the run it replaces.
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

__all__ = ["ParameterError", "RunResult", "attempt", "check_parameters", "notebooks", "record", "run_batch",
           "with_toc"]

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


def attempt(func: Any, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """``(func(*args, **kwargs), None)``, or ``(None, reason)`` when the data cannot support it
    (``ValueError``): the static path a notebook cell takes on small data, instead of failing the run.

    Examples
    --------
    >>> attempt(int, "12")
    (12, None)
    >>> attempt(int, "twelve")[1]
    "Not enough data for this part: invalid literal for int() with base 10: 'twelve'"
    """
    try:
        return func(*args, **kwargs), None
    except ValueError as exc:
        return None, f"Not enough data for this part: {exc}"


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
        if key in ("run", "series"):  # the runner's own keys
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


def _rules_version() -> dict[str, str]:
    """Name, version and content hash of the channel rules the run used (the shipped default)."""
    from importlib import resources

    raw = resources.files("closedloop_nb").joinpath("rules/ga4_default.yaml").read_bytes()
    data = yaml.safe_load(raw)
    return {"name": str(data.get("name", "")), "version": str(data.get("version", "")),
            "sha256": hashlib.sha256(raw).hexdigest()}


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pandas", "numpy", "duckdb", "statsmodels", "scikit-learn", "scipy", "papermill",
                 "nbconvert"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover
            out[name] = "not installed"
    return out


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _render_html(notebook: Path, target: Path, title: str) -> None:
    from nbconvert import HTMLExporter

    node = _mask_outputs(notebook)
    node = _failure_notice(node, notebook.name)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(node, resources={"metadata": {"name": title}})
    # one self-contained file: no scripts fetched from the web (require.js, MathJax)
    body = _EXTERNAL_SCRIPT.sub("", body)
    body = body.replace("</head>", _PRINT_CSS + "</head>", 1)
    target.write_text(with_toc(body), "utf-8")


#: Stakeholder pages print on A4: margins, no table or figure cut across pages, no screen-only chrome.
_PRINT_CSS = ("<style>@page{size:A4;margin:14mm 12mm}"
              "@media print{body{font-size:10pt}.jp-Cell{break-inside:auto}"
              ".jp-OutputArea-output{overflow:visible!important;break-inside:auto}"
              ".jp-MarkdownCell{break-after:avoid;page-break-after:avoid}"
              "table,figure,img,.cl-tile{break-inside:avoid;page-break-inside:avoid}"
              "h1,h2,h3{break-after:avoid;page-break-after:avoid}img{max-width:100%!important;height:auto}"
              "table{font-size:9pt}nav.toc{display:none!important}a{color:inherit;text-decoration:none}}"
              "img{max-width:100%;height:auto}.cl-notice{border:2px solid #b3261e;border-radius:6px;"
              "padding:.8em 1.2em;margin:1em 0;background:#fdf3f2}</style>")


def _mask_outputs(notebook: Path) -> Any:
    """The executed notebook with e-mail addresses masked in every output (tables, text, errors), written
    back so that neither the analysts' copy nor the page carries a raw address (phone numbers are masked
    by the presentation layer, where it knows which cells are numbers)."""
    import nbformat

    from closedloop_nb.privacy import _EMAIL, EMAIL_MARK

    node = nbformat.read(notebook, as_version=4)
    changed = 0

    def mask(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, str):
            out, n = _EMAIL.subn(EMAIL_MARK, value)
            changed += n
            return out
        if isinstance(value, list):
            return [mask(v) for v in value]
        return value

    for cell in node.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = mask(out["text"])
            for mime in [k for k in out.get("data", {}) if k.startswith("text/") or k.endswith("json")]:
                out["data"][mime] = mask(out["data"][mime])
            if out.get("output_type") == "error":
                out["evalue"], out["traceback"] = mask(out["evalue"]), mask(out["traceback"])
    if changed:
        nbformat.write(node, notebook)
    return node


def _failure_notice(node: Any, name: str) -> Any:
    """A failed notebook, for stakeholders: the sections that ran, then a short notice in place of the
    traceback and of everything after it (the executed ``.ipynb`` keeps the error for analysts)."""
    import copy

    import nbformat

    failed = next((i for i, c in enumerate(node.cells)
                   if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
    if failed is None:
        return node
    page = copy.deepcopy(node)
    section = next((c.source.lstrip("# ").splitlines()[0] for c in reversed(page.cells[:failed])
                    if c.cell_type == "markdown" and c.source.startswith("##")), "")
    kept = [c for c in page.cells[:failed]
            if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])
            and "papermill-error-cell" not in c.source]
    where = f" at “{html.escape(section)}”" if section else " before its first section"
    notice = nbformat.v4.new_markdown_cell(
        f"<div class='cl-notice'><strong>This report is incomplete.</strong> It stopped{where}: the data "
        "could not support the next step, so the sections from there on are not shown. The figures above "
        f"it are complete. Analysts: the executed notebook {html.escape(name)} beside this page records "
        "what happened.</div>")
    page.cells = [*kept, notice]
    return page


_HEADING = re.compile(r"<h([23]) id=\"([^\"]+)\">(.*?)(?:<a class=\"anchor-link\"[^>]*>.*?</a>)?</h\1>",
                      re.DOTALL)
_TOC_CSS = ("<style>nav.toc{border:1px solid #ddd;border-radius:4px;padding:.6em 1.2em;margin:1em 0;"
            "display:inline-block;font-size:.95em}nav.toc ul{margin:.3em 0;padding-left:1.2em}"
            "nav.toc li.h3{margin-left:1.2em;list-style:circle}"
            # on a desktop screen the contents sit beside the first screen, not above it
            "@media screen and (min-width:1100px){nav.toc{float:right;margin:0 0 1em 1.5em;max-width:28%}}"
            "</style>")


def with_toc(page: str) -> str:
    """Add a table of contents of the page's section headings (h2, h3) under its title (nbconvert 7
    has none); pages with fewer than three sections are left as they are.

    Examples
    --------
    >>> page = "<main><h1 id='t'>T</h1>" + "".join(f'<h2 id="s{i}">S{i}</h2>' for i in range(3)) + "</main>"
    >>> with_toc(page).count("<li")
    3
    """
    items = [(level, anchor, re.sub(r"<[^>]+>", "", text).strip())
             for level, anchor, text in _HEADING.findall(page)]
    if len(items) < 3:
        return page
    links = "".join(f"<li class='h{level}'><a href='#{anchor}'>{html.escape(text)}</a></li>"
                    for level, anchor, text in items)
    nav = f"{_TOC_CSS}<nav class='toc'><strong>Contents</strong><ul>{links}</ul></nav>"
    end = page.find("</h1>")
    at = end + len("</h1>") if end >= 0 else page.find("<main>") + len("<main>")
    return page[:at] + nav + page[at:]


def _execute(nb: Path, out: Path, params: dict[str, Any], cwd: Path, cell_timeout: int,
             deadline: float) -> None:
    """Execute one notebook with papermill in a process group of its own (papermill and its kernel),
    killed whole when the run's ``deadline`` passes; a kernel that fails to start is retried once."""
    import signal
    import sys

    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "-y", yaml.safe_dump(params),
           "--cwd", str(cwd), "-k", KERNEL, "--no-progress-bar", "--execution-timeout", str(cell_timeout),
           "--start-timeout", "120", "--log-level", "ERROR"]
    for attempt in range(2):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the run's time limit was reached before this notebook started")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            raise TimeoutError("the run's time limit was reached while this notebook ran") from None
        if proc.returncode == 0:
            return
        kernel_failed = "Kernel didn't respond" in err or "Kernel died" in err
        if attempt or not kernel_failed or out.exists():
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            raise RuntimeError(lines[-1] if lines else f"papermill exited with {proc.returncode}")


def _run_one(param_file: str, out_root: str, cell_timeout: int, run_timeout: float) -> dict[str, Any]:
    params = load_parameters(param_file)
    run = str(params.pop("run"))
    series = params.pop("series", None)
    nbs = notebooks()
    declared = declared_parameters(nbs)
    started = time.perf_counter()
    deadline = time.monotonic() + run_timeout
    staging = Path(tempfile.mkdtemp(prefix=f".{run}-", dir=out_root))
    result = RunResult(run, "ok", str(Path(out_root) / run))
    for nb in nbs:
        own = {k: v for k, v in params.items() if k in declared[nb.name]}
        executed = staging / nb.name
        entry: dict[str, Any] = {"notebook": nb.name, "html": nb.stem + ".html", "status": "ok"}
        try:
            _execute(nb, executed, own, staging, cell_timeout, deadline)
        except Exception as exc:  # the executed copy keeps the error; the run goes on
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
            result.status, result.error = "failed", entry["error"]
        if executed.exists():
            _render_html(executed, staging / entry["html"], f"{run}: {nb.stem}")
        result.notebooks.append(entry)
    result.seconds = time.perf_counter() - started
    from closedloop_nb import __version__

    manifest = {"run": run, "series": series, "status": result.status, "parameters": params,
                "inputs_sha256": _inputs(params), "package_version": __version__, "commit": _commit(),
                "channel_rules": _rules_version(), "libraries": _library_versions(),
                "notebooks": result.notebooks, "seconds": round(result.seconds, 1)}
    final = Path(out_root) / run
    manifest["rerun"] = _rerun_check(final, staging, manifest)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), "utf-8")
    old = final.with_name(f".{run}-old")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return asdict(result)


def run_batch(param_files: list[str | Path], jobs: int = 1, out_dir: str | Path = REPORTS_DIR,
              cell_timeout: int = 600, run_timeout: float = 3600, progress: bool = True) -> list[RunResult]:
    """Check every parameter file, then execute every run (``jobs`` at a time) and write the index.

    Parameters
    ----------
    param_files
        YAML files, one per run: ``run`` (its name), optionally ``series`` (runs of one series are
        compared with the previous one, by ``report_month`` or else by name), then the notebooks'
        parameters.
    jobs
        Runs executed at once, each in its own processes.
    cell_timeout
        Seconds one cell may take.
    run_timeout
        Seconds a whole run may take; past it the notebook running is stopped (kernel included) and
        the run is marked failed with a timeout, like any other failure.

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
        check_parameters(params, nbs, source=str(f))
        runs.append(str(params["run"]))
    if len(set(runs)) != len(runs):
        raise ParameterError(f"two parameter files name the same run: {runs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_before = {k: os.environ.get(k) for k in ("MPLBACKEND", "IPYTHONDIR")}
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    ipython_dir = Path(tempfile.mkdtemp(prefix="closedloop-ipython-"))
    _kernel_config(ipython_dir)
    os.environ["IPYTHONDIR"] = str(ipython_dir)
    try:
        with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(_run_one, str(f), str(out), cell_timeout, run_timeout)
                       for f in param_files]
            iterator = futures
            if progress:
                from tqdm.auto import tqdm

                iterator = tqdm(futures, desc="report runs", unit="run")
            results = [RunResult(**f.result()) for f in iterator]
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(ipython_dir, ignore_errors=True)
    _write_changes(out)
    _write_index(out)
    return results


#: Figures in reports: PNG at a fixed resolution (dense SVG makes multi-megabyte pages).
FIGURE_DPI = 100


def _kernel_config(ipython_dir: Path) -> None:
    """An IPython profile for the report kernels: PNG figures at :data:`FIGURE_DPI`, and warnings
    shown to stakeholders as plain notes (no file paths or source lines)."""
    profile = ipython_dir / "profile_default"
    (profile / "startup").mkdir(parents=True, exist_ok=True)
    (profile / "ipython_kernel_config.py").write_text(
        "c.InlineBackend.figure_formats = {'png'}\n"
        f"c.InlineBackend.rc = {{'figure.dpi': {FIGURE_DPI}, 'savefig.dpi': {FIGURE_DPI}}}\n", "utf-8")
    (profile / "startup" / "00-report-notes.py").write_text(
        "import sys, warnings\n"
        "def _note(message, category, filename, lineno, file=None, line=None):\n"
        "    print(f'Note: {message}', file=sys.stderr)\n"
        "warnings.showwarning = _note\n", "utf-8")


def _rerun_check(final: Path, staging: Path, manifest: dict[str, Any]) -> Any:
    """When a run is re-run on the same inputs and code: are its headline figures the same?"""
    old_heads, new_heads, old_manifest = final / HEADLINES, staging / HEADLINES, final / "manifest.json"
    if not (old_heads.exists() and new_heads.exists() and old_manifest.exists()):
        return None
    before = json.loads(old_manifest.read_text())
    same_inputs = (before.get("inputs_sha256") == manifest["inputs_sha256"]
                   and before.get("parameters") == json.loads(json.dumps(manifest["parameters"], default=str))
                   and before.get("commit") == manifest["commit"])
    old, new = json.loads(old_heads.read_text()), json.loads(new_heads.read_text())
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return {"same_inputs": same_inputs, "same_figures": not differ, "figures_that_differ": differ}


def _series_key(m: dict[str, Any]) -> str:
    return str(m.get("parameters", {}).get("report_month") or m["run"])


def _write_changes(out: Path) -> None:
    """For runs of one series, ``changes.json`` beside each: its headline figures against the run
    before it in the series (by ``report_month``, else by run name)."""
    series: dict[str, list[tuple[dict[str, Any], Path]]] = {}
    for manifest in out.glob("*/manifest.json"):
        m = json.loads(manifest.read_text())
        if m.get("series"):
            series.setdefault(str(m["series"]), []).append((m, manifest.parent))
    for runs in series.values():
        runs.sort(key=lambda r: _series_key(r[0]))
        for (prev, prev_dir), (_, cur_dir) in zip(runs, runs[1:], strict=False):
            a = _read_json(prev_dir / HEADLINES)
            b = _read_json(cur_dir / HEADLINES)
            changes = {}
            for k in b:
                x, y = a.get(k), b[k]
                if isinstance(y, (int, float)) and isinstance(x, (int, float)) and not isinstance(y, bool):
                    changes[k] = {"current": y, "previous": x, "change": y - x,
                                  "pct_change": (y - x) / x if x > 0 else None}
            (cur_dir / "changes.json").write_text(json.dumps(
                {"previous_run": prev["run"], "changes": changes}, indent=2), "utf-8")
        first_dir = runs[0][1] / "changes.json"
        first_dir.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


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
        changes = _read_json(manifest.parent / "changes.json")
        moved = ""
        if changes:
            moved_items = sorted(((k, v) for k, v in changes["changes"].items() if v["change"]),
                                 key=lambda kv: -abs(kv[1]["pct_change"] or 0))
            parts = [f"{html.escape(k)} {v['pct_change']:+.0%}" if v.get("pct_change") is not None
                     else f"{html.escape(k)} {v['change']:+,.4g}" for k, v in moved_items[:5]]
            moved = (f"vs {html.escape(changes['previous_run'])}: "
                     + (", ".join(parts) or "no headline figure changed"))
        rows.append(f"<tr><td>{html.escape(m['run'])}</td><td style='color:{colour}'>{m['status']}</td>"
                    f"<td>{links}</td><td>{top}</td><td>{moved}</td></tr>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>closedloop reports</title>"
            "<style>body{font-family:sans-serif;margin:2em}"
            "td,th{padding:4px 10px;border-bottom:1px solid #ddd}</style></head><body>"
            "<h1>Closed-loop reports</h1><table><tr><th>run</th><th>status</th><th>reports</th>"
            "<th>headlines</th><th>since the previous run of its series</th></tr>" + "".join(rows)
            + "</table></body></html>")
    index = out / "index.html"
    index.write_text(page, "utf-8")
    return index
