"""Problem set 6 end to end: nbgrader generates it, ``course grade`` grades a class.

The cases (points, typical mistakes and the points each keeps) live in
``tests/assignments/ps6_serving.py``, the shape the shared assignment harness
reads.  Here: the source passes, the release fails, no cell uses ``course``,
and ``course grade`` (sandboxed when run as root) scores the instructor's
answers, the stubs and every mistake as described.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader_harness import _env, _place_submission, course_copy, fill_solutions, generate, run_tests, source_solutions

pytestmark = pytest.mark.slow

CASES_FILE = Path(__file__).parent / "assignments" / "ps6_serving.py"
_spec = importlib.util.spec_from_file_location("ps6_cases", CASES_FILE)
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)
ASSIGNMENT, POINTS, MISTAKES = cases.ASSIGNMENT, cases.POINTS, cases.MISTAKES


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course_dir = course_copy(tmp_path_factory.mktemp("ps6"), ASSIGNMENT)
    return course_dir, generate(course_dir, ASSIGNMENT)


def test_no_cell_uses_the_course_package():
    nb = nbformat.read(Path(__file__).parents[1] / "grading" / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
    for cell in nb.cells:
        assert "import course" not in cell.source and "from course" not in cell.source, cell.source[:80]


def test_source_passes_and_stubs_fail(course):
    course_dir, release_nb = course
    assert run_tests(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb") == {gid: True for gid in POINTS}
    assert run_tests(release_nb) == {gid: False for gid in POINTS}
    text = "\n".join(cell.source for cell in nbformat.read(release_nb, as_version=4).cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "waiting[0][2]" not in text


def test_course_grade_scores_answers_stubs_and_typical_mistakes(course, tmp_path):
    course_dir, release_nb = course
    answers = source_solutions(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    students = {"correct": release_nb, "stub": release_nb}
    students["correct"] = fill_solutions(release_nb, answers, tmp_path / "correct.ipynb")
    for name, (changes, _) in MISTAKES.items():
        students[name] = fill_solutions(release_nb, {**answers, **changes}, tmp_path / f"{name}.ipynb")
    for student, notebook in students.items():
        _place_submission(course_dir, ASSIGNMENT, student, notebook)

    env = {**_env(), "COURSE_GRADE_UID_BASE": os.environ.get("COURSE_GRADE_UID_BASE", "2150000000")}
    args = [sys.executable, "-m", "course", "grade", ASSIGNMENT, "--course-dir", str(course_dir), "--quiet"]
    if os.geteuid() != 0:
        args.append("--no-sandbox")  # the sandbox needs root; the scores are the same
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def grades(student: str) -> dict[str, float]:
        result = json.loads((course_dir / "results" / ASSIGNMENT / "submissions" / f"{student}.json").read_text())
        return {
            cell["grade_id"]: cell["score"] for cell in result["notebooks"][0]["cells"] if cell["grade_id"] in POINTS
        }

    assert grades("correct") == POINTS
    assert grades("stub") == {gid: 0 for gid in POINTS}
    for name, (_, expected) in MISTAKES.items():
        assert grades(name) == {**POINTS, **expected}, name
