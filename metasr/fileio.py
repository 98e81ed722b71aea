"""Atomic file output: write to a temporary file beside the target, then rename over it.

Temporary names carry the writer's process id (``.NAME.<pid>-<random>.tmp``, ``.NAME.tmp-<pid>-<random>``),
so a later run can tell the leftovers of a killed process (SIGKILL, power loss) from the live temporaries
of a concurrent one and remove only the former (:func:`remove_stale`). New files and folders are created
with ``0o666`` / ``0o777`` and the kernel applies the umask: the process umask is never read or changed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["STALE_AFTER_S", "atomic_path", "make_temp_dir", "pid_alive", "remove_stale"]

STALE_AFTER_S = 24 * 3600  # a temporary this old is stale even if its pid was reused by a live process
_PID_TOKEN = r"(\d+)-[0-9a-f]{8}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 probes without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def remove_stale(directory: Path, pattern: str) -> list[Path]:
    """Remove entries of ``directory`` whose names fully match ``pattern`` (a regex with one group, the
    writer's pid) when that process is gone or the entry is older than :data:`STALE_AFTER_S`.

    Returns the removed paths. Races with another cleaner are harmless (a vanished entry is skipped).
    """
    removed = []
    rx = re.compile(pattern)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = rx.fullmatch(entry.name)
        if not m:
            continue
        try:
            old = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if int(m.group(1)) == os.getpid() or (pid_alive(int(m.group(1))) and not old):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def make_temp_dir(parent: Path, name: str, tag: str = "tmp") -> Path:
    """Create ``parent/.NAME.TAG-<pid>-<random>`` with the umask's permissions (not mkdtemp's 0o700)."""
    while True:
        path = parent / f".{name}.{tag}-{_token()}"
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (umask permissions), on error
    it is removed, so ``path`` is never left partial or half-overwritten. Stale temporaries of the same
    target left by killed processes are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, re.escape(f".{path.name}.") + _PID_TOKEN + re.escape(suffix))
    while True:
        tmp = path.parent / f".{path.name}.{_token()}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
