"""Reading files that student code may have touched, as root, safely.

The grader runs as root and reads a few files a kernel could have replaced
or made: the kernel's log, its connection folder, results on a shared
disk.  A symlink there could point at ``/etc/shadow``, a FIFO would block
the grader forever, ``/dev/zero`` would never end.  :func:`read_regular`
opens without following links and without blocking, refuses anything but
a regular file, and reads at most ``limit`` bytes (the last ones with
``tail=True``).  :func:`private_append` opens the grader's own logs the
same way, mode 0600.
"""

from __future__ import annotations

import os
import stat


def open_regular(path: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = 0o600) -> int | None:
    """A file descriptor for ``path`` if it is a regular file reached without a link, else None."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def read_regular(path: str | os.PathLike, limit: int = 1 << 20, tail: bool = False) -> bytes | None:
    """At most ``limit`` bytes of a regular file (None for a link, FIFO, device, missing file)."""
    fd = open_regular(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        if tail:
            size = os.fstat(fd).st_size
            handle.seek(max(0, size - limit))
        return handle.read(limit)


def private_append(path: str | os.PathLike) -> int:
    """An append-only descriptor on the grader's own log, created 0600; never through a link."""
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if fd is None:
        raise OSError(f"{path} is not a regular file")
    os.fchmod(fd, 0o600)
    return fd
