"""Every lesson's "your turn" exercises: well-formed, and solvable by their reference answers.

A lesson marks an exercise with a code cell tagged ``exercise`` (metadata
``"exercise": "<name>"``) followed within three cells by a cell tagged
``check`` that calls ``check("<name>", ...)`` from :mod:`course.checks`.

- The structure tests are instant: at least two exercises per lesson, each
  with its check and a reference answer in ``tests/exercises/<lesson>.py``.
- The solved run (slow) fills every exercise with its reference answer,
  executes the notebook on the smoke profile up to its last check cell (the
  rest of the lesson adds nothing to what is checked here) and asserts every
  check passed.  That the *unsolved* checks fail while "Run all" still
  succeeds is asserted on the smoke run in ``tests/test_lessons.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

from course.checks import checks_from_notebook

REPO = Path(__file__).parents[1]
LESSONS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ANSWERS_DIR = Path(__file__).parent / "exercises"
#: How many cells after an exercise its check may come.
CHECK_WITHIN = 3


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def exercises(nb) -> dict[str, int]:
    """Exercise name -> index of its cell."""
    found = {}
    for index, cell in enumerate(nb.cells):
        if "exercise" in _tags(cell):
            name = cell.metadata.get("exercise")
            assert name, f"exercise cell {index} has no 'exercise' name in its metadata"
            assert name not in found, f"exercise name {name!r} used twice"
            found[name] = index
    return found


def answers_for(lesson: Path) -> dict[str, str]:
    """``ANSWERS`` from ``tests/exercises/<lesson>.py`` (empty when the file is missing)."""
    path = ANSWERS_DIR / f"{lesson.stem}.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location(f"exercise_answers_{lesson.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.ANSWERS)


def solved_copy(lesson: Path, out: Path) -> Path:
    """The lesson with every exercise answered, cut after its last check cell."""
    nb = nbformat.read(lesson, as_version=4)
    answers = answers_for(lesson)
    for name, index in exercises(nb).items():
        nb.cells[index].source = answers[name]
    last_check = max(i for i, cell in enumerate(nb.cells) if "check" in _tags(cell))
    nb.cells = nb.cells[: last_check + 1]
    nbformat.write(nb, out)
    return out


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_has_two_checked_exercises_with_answers(lesson):
    nb = nbformat.read(lesson, as_version=4)
    found = exercises(nb)
    assert len(found) >= 2, f"{lesson.name} has {len(found)} exercise(s); each lesson needs at least two"
    answers = answers_for(lesson)
    for name, index in found.items():
        following = nb.cells[index + 1 : index + 1 + CHECK_WITHIN]
        checks = [c for c in following if "check" in _tags(c) and f'check("{name}"' in c.source]
        assert checks, f"exercise {name!r} ({lesson.name}) has no check({name!r}, ...) cell within 3 cells"
        assert name in answers, f"no reference answer for {name!r} in tests/exercises/{lesson.stem}.py"


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_reference_answers_pass_every_check(lesson, tmp_path):
    from course.run import load_profile, run_notebook

    notebook = solved_copy(lesson, tmp_path / lesson.name)
    profile = load_profile("smoke")
    (tmp_path / "out").mkdir()
    entry = run_notebook(notebook, tmp_path / "out", profile, profile.get("cell_timeout"))
    assert entry["status"] == "ok", entry.get("error")
    verdicts = checks_from_notebook(nbformat.read(entry["output"], as_version=4))
    expected = set(exercises(nbformat.read(lesson, as_version=4)))
    assert set(verdicts) == expected, f"checks that never reported: {expected - set(verdicts)}"
    assert all(verdicts.values()), f"checks not passed with the reference answers: {verdicts}"
