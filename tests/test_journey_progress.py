"""Journey builds advance a progress bar step by step (tqdm's in a notebook, the runner's status line
in a report batch), and only when someone watches."""

from __future__ import annotations

import sys

import pytest

import closedloop_nb.progress as progress
from closedloop_nb.config import SAMPLE_DIR
from closedloop_nb.journeys import build_journeys


@pytest.fixture
def bars(monkeypatch):
    """Every bar asked for: its description, total, whether shown, and how far it got."""
    seen: list[dict] = []

    def bar(iterable, *, desc, total=None, enabled=True):
        record = {"desc": desc, "total": total, "enabled": enabled, "done": 0}
        seen.append(record)
        for item in iterable:
            yield item
            record["done"] += 1

    monkeypatch.setattr(progress, "bar", bar)
    return seen


def test_a_watched_build_runs_its_bar_to_the_end(bars, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # as inside a notebook kernel
    build_journeys(SAMPLE_DIR, conversion="lead", progress=True)
    assert len(bars) == 1
    assert bars[0]["desc"] == "journeys (lead)" and bars[0]["enabled"]
    assert bars[0]["done"] == bars[0]["total"] == 4  # conversions, touches, paths, reconciliation


def test_no_bar_shown_in_scripts_or_when_switched_off(bars, monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    build_journeys(SAMPLE_DIR, conversion="lead")  # stderr is captured by pytest: not a terminal
    monkeypatch.setitem(sys.modules, "ipykernel", sys)
    build_journeys(SAMPLE_DIR, conversion="lead", progress=False)
    assert [b["enabled"] for b in bars] == [False, False]


def test_in_a_report_batch_the_bar_goes_to_the_runners_status_file(tmp_path, monkeypatch):
    status = tmp_path / "status"
    monkeypatch.setenv(progress.ENV, str(status))
    writes: list[str] = []
    original = progress._StatusFile.write

    def spy(self, text):
        writes.append(text)
        return original(self, text)

    monkeypatch.setattr(progress._StatusFile, "write", spy)
    build_journeys(SAMPLE_DIR, conversion="lead", progress=False)  # the runner listens regardless
    assert any("journeys (lead)" in w for w in writes)
    assert not status.exists()  # removed when the build is done
