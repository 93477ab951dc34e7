"""The gradebook: one writer at a time, checked before anything is graded.

nbgrader's gradebook is SQLite by default (``gradebook.db`` in the course
directory) or any SQLAlchemy URL, PostgreSQL included
(``c.CourseDirectory.db_url = "postgresql://..."`` or ``--db URL``).
Parallel workers share it.  With SQLite, every nbgrader step that reads
or writes it (creating the submission, restoring the instructor's cells,
saving scores, late penalties, reading grades for feedback) runs under
:class:`GradebookLock`, an ``flock`` held by one worker at a time: the
kernels never hold it, so executing notebooks runs in parallel while the
file sees one short transaction after another, as if a single ``nbgrader
autograde`` wrote it.  A worker that dies releases the lock with its file
descriptor.  A database server needs no such lock: it isolates
transactions, and each worker only writes its own student's rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from course.errors import CourseError


class GradebookLock:
    """A re-entrant, cross-process exclusive lock on a lock file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.fd: int | None = None
        self.depth = 0
        #: Seconds spent waiting for and holding the lock (for the timings).
        self.waited = 0.0
        self.held = 0.0
        self._since = 0.0

    def acquire(self) -> None:
        """Block until this process holds the lock (nested calls just count)."""
        if self.depth == 0:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            start = time.perf_counter()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self._since = time.perf_counter()
            self.waited += self._since - start
        self.depth += 1

    def release(self) -> None:
        """Undo one acquire; the lock goes when the outermost one is undone."""
        self.depth -= 1
        if self.depth == 0 and self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held += time.perf_counter() - self._since

    def __enter__(self) -> GradebookLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_CURRENT: GradebookLock | None = None


def set_lock(lock: GradebookLock | None) -> None:
    """Install the lock the nbgrader steps of this process take."""
    global _CURRENT
    _CURRENT = lock


def lock_times() -> tuple[float, float]:
    """(seconds waited, seconds held) on this process's lock so far."""
    return (_CURRENT.waited, _CURRENT.held) if _CURRENT is not None else (0.0, 0.0)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Hold this process's gradebook lock (a no-op outside ``course grade``)."""
    if _CURRENT is None:
        yield
        return
    with _CURRENT:
        yield


def sqlite_path(db_url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or None for other databases."""
    if not db_url.startswith("sqlite:"):
        return None
    path = db_url.split("sqlite:///", 1)[-1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def describe(db_url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(db_url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return db_url


def check_gradebook(db_url: str, course_id: str, assignment: str) -> list[str]:
    """Fail with one line unless the gradebook exists, is writable and knows the assignment.

    Returns the assignment's notebook names.  nbgrader would silently create
    an empty gradebook where none exists; grading into it would lose track
    of every earlier grade, so a missing one is an error here.
    """
    path = sqlite_path(db_url)
    if path is not None:
        if not path.exists():
            raise CourseError(
                f"no gradebook at {path}: run `nbgrader generate_assignment {assignment}` in the course directory first"
            )
        _check_sqlite_writable(path)
    from nbgrader.api import Gradebook, MissingEntry

    try:
        # nbgrader's preprocessors open the gradebook without a course id,
        # which creates a "default_course" row on first use; create it now,
        # before parallel workers could race to insert it.
        Gradebook(db_url).close()
        with Gradebook(db_url, course_id) as gb:
            try:
                found = gb.find_assignment(assignment)
            except MissingEntry:
                known = ", ".join(sorted(a.name for a in gb.assignments)) or "none"
                raise CourseError(
                    f"unknown assignment {assignment!r}: the gradebook has {known}; "
                    f"run `nbgrader generate_assignment {assignment}` first"
                ) from None
            return [nb.name for nb in found.notebooks]
    except CourseError:
        raise
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CourseError(f"cannot open the gradebook {describe(db_url)}: {first}") from None


def _check_sqlite_writable(path: Path) -> None:
    """A SQLite gradebook must be writable now: not read-only, not locked by someone else."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=1.0)
    except sqlite3.OperationalError as error:
        raise CourseError(f"cannot open the gradebook {path} for writing: {error}") from None
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):
            raise CourseError(
                f"the gradebook {path} is locked by another program (a running nbgrader or an open sqlite "
                "shell?): close it and run again"
            ) from None
        raise CourseError(f"the gradebook {path} is not writable: {error}") from None
    finally:
        conn.close()


def zero_notebook(db_url: str, course_id: str, assignment: str, student: str, notebook: str) -> None:
    """Give every grade of one submitted notebook an automatic score of 0.

    Used for a notebook that cannot be graded at all (not JSON, unknown
    nbformat), as nbgrader does for a missing one; creates the submission
    if nbgrader never got that far.
    """
    from nbgrader.api import Gradebook, MissingEntry

    with locked(), Gradebook(db_url, course_id) as gb:
        try:
            submission = gb.find_submission_notebook(notebook, assignment, student)
        except MissingEntry:
            gb.update_or_create_student(student)
            gb.update_or_create_submission(assignment, student)
            submission = gb.find_submission_notebook(notebook, assignment, student)
        for grade in submission.grades:
            grade.auto_score = 0
            grade.needs_manual_grade = False
        gb.db.commit()


def read_scores(db_url: str, course_id: str, assignment: str, student: str) -> dict[str, dict]:
    """Per notebook: ``{grade_id: {"score", "auto_score", "max_score", "manual"}}`` in cell order."""
    from nbgrader.api import Gradebook

    out: dict[str, dict] = {}
    with locked(), Gradebook(db_url, course_id) as gb:
        submission = gb.find_submission(assignment, student)
        for nb in submission.notebooks:
            order = {cell.name: i for i, cell in enumerate(nb.notebook.source_cells)}
            grades = sorted(nb.grades, key=lambda g: order.get(g.name, len(order)))
            out[nb.name] = {
                g.name: {
                    "score": g.score,
                    "auto_score": g.auto_score,
                    "max_score": g.max_score,
                    "manual": g.manual_score is not None,
                    "needs_manual_grade": bool(g.needs_manual_grade),
                }
                for g in grades
            }
    return out


def late_penalty(db_url: str, course_id: str, assignment: str, student: str) -> float:
    """The late-submission penalty nbgrader assigned to a submission (0.0 when on time)."""
    from nbgrader.api import Gradebook, MissingEntry

    with locked(), Gradebook(db_url, course_id) as gb:
        try:
            return float(gb.find_submission(assignment, student).late_submission_penalty or 0.0)
        except MissingEntry:
            return 0.0
