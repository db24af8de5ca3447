"""PDFs of the stakeholder pages: Chromium found or a message saying how to install it."""

from __future__ import annotations

import pytest

from closedloop_nb import pdf


def test_missing_chromium_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.delenv("CLOSEDLOOP_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pdf.ChromiumNotFoundError, match="apt-get install -y chromium"):
        pdf.find_chromium()


def test_an_explicit_chromium_that_does_not_exist_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOSEDLOOP_CHROMIUM", str(tmp_path / "no-such-chrome"))
    with pytest.raises(pdf.ChromiumNotFoundError, match="no-such-chrome"):
        pdf.find_chromium()


def test_a_fake_chromium_is_called_headless_with_a_fresh_profile(monkeypatch, tmp_path):
    log = tmp_path / "args.txt"
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n" f"echo \"$@\" > {log}\n"
                    "for a in \"$@\"; do case $a in --print-to-pdf=*) printf '%%PDF-1.4 x' > \"${a#*=}\";;"
                    " esac; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CLOSEDLOOP_CHROMIUM", str(fake))
    page = tmp_path / "05.html"
    page.write_text("<html><body>hi</body></html>")
    out = pdf.print_to_pdf(page)
    assert out == page.with_suffix(".pdf") and out.read_bytes().startswith(b"%PDF-")
    args = log.read_text()
    assert "--headless" in args and "--user-data-dir=" in args and page.as_uri() in args
