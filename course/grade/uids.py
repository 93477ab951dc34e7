"""A private range of sandbox uids for each ``course grade`` run.

Each worker runs its kernels as one uid, and cleans up after a kernel by
killing *every* process of that uid.  Two runs on one machine (two
assignments, two instructors, a run during the test suite) that shared a
range killed each other's kernels.  So a run first takes a range: the
candidates are ``base``, ``base + RANGE``, ``base + 2 * RANGE`` ... (the
first is ``c.CourseGrade.uid_base``, or ``COURSE_GRADE_UID_BASE``), and a
range is taken by holding an ``flock`` on its lock file in a root-owned
folder (``/run/course-grade``) for the whole run.  A run that dies
releases its range with its file descriptor; nothing is left to clean up.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

from course.errors import CourseError

#: uids per range (the most workers one run may have).
RANGE = 1024
#: How many ranges are tried after the first.
CANDIDATES = 64


def lock_dir() -> str:
    """The folder of range locks: root-owned under /run when possible."""
    from course.grade.sandbox import ensure_private_dir

    root = "/run" if os.geteuid() == 0 and os.access("/run", os.W_OK) else tempfile.gettempdir()
    path = os.path.join(root, "course-grade-uids")
    ensure_private_dir(path, 0o700)
    return path


class UidRange:
    """A range of uids held (locked) by this run until :meth:`release`."""

    def __init__(self, base: int, fd: int) -> None:
        self.base = base
        self.fd = fd

    def release(self) -> None:
        """Let other runs take this range."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def allocate(first: int, size: int, folder: str | None = None) -> UidRange:
    """Take the first free range of ``size`` uids, starting the search at ``first``."""
    if size > RANGE:
        raise CourseError(f"at most {RANGE} workers per run, not {size}")
    folder = folder or lock_dir()
    for index in range(CANDIDATES):
        base = first + index * RANGE
        if base + RANGE >= 2**32 - 2:
            break
        fd = os.open(os.path.join(folder, f"{base}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return UidRange(base, fd)
    raise CourseError(f"no free sandbox uid range from {first} ({CANDIDATES} runs at once?): try again later")
