"""One notebook of a report run, executed by papermill in a process the batch runner owns.

``python -m closedloop_nb._report_child NOTEBOOK OUTPUT PARAMS.yaml CWD CELL_TIMEOUT`` executes the
notebook and prints JSON lines on standard output for the runner: ``{"kernel": pid}`` once the
kernel runs, ``{"cell": i, "of": n, "line": "..."}`` as each code cell starts, and at the end
``{"error": {"type", "message", "cell"}}`` when the notebook failed (the exception type and the first
meaningful line of its message; a cell timeout says so, with the cell and the limit).

The process stops its kernel and exits when it is told to (SIGTERM, SIGINT, SIGHUP) and when the
runner that started it is gone (its parent changed, as after a SIGKILL of the runner), so no kernel
outlives the batch. Exit codes: 0 the notebook ran, 1 it failed, 3 the kernel did not start.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

_LOCK = threading.Lock()
_KERNELS: set[int] = set()


def emit(event: dict[str, Any]) -> None:
    """One JSON line to the runner."""
    with _LOCK:
        try:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError, OSError):  # the runner is gone
            pass


def first_meaningful_line(text: str) -> str:
    """The first line of ``text`` holding a letter or digit (not a rule of carets or dashes), with
    terminal colour codes removed.

    Examples
    --------
    >>> first_meaningful_line("\\n-----\\nBinder Error: no column x\\n  ^^^")
    'Binder Error: no column x'
    """
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    for line in text.splitlines():
        if re.search(r"[A-Za-z0-9]", line):
            return line.strip()
    return ""


def _children() -> list[int]:
    """Process ids whose parent is this process (from /proc; the kernel among them)."""
    me, out = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - not Linux
        return sorted(_KERNELS)
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                    out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _kill_kernels(sig: int = signal.SIGKILL) -> None:
    for pid in set(_children()) | _KERNELS:
        for kill in (os.killpg, os.kill):  # the kernel leads a session of its own
            try:
                kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _stop(signum: int, _frame: Any = None) -> None:
    _kill_kernels()
    os._exit(128 + signum)


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # the runner died (SIGKILL): do not outlive it
            _stop(signal.SIGKILL)
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    notebook, output, params_file, cwd, cell_timeout = argv[:5]
    limit = int(cell_timeout)
    parent = os.getppid()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()

    import papermill
    import yaml
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.exceptions import PapermillExecutionError

    with open(params_file, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    current: dict[str, Any] = {"cell": 0, "line": ""}

    class Engine(NBClientEngine):
        """papermill's own engine, telling the runner which cell runs."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):  # noqa: ANN001, ANN206
            start = nb_man.cell_start
            cells = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]

            def cell_start(cell, cell_index=None, **kw):  # noqa: ANN001, ANN202
                if not _KERNELS:
                    _KERNELS.update(_children())
                    for pid in sorted(_KERNELS):
                        emit({"kernel": pid})
                number = cells.index(cell_index) + 1 if cell_index in cells else 0
                line = first_meaningful_line(cell.source)[:80]
                current.update(cell=number, line=line)
                emit({"cell": number, "of": len(cells), "line": line})
                return start(cell, cell_index, **kw)

            nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("closedloop", Engine)
    try:
        papermill.execute_notebook(notebook, output, parameters=params, cwd=cwd, kernel_name="python3",
                                   engine_name="closedloop", progress_bar=False, execution_timeout=limit,
                                   start_timeout=120)
    except PapermillExecutionError as exc:
        message = first_meaningful_line(exc.evalue) or "(no message)"
        emit({"error": {"type": exc.ename, "message": message, "cell": current["cell"]}})
        return 1
    except CellTimeoutError:
        emit({"error": {"type": "CellTimeout", "cell": current["cell"],
                        "message": f"cell {current['cell']} ({current['line']}) did not finish within "
                                   f"the {limit} s cell time limit"}})
        return 1
    except DeadKernelError:
        emit({"error": {"type": "DeadKernelError", "cell": current["cell"],
                        "message": f"the kernel died while cell {current['cell']} ({current['line']}) "
                                   "ran (out of memory?)"}})
        return 1
    except RuntimeError as exc:
        text = str(exc)
        if "Kernel didn't respond" in text or "Kernel died before replying" in text:
            emit({"error": {"type": "KernelStartError", "message": first_meaningful_line(text), "cell": 0}})
            return 3
        emit({"error": {"type": type(exc).__name__, "message": first_meaningful_line(text),
                        "cell": current["cell"]}})
        return 1
    except Exception as exc:  # anything else papermill or the kernel raise: named, not a traceback
        emit({"error": {"type": type(exc).__name__, "message": first_meaningful_line(str(exc)),
                        "cell": current["cell"]}})
        return 1
    finally:
        _kill_kernels()  # normally gone already; never left behind
    return 0


if __name__ == "__main__":  # pragma: no cover - run by the report runner
    sys.exit(main(sys.argv[1:]))
