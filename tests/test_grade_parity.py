"""``course grade`` against plain ``nbgrader autograde`` on nbgrader's own example course.

The course is the one of nbgrader's user guide (``ps1`` with the students
``bitdiddle`` and ``hacker``: autograded tests, partial answers, written
answers that need a human), taken from the installed nbgrader package
(``nbgrader/docs/source/user_guide``, BSD-3-Clause like the package).
Both graders run on identical copies; per-cell scores, totals and the
cells waiting for manual grading must be equal.  Then the same with a due
date that makes bitdiddle late under ``LateSubmissionPlugin.penalty_method
= "zero"``: the gradebook, ``nbgrader export`` and ``grades.csv`` must all
say 0 for him.  One run of each grader per case (~1 min on 2 cores).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "grade"))

import classroom as cls  # noqa: E402
from nbgrader_harness import nbgrader  # noqa: E402

pytestmark = pytest.mark.slow

STUDENTS = ("bitdiddle", "hacker")


def user_guide() -> Path:
    import nbgrader as package

    return Path(package.__file__).resolve().parent / "docs" / "source" / "user_guide"


def example_course(dest: Path, config: str = "", duedate: str = "2015-02-02 15:58:23 America/Los_Angeles") -> Path:
    """nbgrader's example course: source/ps1 and the two submissions, generated."""
    guide = user_guide()
    if not (guide / "source" / "ps1").is_dir():
        pytest.skip("this nbgrader package does not ship its user guide's example course")
    course = dest / "course"
    shutil.copytree(guide / "source" / "ps1", course / "source" / "ps1")
    shutil.copy(guide / "source" / "header.ipynb", course / "source" / "header.ipynb")
    for student in STUDENTS:
        shutil.copytree(guide / "submitted" / student / "ps1", course / "submitted" / student / "ps1")
    (course / "nbgrader_config.py").write_text(
        'c = get_config()\nc.CourseDirectory.course_id = "example_course"\n'
        'c.IncludeHeaderFooter.header = "source/header.ipynb"\n' + config
    )
    nbgrader(course, "db", "assignment", "add", "ps1", f"--duedate={duedate}")
    for student in STUDENTS:
        nbgrader(course, "db", "student", "add", student)
    nbgrader(course, "generate_assignment", "ps1", "--force")
    return course


def gradebook_scores(course: Path) -> dict:
    """Per student: total, penalty, and (notebook, cell) -> (score, needs manual grade)."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "example_course") as gb:
        for student in STUDENTS:
            sub = gb.find_submission("ps1", student)
            cells = {
                (nb.name, g.name): (g.score, bool(g.needs_manual_grade)) for nb in sub.notebooks for g in nb.grades
            }
            out[student] = {"score": sub.score, "penalty": sub.late_submission_penalty, "cells": cells}
    return out


def course_grade(course: Path) -> subprocess.CompletedProcess:
    sandbox = [] if os.geteuid() == 0 else ["--no-sandbox"]
    cmd = [sys.executable, "-m", "course.grade", "ps1", "--course-dir", str(course), "--quiet", "--jobs", "2", *sandbox]
    return subprocess.run(cmd, capture_output=True, text=True, env=cls.env(), timeout=600)


def exported(course: Path) -> dict[str, dict]:
    """``nbgrader export``'s rows by student."""
    nbgrader(course, "export", "--to", str(course / "export.csv"))
    rows = csv.DictReader(io.StringIO((course / "export.csv").read_text()))
    return {row["student_id"]: row for row in rows if row["assignment"] == "ps1"}


@pytest.mark.parametrize("late", [False, True], ids=["on-time", "late-zero"])
def test_same_scores_as_nbgrader_on_its_own_example_course(tmp_path, late):
    config, duedate = "", "2015-02-02 15:58:23 America/Los_Angeles"
    if late:
        # bitdiddle submitted at 14:58:23 on Feb 2nd: one second after this due date.
        config, duedate = 'c.LateSubmissionPlugin.penalty_method = "zero"\n', "2015-02-02 14:58:22 America/Los_Angeles"
    theirs = example_course(tmp_path / "plain", config, duedate)
    ours = tmp_path / "ours"
    shutil.copytree(theirs, ours / "course")
    ours = ours / "course"

    nbgrader(theirs, "autograde", "ps1", "--force")
    proc = course_grade(ours)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    expected, got = gradebook_scores(theirs), gradebook_scores(ours)
    assert got == expected
    assert any(manual for s in got.values() for _, manual in s["cells"].values())  # written answers exist

    results = {s: json.loads((ours / "results" / "ps1" / "submissions" / f"{s}.json").read_text()) for s in STUDENTS}
    rows = {
        row["student_id"]: row for row in csv.DictReader(io.StringIO((ours / "results/ps1/grades.csv").read_text()))
    }
    export = exported(ours)
    for student in STUDENTS:
        total = max(0.0, expected[student]["score"] - expected[student]["penalty"])
        assert float(export[student]["score"]) == pytest.approx(total)
        assert float(rows[student]["total"]) == pytest.approx(total)
        assert results[student]["score"] == pytest.approx(total)
        statuses = {c["grade_id"]: c["status"] for nb in results[student]["notebooks"] for c in nb["cells"]}
        for (_, grade_id), (_, manual) in expected[student]["cells"].items():
            if manual:
                assert statuses[grade_id] == "manual", (student, grade_id)
    if late:
        assert expected["bitdiddle"]["penalty"] > 0 and float(rows["bitdiddle"]["total"]) == 0.0
        assert float(rows["bitdiddle"]["late_penalty"]) == expected["bitdiddle"]["penalty"]
        assert "late" in proc.stdout
    else:
        assert all(expected[s]["penalty"] == 0 for s in STUDENTS)
