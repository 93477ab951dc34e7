"""A student's submitted folder, seen without trusting it: what is in it, and its fingerprint.

``submitted/<student>/<assignment>/`` is written by students (through the
exchange) and read by the grader as root.  Nothing here follows a link or
opens anything but a regular file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from course.grade.text import safe_text

#: Names of file types a submission must not contain (checked with lstat).
_FILE_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def inspect_submission(folder: Path) -> tuple[list[Path], list[str]]:
    """``(regular files, problems)`` of a submission folder, from ``lstat`` alone.

    Nothing is opened or followed: a link, FIFO, socket or device anywhere
    in ``submitted/<student>/<assignment>/`` (or the folder itself, or the
    student's folder, being a link) is a problem, named with its path, and
    the whole submission is rejected without reading a byte of it.
    """
    problems: list[str] = []
    for path in (folder.parent, folder):
        try:
            mode = os.lstat(path).st_mode
        except OSError as error:
            return [], [f"{path.name} cannot be read ({error.strerror})"]
        if not stat.S_ISDIR(mode):
            return [], [f"{path.name} is {_FILE_KINDS.get(stat.S_IFMT(mode), 'not a folder')}, not a folder"]
    files: list[Path] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                mode = entry.stat(follow_symlinks=False).st_mode
                rel = Path(entry.path).relative_to(folder)
                if stat.S_ISDIR(mode):
                    pending.append(Path(entry.path))
                elif stat.S_ISREG(mode):
                    files.append(Path(entry.path))
                else:
                    kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
                    problems.append(f"{safe_text(str(rel))} is {kind}; only regular files can be submitted")
    return sorted(files), sorted(problems)


def fingerprint(folder: Path) -> str:
    """sha256 over the names and contents of every regular file of a submission (no link followed)."""
    digest = hashlib.sha256()
    files, problems = inspect_submission(folder)
    for problem in problems:
        digest.update(problem.encode() + b"\0")
    for path in files:
        digest.update(str(path.relative_to(folder)).encode("utf-8", "surrogateescape") + b"\0")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as error:
            digest.update(f"unreadable {error.errno}".encode())
            continue
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def submission_dir(app, student: str, assignment: str) -> Path:
    """``submitted/<student>/<assignment>/`` as nbgrader's CourseDirectory sees it."""
    cd = app.coursedir
    return Path(cd.format_path(cd.submitted_directory, student, assignment))
