"""Lessons depend forward only: lesson N's module never imports lesson N+1's.

Which module belongs to which lesson is read from the notebooks themselves:
``course.X`` belongs to the first lesson whose notebook imports it (lesson 02
imports ``course.pipelines``, lesson 03 ``course.train``).  Then every import
statement in the library, including the ones inside functions (heavy imports
live there), is checked:

* a lesson's module may import modules of its own or earlier lessons only;
* the shared helpers below all lessons (memory, argument checks, errors ...)
  and the ``course run`` runner import no lesson module at all.

A new lesson needs no change here: its notebook's imports place its module.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
PACKAGE = REPO / "course"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))

#: Helpers every lesson may use; they sit below all lessons and import none of them.
SHARED = [
    "course.errors",
    "course.memory",
    "course.validate",
    "course.checks",
    "course.metrics",
    "course.assets",
    "course.devices",
]
#: Infrastructure that runs every lesson but must not depend on any lesson's code.
RUNNER = ["course.run"]


def top_module(name: str) -> str | None:
    """``course.train.memory`` -> ``course.train``; None for modules outside the package."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "course" and len(parts) > 1 else None


def imported_names(source: str, package: str = "course") -> set[str]:
    """Every module named by an import statement anywhere in ``source`` (relative imports resolved)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from course import train`
    return names


def course_imports(source: str, package: str = "course") -> set[str]:
    """The ``course.X`` modules ``source`` imports."""
    return {top for name in imported_names(source, package) if (top := top_module(name))}


def notebook_source(path: Path) -> str:
    """The code cells of a notebook, IPython magics dropped so that ``ast`` can parse them."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            lines += [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def lesson_of_modules() -> dict[str, int]:
    """``course.X`` -> the number of the first lesson whose notebook imports it (shared helpers excluded)."""
    lesson = {}
    for path in NOTEBOOKS:
        number = int(path.name[:2])
        for module in course_imports(notebook_source(path)):
            if module not in SHARED:
                lesson.setdefault(module, number)
    return lesson


def module_files(module: str) -> list[Path]:
    """The source files of ``course.X``: one file, or every file of a package."""
    path = REPO.joinpath(*module.split("."))
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path.with_suffix(".py")] if path.with_suffix(".py").exists() else []


def imports_of(module: str) -> dict[str, set[str]]:
    """File (relative to the repo) -> the ``course.X`` modules it imports, itself excluded."""
    found = {}
    for file in module_files(module):
        package = ".".join(file.relative_to(REPO).with_suffix("").parts[:-1])
        found[str(file.relative_to(REPO))] = course_imports(file.read_text(encoding="utf-8"), package) - {module}
    return found


def test_the_lessons_place_their_modules():
    """The mapping the rule relies on: 02 is course.pipelines, 03 is course.train."""
    lesson = lesson_of_modules()
    assert lesson["course.pipelines"] == 2
    assert lesson["course.train"] == 3
    assert all(module_files(module) for module in lesson), "a notebook imports a course module that does not exist"


@pytest.mark.parametrize("module", sorted(lesson_of_modules()))
def test_a_lesson_module_imports_no_later_lesson(module):
    lesson = lesson_of_modules()
    for file, imported in imports_of(module).items():
        later = sorted(other for other in imported if lesson.get(other, -1) > lesson[module])
        assert not later, (
            f"{file} (lesson {lesson[module]:02d}) imports {', '.join(later)} of a later lesson: "
            "move what both need below the lessons (e.g. course/memory.py, course/validate.py)"
        )


@pytest.mark.parametrize("module", SHARED + RUNNER)
def test_shared_helpers_and_the_runner_import_no_lesson(module):
    lesson = lesson_of_modules()
    assert module_files(module), f"{module} does not exist"
    for file, imported in imports_of(module).items():
        lessons = sorted(other for other in imported if other in lesson)
        assert not lessons, f"{file} sits below the lessons but imports lesson module(s) {', '.join(lessons)}"


def test_the_rule_catches_an_import_inside_a_function():
    """The checker itself: a lazy import of a later lesson is still an import."""
    source = "def f():\n    from course.train.data import check_batch_size\n    import course.train.memory\n"
    assert course_imports(source) == {"course.train"}
    assert course_imports("from . import memory", "course.train") == {"course.train"}
    assert course_imports("from .. import validate", "course.train") == {"course.validate"}
