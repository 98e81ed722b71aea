"""Atomic file output: write to a temporary file beside the target, then rename over it.

Temporary names carry the writer's process id (``.NAME.<pid>-<random>.tmp``, ``.NAME.tmp-<pid>-<random>``),
so a later run can tell the leftovers of a killed process (SIGKILL, power loss) from the live temporaries
of a concurrent one and remove only the former (:func:`remove_stale`). New files and folders are created
with ``0o666`` / ``0o777`` and the kernel applies the umask: the process umask is never read or changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: swaps there are not serialised across processes
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "STALE_AFTER_S",
    "atomic_path",
    "check_output_file",
    "check_output_path",
    "make_temp_dir",
    "pid_alive",
    "remove_stale",
    "remove_stale_dirs",
    "replace_dir",
    "resolve_dir",
]

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


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel or a filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """Serialise directory swaps in ``parent`` across processes (flock on the folder itself: no lock file)."""
    fd = os.open(parent, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_output_path(path: str | os.PathLike[str], what: str = "output") -> Path:
    """:func:`check_output_file` for a file whose folder may not exist yet (``metasr upscale -o new/x.png``):
    not empty, not a folder, FIFO or device, and the nearest existing ancestor a folder where a file can be
    created (probed: permission bits alone let root "write" to /proc). ``ValueError``, one line."""
    if not os.fspath(path):
        raise ValueError(f"{what}: the path is empty")
    p = Path(path)
    try:
        mode = p.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise ValueError(f"{what} {p} is a folder")
    folder = probe = p.parent
    while not probe.exists():
        if probe.is_symlink():
            raise ValueError(f"{what}: cannot create {folder}: {probe} is a broken link")
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what}: cannot write into {folder}: {probe} is not a folder")
    if probe == folder:
        return check_output_file(p, what)
    try:
        check_output_file(probe / f".{p.name}.{_token()}", what)
    except ValueError:
        raise ValueError(f"{what}: cannot create {folder}: {probe} is not writable") from None
    return p


def resolve_dir(path: str | os.PathLike[str], what: str = "directory") -> Path:
    """``path`` with a final symbolic link resolved, before any work: an artifact directory given as a link is
    updated where the link points (the link stays), never replaced by a real folder. A link that does not
    lead to a folder (dangling, or to a file) raises ``NotADirectoryError``."""
    p = Path(path)
    if not p.is_symlink():
        return p
    target = p.resolve()
    if not target.is_dir():
        raise NotADirectoryError(f"{what} {p} is a symbolic link to {target}, which is not a folder")
    return target


def replace_dir(tmp: Path, out_dir: Path, check: Callable[[], None] | None = None) -> None:
    """Move ``tmp`` to ``out_dir``; an existing ``out_dir`` is swapped out whole, never mixed.

    Swaps in one parent folder are serialised by a lock, so concurrent writers of the same directory each
    complete (the last one wins) and leave no ``.old-`` folder. Where the kernel supports it, the swap is
    one atomic exchange: readers never see ``out_dir`` missing. ``check`` runs under the lock just before
    the swap (e.g. "the directory is still the one this update was made from"); its exception aborts it.
    """
    if out_dir.is_symlink():  # an exchange would swap the link out and leave it beside the folder
        raise NotADirectoryError(f"{out_dir} is a symbolic link; resolve it first (metasr.fileio.resolve_dir)")
    with _parent_lock(out_dir.parent):
        if check is not None:
            check()
        if not out_dir.exists():
            os.replace(tmp, out_dir)
            return
        if not out_dir.is_dir():
            raise NotADirectoryError(f"{out_dir} exists and is not a directory")
        if _rename_exchange(tmp, out_dir):
            shutil.rmtree(tmp)  # now holds the previous export
            return
        old = make_temp_dir(out_dir.parent, out_dir.name, "old")
        os.replace(out_dir, old / "d")
        os.replace(tmp, out_dir)
        shutil.rmtree(old)


def remove_stale_dirs(out_dir: Path) -> None:
    """Temporary and swapped-out folders of ``out_dir`` (``make_temp_dir`` tags ``tmp`` / ``old``) left by
    killed writers (their pid is gone)."""
    remove_stale(out_dir.parent, re.escape(f".{out_dir.name}.") + r"(?:tmp|old)-(\d+)-[0-9a-f]{8}")


def check_output_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if :func:`atomic_path` can write it, checked before a long run rather than after it: not an
    existing folder or special file (``/dev/null`` would be replaced by a regular file), in an existing folder
    where a file can be created (probed by creating and removing a temporary). Else ``ValueError``, one line."""
    path = Path(path)
    if not path.name:
        raise ValueError(f"{what} needs a file name, got {str(path)!r}")
    if path.exists() and not path.is_file():
        raise ValueError(f"{what} {path} exists and is not a regular file")
    if not path.parent.is_dir():
        raise ValueError(f"{what} {path}: there is no folder {path.parent}")
    probe = path.parent / f".{path.name}.{_token()}.probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be written ({e.strerror or e})") from None
    return path
