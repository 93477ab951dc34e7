"""Every assignment of the course, graded by ``course grade`` itself (issue 14, item 1).

For each assignment in ``grading/source/``: generate it, submit the
instructor's answers (every solution cell from the source) and the
unchanged release, grade both in one ``course grade`` run, and assert the
answers get full marks and the release gets 0, with nothing left
"not graded".  Typical mistakes and their partial credit are the
assignments' own business (``tests/assignments/``).

One run per assignment (a torch zygote each): about 20-40 s per
assignment on 2 cores.  Runs sandboxed as root, else with --no-sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "grade"))

import classroom as cls  # noqa: E402
from nbgrader_harness import GRADING, course_copy, fill_solutions, generate, source_solutions  # noqa: E402

pytestmark = pytest.mark.slow

ASSIGNMENTS = sorted(p.name for p in (GRADING / "source").iterdir() if p.is_dir())


def grade(course: Path, assignment: str, *args: str) -> subprocess.CompletedProcess:
    """``course grade ASSIGNMENT`` on ``course`` (sandboxed when this is root)."""
    sandbox = [] if os.geteuid() == 0 else ["--no-sandbox"]
    cmd = [sys.executable, "-m", "course.grade", assignment, "--course-dir", str(course), "--quiet", *sandbox, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=cls.env(), timeout=900)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_course_grade_grades_every_assignment(tmp_path, assignment):
    course = course_copy(tmp_path, assignment)
    source_nb = course / "source" / assignment / f"{assignment}.ipynb"
    release_nb = generate(course, assignment)
    for student, answers in {"instructor": source_solutions(source_nb), "untouched": {}}.items():
        dest = course / "submitted" / student / assignment / release_nb.name
        fill_solutions(release_nb, answers, dest)

    proc = grade(course, assignment, "--jobs", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not graded" not in proc.stdout, proc.stdout
    results = course / "results" / assignment / "submissions"
    instructor = json.loads((results / "instructor.json").read_text())
    untouched = json.loads((results / "untouched.json").read_text())
    assert instructor["status"] == untouched["status"] == "graded"
    assert instructor["max_score"] > 0
    failed = [c for nb in instructor["notebooks"] for c in nb["cells"] if c["status"] != "passed"]
    assert instructor["score"] == instructor["max_score"], failed
    assert untouched["score"] == 0, untouched
