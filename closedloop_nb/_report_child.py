"""The notebooks of a report run, executed by papermill in a process the batch runner owns.

``python -m closedloop_nb._report_child --serve CWD CELL_TIMEOUT`` keeps one kernel for the notebooks
of a run: it reads one job a line on standard input (``{"notebook", "output", "params"}``, a
parameters YAML file) and executes each in that kernel, its user namespace reset in between
(:func:`kernel_reset`: variables, figures, warning filters and registries, environment, ``sys.path``
and working directory as a fresh kernel has them), so the kernel start and the imports of pandas,
matplotlib, DuckDB and the package are paid once per run instead of once per notebook. A notebook
that fails (an error, a cell timeout, a dead kernel) takes its kernel with it: the next one starts a
fresh kernel, so a failure never poisons the next notebook. End of input ends the process.
``python -m closedloop_nb._report_child NOTEBOOK OUTPUT PARAMS.yaml CWD CELL_TIMEOUT`` executes one
notebook in a kernel of its own.

Standard output carries JSON lines for the runner: ``{"kernel": pid}`` as each kernel starts,
``{"cell": i, "of": n, "line": "..."}`` as each code cell starts, ``{"error": {"type", "message",
"cell"}}`` when a notebook failed (the exception type and the first meaningful line of its message; a
cell timeout says so, with the cell and the limit), and ``{"done": code}`` after each job.

The process stops its kernel and exits when it is told to (SIGTERM, SIGINT, SIGHUP) and when the
runner that started it is gone (its parent changed, as after a SIGKILL of the runner), so no kernel
outlives the batch. Codes (``done``, and the exit code of the one-notebook form): 0 the notebook ran,
1 it failed, 3 the kernel did not start.
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


KERNEL = "python3"
#: What a fresh kernel had, taken by the first :func:`kernel_reset` of a kernel (in the kernel).
_SNAPSHOT: dict[str, Any] = {}


def _take_snapshot() -> None:
    """Note what a fresh kernel has (once per kernel), for :func:`kernel_reset` to put back."""
    import warnings

    from IPython import get_ipython

    if not _SNAPSHOT:
        ip = get_ipython()
        _SNAPSHOT.update(filters=list(warnings.filters), showwarning=warnings.showwarning,
                         environ=dict(os.environ), path=list(sys.path),
                         user=dict(ip.user_ns) if ip is not None else {})


def warm_up(modules: list[str]) -> list[str]:
    """Run in a report kernel as soon as it starts, before its first notebook: note what a fresh kernel
    has (:func:`_take_snapshot`), then import ``modules`` (those the notebooks import), so that the
    first notebook's imports are done while the runner still checks parameters or writes the previous
    run's pages. Nothing lands in the user namespace. Returns the modules that failed to import (the
    notebook then fails on them itself, as it would have).
    """
    import importlib
    import types

    _take_snapshot()
    failed = []
    for name in modules:
        parent, _, last = name.rpartition(".")
        owner = sys.modules.get(parent)
        if owner is not None and not isinstance(getattr(owner, last, types), types.ModuleType):
            continue  # a function or class of that module, not a submodule: nothing to import
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the notebook's own import reports it
            failed.append(name)
    return failed


def kernel_reset(cwd: str, env: dict[str, str] | None = None) -> None:
    """Run in a report kernel before each notebook: the first call notes what a fresh kernel has, every
    later one puts it back, so a notebook sees a fresh kernel with its imports already done.

    Put back: the user namespace (``%reset -f``, then what a fresh kernel's namespace held, such as
    the names the profile's start-up files defined: ``sys`` and ``warnings`` among them),
    the execution counter, open figures (closed), warning filters, ``warnings.showwarning`` and every
    warning registry (a warning shown by the previous notebook shows again), ``os.environ``,
    ``sys.path`` and the working directory. Modules stay imported: that is the point. What modules
    keep in their own globals stays too (the package keeps no results there: its caches are files
    keyed by their inputs).

    ``env``: variables of the run the notebook belongs to (its temporary folder, its progress file,
    its engine), set over the fresh kernel's environment; a kernel kept across runs thus starts each
    run's notebooks in that run's environment (``tempfile`` looks up its folder again).
    """
    import tempfile
    import warnings

    from IPython import get_ipython

    ip = get_ipython()
    if not _SNAPSHOT:
        _take_snapshot()
    else:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close("all")
        if ip is not None:
            ip.reset(new_session=True)  # a new history session: its cells count from 1 again
            for name, value in _SNAPSHOT["user"].items():  # e.g. the start-up files' imports
                ip.user_ns.setdefault(name, value)
        warnings.filters[:] = _SNAPSHOT["filters"]
        warnings.showwarning = _SNAPSHOT["showwarning"]
        warnings.onceregistry.clear()
        mutated = getattr(warnings, "_filters_mutated", None)
        if mutated is not None:  # every module's __warningregistry__ is then stale and cleared on use
            mutated()
        for module in list(sys.modules.values()):
            registry = getattr(module, "__warningregistry__", None)
            if isinstance(registry, dict):
                registry.clear()
        if os.environ != _SNAPSHOT["environ"]:
            os.environ.clear()
            os.environ.update(_SNAPSHOT["environ"])
        sys.path[:] = _SNAPSHOT["path"]
    if env:
        os.environ.update(env)
    tempfile.tempdir = None  # found again from $TMPDIR on next use
    os.chdir(cwd)
    if _SNAPSHOT and ip is not None:
        _release_memory()


def _release_memory() -> None:
    """What the previous notebook left (its workspaces, once the metrics' per-build caches are
    cleared), collected and handed back to the system (``malloc_trim``;
    nothing on other C libraries): glibc keeps a process's freed blocks for reuse, so a kernel that
    served the run's earlier notebooks would start the next one holding their memory."""
    import ctypes
    import gc

    for name in ("closedloop_nb.metrics._engine", "closedloop_nb.metrics.credits"):
        module = sys.modules.get(name)  # per-build caches that keep the notebook's workspaces alive
        if module is not None:
            module.clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_code(cwd: str, env: dict[str, str] | None = None) -> str:
    return f"__import__('closedloop_nb._report_child', fromlist=['_']).kernel_reset({cwd!r}, {env or {}!r})"


class _Session:
    """One kernel kept across the notebooks of a run (started when first needed, dropped after a
    failure), and the papermill engine that executes notebooks in it."""

    def __init__(self, cwd: str, cell_timeout: int) -> None:
        self.cwd, self.limit = cwd, cell_timeout
        self.env: dict[str, str] = {}  # the running job's run environment (kernel_reset's env)
        self.kernel_key: Any = None  # what the kernel was started for (a new key: a new kernel)
        self.km: Any = None
        self.current: dict[str, Any] = {"cell": 0, "line": ""}
        self._engine = self._make_engine()

    def _make_engine(self) -> str:
        from jupyter_core.utils import run_sync
        from nbclient.util import ensure_async
        from papermill.clientwrap import PapermillNotebookClient
        from papermill.engines import NBClientEngine, papermill_engines
        from papermill.log import logger
        from papermill.utils import merge_kwargs, remove_args

        session = self

        class Client(PapermillNotebookClient):
            """papermill's client; on a kept kernel it resets the user namespace before the first cell."""

            async def async_start_new_kernel_client(self):  # noqa: ANN202
                kc = await super().async_start_new_kernel_client()
                msg_id = await ensure_async(kc.execute(_reset_code(session.cwd, session.env), silent=True,
                                                       store_history=False, allow_stdin=False))
                reply = await self.async_wait_for_reply(msg_id)
                if not reply or reply["content"].get("status") != "ok":
                    content = (reply or {}).get("content", {})
                    raise RuntimeError(f"the kernel could not be reset: {content.get('ename', '')} "
                                       f"{content.get('evalue', 'no reply')}")
                return kc

            start_new_kernel_client = run_sync(async_start_new_kernel_client)

        class Engine(NBClientEngine):
            """papermill's own engine on the session's kernel, telling the runner which cell runs."""

            @classmethod
            def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,  # noqa: ANN001, ANN206, PLR0913
                                         stderr_file=None, start_timeout=60, execution_timeout=None,
                                         **kwargs):
                start = nb_man.cell_start
                cells = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]

                def cell_start(cell, cell_index=None, **kw):  # noqa: ANN001, ANN202
                    number = cells.index(cell_index) + 1 if cell_index in cells else 0
                    line = first_meaningful_line(cell.source)[:80]
                    session.current.update(cell=number, line=line)
                    emit({"cell": number, "of": len(cells), "line": line})
                    return start(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
                # as papermill's NBClientEngine, with the kept kernel manager
                kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
                final = merge_kwargs(kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                                     kernel_name=kernel_name, log=logger, log_output=log_output,
                                     stdout_file=stdout_file, stderr_file=stderr_file)
                client = Client(nb_man, km=session.km, **final)
                try:
                    return client.execute()
                finally:
                    if client.kc is not None:
                        client.kc.stop_channels()

        papermill_engines.register("closedloop", Engine)
        return "closedloop"

    def start(self) -> None:
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        km = AsyncKernelManager(kernel_name=KERNEL)
        run_sync(km.start_kernel)(cwd=self.cwd)
        self.km = km
        for pid in sorted(set(_children()) - _KERNELS):
            _KERNELS.add(pid)
            emit({"kernel": pid})

    def warm(self, modules: list[str], timeout: float = 120) -> int:
        """Start the kernel and import ``modules`` in it (:func:`warm_up`) before the first notebook
        comes; 0 done, 1 it failed (the kernel is then dropped: the first notebook starts another)."""
        from jupyter_core.utils import run_sync

        code = f"__import__('closedloop_nb._report_child', fromlist=['_']).warm_up({list(modules)!r})"

        async def execute() -> bool:
            kc = self.km.client()
            kc.start_channels()
            try:
                await kc.wait_for_ready(timeout=timeout)
                msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    reply = await kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
                    if reply.get("parent_header", {}).get("msg_id") == msg_id:
                        return reply["content"].get("status") == "ok"
                return False
            finally:
                kc.stop_channels()

        try:
            if self.km is None or not self.km.has_kernel:
                self.start()
            if run_sync(execute)():
                return 0
        except Exception:  # noqa: BLE001, S110 - dropped below; the first notebook starts a fresh kernel
            pass
        self.stop()
        return 1

    def stop(self) -> None:
        """Stop the kernel (a failed notebook's kernel is never reused)."""
        if self.km is None:
            return
        from jupyter_core.utils import run_sync

        try:
            run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001, S110 - killed below whatever happened
            pass
        self.km = None
        _kill_kernels()
        _KERNELS.clear()

    def run(self, notebook: str, output: str, params_file: str) -> int:
        """Execute one notebook; 0 it ran, 1 it failed, 3 the kernel did not start."""
        code = self._run(notebook, output, params_file)
        if code:
            self.stop()
        return code

    def _run(self, notebook: str, output: str, params_file: str) -> int:  # noqa: PLR0911
        import papermill
        import yaml
        from nbclient.exceptions import CellTimeoutError, DeadKernelError
        from papermill.exceptions import PapermillExecutionError

        limit, current = self.limit, self.current
        current.update(cell=0, line="")
        with open(params_file, encoding="utf-8") as f:
            params = yaml.safe_load(f) or {}
        try:
            if self.km is None or not self.km.has_kernel:
                self.start()
            papermill.execute_notebook(notebook, output, parameters=params, cwd=self.cwd, kernel_name=KERNEL,
                                       engine_name=self._engine, progress_bar=False, execution_timeout=limit,
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
                emit({"error": {"type": "KernelStartError", "message": first_meaningful_line(text),
                                "cell": 0}})
                return 3
            emit({"error": {"type": type(exc).__name__, "message": first_meaningful_line(text),
                            "cell": current["cell"]}})
            return 1
        except Exception as exc:  # anything else papermill or the kernel raise: named, not a traceback
            emit({"error": {"type": type(exc).__name__, "message": first_meaningful_line(str(exc)),
                            "cell": current["cell"]}})
            return 1
        return 0


def serve(cwd: str, cell_timeout: int, jobs: Any = None) -> int:
    """Execute the jobs read from ``jobs`` (standard input: one JSON line each) in one kept kernel,
    answering ``{"done": code}`` after each; returns 0 at the end of input.

    A job may also name its working directory (``cwd``), its run's environment (``env``, set in the
    kernel before the notebook: :func:`kernel_reset`) and what its kernel is for (``kernel``: a job
    with another value than the kernel's gets a fresh kernel), so the notebooks of several runs can
    go through one process and kernel. ``{"warm": [modules], "kernel": ...}`` starts the kernel and
    imports those modules in it ahead of the first notebook (answered by ``{"warmed": code}``).
    """
    session = _Session(cwd, cell_timeout)
    try:
        for raw in jobs if jobs is not None else sys.stdin:
            if not raw.strip():
                continue
            job = json.loads(raw)
            if job.get("kernel") != session.kernel_key:  # another engine: not this kernel
                session.stop()
                session.kernel_key = job.get("kernel")
            if "warm" in job:
                emit({"warmed": session.warm(job["warm"])})
                continue
            session.cwd = job.get("cwd", session.cwd)
            session.env = job.get("env") or {}
            emit({"done": session.run(job["notebook"], job["output"], job["params"])})
    finally:
        session.stop()
    return 0


def skip_slow_optional_imports() -> None:
    """Make ``rfc3987_syntax`` unimportable in this process, unless already imported.

    jsonschema imports it, if installed, for its ``iri`` format check, and the import builds a grammar
    parser: 1.3-1.5 s of CPU in every process that imports nbformat (papermill, nbconvert), more than
    the rest of papermill's imports. The notebook schema has no ``iri`` field, so nothing here needs
    the check; jsonschema skips it when the import fails (``sys.modules`` entry ``None``: Python's
    documented way to make an import raise ImportError). Only for the runner's own processes: the
    command line's and the notebook processes, never a library user's process.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    skip_slow_optional_imports()
    parent = os.getppid()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        if argv and argv[0] == "--serve":
            return serve(argv[1], int(argv[2]))
        notebook, output, params_file, cwd, cell_timeout = argv[:5]
        session = _Session(cwd, int(cell_timeout))
        try:
            return session.run(notebook, output, params_file)
        finally:
            session.stop()
    finally:
        _kill_kernels()  # normally gone already; never left behind


if __name__ == "__main__":  # pragma: no cover - run by the report runner
    sys.exit(main(sys.argv[1:]))
