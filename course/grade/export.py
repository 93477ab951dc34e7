"""Grades out of the gradebook: one CSV per assignment, one JSON per submission.

The CSV is read from the gradebook, so it includes manual grades entered
in nbgrader's formgrader and submissions graded in earlier runs::

    student_id,total,max,test_relu,test_relu_hidden,...
    alice,7.0,7.0,1.0,2.0,...

With several notebooks whose grade ids collide, columns are named
``notebook:grade_id``.  The JSON results (written by the workers, see
:func:`write_json`) add what the gradebook does not hold: each test's
status and message, the tampering findings, timings, what each kernel's
process tree used (``resources``, where cgroups work) and the fingerprint
of the submitted files that makes a later run skip it.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from course.grade import gradebook


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically and privately (0600): a crash never leaves a half-written result."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_json(path: Path, limit: int = 16 * 2**20) -> dict | None:
    """A result file, or None if missing, unreadable, not a regular file or larger than ``limit``."""
    from course.grade.safeio import read_regular

    data = read_regular(path, limit)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def grade_columns(db_url: str, course_id: str, assignment: str) -> list[tuple[str, str, str]]:
    """``(column, notebook, grade_id)`` for every graded cell, in notebook order."""
    from nbgrader.api import Gradebook

    with gradebook.locked(), Gradebook(db_url, course_id) as gb:
        found = gb.find_assignment(assignment)
        cells = []
        for nb in found.notebooks:
            graded = {c.name for c in nb.grade_cells} | {c.name for c in nb.task_cells}
            order = [c.name for c in nb.source_cells if c.name in graded]
            order += sorted(graded - set(order))
            cells += [(nb.name, name) for name in order]
    clash = len({g for _, g in cells}) < len(cells)
    return [(f"{nb}:{g}" if clash else g, nb, g) for nb, g in cells]


def write_csv(db_url: str, course_id: str, assignment: str, path: Path, ungraded: dict[str, str] | None = None) -> int:
    """Write the grades CSV for every student with a submission; return the row count.

    ``total`` is what nbgrader's ``export`` calls the score: the points
    less the late penalty (never below 0); ``raw_score`` and
    ``late_penalty`` follow the per-test columns.  A student in
    ``ungraded`` (student -> reason) has empty scores and the reason in
    ``note``: an empty cell is not a 0.
    """
    from nbgrader.api import Gradebook

    ungraded = ungraded or {}
    columns = grade_columns(db_url, course_id, assignment)
    rows = []
    with gradebook.locked(), Gradebook(db_url, course_id) as gb:
        found = gb.find_assignment(assignment)
        seen = set()
        for submission in sorted(found.submissions, key=lambda s: s.student.id):
            student = submission.student.id
            seen.add(student)
            row = {"student_id": student, "max": found.max_score}
            if student in ungraded:
                row["note"] = ungraded[student]
                rows.append(row)
                continue
            scores = {(g.notebook.name, g.name): g.score for nb in submission.notebooks for g in nb.grades}
            penalty = float(submission.late_submission_penalty or 0.0)
            row.update(total=max(0.0, submission.score - penalty), raw_score=submission.score, late_penalty=penalty)
            for column, nb, grade_id in columns:
                row[column] = scores.get((nb, grade_id))
            rows.append(row)
        for student in sorted(set(ungraded) - seen):
            rows.append({"student_id": student, "max": found.max_score, "note": ungraded[student]})
    names = ["student_id", "total", "max", *[c for c, _, _ in columns], "raw_score", "late_penalty", "note"]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".grades.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in names})
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return len(rows)
