"""Small file helpers shared across hwnas: atomic writes, advisory locks and careful reads.

- :func:`atomic_writer` (a context manager giving an open file, for ``torch.save``, ``savefig``, ``zipfile``),
  :func:`atomic_write_bytes`, :func:`atomic_write_text` and :func:`atomic_write_json`: the one way hwnas writes
  a file. A temporary file in the same folder, fsync, rename; the file gets the permissions an ordinary
  ``open(path, "w")`` would give it (the umask's, or the existing file's), and the temporary is removed on any
  exception. Only a kill (SIGKILL, power loss) can leave one behind, named
  ``.<name>.<random>.tmp``; :func:`remove_stale_temps` removes those of a path (callers run it on start).
- :func:`lock_file`: an advisory lock (the ``filelock`` package) on ``<path>.lock``, so that two processes
  do not both write one file; the second gets :class:`FileInUseError` at once. The ``.lock`` file stays
  (removing it would race with another process taking the lock); it is empty and harmless.
- :func:`read_json`: errors that name the file for a missing path, a folder, a binary or non-UTF-8 file,
  and invalid JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_writer", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "read_json", "lock_file",
           "remove_stale_temps", "FileInUseError"]


class FileInUseError(RuntimeError):
    """Another process holds the advisory lock on a file."""


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, binary: bool = True) -> Iterator[IO]:
    """Write ``path`` atomically through the open file this yields; the file appears whole when the block ends.

    A temporary file in the same folder (``.<name>.<random>.tmp``) is written, flushed and fsynced, given the
    permissions of an ordinary new file (``0o666`` less the umask; an existing file keeps its own), then
    renamed over ``path``. On any exception the temporary is removed and ``path`` is left as it was.

    Args:
        path: the file to write; missing parent folders are made.
        binary: yield a binary file (``"wb"``); ``False`` gives UTF-8 text (``"w"``).

    Example:
        >>> import torch, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
        >>> with atomic_writer(p) as f:
        ...     torch.save({"w": torch.ones(2)}, f)
        >>> torch.load(p, weights_only=True)["w"].tolist()
        [1.0, 1.0]
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600 files; keep the usual permissions
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_writer`)."""
    with atomic_writer(path, binary=False) as f:
        f.write(text)
    return Path(path)


def _mode_for(path: Path) -> int:
    """The existing file's permission bits, or the default a new file gets under the current umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON with an error that names the file and what was expected.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a folder, is not UTF-8 text (a binary file), or is not valid JSON. JSON's
            ``NaN`` and ``Infinity`` are read as floats; callers check the numbers they use.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; check the path.")
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder, not a JSON file; give the path of the file.")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{what} {str(path)!r} cannot be read ({e.strerror or e}); check the path and permissions.") \
            from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {str(path)!r} is not a JSON text file (byte {e.start} is not UTF-8; a binary "
                         "file?); give the JSON file hwnas wrote.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON ({e}); was it written by hwnas?") from None
    except RecursionError:
        raise ValueError(f"{what} {str(path)!r} nests JSON too deeply to read; was it written by hwnas?") from None


def lock_file(path: str | os.PathLike, what: str = "file") -> Any:
    """Take the advisory lock ``<path>.lock`` now, or raise :class:`FileInUseError`; returns the held lock.

    Release it with ``.release()`` (or use it as a context manager). The lock is per process and
    advisory: it keeps two hwnas processes from writing one file, not other programs.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise FileInUseError(f"{what} {str(path)!r} is in use by another process (it holds {str(path)}.lock); wait "
                             "for it to finish, or use another path.") from None
    return lock


def remove_stale_temps(path: str | os.PathLike, min_age_s: float = 0.0) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write_text` left for ``path`` when killed mid-write.

    Call it while holding :func:`lock_file` on ``path`` (then no other writer can be mid-write), or with a
    ``min_age_s`` longer than any write takes. Returns the removed paths.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    now = time.time()
    for tmp in path.parent.glob(f".{_glob_escape(path.name)}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # removed by someone else meanwhile
            continue
    return removed


def _glob_escape(name: str) -> str:
    """``name`` with glob's special characters escaped."""
    import glob

    return glob.escape(name)
