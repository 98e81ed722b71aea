"""Reading files that may be hostile: regular files only, of bounded size (stdlib only).

:func:`read_regular` opens without following a final symbolic link and without blocking (a FIFO or a device
is refused by its type, never read: reading one would hang or never end), checks the size from the open
descriptor and reads at most that many bytes; it raises :class:`UnsafeFileError`, a ``ValueError`` with a
one-line message. JSON read from such files goes through :func:`metasr.jsonio.loads_bounded` (depth and size
bounded before the parser recurses).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["UnsafeFileError", "read_regular"]


class UnsafeFileError(ValueError):
    """A file that is not a regular file, or is larger than allowed."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def read_regular(path: str | os.PathLike[str], max_bytes: int, *, dir_fd: int | None = None) -> bytes:
    """The bytes of ``path`` (relative to the open directory ``dir_fd`` if given), which must be a regular
    file of at most ``max_bytes`` bytes and not a symbolic link. Raises :class:`UnsafeFileError`, or
    ``FileNotFoundError`` when it does not exist."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as e:  # ELOOP for a final symbolic link under O_NOFOLLOW
        is_link = Path(path).is_symlink() if dir_fd is None else _is_link_at(path, dir_fd)
        if is_link:
            raise UnsafeFileError(f"{path} is a symbolic link (only regular files are read)") from None
        raise UnsafeFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{path} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise UnsafeFileError(f"{path} is {st.st_size:,} bytes, more than the limit of {max_bytes:,}")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise UnsafeFileError(f"{path} is larger than the limit of {max_bytes:,} bytes")
    return data


def _is_link_at(path: str | os.PathLike[str], dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
