"""Progress bars of long steps, on the screen of whoever is waiting.

In a notebook or a terminal, :func:`bar` is tqdm's own bar (when the caller asks for one). Inside
a kernel of a report batch (``closedloop report``), the runner sets ``CLOSEDLOOP_PROGRESS_FILE`` and
the bar is written there instead, whatever the notebook asked: the runner shows it in the run's
status line, and the stakeholder pages get no progress bars.

Examples
--------
>>> sum(bar(range(3), desc="demo", enabled=False))
3
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["ENV", "bar", "read_status"]

#: Environment variable naming the file a report runner reads bars from.
ENV = "CLOSEDLOOP_PROGRESS_FILE"


class _StatusFile:
    """A file-like target for tqdm keeping only the latest state of the bar, replaced atomically."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def write(self, text: str) -> int:
        state = [part.strip() for part in text.replace("\n", "\r").split("\r") if part.strip()]
        if state:
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                tmp.write_text(state[-1], "utf-8")
                os.replace(tmp, self.path)
            except OSError:  # the runner's folder is gone: the bar is not worth failing for
                pass
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass


def bar(iterable: Iterable[Any], *, desc: str, total: int | None = None,
        enabled: bool = True) -> Iterable[Any]:
    """``iterable`` with a progress bar: to the report runner when one is listening, else tqdm's
    (``tqdm.auto``: a widget in notebooks) when ``enabled``, else unchanged."""
    target = os.environ.get(ENV)
    if target:
        from tqdm import tqdm

        status = _StatusFile(target)
        return _closing(tqdm(iterable, desc=desc, total=total, file=status, mininterval=0.5, ascii=True,
                             ncols=70, leave=False), status)
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False)
    return iterable


def _closing(bar: Any, status: _StatusFile) -> Iterable[Any]:
    try:
        yield from bar
    finally:
        bar.close()
        status.close()


def read_status(path: str | Path) -> str:
    """The latest bar written to ``path`` ("" when none runs)."""
    try:
        return Path(path).read_text("utf-8").strip()
    except OSError:
        return ""
