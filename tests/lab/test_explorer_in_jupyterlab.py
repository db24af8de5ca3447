"""End to end in a real browser: notebook 03 run in JupyterLab, its explorer's model control changed.

JupyterLab is started on a free port in a temporary folder, with its own config, data, runtime,
settings and workspaces folders (nothing of the user's is read or written), serving a copy of
``notebooks/03_attribution.ipynb`` whose parameters are made small the way papermill injects them
(three models, five bootstrap replicates). Debian's Chromium (``/usr/bin/chromium``, or
``$CLOSEDLOOP_CHROMIUM``) is driven headless by Playwright for Python through that executable, never a
downloaded browser. The page opens the notebook, waits for its kernel, runs every cell, waits for the
explorer's credit table, changes the model control and waits for the table to show the new model.

As in ``tests/browser/``: where Chromium or Playwright is missing the test skips with a loud reason on a
workstation and FAILS under ``CI=true``. The server is always stopped, its kernels with it. When the
test fails, the JupyterLab log and a screenshot are kept in ``reports/test-artefacts/`` (or
``$CLOSEDLOOP_TEST_ARTEFACTS``).

Why it once hung under pytest only: the explorer decided it was in a batch run when the kernel's parent
command line *contained* "pytest", and JupyterLab served a folder under ``/tmp/pytest-of-.../``, so the
notebook showed the static views and the widget never came (``explorer.batch_parent`` now looks at the
program only). And in the whole suite, ``tests/browser/``'s session browser keeps an asyncio loop
running in pytest's thread, where a second Playwright sync API refuses to start: the browser steps run
in a thread of their own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from closedloop_nb.config import PROJECT_DIR

TOKEN = "closedloop-lab-test"
NOTEBOOK = PROJECT_DIR / "notebooks" / "03_attribution.ipynb"
#: Small parameters (injected as papermill does): the test is about the browser, not the models.
PARAMETERS = {"models": "first_touch,linear,shapley", "n_boot": 5}
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 90  # s, JupyterLab answering /api/status
RUN_TIMEOUT = 300_000  # ms, notebook 03 run to the explorer (about 30 s on a quiet machine)
CREDIT = ".cl-credit table"


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the JupyterLab browser test cannot run in CI: {why}")
    pytest.skip(f"JUPYTERLAB BROWSER TEST SKIPPED: {why} (apt-get install chromium; pip install playwright)")


@pytest.fixture(scope="module")
def chromium_path() -> str:
    from closedloop_nb.pdf import ChromiumNotFoundError, find_chromium

    try:
        path = find_chromium()
    except ChromiumNotFoundError as exc:
        _unavailable(str(exc))
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the server's kernels, which lead sessions of their own)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _die_with_parent() -> None:
    """In the server's child process, before exec: SIGTERM it when pytest dies (Linux
    ``PR_SET_PDEATHSIG``), so a killed test run leaves no server; it stops its kernels on SIGTERM."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _artefacts() -> Path:
    folder = Path(os.environ.get("CLOSEDLOOP_TEST_ARTEFACTS", PROJECT_DIR / "reports" / "test-artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def lab(tmp_path, chromium_path) -> Iterator[tuple[str, Path]]:
    """JupyterLab on a free port serving a folder with notebook 03 (small parameters); yields its URL
    and its log file."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    root = tmp_path / "notebooks"
    root.mkdir()
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), PARAMETERS)
    nbformat.write(nb, root / NOTEBOOK.name)
    dirs = {name: tmp_path / name.lower() for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR", "CLOSEDLOOP_WORKSPACE_DIR")}
    batch = ("CLOSEDLOOP_INTERACTIVE", "CLOSEDLOOP_PROGRESS_FILE")  # nothing saying "batch run"
    env = {k: v for k, v in os.environ.items() if k not in batch and not k.startswith("PAPERMILL")}
    env.update({k: str(v) for k, v in dirs.items()}, JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1")
    port = _free_port()
    log_path = tmp_path / "jupyterlab.log"
    url = f"http://127.0.0.1:{port}"
    # the log goes to a file, never to a pipe nobody reads (a full pipe blocks the server)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--port-retries=0", "--allow-root", f"--IdentityProvider.token={TOKEN}",
             f"--ServerApp.root_dir={root}", "--expose-app-in-browser", "--LabApp.news_url=",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT} s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url, log_path
    finally:
        _stop(proc, url)


def _stop(proc: subprocess.Popen, url: str) -> None:
    """Shut the server down with its kernels (REST), then SIGTERM, then SIGKILL what is left."""
    kernels = _children(proc.pid)
    try:
        req = urllib.request.Request(f"{url}/api/shutdown?token={TOKEN}", method="POST")
        urllib.request.urlopen(req, timeout=10).close()
    except OSError:
        pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for pid in kernels:  # our own kernels, by pid, if the server left any
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _errors(page) -> str:
    """Tracebacks shown in the notebook's outputs (for a failure message)."""
    return "\n".join(page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
                     .all_inner_texts())[-3000:]


def test_notebook_03_explorer_redraws_the_credit_table_when_the_model_changes(lab, chromium_path):
    url, log = lab
    _in_own_thread(_drive, url, log, chromium_path)


def _in_own_thread(fn, *args) -> None:
    """Run ``fn`` in a thread of its own and re-raise what it raised. Playwright's sync API refuses to
    start in a thread where an asyncio loop runs, and the session browser of ``tests/browser/`` keeps
    one running in pytest's main thread until the session ends."""
    import threading

    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the test's thread)
            raised.append(exc)

    worker = threading.Thread(target=run, name="lab-browser", daemon=True)
    worker.start()
    worker.join(timeout=900)
    if worker.is_alive():
        raise AssertionError("the browser steps did not end within 900 s")
    if raised:
        raise raised[0]


def _drive(url: str, log: Path, chromium_path: str) -> None:
    """Open notebook 03, run it, change the model control, see the credit table change."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=FLAGS, timeout=60_000)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={TOKEN}", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            # the notebook's kernel started and idle, then run every cell
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel; return !!k && k.status === 'idle'; }",
                timeout=120_000, polling=500)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            try:
                page.wait_for_selector(CREDIT, timeout=RUN_TIMEOUT)
            except PlaywrightError as exc:
                raise AssertionError(f"the explorer never drew its credit table; errors in the notebook:\n"
                                     f"{_errors(page)}") from exc
            credit = page.locator(CREDIT).first
            before = credit.inner_text()
            assert all(m in before for m in PARAMETERS["models"].split(",")), before
            # the model control: a multiple select; choosing last_touch alone must redraw the table
            page.locator(".widget-select-multiple select").first.select_option(["last_touch"])
            page.wait_for_function(
                "(sel) => { const t = document.querySelector(sel);"
                " return !!t && t.innerText.includes('last_touch')"
                " && !t.innerText.includes('first_touch'); }",
                arg=CREDIT, timeout=60_000, polling=250)
            after = credit.inner_text()
            assert "linear" not in after and "shapley" not in after, after
            status = page.locator(".widget-html", has_text="Redrawn in").first.inner_text()
            assert "Redrawn in" in status
        except BaseException:
            page.screenshot(path=str(_artefacts() / "explorer_in_jupyterlab.png"), full_page=True)
            (_artefacts() / "jupyterlab.log").write_bytes(log.read_bytes())
            raise
        finally:
            browser.close()
