"""``course grade`` end to end: bad input, resuming, and agreement with nbgrader.

Bad input must give one clear line and a non-zero exit before anything
is touched.  A second run skips what is graded; a changed submission is
regraded; ``--force`` regrades all.  The scores equal plain ``nbgrader
autograde``'s on the same class, except where this project deliberately
differs (a warning on stderr does not zero a correct answer).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "grade"))

import classroom as cls  # noqa: E402
from nbgrader_harness import nbgrader, read_scores  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_course(tmp_path_factory):
    """A generated course with two honest submissions (nothing graded yet)."""
    course = cls.new_course(tmp_path_factory.mktemp("base"))
    cls.submit_answers(course, "alice", cls.CORRECT)
    cls.submit_answers(course, "bob", {**cls.CORRECT, "relu": cls.RELU_WRONG})
    return course


@pytest.fixture
def course(base_course, tmp_path):
    """A private copy of the base course."""
    dest = tmp_path / "course"
    shutil.copytree(base_course, dest)
    return dest


def course_cli(course: Path, *args: str) -> subprocess.CompletedProcess:
    """The user's path: the ``course`` command (course.cli) with the grade subcommand."""
    cmd = [sys.executable, "-m", "course.cli", "grade", *args, "--course-dir", str(course), "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, env=cls.env())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("course grade: error: "), proc.stderr
    for word in words:
        assert word in lines[0]


def previous_result(course: Path) -> Path:
    """A result from an earlier run, which a failing run must leave alone."""
    path = course / "results" / "ps_fixture" / "submissions" / "earlier.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"student_id": "earlier", "status": "graded", "score": 5}))
    return path


def test_unknown_assignment(course):
    assert_one_line_error(course_cli(course, "ps_nope"), "unknown assignment 'ps_nope'", "ps_fixture")


def test_empty_submitted(course):
    shutil.rmtree(course / "submitted")
    (course / "submitted").mkdir()
    assert_one_line_error(course_cli(course, "ps_fixture"), "no submissions", "collect")


def test_missing_gradebook(course):
    (course / "gradebook.db").unlink()
    assert_one_line_error(course_cli(course, "ps_fixture"), "no gradebook", "generate_assignment")
    assert not (course / "gradebook.db").exists()  # not silently re-created empty


def test_locked_gradebook_loses_nothing(course):
    earlier = previous_result(course)
    before = earlier.read_text()
    holder = sqlite3.connect(course / "gradebook.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        proc = course_cli(course, "ps_fixture")
    finally:
        holder.rollback()
        holder.close()
    assert_one_line_error(proc, "locked")
    assert earlier.read_text() == before
    assert not (course / "autograded").exists()


def test_unwritable_feedback_folder_loses_nothing(course):
    earlier = previous_result(course)
    gradebook = digest(course / "gradebook.db")
    feedback = course / "feedback"
    if os.geteuid() == 0:
        feedback.write_text("a file where the feedback folder should be")  # root ignores permissions
    else:
        feedback.mkdir()
        feedback.chmod(0o555)
    try:
        proc = course_cli(course, "ps_fixture")
    finally:
        if feedback.is_dir():
            feedback.chmod(0o755)
    assert_one_line_error(proc, "feedback folder", "not writable")
    assert digest(course / "gradebook.db") == gradebook
    assert json.loads(earlier.read_text())["score"] == 5


def result_files(course: Path) -> list[Path]:
    return sorted((course / "results" / "ps_fixture" / "submissions").glob("*.json"))


def results(course: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in result_files(course)}


@pytest.mark.skipif(os.geteuid() != 0, reason="the default (sandboxed) run needs root")
def test_resume_force_and_agreement_with_nbgrader(tmp_path):
    course = cls.new_course(tmp_path / "ours")
    expected = cls.honest_class(course, 4)
    plain = tmp_path / "plain"
    shutil.copytree(course, plain)

    first = cls.run_grade(course, "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "graded 4 submission(s)" in first.stdout
    got = results(course)
    assert {s: r["score"] for s, r in got.items()} == expected
    csv = (course / "results" / "ps_fixture" / "grades.csv").read_text().splitlines()
    assert csv[0] == "student_id,total,max," + ",".join(cls.TESTS) + ",raw_score,late_penalty,note" and len(csv) == 5

    # Plain nbgrader on the same class: same per-test scores, except that a
    # warning on stderr zeroes a correct answer there (student02, test_normalize).
    nbgrader(plain, "autograde", "ps_fixture")
    for student in expected:
        theirs = read_scores(plain, "ps_fixture", student)["grades"]
        ours = {c["grade_id"]: c["score"] for c in got[student]["notebooks"][0]["cells"]}
        if student == "student02":
            assert theirs.pop("test_normalize") == 0 and ours.pop("test_normalize") == 2
        assert ours == theirs, student

    stamps = {p.name: p.stat().st_mtime_ns for p in result_files(course)}
    second = cls.run_grade(course, "--jobs", "2")
    assert second.returncode == 0 and "graded 0 submission(s)" in second.stdout
    assert "skipped 4 already graded" in second.stdout
    assert stamps == {p.name: p.stat().st_mtime_ns for p in result_files(course)}

    cls.submit_answers(course, "student01", cls.CORRECT)  # a corrected resubmission
    third = cls.run_grade(course, "--jobs", "2")
    assert "graded 1 submission(s)" in third.stdout and "skipped 3" in third.stdout
    assert results(course)["student01"]["score"] == cls.MAX_SCORE

    forced = cls.run_grade(course, "--jobs", "2", "--force", "--no-sandbox", "--show-hidden-tests")
    assert forced.returncode == 0 and "graded 4 submission(s)" in forced.stdout and "SANDBOX OFF" in forced.stdout
    again = results(course)
    assert all(r["sandbox"] is False for r in again.values())
    assert {s: r["score"] for s, r in again.items()} == {**expected, "student01": cls.MAX_SCORE}
    page = (course / "feedback" / "student00" / "ps_fixture" / "ps_fixture.html").read_text()
    assert "relu is wrong on a grid" in page  # hidden tests shown on request


def test_a_student_who_could_not_be_graded_is_empty_with_the_reason(course):
    """Issue 14 item 14: not 0.0 in grades.csv, but an empty total and the reason."""
    import csv
    import io

    from course.grade import export

    path = course / "results" / "ps_fixture" / "grades.csv"
    db_url = f"sqlite:///{course / 'gradebook.db'}"
    rows = export.write_csv(db_url, "course", "ps_fixture", path, {"alice": "not graded: the kernel did not start"})
    assert rows == 1
    row = next(csv.DictReader(io.StringIO(path.read_text())))
    assert row["student_id"] == "alice" and row["total"] == "" and row["test_relu"] == ""
    assert row["note"] == "not graded: the kernel did not start" and float(row["max"]) == cls.MAX_SCORE
    assert path.stat().st_mode & 0o077 == 0  # private to the instructor
