"""Drive nbgrader end to end from pytest: copy, generate, fill, run, autograde.

Every assignment in ``grading/source/`` is graded by ``course grade`` in
``tests/test_assignments.py``, from the cases in ``tests/assignments/<ps>.py``
(see ``grading/README.md``, "Adding an assignment").  This module holds the
steps those files share: make a course copy, ``generate`` the release, take the
instructor's answers (``source_solutions``) or one of them with a typical mistake
made in it (``mistake``), write a submission with some
solution cells replaced (``fill_solutions``), build the shortcut submissions
that reach the course's own code (``course_shortcuts``), execute a notebook
without grading it (``run_tests``) and, for plain nbgrader, ``autograde`` a
class in ONE ``nbgrader autograde`` call::

    course = course_copy(tmp_path, "ps0_environment")
    release_nb = generate(course, "ps0_environment")
    answers = source_solutions(source_notebook("ps0_environment", course))
    right = fill_solutions(release_nb, answers, tmp_path / "right.ipynb")
    scores = autograde(course, "ps0_environment", {"right": right, "stub": release_nb})
    assert scores["stub"]["score"] == 0

Each nbgrader call costs seconds of app start-up and each notebook a kernel:
share one course copy and one ``generate`` per module, and grade a whole class
in one call.

pytest puts ``tests/`` on sys.path (no ``__init__.py`` there, default import
mode), hence ``import nbgrader_harness``.

Subprocesses run with this interpreter's ``bin/`` first on PATH: nbgrader
creates the gradebook by running ``alembic`` from PATH, and the ``python3``
kernelspec resolves ``python`` the same way, so kernels use the same venv as
the tests.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
GRADING = REPO / "grading"
CONFIG_NAME = "nbgrader_config.py"
COURSE_ID = "course"

#: Seconds a single cell may run when this module executes a notebook itself:
#: none by default, a loaded CI machine must not turn slowness into failures.
CELL_TIMEOUT: int | None = None


class NbgraderFailed(RuntimeError):
    """An nbgrader command exited non-zero; the message holds its output."""


def _env() -> dict[str, str]:
    """Return os.environ with this interpreter's bin/ first on PATH."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def nbgrader(course_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course_dir``; raise NbgraderFailed on failure.

    nbgrader sometimes logs an error and still exits 0 (a notebook it could not
    convert), so ``[ERROR]`` lines in its log count as failure too.  With
    ``check=False`` nothing is raised: inspect the returned process instead.
    """
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.run(cmd, cwd=course_dir, env=_env(), capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if check and (proc.returncode != 0 or re.search(r"^\[\w+App \| ERROR\]", log, re.M)):
        raise NbgraderFailed(f"{' '.join(cmd)} (cwd={course_dir}) exited {proc.returncode}:\n{log}")
    return proc


def course_copy(tmp_path: Path, assignment: str) -> Path:
    """Make a fresh nbgrader course dir under ``tmp_path`` holding ``assignment``.

    Copies ``grading/nbgrader_config.py`` and ``grading/source/<assignment>``;
    the gradebook is created there by the first nbgrader command.
    """
    src = GRADING / "source" / assignment
    if not src.is_dir():
        raise FileNotFoundError(f"no assignment {assignment!r} under {src.parent}")
    course = tmp_path / "course"
    (course / "source").mkdir(parents=True, exist_ok=True)
    shutil.copy2(GRADING / CONFIG_NAME, course / CONFIG_NAME)
    shutil.copytree(
        src,
        course / "source" / assignment,
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
    )
    return course


def _assignment_notebooks(folder: Path) -> list[Path]:
    """The notebooks directly inside an assignment folder, sorted by name."""
    return sorted(folder.glob("*.ipynb"))


def generate(course_dir: Path, assignment: str) -> Path:
    """Run ``nbgrader generate_assignment`` and return the released notebook.

    Returns ``release/<assignment>/<assignment>.ipynb``, or the only notebook
    of the release when the assignment's notebook has another name.
    """
    nbgrader(course_dir, "generate_assignment", assignment, "--force")
    release = course_dir / "release" / assignment
    preferred = release / f"{assignment}.ipynb"
    if preferred.exists():
        return preferred
    notebooks = _assignment_notebooks(release)
    if len(notebooks) != 1:
        raise FileNotFoundError(
            f"expected {preferred.name} or a single notebook in {release}, found {[p.name for p in notebooks]}"
        )
    return notebooks[0]


def _nbgrader_meta(cell) -> dict:
    """The cell's nbgrader metadata, or an empty dict."""
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def autograded_test_ids(nb) -> list[str]:
    """grade_ids of the autograded test cells (graded code, not solution)."""
    ids = []
    for cell in nb.cells:
        meta = _nbgrader_meta(cell)
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            ids.append(meta["grade_id"])
    return ids


def harmless_stderr_pattern(config: Path = GRADING / CONFIG_NAME) -> str:
    """``IgnorePattern.pattern`` as the course config sets it ('' if unset)."""
    from traitlets.config.loader import PyFileConfigLoader

    cfg = PyFileConfigLoader(config.name, path=str(config.parent)).load_config()
    if not cfg.IgnorePattern.get("enabled", False):
        return ""
    return cfg.IgnorePattern.get("pattern", "")


def cell_passes(cell, ignore: str = "") -> bool:
    """Decide a test cell the way nbgrader does: no error, no stderr.

    stderr outputs matching ``ignore`` are dropped first (nbgrader's
    IgnorePattern); an ``execute_result`` would mean partial credit in
    nbgrader, which these harness checks treat as a failure.
    """
    for out in cell.get("outputs", []):
        if out.output_type in ("error", "execute_result"):
            return False
        if out.output_type == "stream" and out.name == "stderr":
            if not (ignore and re.search(ignore, out.text)):
                return False
    return True


def execute(notebook_path: Path, timeout: int | None = CELL_TIMEOUT):
    """Execute a notebook in its own folder, keeping going after errors.

    Returns the executed notebook node; the file on disk is left unchanged.
    """
    from nbclient import NotebookClient

    nb = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        allow_errors=True,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(Path(notebook_path).parent)}},
    )
    client.execute(env=_env())
    return nb


def run_tests(notebook_path: Path, timeout: int | None = CELL_TIMEOUT) -> dict[str, bool]:
    """Execute a notebook; map each autograded test cell's grade_id to pass/fail.

    A test cell passes when it raised nothing and wrote nothing to stderr
    apart from what the course's IgnorePattern drops, as in ``nbgrader
    autograde``.
    """
    nb = execute(notebook_path, timeout)
    ignore = harmless_stderr_pattern()
    wanted = set(autograded_test_ids(nb))
    return {
        _nbgrader_meta(c)["grade_id"]: cell_passes(c, ignore)
        for c in nb.cells
        if _nbgrader_meta(c).get("grade_id") in wanted
    }


def fill_solutions(release_nb_path: Path, answers: dict[str, str], out_path: Path) -> Path:
    """Write a submission: the release notebook with some solution cells replaced.

    ``answers`` maps a solution cell's grade_id to the code (or markdown) a
    student would write there.  Unknown grade_ids raise KeyError, so a typo
    cannot silently leave a stub in place.
    """
    nb = nbformat.read(release_nb_path, as_version=4)
    solution_cells = {_nbgrader_meta(c)["grade_id"]: c for c in nb.cells if _nbgrader_meta(c).get("solution")}
    unknown = sorted(set(answers) - set(solution_cells))
    if unknown:
        raise KeyError(
            f"not solution cells of {release_nb_path.name}: {unknown}; solution cells are {sorted(solution_cells)}"
        )
    for grade_id, source in answers.items():
        solution_cells[grade_id].source = source
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_path)
    return out_path


def source_solutions(source_nb_path: Path) -> dict[str, str]:
    """The instructor's answers: each solution cell's code without its markers.

    ``fill_solutions(release_nb, source_solutions(source_nb), out)`` models a
    fully correct submission; edit one entry to model a typical mistake.
    """
    nb = nbformat.read(source_nb_path, as_version=4)
    markers = ("### BEGIN SOLUTION", "### END SOLUTION")
    return {
        _nbgrader_meta(c)["grade_id"]: "\n".join(line for line in c.source.splitlines() if line.strip() not in markers)
        for c in nb.cells
        if _nbgrader_meta(c).get("solution")
    }


def source_notebook(assignment: str, course_dir: Path = GRADING) -> Path:
    """The instructor's notebook of ``assignment``: ``<course_dir>/source/<assignment>/<assignment>.ipynb``."""
    return course_dir / "source" / assignment / f"{assignment}.ipynb"


@functools.cache
def _instructor_answers(assignment: str) -> dict[str, str]:
    """``source_solutions`` of the repository's notebook, read once per assignment (never handed out to mutate)."""
    return source_solutions(source_notebook(assignment))


def mistake(assignment: str, grade_id: str, *changes: tuple[str, str]) -> str:
    """A typical mistake as what it changes: the instructor's answer in ``grade_id``, each ``(old, new)`` replaced.

    A mistake spelled this way stays in step with the notebook: when the
    solution is edited, the mistake is edited with it.  Raises ``ValueError``
    when the solution no longer contains ``old``, so a mistake can never turn
    silently into the right answer::

        NO_SCALING = mistake("ps1_attention", "attention", (" / math.sqrt(d)", ""))
    """
    source = _instructor_answers(assignment)[grade_id]
    for old, new in changes:
        if old not in source:
            raise ValueError(f"the {grade_id} solution of {assignment} no longer contains {old!r}: update this mistake")
        source = source.replace(old, new)
    return source


def _place_submission(course_dir: Path, assignment: str, student: str, nb_path: Path) -> None:
    """Copy a student's notebook to submitted/<student>/<assignment>/.

    The file takes the name of the assignment's notebook when the assignment
    has one; with several, the submitted file must already carry one of their
    names.
    """
    names = [p.name for p in _assignment_notebooks(course_dir / "source" / assignment)]
    if len(names) == 1:
        name = names[0]
    elif Path(nb_path).name in names:
        name = Path(nb_path).name
    else:
        raise ValueError(f"{nb_path} is not one of {assignment}'s notebooks {names}")
    dest = course_dir / "submitted" / student / assignment
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(nb_path, dest / name)


def read_scores(course_dir: Path, assignment: str, student: str) -> dict:
    """A student's result from the gradebook.

    Returns ``{"score", "max_score", "grades": {grade_id: score},
    "needs_manual_grade"}``.
    """
    from nbgrader.api import Gradebook

    db_url = f"sqlite:///{course_dir / 'gradebook.db'}"
    with Gradebook(db_url, COURSE_ID) as gb:
        sub = gb.find_submission(assignment, student)
        grades = {grade.name: grade.score for nb in sub.notebooks for grade in nb.grades}
        return {
            "score": sub.score,
            "max_score": sub.max_score,
            "grades": grades,
            "needs_manual_grade": sub.needs_manual_grade,
        }


def autograde(course_dir: Path, assignment: str, submissions: dict[str, Path], check: bool = True) -> dict[str, dict]:
    """Autograde several students in one ``nbgrader autograde`` call.

    ``submissions`` maps a student id to a notebook path.  Returns, per
    student, :func:`read_scores`' dict.  ``generate`` must have run first.
    nbgrader reports a submission it could not grade at all (kernel death,
    cell timeout) as an error; pass ``check=False`` to read the scores anyway.
    """
    for student, nb_path in submissions.items():
        _place_submission(course_dir, assignment, student, Path(nb_path))
    nbgrader(course_dir, "autograde", assignment, "--force", check=check)
    return {s: read_scores(course_dir, assignment, s) for s in submissions}


def grade_ids(nb) -> tuple[dict[str, float], list[str]]:
    """The notebook's autograded test cells ``{grade_id: points}`` and its solution cells' grade_ids."""
    tests, solutions = {}, []
    for cell in nb.cells:
        meta = _nbgrader_meta(cell)
        if meta.get("solution"):
            solutions.append(meta["grade_id"])
        elif cell.cell_type == "code" and meta.get("grade"):
            tests[meta["grade_id"]] = meta.get("points", 0)
    return tests, solutions


def _region_lines(nb, begin: str, end: str) -> list[str]:
    """Distinctive lines between ``begin``/``end`` markers: not found anywhere outside such regions.

    Short lines (``pass``, ``else:``) and lines that also appear elsewhere in
    the notebook say nothing about a leak, so they are left out.
    """
    inside, outside = [], set()
    for cell in nb.cells:
        within = False
        for line in cell.source.splitlines():
            text = line.strip()
            if text in (begin, end):
                within = text == begin
            elif within:
                inside.append(text)
            else:
                outside.add(text)
    return [line for line in dict.fromkeys(inside) if len(line) >= 20 and line not in outside]


def hidden_test_lines(nb) -> list[str]:
    """Distinctive lines of the notebook's hidden tests (for checking that a release does not show them)."""
    return _region_lines(nb, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def solution_lines(nb) -> list[str]:
    """Distinctive lines of the notebook's solutions (for checking that a release does not show them)."""
    return _region_lines(nb, "### BEGIN SOLUTION", "### END SOLUTION")


#: How each shortcut gets hold of a module of the ``course`` package, as ``lib``.
#: ``{module}`` is e.g. ``course.pipelines``, ``{names}`` what the answer takes from it;
#: ``{defining}`` / ``{path}`` the module and source file that define the first name
#: (students see the path in JupyterHub, where the library is theirs to use).
SHORTCUT_ROUTES = {
    "from_import": "import types\nfrom {module} import {names}\nlib = types.SimpleNamespace({pairs})\n",
    "import_module": 'import importlib\nlib = importlib.import_module("cour" + "se{tail}")\n',
    "dunder_import": 'lib = __import__("{module}", fromlist=["{first}"])\n',
    "sys_modules": (
        "import importlib.util, os, sys\n"
        'package = sys.modules["course"]          # already loaded in this kernel by someone\n'
        'path = os.path.join(package.__path__[0], "{relative}")\n'
        'spec = importlib.util.spec_from_file_location("{defining}", path)\n'
        "lib = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = lib\n"
        "spec.loader.exec_module(lib)\n"
    ),
    "exec_source": (
        "import sys, types\n"
        'lib = types.ModuleType("course_copy")\n'
        'sys.modules["course_copy"] = lib\n'
        "with open({path!r}) as handle:\n"
        '    exec(compile(handle.read(), {path!r}, "exec"), lib.__dict__)\n'
    ),
}


def course_shortcuts(
    module: str, names: list[str], cell: str, answer: str, lost: dict[str, float]
) -> dict[str, tuple[dict[str, str], dict[str, float]]]:
    """Shortcut submissions, one per route: the answer taken from the course's own ``module``.

    ``answer`` is the solution cell's code written against ``lib`` (the course
    module however it was reached), e.g. ``"mean_pool = lib.mean_pool"``.
    Returns ``{route: ({cell: source}, lost)}``, the shape of a case file's
    ``SHORTCUTS``.  Each works where ``course`` is importable, so each proves
    something when the grader blocks it.  Imports ``module`` here to find the
    file that defines ``names[0]`` (the file routes read that file).
    """
    import inspect

    defining = inspect.getmodule(getattr(importlib.import_module(module), names[0]))
    path = Path(defining.__file__)
    package = Path(importlib.import_module("course").__file__).parent
    fields = {
        "module": module,
        "names": ", ".join(names),
        "pairs": ", ".join(f"{name}={name}" for name in names),
        "tail": module[len("course") :],
        "first": names[0],
        "defining": defining.__name__,
        "relative": str(path.relative_to(package)),
        "path": str(path),
    }
    return {
        route: ({cell: template.format(**fields) + answer.strip() + "\n"}, dict(lost))
        for route, template in SHORTCUT_ROUTES.items()
    }
