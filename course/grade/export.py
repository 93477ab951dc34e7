"""Grades out of the gradebook: one CSV per assignment, one JSON per submission.

The CSV is read from the gradebook, so it includes manual grades entered
in nbgrader's formgrader and submissions graded in earlier runs::

    student_id,total,max,test_relu,test_relu_hidden,...
    alice,7.0,7.0,1.0,2.0,...

With several notebooks whose grade ids collide, columns are named
``notebook:grade_id``.  The JSON results (written by the workers, see
:func:`write_json`) add what the gradebook does not hold: each test's
status and message, the tampering findings, timings and the fingerprint
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
    """Write JSON atomically: a crash never leaves a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """A result file, or None if missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
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


def write_csv(db_url: str, course_id: str, assignment: str, path: Path) -> int:
    """Write the grades CSV for every student with a submission; return the row count."""
    from nbgrader.api import Gradebook

    columns = grade_columns(db_url, course_id, assignment)
    rows = []
    with gradebook.locked(), Gradebook(db_url, course_id) as gb:
        for submission in sorted(gb.find_assignment(assignment).submissions, key=lambda s: s.student.id):
            scores = {(g.notebook.name, g.name): g.score for nb in submission.notebooks for g in nb.grades}
            row = {"student_id": submission.student.id, "total": submission.score, "max": submission.max_score}
            for column, nb, grade_id in columns:
                row[column] = scores.get((nb, grade_id))
            rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".grades.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["student_id", "total", "max", *[c for c, _, _ in columns]])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return len(rows)
