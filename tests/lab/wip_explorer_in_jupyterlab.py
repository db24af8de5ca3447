"""WORK IN PROGRESS, not collected by pytest (the file name does not start with test_): under pytest the
page never reaches the widget (the run hangs past every timeout). The same steps in a plain script
(a few seconds' wait after the notebook appears, before run-all-cells) pass: widget drawn, model changed,
credit table redrawn. Likely fix: that wait, or awaiting the kernel's idle status; then rename to test_*.

End to end in a real browser: JupyterLab on a free port, Debian's Chromium driven by Playwright (the
system executable, never a downloaded browser), a notebook calling ``cl.explore`` on the sample is run,
the model control is changed and the credit table must change with it.

Skipped, loudly, when Chromium or Playwright is missing; under ``CI=true`` a missing browser fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CLOSEDLOOP_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "closedloop-lab-test"
NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "explore", "metadata": {}, "outputs": [],
               "source": ["import closedloop_nb as cl\n",
                          'cl.explore("data/sample", models="first_touch", n_boot=5)']}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser test cannot run in CI: {reason}")
    warnings.warn(f"SKIPPED the JupyterLab browser test: {reason}", stacklevel=2)
    print(f"\n*** SKIPPED the JupyterLab browser test: {reason} ***", file=sys.stderr)
    pytest.skip(f"JupyterLab browser test not run: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free port serving a folder with the test notebook; yields its URL."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    root = tmp_path / "lab"
    root.mkdir()
    (root / "explore.ipynb").write_text(json.dumps(NOTEBOOK), "utf-8")
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "IPYTHONDIR": str(tmp_path / "ipython")}
    env.pop("CLOSEDLOOP_INTERACTIVE", None)
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--allow-root", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--expose-app-in-browser", "--LabApp.news_url="],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _credit_text(page) -> str:
    return page.locator(".cl-credit table").first.inner_text()


def test_model_control_changes_the_credit_table_in_the_browser(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # launch() runs Chromium on a fresh temporary user-data-dir, removed when it closes
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"{lab}/lab/tree/explore.ipynb?token={TOKEN}", timeout=60_000, wait_until="commit")
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.wait_for_function("window.jupyterapp && window.jupyterapp.commands", timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_selector(".cl-credit table", timeout=90_000)
            before = _credit_text(page)
            assert "first_touch" in before
            page.locator(".widget-select-multiple select").first.select_option(["linear"])
            page.wait_for_function(
                "() => { const t = document.querySelector('.cl-credit table');"
                " return t && t.innerText.includes('linear'); }", timeout=60_000)
            after = _credit_text(page)
            assert after != before and "first_touch" not in after
            shot = Path(os.environ.get("CLOSEDLOOP_LAB_SCREENSHOT", tmp_path / "explorer.png"))
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
