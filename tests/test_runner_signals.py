"""Faults of a real batch: ``closedloop report`` (notebooks 01 and 02 on 2,000 synthetic visitors)
stopped by SIGTERM, SIGINT and SIGKILL at several moments, a kernel killed under it, and two
batches of one run at once. After each: the previous outputs are as they were, no process the batch
started survives, and the next run succeeds."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

NOTEBOOKS = "01"  # the second notebook joins only where a moment needs it: the tests stay short


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden runner folders aside) with its content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _command(params: Path, out: Path, notebooks: str = NOTEBOOKS) -> list[str]:
    return [sys.executable, "-m", "closedloop_nb.cli", "report", str(params), "--out", str(out),
            "--notebooks", notebooks, "--cell-timeout", "120"]


def _start(params: Path, out: Path, notebooks: str = NOTEBOOKS) -> subprocess.Popen:
    # a cold run workspace (a fresh folder for it): notebook 01 then ingests the tables, so the moments
    # below fall inside a notebook instead of after a run that reused the cached ingest and finished;
    # --force: executed again, not reused from the previous outputs of the same inputs
    env = {**os.environ, "CLOSEDLOOP_WORKSPACE_DIR": tempfile.mkdtemp(prefix="sig-ws-", dir=out.parent)}
    return subprocess.Popen([*_command(params, out, notebooks), "--force"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)


def _descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kernels(proc: subprocess.Popen) -> list[psutil.Process]:
    out = []
    for p in _descendants(proc):
        try:
            if "ipykernel" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _strays(out: Path) -> list[str]:
    """Processes anywhere on the machine working for this reports folder (papermill, kernels)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(out) in " ".join(p.info["cmdline"] or []) and _alive(p):
                found.append(f"{p.info['pid']}: {' '.join(p.info['cmdline'])[:120]}")
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from closedloop_nb.synth import generate

    root = tmp_path_factory.mktemp("signals")
    generate(2_000, seed=1).write(root / "data")
    params = root / "sig.yaml"
    params.write_text(f"run: sig\ndata_dir: {root / 'data'}\n")
    out = root / "reports"
    first = subprocess.run(_command(params, out), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    return {"params": params, "out": out, "before": _tree(out / "sig")}


def _interrupt(setup, moment: str, sig: int, group: bool, also=None) -> subprocess.Popen:
    proc = _start(setup["params"], setup["out"], "01,02" if moment == "second notebook" else NOTEBOOKS)
    _wait_for(lambda: _kernels(proc), 120, "the first kernel")
    if moment == "second notebook":  # the run's kernel is kept: the first notebook's page is written
        page = setup["out"] / ".closedloop" / "sig" / "staging" / "01_ingest.html"
        _wait_for(lambda: page.exists() and _kernels(proc), 120, "the second notebook")
    time.sleep(0.5)
    if also:
        also(proc)
    family = [psutil.Process(proc.pid), *_descendants(proc)]
    (os.killpg if group else os.kill)(proc.pid, sig)
    proc.wait(timeout=60)
    gone = _wait_for(lambda: not [p for p in family if _alive(p)] or None, 15, "the batch's processes to end")
    assert gone
    assert not _strays(setup["out"]), _strays(setup["out"])
    # the previous outputs are exactly as they were
    assert _tree(setup["out"] / "sig") == setup["before"]
    return proc


def _second_batch_is_refused(setup, proc: subprocess.Popen) -> None:
    second = subprocess.run(_command(setup["params"], setup["out"]), capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 1
    assert f"run 'sig' is being written by another batch (pid {proc.pid}, started" in second.stderr
    assert "Traceback" not in second.stderr


@pytest.mark.parametrize("moment,sig", [("first notebook", signal.SIGTERM),
                                       ("second notebook", signal.SIGINT)])
def test_a_stopped_batch_cleans_up_and_leaves_previous_outputs(setup, moment, sig):
    # while the first notebook runs, a second batch of the same run is refused by the lock
    also = functools.partial(_second_batch_is_refused, setup) if sig == signal.SIGTERM else None
    proc = _interrupt(setup, moment, sig, group=False, also=also)
    err = proc.stderr.read()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "previous outputs are as they were" in err
    # staging and temporary folders are gone (every one of them lives under .closedloop/<run>/)
    assert not (setup["out"] / ".closedloop" / "sig").exists()
    assert [p.name for p in setup["out"].iterdir() if p.name.startswith(".")] == [".closedloop"]


@pytest.mark.parametrize("moment", ["first notebook", "second notebook"])
def test_a_killed_batch_leaves_no_process_and_the_next_run_recovers(setup, moment):
    _interrupt(setup, moment, signal.SIGKILL, group=True)


def test_a_dead_kernel_fails_its_run_not_the_batch(setup):
    started = time.time()
    proc = _start(setup["params"], setup["out"])
    kernel = _wait_for(lambda: _kernels(proc), 120, "the first kernel")[0]
    # killed while the notebook runs (papermill has written it since this batch started), not while
    # the kernel the runner starts ahead is still importing: a kernel that dies before its notebook
    # is replaced, and the run goes on
    running = setup["out"] / ".closedloop" / "sig" / "staging" / "01_ingest.ipynb"
    _wait_for(lambda: running.exists() and running.stat().st_mtime >= started, 120, "the notebook to start")
    time.sleep(0.5)
    kernel.kill()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1 and "Traceback" not in err
    assert "sig: failed" in out
    assert "DeadKernelError: the kernel died while cell" in out or "NotebookProcessKilled" in out, out


def test_the_next_run_after_the_faults_succeeds(setup):
    """Last in this file: a normal run replaces the outputs, leaving no staging behind."""
    result = subprocess.run(_command(setup["params"], setup["out"]), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "sig: ok" in result.stdout
    assert not (setup["out"] / ".closedloop" / "sig").exists()
    assert not _strays(setup["out"])
