"""Headless Chromium on the sample batch's reports: one batch per session (the sample and a poisoned copy).

Chromium is ``/usr/bin/chromium`` (Debian's package; ``.ci/run`` installs it), driven by Playwright for
Python without a browser download. Where Chromium or Playwright is missing, the tests skip with a loud
reason on a workstation and FAIL in CI (``CI=true``), so a missing browser never hides a failure there.
Screenshots are kept in ``reports/test-artefacts/`` (or ``$CLOSEDLOOP_TEST_ARTEFACTS``).
"""

from __future__ import annotations

import os

import pytest

from closedloop_nb.config import SAMPLE_DIR

from .browser_support import write_poisoned

PARAMS = "n_boot: 10\ncalibration_end: '2024-09-30'\nreport_month: '2024-12'\nmodel: shapley_model\n"


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests cannot run in CI: {why}")
    pytest.skip(f"BROWSER TESTS SKIPPED: {why} (apt-get install chromium; pip install playwright)")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    from closedloop_nb.pdf import ChromiumNotFoundError, find_chromium

    try:
        return find_chromium()
    except ChromiumNotFoundError as exc:
        _unavailable(str(exc))
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture(scope="session")
def batch(tmp_path_factory, chromium_path):
    """The sample and its poisoned copy, run once through the batch runner."""
    from closedloop_nb.report import run_batch

    root = tmp_path_factory.mktemp("browser-batch")
    poisoned = write_poisoned(SAMPLE_DIR, root / "poisoned-data")
    files = []
    for run, data in (("sample", SAMPLE_DIR), ("poisoned", poisoned)):
        f = root / f"{run}.yaml"
        f.write_text(f"run: {run}\ndata_dir: {data}\n{PARAMS}")
        files.append(f)
    out = root / "reports"
    results = {r.run: r for r in run_batch(files, jobs=2, out_dir=out, progress=False)}
    return {"out": out, "results": results, "poisoned_data": poisoned}


@pytest.fixture
def page(browser):
    """A fresh desktop-width page that records console errors, page errors and dialogs."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.problems = []
    p.on("console", lambda m: p.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    p.on("pageerror", lambda e: p.problems.append(f"page error: {e}"))

    def dialog(d):
        p.problems.append(f"dialog: {d.message}")
        d.dismiss()

    p.on("dialog", dialog)
    yield p
    context.close()
