"""Stakeholder pages as PDF: each report's HTML printed by headless Chromium, on A4, beside it.

Chromium prints the page as a reader's browser would (the report's print style sheet: A4, no table
cut across pages, no contents box), so the PDF and the HTML say the same thing. Chromium is found as
``$CLOSEDLOOP_CHROMIUM``, else ``chromium``, ``chromium-browser``, ``google-chrome`` on the ``PATH``;
when none is there, :class:`ChromiumNotFoundError` says how to install it.

Examples
--------
>>> CHROMIUM_FLAGS[:2]
('--headless', '--no-sandbox')
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CHROMIUM_FLAGS", "ChromiumNotFoundError", "find_chromium", "print_reports", "print_to_pdf"]

#: Flags for a headless Chromium that starts fast and talks to nobody (no sync, updates or QUIC).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")

INSTALL_HINT = ("Install Chromium to print PDFs: on Debian or Ubuntu `sudo apt-get update && "
                "sudo apt-get install -y chromium` (Ubuntu: `chromium-browser`), on macOS "
                "`brew install --cask chromium`; or point CLOSEDLOOP_CHROMIUM at a Chrome or Chromium "
                "executable.")


class ChromiumNotFoundError(FileNotFoundError):
    """No Chromium (or Chrome) executable to print with."""


def find_chromium() -> str:
    """The Chromium executable to use; raises :class:`ChromiumNotFoundError` with how to install one."""
    env = os.environ.get("CLOSEDLOOP_CHROMIUM")
    if env:
        if shutil.which(env) or Path(env).is_file():
            return env
        raise ChromiumNotFoundError(f"CLOSEDLOOP_CHROMIUM={env} is not an executable. {INSTALL_HINT}")
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumNotFoundError(f"No Chromium found on the PATH. {INSTALL_HINT}")


def print_to_pdf(page: str | Path, pdf: str | Path | None = None, chromium: str | None = None,
                 timeout: float = 180) -> Path:
    """Print one HTML file to PDF (default: the same name with ``.pdf``) and return the PDF's path.

    Raises
    ------
    ChromiumNotFoundError
        When no Chromium is installed.
    RuntimeError
        When Chromium fails or writes nothing.
    """
    page = Path(page).resolve()
    target = Path(pdf) if pdf is not None else page.with_suffix(".pdf")
    exe = chromium or find_chromium()
    with tempfile.TemporaryDirectory(prefix="closedloop-chromium-") as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
               f"--print-to-pdf={target.resolve()}", page.as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"Chromium did not finish printing {page.name} in {timeout:.0f}s") from exc
    if not target.exists() or target.stat().st_size == 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise RuntimeError(f"Chromium could not print {page.name}: {tail[0]}")
    return target


def print_reports(run_dir: str | Path, chromium: str | None = None) -> list[Path]:
    """Print every stakeholder page (``*.html``) of one run folder to PDF beside it."""
    exe = chromium or find_chromium()
    return [print_to_pdf(p, chromium=exe) for p in sorted(Path(run_dir).glob("*.html"))]
