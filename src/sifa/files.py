"""Files written atomically: readers see the old file or the whole new one, never a part."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

# ``.NAME.PID.tmp[.SUFFIX]``: the temporary file of a write by process PID still in progress,
# or left behind by a process that was killed while writing.
_TEMPORARY = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)\.tmp(?P<suffix>\.[^.]+)?$")


def temporary_path(path: Path) -> Path:
    """Where :func:`replace_atomically` writes ``path`` before moving it into place: the same
    folder (so the move is atomic), hidden, named by this process. The suffix is kept: some
    writers (torch.export.save) check it."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def replace_atomically(
    path: str | os.PathLike,
    write: Callable[[Path], object],
    *,
    durable: bool = False,
    before_replace: Callable[[], object] | None = None,
) -> None:
    """Run ``write(temporary_path)``, then move the result onto ``path``. The temporary file is
    in the same folder (created if needed), so the move is atomic; it is removed on failure.

    ``durable=True`` also flushes the file and then the folder to the disk (``fsync``), so that
    a power loss or machine crash after the return keeps the new file. ``before_replace`` runs
    between the write and the move (tests use it to stop there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        write(temporary)
        if durable:
            _fsync(temporary)
        if before_replace is not None:
            before_replace()
        os.replace(temporary, path)
        if durable:
            _fsync(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(
    folder: str | os.PathLike, belongs: Callable[[str], bool] = lambda name: True
) -> list[Path]:
    """Remove the temporary files of :func:`replace_atomically` in ``folder`` that were to
    become a file whose name ``belongs`` accepts and whose writer is gone: a process that no
    longer runs, or this process itself (call it only where this process is not writing into
    ``folder``). A temporary folder named by :func:`temporary_path` (a folder written whole,
    then renamed) goes with its contents. Returns the removed paths."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or not belongs(match["stem"] + (match["suffix"] or "")):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or not _process_is_alive(pid):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def yaml_problem(error: Exception) -> str:
    """A YAML parsing error (``yaml.YAMLError``) in one line, with its line and column."""
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if not problem:
        return str(error).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem
