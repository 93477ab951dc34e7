"""Problem set 4 (LoRA by hand, checked against peft), end to end through nbgrader.

The cases live in ``tests/assignments/ps4_adapters.py`` (the shape the shared
assignment harness reads): the source passes every test, the released stubs
fail every one, and each typical mistake loses exactly the points of the
tests it breaks.  No cell of the assignment may import the course package.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader_harness import autograde, course_copy, fill_solutions, generate, run_tests, source_solutions

_spec = importlib.util.spec_from_file_location("ps4_cases", Path(__file__).parent / "assignments" / "ps4_adapters.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)
ASSIGNMENT, POINTS, MISTAKES = cases.ASSIGNMENT, cases.POINTS, cases.MISTAKES


def test_no_cell_uses_the_course_package():
    cells = nbformat.read(cases.SOURCE, as_version=4).cells
    offenders = [
        i
        for i, cell in enumerate(cells)
        if "course" in cell.source
        and "import" in cell.source
        and any(word in cell.source for word in ("import course", "from course"))
    ]
    assert not offenders, f"cells {offenders} import the course package: graded kernels block it"


def test_every_graded_cell_has_its_points():
    cells = nbformat.read(cases.SOURCE, as_version=4).cells
    graded = {
        cell.metadata.nbgrader.grade_id: cell.metadata.nbgrader.points
        for cell in cells
        if cell.metadata.get("nbgrader", {}).get("grade") and not cell.metadata.nbgrader.get("solution")
    }
    assert graded == POINTS


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course_dir = course_copy(tmp_path_factory.mktemp("ps4"), ASSIGNMENT)
    return course_dir, generate(course_dir, ASSIGNMENT)


@pytest.fixture(scope="module")
def grades(course, tmp_path_factory):
    course_dir, release_nb = course
    answers = source_solutions(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    folder = tmp_path_factory.mktemp("subs")
    notebooks = {"stub": release_nb, "correct": fill_solutions(release_nb, answers, folder / "correct.ipynb")}
    for name, (changes, _) in MISTAKES.items():
        notebooks[name] = fill_solutions(release_nb, {**answers, **changes}, folder / f"{name}.ipynb")
    return autograde(course_dir, ASSIGNMENT, notebooks)


@pytest.mark.slow
def test_source_passes_and_stubs_fail(course):
    course_dir, release_nb = course
    assert run_tests(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb") == {gid: True for gid in POINTS}
    assert run_tests(release_nb) == {gid: False for gid in POINTS}


@pytest.mark.slow
def test_release_hides_solutions_and_hidden_tests(course):
    _, release_nb = course
    cells = nbformat.read(release_nb, as_version=4).cells
    text = "\n".join(cell.source for cell in cells)
    assert "HIDDEN TESTS" not in text and "merge_and_unload" not in text
    assert "BEGIN SOLUTION" not in text and "self.lora_B = nn.Parameter(torch.zeros" not in text
    stubs = {
        cell.metadata.nbgrader.grade_id: cell.source.count("raise NotImplementedError()")
        for cell in cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }
    assert stubs == {"lora_linear": 4, "apply_lora": 1, "count_trainable": 1}


@pytest.mark.slow
def test_autograde_full_marks_zero_for_stubs(grades):
    assert grades["correct"]["grades"] == POINTS
    assert grades["correct"]["score"] == grades["correct"]["max_score"] == sum(POINTS.values())
    assert grades["stub"]["score"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_autograde_partial_marks_for_typical_mistakes(grades, mistake):
    expected = {**POINTS, **MISTAKES[mistake][1]}
    assert grades[mistake]["grades"] == expected
    assert 0 < grades[mistake]["score"] < sum(POINTS.values())


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the default (sandboxed) run needs root")
def test_course_grade_scores_a_small_class(tmp_path):
    """``course grade`` (sandboxed kernels, no course package inside) gives the same scores."""
    course_dir = course_copy(tmp_path, ASSIGNMENT)
    release_nb = generate(course_dir, ASSIGNMENT)
    answers = source_solutions(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    class_list = {"correct": answers, "no_scaling": {**answers, **MISTAKES["no_scaling"][0]}, "stub": {}}
    for student, cells in class_list.items():
        dest = course_dir / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        fill_solutions(release_nb, cells, dest)
        (dest.parent / "timestamp.txt").write_text("2026-12-02 06:00:00.000000 UTC")
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    command = [
        sys.executable,
        "-m",
        "course.grade",
        ASSIGNMENT,
        "--course-dir",
        str(course_dir),
        "--quiet",
        "--jobs",
        "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = course_dir / "results" / ASSIGNMENT / "submissions"
    scores = {path.stem: json.loads(path.read_text())["score"] for path in folder.glob("*.json")}
    no_scaling = sum({**POINTS, **MISTAKES["no_scaling"][1]}.values())
    assert scores == {"correct": sum(POINTS.values()), "no_scaling": no_scaling, "stub": 0}
