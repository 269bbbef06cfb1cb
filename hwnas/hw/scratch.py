"""A scratch folder for a long measurement job (a LUT build), removed on any exit and after a kill.

A LUT build exports hundreds of ONNX files (a ``mobilenet_v3`` subnet is 17-30 MB), and the measuring functions
it calls make temporary folders of their own. :func:`scratch_dir` gives the job one folder in the system's temp
directory, named ``hwnas-<kind>-<pid>-<random>``, and points :mod:`tempfile`'s default folder into it while the
job runs, so that every temporary file of the job, its own and those of the functions it calls, lands there. The
folder is removed when the job ends, by return or by exception (Ctrl-C included). A kill (SIGKILL, power loss)
leaves it behind; the next job of the same kind removes every such folder whose process is gone
(:func:`remove_stale_scratch`).

The redirection of :mod:`tempfile` is process-wide for the job's duration: a thread of the same process that makes
a temporary file meanwhile makes it in the job's folder. Jobs that overlap in one process (LUT builds of several
devices in threads, :mod:`hwnas.hw.remote_pool`) share one folder, counted: it is made by the first to enter and
removed, with the redirection undone, when the last one leaves.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["scratch_dir", "remove_stale_scratch"]


_lock = threading.Lock()
_active: dict[str, Any] = {"count": 0, "root": None, "saved": None}


@contextlib.contextmanager
def scratch_dir(kind: str = "lut") -> Iterator[Path]:
    """A fresh ``hwnas-<kind>-<pid>-*`` folder (stale ones of ``kind`` removed first); :mod:`tempfile` makes its
    temporary files inside it until the block ends; the folder is removed then. Overlapping blocks of one process
    (threads) share the first one's folder, which the last to leave removes."""
    with _lock:
        if _active["count"] == 0:
            base = tempfile.gettempdir()
            remove_stale_scratch(kind, base)
            _active["root"] = Path(tempfile.mkdtemp(prefix=f"hwnas-{kind}-{os.getpid()}-", dir=base))
            _active["saved"] = tempfile.tempdir
            tempfile.tempdir = str(_active["root"])
        _active["count"] += 1
        root = _active["root"]
    try:
        yield root
    finally:
        with _lock:
            _active["count"] -= 1
            if _active["count"] == 0:
                tempfile.tempdir = _active["saved"]
                shutil.rmtree(root, ignore_errors=True)
                _active["root"] = None


def remove_stale_scratch(kind: str = "lut", base: str | os.PathLike | None = None) -> list[Path]:
    """Remove the scratch folders of ``kind`` in ``base`` (the system's temp directory) that belong to this user
    and whose process no longer runs; returns them."""
    base = Path(base or tempfile.gettempdir())
    pattern = re.compile(rf"hwnas-{re.escape(kind)}-(\d+)-[^/]+$")
    removed = []
    for folder in base.glob(f"hwnas-{kind}-*-*"):
        m = pattern.match(folder.name)
        if m is None or not folder.is_dir():
            continue
        try:
            if (hasattr(os, "getuid") and folder.stat().st_uid != os.getuid()) or _alive(int(m.group(1))):
                continue
        except OSError:  # removed meanwhile
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (or may: one of another user counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
