"""Problem set 5 (greedy with a KV cache, top-k / top-p sampling), end to end through nbgrader.

The cases live in tests/assignments/ps5_generation.py (the shared harness's format); this module
runs them with tests/nbgrader_harness.py: the source passes, the release gets 0, each typical
mistake loses exactly the points of the tests it breaks.  The notebook must not use `course`.
"""

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbgrader_harness import autograde, course_copy, fill_solutions, generate, run_tests, source_solutions

_spec = importlib.util.spec_from_file_location("ps5_cases", Path(__file__).parent / "assignments" / "ps5_generation.py")
CASES = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(CASES)
ASSIGNMENT, POINTS, MISTAKES = CASES.ASSIGNMENT, CASES.POINTS, CASES.MISTAKES
SOURCE = Path(__file__).parents[1] / "grading" / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


def test_no_cell_uses_the_course_package():
    for cell in nbformat.read(SOURCE, as_version=4).cells:
        assert "course" not in cell.source.replace("of course", "") or cell.cell_type == "markdown", cell.source[:80]
        if cell.cell_type == "code":
            assert "import course" not in cell.source and "from course" not in cell.source


def test_points_match_the_notebook():
    cells = nbformat.read(SOURCE, as_version=4).cells
    graded = {
        c.metadata.nbgrader.grade_id: c.metadata.nbgrader.points
        for c in cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }
    assert graded == POINTS


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course_dir = course_copy(tmp_path_factory.mktemp("ps5"), ASSIGNMENT)
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
    text = "\n".join(cell.source for cell in nbformat.read(release_nb, as_version=4).cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "mass_above" not in text


@pytest.mark.slow
def test_autograde_full_marks_zero_for_stubs_partial_for_mistakes(grades):
    assert grades["correct"]["grades"] == POINTS
    assert grades["correct"]["score"] == grades["correct"]["max_score"] == sum(POINTS.values())
    assert grades["stub"]["score"] == 0
    for name, (_, kept) in MISTAKES.items():
        assert grades[name]["grades"] == {**POINTS, **kept}, name
        assert 0 < grades[name]["score"] < sum(POINTS.values()), name
