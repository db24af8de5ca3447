"""Batch runs of the report notebooks: papermill executes, nbconvert renders stakeholder HTML.

One *run* is one parameter file (a month, a business unit): every notebook in ``notebooks/`` is
executed with the parameters it declares, in a working directory of its own, then rendered to HTML
without code (images embedded, one file to e-mail). Runs go in parallel in separate processes; a
failing notebook keeps its executed copy with the error, marks the run failed, and does not stop
the other runs. Outputs land in ``reports/<run>/`` atomically (a re-run replaces them whole), with
``headlines.json`` (figures the notebooks recorded), ``manifest.json`` (parameters, input hashes,
package version and commit) and ``reports/index.html`` linking every run.

Known papermill pitfalls designed out: parameter files are checked against the notebooks' declared
parameters before anything runs (papermill itself only warns about unknown ones), with each value's
type and range (:data:`RULES`); dates stay strings in notebooks and are parsed by the package; each run
gets its own ``cwd``; kernels start in separate processes with a retry on start-up failure, a per-cell
timeout and a per-run timeout that stops the notebook running (kernel included) and reports it like
any other failure; HTML is rendered by nbconvert with inputs excluded, plus a table of contents
(nbconvert 7 has none). Runs of one ``series`` are compared with the run before (``changes.json``, and
a column of the index), and a re-run records whether its figures match the run it replaces.

The runner owns its processes: the notebooks of a run execute in ``closedloop_nb._report_child``
(papermill, leading a process group of its own) in one kernel kept across them (it leads another
group; its namespace is reset before each notebook, and a failed notebook's kernel is replaced), tracked
by the batch; the kernels are kept per job slot across its runs. A notebook whose source, parameters,
inputs, package code and engine are those of the run's previous outputs, or of a run this batch has
already written (runs alike but for parameters this notebook does not declare), is reused instead of
executed (``force`` executes everything). On SIGTERM,
SIGINT or SIGHUP every one of them is stopped, the staging and temporary folders (all inside
``reports/.closedloop/<run>/``) are removed and the previous outputs stay as they were; a notebook
process stops its kernel and exits by itself when the runner dies (SIGKILL). A run is written under
an exclusive lock (``reports/.closedloop/<run>.lock``, naming its holder), and what a killed batch
left behind is put back in order by the next run of the same name.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import html
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from closedloop_nb.config import PROJECT_DIR, REPORTS_DIR, resolve
from closedloop_nb.progress import ENV as PROGRESS_ENV

__all__ = ["BatchStopped", "ParameterError", "RunLockedError", "RunResult", "attempt", "check_parameters",
           "check_run_name", "dump_json", "notebooks", "record", "run_batch", "schedule", "with_toc"]

NOTEBOOK_DIR = PROJECT_DIR / "notebooks"
HEADLINES = "headlines.json"
# scripts that would fetch from the web (require.js, MathJax, mermaid): not in a self-contained file
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?https?://(?:(?!</script>).)*?</script>"
                              r"|<script[^>]*\ssrc=[\"']https?://[^>]*>\s*</script>",
                              re.IGNORECASE | re.DOTALL)
KERNEL = "python3"


class ParameterError(ValueError):
    """A parameter file does not fit the notebooks' declared parameters."""


class RunLockedError(RuntimeError):
    """Another batch is writing a run of the same name."""


class BatchStopped(RuntimeError):  # noqa: N818 - a state the caller reports, not a bug
    """The batch was stopped by a signal; previous outputs are as they were."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}: every notebook process was stopped "
                         "and the previous outputs are as they were")


@dataclass
class RunResult:
    """What one run produced."""

    run: str
    status: str
    directory: str
    notebooks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


def notebooks(directory: Path | None = None) -> list[Path]:
    """The report notebooks (of ``notebooks/`` unless told), in reading order (names start with a
    number)."""
    return sorted(p for p in Path(directory or NOTEBOOK_DIR).glob("[0-9]*.ipynb"))


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (also inside lists and dicts) replaced by None:
    JSON has no NaN, and a missing figure is ``null``."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return value


def dump_json(data: Any) -> str:
    """Valid JSON (``null`` for missing figures, never ``NaN``), as every output of a run is written."""
    return json.dumps(_finite(data), indent=2, default=str, allow_nan=False)


def record(name: str, value: Any, directory: str | Path = ".") -> None:
    """Record a headline figure of the running notebook in ``headlines.json`` (read by the index,
    month-over-month comparisons and tests without parsing HTML). A missing figure (NaN) is
    recorded as ``null``."""
    path = Path(directory) / HEADLINES
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = _finite(value)
    path.write_text(dump_json(data))


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
#: The runner's own keys of a parameter file (not passed to notebooks).
RUNNER_KEYS = ("run", "series", "engine", "spark_master")  # engine, spark_master: the kernels' engine
#: A run name: a plain file name (reports go to ``reports/<run>/``).
RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_run_name(name: Any, source: str = "parameters") -> str:
    """``name`` if it is a plain run name (letters, digits, ``-``, ``_`` and ``.``, not leading),
    else a :class:`ParameterError`: a run name becomes a folder beside the others, never a path.

    Examples
    --------
    >>> check_run_name("sample_2024-11")
    'sample_2024-11'
    """
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise ParameterError(f"{source}: run name {name!r} is not a plain name: use letters, digits, '-', "
                             "'_' and '.' (not first), at most 100 characters")
    return name


def _conversions() -> tuple[str, ...]:
    try:
        from closedloop_nb.journey_sql import CONVERSIONS

        return tuple(CONVERSIONS)
    except ImportError:  # pragma: no cover - moved
        return ("lead", "mql", "sql", "opportunity", "proposal", "closed_won", "first_order", "order")


def _models() -> tuple[str, ...]:
    from closedloop_nb.attribution import MODELS

    return tuple(MODELS)


def _deal_models() -> tuple[str, ...]:
    """Every model that credits deals (``lead_source``, the attribution models, ``w_shaped``, ...)."""
    from closedloop_nb.metrics.credits import DEAL_MODELS

    return DEAL_MODELS


def _is_date(value: str, fmt: str) -> bool:
    from datetime import datetime

    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


def _is_timezone(value: str) -> bool:
    if value == "":
        return True
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _range(lo: float, hi: float, closed_hi: bool = True) -> Callable[[Any], bool]:
    return lambda v: lo <= v <= hi if closed_hi else lo <= v < hi


#: What each parameter's value must be, beyond its type: ``{name: (sentence, test)}``.
RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "lookback_days": ("a whole number of days from 1 to 3650", _range(1, 3650)),
    "n_boot": ("a number of bootstrap replicates from 10 to 100000", _range(10, 100_000)),
    "horizon_months": ("a number of months from 1 to 600", _range(1, 600)),
    "annual_discount": ("a yearly rate from 0 up to (not including) 1, e.g. 0.10", _range(0, 1, False)),
    "budget_move": ("a finite amount", lambda v: math.isfinite(v)),
    "calibration_end": ("a date written YYYY-MM-DD", lambda v: _is_date(v, "%Y-%m-%d")),
    "report_month": ("a month written YYYY-MM", lambda v: _is_date(v, "%Y-%m")),
    "timezone": ("empty or an IANA time zone name such as Europe/London", _is_timezone),
    "conversion": ("one of the conversions journeys end at", lambda v: v in _conversions()),
    "model": ("the name of an attribution model (or 'recommended')",
              lambda v: v == "recommended" or v in _deal_models()),
    "models": ("attribution model names separated by commas",
               lambda v: bool(v.strip()) and all(m.strip() in _models() for m in v.split(",") if m.strip())),
    # money (closedloop_nb.money): one reporting currency, the rates converting into it
    "reporting_currency": ("empty or an ISO 4217 currency code such as USD", lambda v: _is_currency(v)),
    "only_currency": ("empty or an ISO 4217 currency code such as USD",
                      lambda v: _is_currency(v, allow_unknown=True)),
    "fx_rates": ("empty or an fx_rates file (CSV or Parquet: date, currency, rate)",
                 lambda v: not v.strip() or resolve(v).is_file()),
}


def _is_currency(value: str, allow_unknown: bool = False) -> bool:
    from closedloop_nb.money import UNKNOWN, currency_codes

    code = value.strip()
    return not code or code.upper() in currency_codes() or (allow_unknown and code == UNKNOWN)


def _data_problem(key: str, value: str) -> str | None:
    """Why ``value`` is no folder of canonical tables (naming what it holds), or None."""
    from closedloop_nb.schema import TABLES

    folder = resolve(value)
    if not folder.exists():
        return f"'{key}': {value} does not exist"
    if not folder.is_dir():
        return f"'{key}': {value} is a file, not a folder of canonical tables"
    if _table_files(folder):
        return None
    try:
        held = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError as exc:
        return f"'{key}': {value} cannot be read: {exc.strerror}"
    shown = ", ".join(held[:8]) + (f" and {len(held) - 8} more" if len(held) > 8 else "")
    names = list(TABLES)
    return (f"'{key}': {value} holds no canonical tables (files named like {names[0]}.parquet or "
            f"{names[2]}.csv); it holds {shown or 'nothing'}")


def _table_files(folder: Path) -> dict[str, Path]:
    from closedloop_nb.validation import _find_table_files

    return _find_table_files(folder)


def check_parameters(params: dict[str, Any], nbs: list[Path], source: str = "parameters") -> None:
    """Refuse, before anything runs: a key no notebook declares, a value of the wrong type or out of
    its range (:data:`RULES`), a missing ``data_dir`` or one without canonical tables, and a run name
    that is not a plain name.

    Raises
    ------
    ParameterError
        Naming the file, the key and what is wrong, one sentence per problem.
    """
    declared = declared_parameters(nbs)
    known: dict[str, dict[str, Any]] = {}
    for per_nb in declared.values():
        known.update(per_nb)
    problems = []
    if "run" in params:
        try:
            check_run_name(params["run"], source)
        except ParameterError as exc:
            problems.append(str(exc).removeprefix(f"{source}: "))
    if "data_dir" in known and "data_dir" not in params:
        problems.append("'data_dir' is required: the folder of canonical tables this run reports on")
    if params.get("engine", "duckdb") not in ("duckdb", "spark"):  # the engine of the run's workspace
        problems.append(f"'engine' is {params['engine']!r}; it must be duckdb or spark")
    for key, value in params.items():
        if key in RUNNER_KEYS:
            continue
        if key not in known:
            problems.append(f"unknown parameter '{key}': no notebook declares it; the notebooks declare "
                            f"{', '.join(sorted(known))}")
            continue
        expected = _TYPES.get(known[key]["type"])
        if expected and not (isinstance(value, expected) and not (
                expected is not bool and isinstance(value, bool))):
            problems.append(f"'{key}' should be {known[key]['type']} (default {known[key]['default']}),"
                            f" got {type(value).__name__} {value!r}")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"'{key}' is {value!r}; it must be a finite number")
            continue
        if key in RULES and not RULES[key][1](value):
            problems.append(f"'{key}' is {value!r}; it must be {RULES[key][0]}")
        if key == "data_dir" and isinstance(value, str) and ("://" in value or value.startswith("catalog:")):
            continue  # tables Spark reads where they live (s3a://..., a catalog): checked when opened
        if key == "data_dir" and isinstance(value, str):
            problem = _data_problem(key, value)
            if problem:
                problems.append(problem)
        elif key.endswith(("_dir", "_path")) and isinstance(value, str) and not resolve(value).exists():
            problems.append(f"'{key}': {value} does not exist")
    if str(params.get("fx_rates") or "").strip() and not str(params.get("reporting_currency") or "").strip():
        problems.append("'fx_rates' needs a 'reporting_currency' to convert into")
    if problems:
        raise ParameterError(f"{source}: " + "; ".join(problems))


def load_parameters(path: str | Path) -> dict[str, Any]:
    """A parameter file as a dict, with ``run`` (its name) defaulting to the file's stem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ParameterError(f"{path}: cannot read parameters: {exc}") from exc
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: parameters must be a mapping of names to values")
    data.setdefault("run", path.stem)
    return data


def _inputs(params: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of every file the run reads: the canonical tables of ``data_dir`` (not whatever else
    the folder holds) and files named by ``*_path`` parameters."""
    files: list[Path] = []
    for key, value in params.items():
        if not isinstance(value, str) or not value:
            continue
        if "://" in value or value.startswith("catalog:"):
            continue  # not local files (a Spark workspace keys them by their file listing)
        if key == "data_dir" or (key.endswith("_dir") and resolve(value).is_dir()):
            files += sorted(_table_files(resolve(value)).values())
        elif (key.endswith("_path") or key == "fx_rates") and resolve(value).is_file():
            files.append(resolve(value))
    hashes = {}
    for f in files:
        digest = hashlib.sha256()
        with open(f, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        hashes[str(f.relative_to(PROJECT_DIR) if f.is_relative_to(PROJECT_DIR) else f)] = digest.hexdigest()
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


_EXPORTERS: list[Any] = []  # free HTML exporters
_EXPORTERS_LOCK = threading.Lock()


@contextlib.contextmanager
def _exporter() -> Iterator[Any]:
    """nbconvert's HTML exporter without code or prompts: a free one of those made before (its
    templates are loaded once), else a new one; one thread uses it at a time."""
    with _EXPORTERS_LOCK:
        exporter = _EXPORTERS.pop() if _EXPORTERS else None
    if exporter is None:
        from nbconvert import HTMLExporter

        exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    try:
        yield exporter
    finally:
        with _EXPORTERS_LOCK:
            _EXPORTERS.append(exporter)


def _render_html(notebook: Path, target: Path, title: str) -> None:
    node = _mask_outputs(notebook)
    node = _failure_notice(node, notebook.name)
    with _exporter() as exporter:
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
    # what the failed cell showed before it stopped (e.g. each currency's figures) stays; its error goes
    shown = [o for o in page.cells[failed].get("outputs", []) if o.get("output_type") == "display_data"]
    if shown:
        page.cells[failed].outputs = shown
        kept.append(page.cells[failed])
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


#: Hidden folder of the runner inside the reports folder: per-run locks and work folders.
INTERNAL = ".closedloop"
WORKSPACES = ".workspaces"  # in INTERNAL; no run can have this name (run names do not start with a dot)


class _Batch:
    """The processes one batch started, and whether it is being stopped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: dict[int, set[int]] = {}  # notebook process -> its kernels
        self.stopping = threading.Event()
        self.swap = threading.Lock()  # held while a run's outputs replace the previous ones
        self.print_lock = threading.Lock()
        #: notebook key -> (run, its outputs' folder, manifest entry) of the runs this batch has written
        self.results: dict[str, tuple[str, Path, dict[str, Any]]] = {}

    def result(self, key: str) -> tuple[str, Path, dict[str, Any]] | None:
        with self.lock:
            return self.results.get(key)

    def note(self, run: str, final: Path, entries: list[dict[str, Any]]) -> None:
        """A run's outputs are in place: its notebooks that ran to their end can stand in for the same
        notebook (same key) of a later run of the batch."""
        with self.lock:
            for entry in entries:
                if entry.get("status") == "ok" and entry.get("key"):
                    self.results.setdefault(entry["key"], (run, final, entry))

    def kill_all(self, sig: int) -> None:
        with self.lock:
            groups = [(pid, set(kernels)) for pid, kernels in self.procs.items()]
        for pid, kernels in groups:
            _killpg(pid, sig)
            for k in kernels:
                _killpg(k, sig)


def _killpg(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (a notebook process or a kernel: each leads its own)."""
    for kill in (os.killpg, os.kill):  # the group, else the process alone
        try:
            kill(pid, sig)
            return
        except (ProcessLookupError, PermissionError):
            continue


class _RunLock:
    """An exclusive lock on one run name (``fcntl.flock``, released by the system whatever way the
    process ends, SIGKILL included), holding who took it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: Any = None

    def acquire(self, run: str) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            handle.close()
            raise RunLockedError(
                f"run '{run}' is being written by another batch (pid {holder.get('pid', '?')}, started "
                f"{holder.get('started', '?')} on {holder.get('host', '?')}); wait for it to end or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.now(UTC).isoformat(timespec="seconds")}))
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing releases the flock
            self.handle = None


def _recover(out: Path, run: str) -> list[str]:
    """Put a run's folder back in order after an earlier batch was killed: previous outputs moved
    aside but not replaced are restored, staging and temporary folders are removed. Returns notes."""
    notes = []
    final, work = out / run, out / INTERNAL / run
    for old in (work / "old", out / f".{run}-old"):  # .<run>-old: the layout of earlier versions
        if old.is_dir():
            if not final.exists():
                old.rename(final)
                notes.append(f"restored the previous outputs of '{run}' left aside by an interrupted run")
            else:
                shutil.rmtree(old, ignore_errors=True)
    if work.exists():
        shutil.rmtree(work, ignore_errors=True)
        notes.append(f"removed the staging folder of an interrupted run of '{run}'")
    legacy = re.compile(rf"\.{re.escape(run)}-[a-z0-9_]{{8}}")  # mkdtemp staging of earlier versions
    for p in out.iterdir():
        if p.is_dir() and legacy.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)
    return notes


class _NotebookFailed(Exception):
    """A notebook did not run to its end; ``str`` is the summary ("Type: first line")."""


class _Stopped(Exception):
    """The batch is being stopped."""


def _summary(kind: str, message: str) -> str:
    """"Type: first line" of an error, safe to keep in the manifest and to show: e-mail addresses and
    phone numbers masked, markup characters escaped (an error can quote a value from the data).

    >>> _summary("ValueError", "bad currency <img src=x> of ann@example.com\\nmore")
    'ValueError: bad currency &lt;img src=x&gt; of [email]'
    """
    from closedloop_nb._report_child import first_meaningful_line
    from closedloop_nb.privacy import mask_contact_details

    line = first_meaningful_line(message)
    text = f"{kind}: {line}" if line else kind
    return html.escape(mask_contact_details(text)[0], quote=False)


class _Notebooks:
    """A notebook process (``closedloop_nb._report_child --serve``, leading its own process group; its
    kernel, kept across notebooks, leads another), started with the first notebook and again after one
    it lost (killed, a time limit), and stopped with its kernel when the run's deadline passes or the
    batch stops. A kernel that fails to start is retried once.

    One per job slot of a batch, kept across the slot's runs (:meth:`bind` points it at the next
    run: its staging folder, its environment, its status line), so the process, the kernel and the
    imports are paid once per slot; :meth:`prestart` starts it and imports what the notebooks import
    before the first run is ready (while parameters are checked). A run on another engine gets a
    fresh kernel (``kernel_key``)."""

    def __init__(self, cwd: Path, cell_timeout: int, env: dict[str, str] | None, batch: _Batch,
                 state: dict[str, Any], run_env: dict[str, str] | None = None, kernel_key: str = "") -> None:
        self.cwd, self.cell_timeout, self.env, self.batch, self.state = cwd, cell_timeout, env, batch, state
        self.work = Path(env.get("TMPDIR", cwd)) if env else cwd
        self.run_env, self.kernel_key = dict(run_env or {}), kernel_key
        self.proc: subprocess.Popen | None = None
        self.used = False  # the process has been given a notebook (else closing it need not wait)
        self.folder: Path | None = None  # a job slot's own folder (removed with the slot)
        self.kernels: set[int] = set()
        self.events: Any = None
        self.errors: list[dict[str, Any]] = []
        self.reader: threading.Thread | None = None

    def bind(self, cwd: Path, run_env: dict[str, str], kernel_key: str, state: dict[str, Any]) -> None:
        """Execute the next notebooks in ``cwd`` (a run's staging folder) with ``run_env`` set in the
        kernel (:func:`closedloop_nb._report_child.kernel_reset`), reporting to ``state``."""
        self.cwd, self.run_env, self.kernel_key, self.state = cwd, dict(run_env), kernel_key, state

    @property
    def params_dir(self) -> Path:
        return Path(self.run_env.get("TMPDIR", self.work))

    def prestart(self, modules: list[str]) -> None:
        """Start the process and its kernel now, importing ``modules`` in the kernel ahead of the
        first notebook (it waits for that to finish)."""
        proc = self._spawn()
        try:
            proc.stdin.write(json.dumps({"warm": modules, "kernel": self.kernel_key}) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            pass  # the process died: the first notebook starts another

    @property
    def stderr_path(self) -> Path:
        return self.work / "notebooks.stderr.txt"

    def _spawn(self) -> subprocess.Popen:
        import queue

        cmd = [sys.executable, "-m", "closedloop_nb._report_child", "--serve", str(self.cwd),
               str(self.cell_timeout)]
        with open(self.stderr_path, "a", encoding="utf-8") as stderr, self.batch.lock:
            if self.batch.stopping.is_set():
                raise _Stopped
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.PIPE,
                                    text=True, start_new_session=True, env=self.env)
            self.batch.procs[proc.pid] = self.kernels = set()
        self.events = queue.Queue()
        self.used = False
        self.reader = threading.Thread(target=_read_events, daemon=True,
                                       args=(proc, self.kernels, self.errors, lambda: self.state, self.batch,
                                             self.events))
        self.reader.start()
        self.proc = proc
        return proc

    def _forget(self) -> None:
        """The process is gone (or stopped): the next notebook starts another."""
        if self.proc is not None:
            with self.batch.lock:
                self.batch.procs.pop(self.proc.pid, None)
            if self.reader is not None:
                self.reader.join(timeout=5)
        self.proc = None

    def close(self) -> None:
        """End the process (end of its input; it stops its kernel), killing it if it does not end."""
        proc = self.proc
        if proc is None:
            return
        if not self.used:  # started ahead and never needed (every notebook reused): no need to wait
            _stop_process(proc, self.kernels)
            self._forget()
            return
        try:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            _stop_process(proc, self.kernels)
        self._forget()

    def execute(self, nb: Path, out: Path, params: dict[str, Any], deadline: float,
                run_timeout: float | None = None) -> None:
        """Execute one notebook in the run's kernel.

        Raises
        ------
        TimeoutError
            The run's time limit was reached.
        _NotebookFailed
            The notebook raised, a cell timed out, or its process died; the message says which.
        """
        import queue

        params_file = self.params_dir / f"{nb.stem}.parameters.yaml"
        params_file.write_text(yaml.safe_dump(params), "utf-8")
        job = json.dumps({"notebook": str(nb), "output": str(out), "params": str(params_file),
                          "cwd": str(self.cwd), "env": self.run_env, "kernel": self.kernel_key}) + "\n"
        limit = f" ({run_timeout:g} s)" if run_timeout else ""
        for try_ in range(2):
            if deadline - time.monotonic() <= 0:
                raise TimeoutError(f"the run's time limit{limit} was reached before this notebook started")
            proc = self.proc if self.proc is not None and self.proc.poll() is None else self._spawn()
            self.errors.clear()
            self.used = True
            try:
                proc.stdin.write(job)  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except OSError:
                pass  # the process died: said below by its exit code
            code = None
            while code is None:
                try:
                    code = self.events.get(timeout=0.2)
                except queue.Empty:
                    pass
                if code is None and proc.poll() is not None:  # ended without finishing the notebook
                    try:
                        code = self.events.get(timeout=1)
                    except queue.Empty:
                        break
                if self.batch.stopping.is_set() or time.monotonic() > deadline:
                    _stop_process(proc, self.kernels)
                    self._forget()
                    if self.batch.stopping.is_set():
                        raise _Stopped
                    raise TimeoutError(f"the run's time limit{limit} was reached while this notebook ran")
            if code == 0:
                return
            error = self.errors[-1] if self.errors else None
            if code is None:
                self._forget()
            if code == 3 and not try_:
                continue  # the kernel did not start: once more (the process starts a fresh one)
            if error:
                where = (f" (cell {error['cell']})" if error.get("cell") and error["type"] != "CellTimeout"
                         else "")
                raise _NotebookFailed(_summary(error["type"], error["message"]) + where)
            if proc.returncode is not None and proc.returncode < 0:
                name = signal.Signals(-proc.returncode).name
                raise _NotebookFailed(f"NotebookProcessKilled: the notebook's process was killed by {name}"
                                      + (" (out of memory?)" if name == "SIGKILL" else ""))
            tail = self.stderr_path.read_text("utf-8", "replace").strip().splitlines()
            lines = [ln for ln in tail if re.search(r"[A-Za-z0-9]", ln) and "without encryption" not in ln]
            raise _NotebookFailed(_summary("NotebookProcessError", lines[-1] if lines else
                                           f"papermill exited with {proc.returncode}"))


def _read_events(proc: subprocess.Popen, kernels: set[int], errors: list[dict[str, Any]],
                 state: Callable[[], dict[str, Any]], batch: _Batch, done: Any = None) -> None:
    for raw in proc.stdout:  # type: ignore[union-attr]
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if "kernel" in event:
            with batch.lock:
                kernels.add(int(event["kernel"]))
        elif "cell" in event and "of" in event:
            state().update(cell=event["cell"], of=event["of"], line=event.get("line", ""),
                           cell_started=time.monotonic())
        elif "error" in event:
            errors.append(event["error"])
        elif "done" in event and done is not None:
            done.put(int(event["done"]))


def _stop_process(proc: subprocess.Popen, kernels: set[int]) -> None:
    """Stop a notebook process and its kernels: SIGTERM, then SIGKILL after 5 seconds."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        _killpg(proc.pid, sig)
        for k in list(kernels):
            _killpg(k, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    for k in list(kernels):
        _killpg(k, signal.SIGKILL)


def _child_env(tmp: Path, workspaces: Path) -> dict[str, str]:
    """Environment of a run's notebook processes and kernels: every temporary file inside the run's
    work folder (removed with it), figures inline, progress bars to the runner, and run workspaces
    (:mod:`closedloop_nb.workspace`) in the reports folder's ``workspaces`` (kept across runs: a re-run
    on unchanged inputs reuses its ingest), unless ``CLOSEDLOOP_WORKSPACE_DIR`` names another, and
    ``CLOSEDLOOP_INTERACTIVE=0`` (widgets take their static path: the kernel's parent is the runner's
    child process, not papermill, so :func:`closedloop_nb.explorer.is_interactive` cannot tell)."""
    ipython = tmp / "ipython"
    _kernel_config(ipython)
    (tmp / "runtime").mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update({"MPLBACKEND": "module://matplotlib_inline.backend_inline", "IPYTHONDIR": str(ipython),
                "TMPDIR": str(tmp), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
                PROGRESS_ENV: str(tmp / "progress.txt"), "PYTHONUNBUFFERED": "1",
                # batch runs take every widget cell's static path, whatever the kernel's parent is
                "CLOSEDLOOP_INTERACTIVE": "0"})
    env.setdefault("CLOSEDLOOP_WORKSPACE_DIR", str(workspaces))
    return env


def _package_hash() -> str:
    """SHA-256 of every file of the installed package (code, rules, templates): a notebook's executed
    result is reused only on the same package."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for f in sorted(here.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
            digest.update(str(f.relative_to(here)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


#: Environment variables that do not change what a notebook computes (where caches live).
_NEUTRAL_ENV = ("CLOSEDLOOP_WORKSPACE_DIR",)


def _run_key(params: dict[str, Any], inputs: dict[str, str], engine_env: dict[str, str]) -> dict[str, Any]:
    """What every notebook of a run depends on beside its own source and parameters: the inputs'
    hashes (the run workspace's key: tables, fx rates, channel rules, options), the package's code, the
    libraries and Python, the engine and the runner's own settings."""
    return {"inputs_sha256": inputs, "channel_rules": _rules_version()["sha256"],
            "package": _package_hash(), "libraries": _library_versions(), "python": sys.version,
            "engine": dict(sorted(engine_env.items())),
            "environment": {k: v for k, v in sorted(os.environ.items())
                            if k.startswith("CLOSEDLOOP_") and k not in _NEUTRAL_ENV},
            "figure_dpi": FIGURE_DPI, "kernel": KERNEL}


def _effective(own: dict[str, Any], declared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The parameter values a notebook runs with: its declared defaults (literals; an expression is
    kept as its text, equal to no injected value), then the injected ones over them.

    Examples
    --------
    >>> _effective({"n": 2}, {"n": {"default": "1"}, "model": {"default": "'shapley'"}})
    {'n': 2, 'model': 'shapley'}
    """
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        try:
            values[name] = ast.literal_eval(str(spec["default"]))
        except (ValueError, SyntaxError):
            values[name] = {"expression": str(spec["default"])}
    return {**values, **own}


def _notebook_key(nb: Path, own: dict[str, Any], run_key: dict[str, Any]) -> str:
    """The key of one notebook's executed result: its source, the parameter values it runs with
    (:func:`_effective`: a default and the same value injected are alike) and the run's key
    (:func:`_run_key`). Equal keys: the previous result is reused (``--force`` re-executes)."""
    blob = json.dumps({"notebook": hashlib.sha256(nb.read_bytes()).hexdigest(), "parameters": own,
                       "run": run_key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _previous(final: Path) -> dict[str, dict[str, Any]]:
    """The notebooks of a run's previous outputs, by name, from its manifest ({} if none)."""
    try:
        manifest = json.loads((final / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return {n["notebook"]: n for n in manifest.get("notebooks", [])
            if isinstance(n, dict) and "notebook" in n}


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(folder)): (f.stat().st_mtime_ns, f.stat().st_size)
            for f in folder.rglob("*") if f.is_file()}


def _reuse(old: dict[str, Any] | None, key: str, final: Path, staging: Path) -> bool:
    """Copy a notebook's previous executed result (notebook, page, files it wrote, headline figures)
    into the staging folder if its key is the same and it ran to its end; False otherwise."""
    if not old or old.get("key") != key or old.get("status") != "ok":
        return False
    files = [old["notebook"], old["html"], *old.get("files", [])]
    if not all((final / f).is_file() for f in files):
        return False
    for f in files:
        (staging / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(final / f, staging / f)
    if old.get("headlines"):
        heads = staging / HEADLINES
        data = json.loads(heads.read_text("utf-8")) if heads.exists() else {}
        data.update(old["headlines"])
        heads.write_text(dump_json(data), "utf-8")
    return True


def _run_one(param_file: str, out_root: str, cell_timeout: int, run_timeout: float,
             batch: _Batch | None = None, only: list[str] | None = None,
             state: dict[str, Any] | None = None, display: _Display | None = None,
             notebook_dir: Path | None = None, engine: str | None = None,
             force: bool = False, slot: _Notebooks | None = None) -> dict[str, Any]:
    """Execute one run (its lock is held by the caller) into a staging folder, then put it in place
    of the previous outputs; when the batch stops, remove the staging folder and leave those as they
    were. A notebook whose key (:func:`_notebook_key`) equals the one of its previous outputs is not
    executed again, unless ``force``: its executed notebook, page and headline figures are reused; so
    is the same notebook of a run the batch has already written (its page is written again, under this
    run's name). ``slot``: the job slot's notebook process, kept across runs (else one of the run's
    own)."""
    batch = batch or _Batch()
    state = state if state is not None else {}
    params = load_parameters(param_file)
    run = check_run_name(params.pop("run"), str(param_file))
    series = params.pop("series", None)
    nbs = [nb for nb in notebooks(notebook_dir) if only is None or nb.name in only]
    declared = declared_parameters(notebooks(notebook_dir))
    started = time.perf_counter()
    deadline = time.monotonic() + run_timeout
    out = Path(out_root)
    work = out / INTERNAL / run
    final = out / run
    result = RunResult(run, "ok", str(final))
    kernel: _Notebooks | None = None
    pages = _Page()
    try:
        _recover(out, run)
        staging, tmp = work / "staging", work / "tmp"
        staging.mkdir(parents=True)
        tmp.mkdir()
        from closedloop_nb.spark_sql import engine_env

        engine_vars = engine_env(params, engine)  # engine: / --engine: the kernels' workspace engine
        # set in the kernel before each notebook: temporary files in the run's work folder, its progress
        run_env = {"TMPDIR": str(tmp), PROGRESS_ENV: str(tmp / "progress.txt"), **engine_vars}
        inputs = _inputs(params)
        run_key = _run_key(params, inputs, engine_vars)
        previous = {} if force else _previous(final)
        if slot is None:  # a process of the run's own, in its work folder
            env = {**_child_env(tmp, out / INTERNAL / WORKSPACES), **engine_vars}
            kernel = _Notebooks(staging, cell_timeout, env, batch, state, run_env, _kernel_key(engine_vars))
        else:
            slot.bind(staging, run_env, _kernel_key(engine_vars), state)
        state.update(run=run, n=len(nbs), started=time.monotonic(), progress_file=run_env[PROGRESS_ENV])
        # the runner's own files of the run (not files a notebook wrote); pages: the one being written
        own_files = {HEADLINES, *(nb.name for nb in nbs), *(nb.stem + ".html" for nb in nbs)}
        for i, nb in enumerate(nbs, 1):
            own = {k: v for k, v in params.items() if k in declared[nb.name]}
            executed = staging / nb.name
            key = _notebook_key(nb, _effective(own, declared[nb.name]), run_key)
            entry: dict[str, Any] = {"notebook": nb.name, "html": nb.stem + ".html", "status": "ok",
                                     "key": key}
            state.update(i=i, notebook=nb.stem, cell=0, of=0, line="", notebook_started=time.monotonic())
            t0 = time.perf_counter()
            old = previous.get(nb.name)
            if _reuse(old, key, final, staging):
                entry.update(reused=True, executed_at=old["executed_at"],
                             seconds=round(time.perf_counter() - t0, 1), files=old.get("files", []),
                             headlines=old.get("headlines", {}))
                if display:
                    display.event(state, f"notebook {i}/{len(nbs)} {nb.stem}: reused (inputs unchanged since "
                                         f"{old['executed_at']})")
                result.notebooks.append(entry)
                continue
            other = None if force else batch.result(key)  # the same notebook, run by another run
            if other is not None and _reuse(other[2], key, other[1], staging):
                entry.update(reused=True, reused_from=other[0], executed_at=other[2]["executed_at"],
                             files=other[2].get("files", []), headlines=other[2].get("headlines", {}))
                pages.join()  # its page again, under this run's title
                pages = _Page(executed, staging / entry["html"], f"{run}: {nb.stem}")
                entry["seconds"] = round(time.perf_counter() - t0, 1)
                if display:
                    display.event(state, f"notebook {i}/{len(nbs)} {nb.stem}: the same as run {other[0]}'s "
                                         "(same source, parameters and inputs), copied")
                result.notebooks.append(entry)
                continue
            if display:
                display.event(state, f"notebook {i}/{len(nbs)} {nb.stem}")
            entry["executed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            heads_before = _read_json(staging / HEADLINES)
            files_before = _files(staging)
            try:
                (kernel or slot).execute(nb, executed, own, deadline, run_timeout=run_timeout)
            except _Stopped:
                raise
            except Exception as exc:  # the executed copy keeps the error; the run goes on
                entry["status"] = "failed"
                entry["error"] = str(exc) if isinstance(exc, _NotebookFailed) else _summary(
                    type(exc).__name__, str(exc))
                result.status, result.error = "failed", entry["error"]
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            if batch.stopping.is_set():
                raise _Stopped
            heads_after = _read_json(staging / HEADLINES)
            entry["headlines"] = {k: v for k, v in heads_after.items()
                                  if k not in heads_before or heads_before[k] != v}
            entry["files"] = sorted(f for f, stamp in _files(staging).items() if files_before.get(f) != stamp
                                    and f not in own_files)
            if executed.exists():  # the page is written while the next notebook runs
                pages.join()
                pages = _Page(executed, staging / entry["html"], f"{run}: {nb.stem}")
            result.notebooks.append(entry)
        pages.join()
        if kernel is not None:
            kernel.close()
        result.seconds = time.perf_counter() - started
        from closedloop_nb import __version__

        manifest = {"run": run, "series": series, "status": result.status, "error": result.error or None,
                    "parameters": params, "inputs_sha256": inputs, "package_version": __version__,
                    "commit": _commit(), "channel_rules": _rules_version(), "libraries": _library_versions(),
                    "package_sha256": run_key["package"], "forced": force,
                    "reused": [n["notebook"] for n in result.notebooks if n.get("reused")],
                    "notebooks": result.notebooks, "seconds": round(result.seconds, 1)}
        manifest["rerun"] = _rerun_check(final, staging, manifest)
        heads = staging / HEADLINES
        if heads.exists():  # valid JSON whatever the notebooks wrote (NaN -> null)
            heads.write_text(dump_json(json.loads(heads.read_text("utf-8"))), "utf-8")
        (staging / "manifest.json").write_text(dump_json(manifest), "utf-8")
        with batch.swap:
            if batch.stopping.is_set():
                raise _Stopped
            old_dir = work / "old"
            if final.exists():
                final.rename(old_dir)
            staging.rename(final)
        batch.note(run, final, result.notebooks)
        shutil.rmtree(work / "old", ignore_errors=True)
    except _Stopped:
        result.status = "stopped"
        result.error = "the batch was stopped; the previous outputs are as they were"
    except Exception as exc:  # a fault of the runner itself: this run's failure, not the batch's
        result.status, result.error = "failed", _summary(type(exc).__name__, str(exc))
        _recover_quietly(out, run)
    finally:
        pages.join(reraise=False)
        if kernel is not None:
            kernel.close()
        shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    state.update(seconds=result.seconds, done=result.status)
    if display:
        display.event(state, f"{result.status} in {clock(result.seconds)}")
    return asdict(result)


class _Page:
    """A notebook's page (:func:`_render_html`) written in a thread of its own, so that the run's
    kernel goes on to the next notebook meanwhile; :meth:`join` waits for it (and raises what it
    raised). ``_Page()``: none."""

    def __init__(self, *args: Any) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._write, args=args, daemon=True) if args else None
        if self.thread is not None:
            self.thread.start()

    def _write(self, *args: Any) -> None:
        try:
            _render_html(*args)
        except BaseException as exc:  # noqa: BLE001 - raised again in join, in the run's thread
            self.error = exc

    def join(self, reraise: bool = True) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None and reraise:
            error, self.error = self.error, None
            raise error


def _recover_quietly(out: Path, run: str) -> None:
    try:
        _recover(out, run)
    except OSError:
        pass


def clock(seconds: float) -> str:
    """A duration for people: ``1m05s``, ``42s``.

    Examples
    --------
    >>> clock(65.2), clock(7)
    ('1m05s', '7s')
    """
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Display:
    """Status of the runs on standard error: on a terminal one live line per run (notebook i of n,
    its current cell, a progress bar of a long step, elapsed), redrawn in place; otherwise (CI, a
    file) a plain line as each notebook starts and each run ends."""

    def __init__(self, states: list[dict[str, Any]], stream: Any, live: bool, lock: threading.Lock) -> None:
        self.states, self.stream, self.live, self.lock = states, stream, live, lock
        self.drawn = 0

    def event(self, state: dict[str, Any], text: str) -> None:
        if self.live:
            return
        with self.lock:
            since = f" ({clock(time.monotonic() - state['started'])})" if "started" in state \
                and not state.get("done") else ""
            self.stream.write(f"{state.get('run', '?')}: {text}{since}\n")
            self.stream.flush()

    def line(self, state: dict[str, Any], width: int) -> str:
        from closedloop_nb.progress import read_status

        run = state.get("run") or state.get("file", "?")
        if "started" not in state:
            return f"{run}: waiting"
        if state.get("done"):
            return f"{run}: {state['done']} in {clock(state.get('seconds', 0))}"
        now = time.monotonic()
        text = (f"{run}: {clock(now - state['started'])} · notebook {state.get('i', 0)}/{state.get('n', 0)} "
                f"{state.get('notebook', '')}")
        if state.get("of"):
            text += f" · cell {state['cell']}/{state['of']} ({clock(now - state.get('cell_started', now))})"
            bar = read_status(state["progress_file"]) if state.get("progress_file") else ""
            text += f" {bar}" if bar else f" {state.get('line', '')}"
        return text if len(text) <= width else text[: width - 1] + "…"

    def refresh(self) -> None:
        if not self.live:
            return
        width = max(40, shutil.get_terminal_size((100, 20)).columns - 1)
        lines = [self.line(s, width) for s in self.states]
        with self.lock:
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{ln}\n" for ln in lines))
            self.stream.flush()
            self.drawn = len(lines)


def run_batch(param_files: list[str | Path], jobs: int = 1, out_dir: str | Path = REPORTS_DIR,
              cell_timeout: int = 600, run_timeout: float = 3600, progress: bool = True,
              only: list[str] | None = None, notebook_dir: str | Path | None = None,
              engine: str | None = None, force: bool = False) -> list[RunResult]:
    """Check every parameter file, then execute every run (``jobs`` at a time) and write the index.

    Parameters
    ----------
    param_files
        YAML files, one per run: ``run`` (its name), optionally ``series`` (runs of one series are
        compared with the previous one, by ``report_month`` or else by name), then the notebooks'
        parameters.
    jobs
        Runs executed at once, each in a process (papermill) and a kernel of its own, kept across
        the run's notebooks.
    cell_timeout
        Seconds one cell may take.
    run_timeout
        Seconds a whole run may take; past it the notebook running is stopped (kernel included) and
        the run is marked failed with a timeout, like any other failure.
    progress
        Show the runs' status on standard error (live lines on a terminal, plain lines otherwise).
    only
        Run only these notebooks (file names or their leading numbers, e.g. ``["01", "02"]``).
    notebook_dir
        Folder of the notebooks (default ``notebooks/``).
    engine
        ``duckdb`` or ``spark``: the engine of every run's workspace, over each file's ``engine:``.
    force
        Execute every notebook, even one whose source, parameters, inputs (the run workspace's key),
        package code, libraries and engine are those of its previous outputs (by default its executed
        notebook, page and headline figures are then reused; the manifest says which and from when),
        or those of the same notebook in a run this batch has already written (by default copied from
        that run: the manifest's ``reused_from`` names it).

    Raises
    ------
    ParameterError
        Before anything runs, if a parameter file is unreadable or does not fit the notebooks.
    RunLockedError
        Before anything runs, if another batch is writing a run of the same name.
    BatchStopped
        On SIGTERM, SIGINT or SIGHUP, once every process the batch started is stopped and its staging
        and temporary folders are removed (previous outputs are left as they were).
    """
    if engine not in (None, "duckdb", "spark"):
        raise ParameterError(f"engine must be duckdb or spark, got {engine!r}")
    nbs = notebooks(Path(notebook_dir) if notebook_dir else None)
    if not nbs:
        raise FileNotFoundError(f"no report notebooks in {notebook_dir or NOTEBOOK_DIR}")
    selected = _select(nbs, only)
    loaded = [load_parameters(f) for f in param_files]
    out = Path(out_dir)
    made = next((d for d in (out, out / INTERNAL) if not d.exists()), None)  # removed if nothing runs
    batch = _Batch()
    slots = _slots(out, loaded, jobs, cell_timeout, batch, engine, force,
                   [nb for nb in nbs if selected is None or nb.name in selected])
    locks = []
    try:
        try:
            runs = []
            for f, params in zip(param_files, loaded, strict=True):
                check_parameters(params, nbs, source=str(f))
                runs.append(str(params["run"]))
            if len(set(runs)) != len(runs):
                raise ParameterError(f"two parameter files name the same run: {runs}")
            out.mkdir(parents=True, exist_ok=True)
            for run in runs:
                lock = _RunLock(out / INTERNAL / f"{run}.lock")
                lock.acquire(run)
                locks.append(lock)
        except (ParameterError, RunLockedError):
            _close_slots(slots)
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            raise
        results = _run_all(param_files, runs, out, jobs, cell_timeout, run_timeout, progress, selected,
                           Path(notebook_dir) if notebook_dir else None, engine=engine, force=force,
                           batch=batch, slots=slots)
    finally:
        _close_slots(slots)
        for lock in locks:
            lock.release()
    _write_changes(out)
    _write_index(out)
    return results


SLOT = ".slot-"  # in INTERNAL: a job slot's process folder (no run name starts with a dot)


def _slots(out: Path, params: list[dict[str, Any]], jobs: int, cell_timeout: int, batch: _Batch,
           engine: str | None, force: bool, nbs: list[Path]) -> list[_Notebooks]:
    """One notebook process per job slot, kept across the slot's runs, each with a folder of its own
    (``reports/.closedloop/.slot-<pid>-<i>``: the kernel's IPython profile, its connection file).

    When some run will execute notebooks (forced, or a run without previous outputs), the slots start
    now and import what the notebooks import (:meth:`_Notebooks.prestart`), while the parameters are
    checked; otherwise each starts with its first notebook (a re-run that reuses everything starts
    none)."""
    from closedloop_nb.spark_sql import engine_env

    n = max(1, min(jobs, len(params)))
    internal = out / INTERNAL
    if internal.is_dir():  # a killed batch's slot folders
        for stale in internal.glob(f"{SLOT}*"):
            pid = stale.name[len(SLOT):].split("-")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
    order = schedule(params, engine)
    ahead = force or any(not (out / str(p.get("run", "")) / "manifest.json").is_file() for p in params)
    modules = _imported_modules(nbs) if ahead else []
    slots: list[_Notebooks] = []
    try:
        for i in range(n):
            folder = internal / f"{SLOT}{os.getpid()}-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            env = _child_env(folder, internal / WORKSPACES)
            try:
                key = _kernel_key(engine_env(params[order[i]], engine))
            except ValueError:  # a wrong engine: check_parameters says so
                key = ""
            slot = _Notebooks(folder, cell_timeout, env, batch, {}, kernel_key=key)
            slot.folder = folder
            slots.append(slot)
            if ahead:
                slot.prestart(modules)
    except BaseException:  # e.g. a reports folder that cannot be written: no process left behind
        _close_slots(slots)
        raise
    return slots


def _close_slots(slots: list[_Notebooks]) -> None:
    for slot in slots:
        slot.close()
        if slot.folder is not None:
            shutil.rmtree(slot.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kernel_key(engine_vars: dict[str, str]) -> str:
    """What a run's kernel is for: its engine (a kept kernel is not reused for another engine)."""
    return json.dumps(engine_vars, sort_keys=True)


def _imported_modules(nbs: list[Path]) -> list[str]:
    """The modules the notebooks' code cells import (absolute ``import`` / ``from ... import``
    statements at the top level of a cell), in order, for a kernel to import ahead of them; a name
    imported from a module is listed as a possible submodule (importing it fails if it is none).

    Examples
    --------
    >>> _imported_modules(notebooks())[:2]
    ['closedloop_nb', 'closedloop_nb.present']
    """
    found: list[str] = []
    for nb in nbs:
        try:
            cells = json.loads(nb.read_text("utf-8")).get("cells", [])
        except (OSError, ValueError):
            continue
        for cell in cells:
            if cell.get("cell_type") != "code":
                continue
            source = cell.get("source", "")
            try:
                tree = ast.parse("".join(source) if isinstance(source, list) else source)
            except SyntaxError:  # IPython magics: not Python
                continue
            for node in tree.body:
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    # the names may be submodules (from closedloop_nb import present): tried too
                    names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
                else:
                    continue
                found += [name for name in names if name not in found]
    return found


def _select(nbs: list[Path], only: list[str] | None) -> list[str] | None:
    if not only:
        return None
    chosen = []
    for want in only:
        match = [nb.name for nb in nbs if want in (nb.name, nb.stem, nb.name.split("_")[0])]
        if not match:
            names = ", ".join(nb.stem for nb in nbs)
            raise ParameterError(f"no notebook '{want}'; the notebooks are {names}")
        chosen += match
    return chosen


#: Parameters that decide a run's workspace (its validated tables): runs alike in these share one.
WORKSPACE_KEYS = ("data_dir", "timezone", "reporting_currency", "fx_rates", "engine", "spark_master")
#: Parameters that decide the journeys a run's notebooks build in that workspace.
JOURNEY_KEYS = ("lookback_days", "conversion", "only_currency")


def schedule(params: list[dict[str, Any]], engine: str | None = None) -> list[int]:
    """The order runs start in: ``params``' indices, so that runs started together build different
    things instead of waiting for one another.

    Runs on the same workspace (same :data:`WORKSPACE_KEYS`) validate their data once and share the
    journeys of equal :data:`JOURNEY_KEYS`, under a lock: two such runs started together run in
    lockstep, one building while the other waits, a core idle. So the first run of each workspace
    goes first (one workspace after another, in turn), and within a workspace, runs whose journeys
    no earlier run builds go before the ones that reuse them. Otherwise the files' order is kept.

    Examples
    --------
    >>> same = {"data_dir": "data/sample", "lookback_days": 90}
    >>> schedule([same, {**same, "report_month": "2024-11"}, {**same, "reporting_currency": "EUR"},
    ...           {**same, "lookback_days": 30}])
    [0, 2, 3, 1]
    """
    def key(p: dict[str, Any], keys: tuple[str, ...]) -> str:
        chosen = {k: p.get(k) or None for k in keys}  # omitted and empty alike
        for k in ("data_dir", "fx_rates"):
            value = chosen.get(k)
            if isinstance(value, str) and "://" not in value and not value.startswith("catalog:"):
                chosen[k] = str(resolve(value))
        chosen["engine"] = engine or p.get("engine")
        return json.dumps(chosen, sort_keys=True, default=str)

    groups: dict[str, list[int]] = {}
    for k, p in enumerate(params):
        groups.setdefault(key(p, WORKSPACE_KEYS), []).append(k)
    queues = []
    for members in groups.values():
        seen: set[str] = set()
        new, reusing = [], []
        for k in members:
            journeys = key(params[k], JOURNEY_KEYS)
            (reusing if journeys in seen else new).append(k)
            seen.add(journeys)
        queues.append(new + reusing)
    order = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return order


def _run_all(param_files: list[str | Path], runs: list[str], out: Path, jobs: int, cell_timeout: int,
             run_timeout: float, progress: bool, only: list[str] | None,
             notebook_dir: Path | None = None, engine: str | None = None,
             force: bool = False, batch: _Batch | None = None,
             slots: list[_Notebooks] | None = None) -> list[RunResult]:
    batch = batch or _Batch()
    states: list[dict[str, Any]] = [{"file": r} for r in runs]
    display = _Display(states, sys.stderr, progress and sys.stderr.isatty(), batch.print_lock) if progress \
        else None
    results: dict[int, RunResult] = {}
    todo = [(k, param_files[k]) for k in schedule([load_parameters(f) for f in param_files], engine)]
    todo_lock = threading.Lock()

    def worker(slot: _Notebooks | None) -> None:
        while True:
            with todo_lock:
                if not todo or batch.stopping.is_set():
                    return
                k, f = todo.pop(0)
            try:
                results[k] = RunResult(**_run_one(str(f), str(out), cell_timeout, run_timeout, batch, only,
                                                  states[k], display, notebook_dir, engine, force, slot))
            except Exception as exc:  # never the batch's traceback: this run's failure
                results[k] = RunResult(runs[k], "failed", str(out / runs[k]),
                                       error=_summary(type(exc).__name__, str(exc)))
                states[k]["done"] = "failed"

    stopped: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopped:
            stopped.append(signum)
            batch.stopping.set()
            batch.kill_all(signal.SIGTERM)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            handlers[sig] = signal.signal(sig, on_signal)
    threads = [threading.Thread(target=worker, args=(slots[i] if slots and i < len(slots) else None,),
                                daemon=True, name=f"closedloop-run-{i}")
               for i in range(max(1, min(jobs, len(param_files))))]
    try:
        for t in threads:
            t.start()
        give_up = None
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5 / len(threads))
            if display:
                display.refresh()
            if stopped:
                give_up = give_up or time.monotonic() + 30
                if time.monotonic() > give_up - 20:
                    batch.kill_all(signal.SIGKILL)
                if time.monotonic() > give_up:
                    break
        if display:
            display.refresh()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if stopped:
        batch.kill_all(signal.SIGKILL)
        for run in runs:  # a thread that did not finish in time: its work folder goes too
            shutil.rmtree(out / INTERNAL / run, ignore_errors=True)
        raise BatchStopped(stopped[0])
    return [results[k] for k in range(len(param_files))]


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
                   and before.get("parameters") == json.loads(dump_json(manifest["parameters"]))
                   and before.get("commit") == manifest["commit"])
    old, new = _finite(json.loads(old_heads.read_text())), _finite(json.loads(new_heads.read_text()))
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))  # missing == missing
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
            (cur_dir / "changes.json").write_text(dump_json(
                {"previous_run": prev["run"], "changes": changes}), "utf-8")
        first_dir = runs[0][1] / "changes.json"
        first_dir.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


#: Headline figures that rest on the month's won deals: withheld from the index (and its changes) when
#: fewer than ``min_cell`` deals were won, as notebook 5 withholds them (one deal's amount would show).
RESTS_ON_DEALS = ("revenue", "revenue_change", "roas", "marketing_revenue", "cac")


def _withheld(m: dict[str, Any], figures: dict[str, Any]) -> bool:
    """Whether the run's month had fewer than its ``min_cell`` won deals (``deals_won`` headline)."""
    min_cell = m.get("parameters", {}).get("min_cell", 3)
    won = figures.get("deals_won")
    return bool(min_cell) and isinstance(won, (int, float)) and 0 < won < min_cell


#: The figures the index shows for a run, in order: ``(headline, label, kind)`` (kinds of
#: :func:`closedloop_nb.present.fmt`, plus ``month``, ``roas`` as "6.2:1" and ``channel`` with its share).
INDEX_FIGURES = (("report_month", "month", "month"), ("revenue", "revenue", "money"),
                 ("deals_won", "deals won", "count"), ("spend", "spend", "money"), ("roas", "ROAS", "roas"),
                 ("pipeline_value", "pipeline", "money"), ("top_channel_shapley", "top channel", "channel"))
#: Index labels of other headlines (the rest: the name with spaces).
INDEX_LABELS = {key: name for key, name, _ in INDEX_FIGURES} | {
    "revenue_change": "revenue change", "rows_rejected": "rows rejected",
    "revenue_rejected": "revenue rejected",
    "mrr_end": "MRR", "subscription_clv": "CLV", "last_month_net_mrr_churn": "net MRR churn",
    "churn_auc_holdout": "churn model AUC", "journeys_converting": "converting journeys"}


def _index_label(key: str) -> str:
    return html.escape(INDEX_LABELS.get(key, key.replace("_", " ")))


def _index_figure(key: str, value: Any, kind: str | None = None, currency: str = "",
                  figures: dict[str, Any] | None = None) -> str:
    """A headline as the index shows it (escaped HTML): money with the run's currency, shares as
    percentages, the ROAS as "6.2:1", the top channel with its share of the credit.

    >>> _index_figure("revenue", 12345.6, "money", "GBP"), _index_figure("roas", 6.24, "roas")
    ('£12,346', '6.2:1')
    >>> shares = {"top_channel_share_shapley": 0.31}
    >>> _index_figure("top_channel_shapley", "Paid <b>", "channel", figures=shares)
    'Paid &lt;b&gt; (31% of the Shapley credit)'
    """
    from closedloop_nb.present import fmt, kind_of, label, month_name

    kind = kind or kind_of(key)
    if value is None:
        return "—"
    if kind == "month":
        return label(month_name(value))
    if kind == "roas":
        return html.escape(f"{fmt(value, 'ratio', digits=1)}:1") if isinstance(value, (int, float)) else "—"
    if kind == "channel":
        share = (figures or {}).get("top_channel_share_shapley")
        of = f" ({fmt(share, 'percent')} of the Shapley credit)" if isinstance(share, (int, float)) else ""
        return label(value) + html.escape(of)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return label(value)
    if kind in ("money", "percent", "count", "days"):
        return html.escape(fmt(value, kind, currency))
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def _index_figures(figures: dict[str, Any], withheld: str = "", n_other: int = 4) -> list[str]:
    """``label: figure`` items for the index: the report's headline figures (notebook 5) when the run
    has them, else the first ``n_other`` it recorded; ``withheld`` (escaped HTML) stands where the
    revenue would (the figures resting on the month's deals are already taken out)."""
    currency = str(figures.get("currency") or "")
    shown = {k: _index_figure(k, figures[k], kind, currency, figures)
             for k, _, kind in INDEX_FIGURES if k in figures}
    if withheld:
        shown["revenue"] = withheld
    items = [f"{html.escape(name)}: {shown[k]}" for k, name, _ in INDEX_FIGURES if k in shown]
    if items:
        return items
    others = [k for k in figures if k not in ("currency", "top_channel_share_shapley")][:n_other]
    return [f"{_index_label(k)}: {_index_figure(k, figures[k])}" for k in others]


def _write_index(out: Path) -> Path:
    rows = []
    for manifest in sorted(out.glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        heads = manifest.parent / HEADLINES
        figures = json.loads(heads.read_text()) if heads.exists() else {}
        small = _withheld(m, figures)
        if small:
            figures = {k: v for k, v in figures.items() if k not in RESTS_ON_DEALS}
        links = " · ".join(f"<a href='{html.escape(m['run'])}/{html.escape(n['html'])}'>"
                           f"{html.escape(n['notebook'].removesuffix('.ipynb'))}</a>"
                           f"{'' if n['status'] == 'ok' else ' (failed)'}" for n in m["notebooks"])
        withheld = f"&lt; {int(m['parameters'].get('min_cell', 3))} deals won" if small else ""
        top = ", ".join(_index_figures(figures, withheld))
        colour = "#2e7d32" if m["status"] == "ok" else "#c62828"
        changes = _read_json(manifest.parent / "changes.json")
        moved = ""
        if changes:
            before = out / str(changes["previous_run"])
            hide = small or (before.is_dir() and _withheld(_read_json(before / "manifest.json"),
                                                           _read_json(before / HEADLINES)))
            moved_items = sorted(((k, v) for k, v in changes["changes"].items() if v["change"]
                                  and not (hide and k in RESTS_ON_DEALS)),
                                 key=lambda kv: -abs(kv[1]["pct_change"] or 0))
            parts = [f"{_index_label(k)} {v['pct_change']:+.0%}" if v.get("pct_change") is not None
                     else f"{_index_label(k)} {v['change']:+,.4g}" for k, v in moved_items[:5]]
            moved = (f"vs {html.escape(changes['previous_run'])}: "
                     + (", ".join(parts) or "no headline figure changed"))
        # errors are escaped where they are written (an older manifest's may not be): escape once
        why = f"<br><small>{html.escape(html.unescape(str(m['error'])))}</small>" if m.get("error") else ""
        rows.append(f"<tr><td>{html.escape(m['run'])}</td><td style='color:{colour}'>{m['status']}{why}</td>"
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
