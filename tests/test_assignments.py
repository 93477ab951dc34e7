"""Every assignment in ``grading/source/``, graded end to end by ``course grade``.

One parametrised harness for all of them.  Each assignment describes its cases
in ``tests/assignments/<assignment>.py`` (see ``grading/README.md``)::

    ASSIGNMENT = "ps4_adapters"
    POINTS = {"test_lora_forward": 2, ...}          # every graded test cell id -> its points
    MISTAKES = {                                    # name -> (solution cells replaced, expected points)
        "no_scaling": ({"lora_linear": "<source of the wrong solution cell>"},
                       {"test_lora_forward": 0, "test_merge": 0}),   # tests not listed keep full points
    }
    SHORTCUTS = {...}        # optional, same shape: answers that reach the course's own implementation
    VISIBLE_PASS = [...]     # optional: mistakes the released (visible) tests let through

The harness makes ONE course copy holding every discovered assignment,
generates each (``nbgrader generate_assignment``), writes the submissions --
the instructor's answers, the untouched release, every mistake, every
shortcut -- and grades each assignment in ONE ``course grade`` run (sandbox on,
as root, as an instructor would).  Then it asserts:

* the instructor's answers get full marks, with no tampering reported;
* the release scores 0;
* each mistake gets exactly its expected points per test, no tampering reported;
* each shortcut scores 0 on the tests it would have passed, and the tamper report
  names the attempt to reach the ``course`` package (``NOT_REPORTED_YET``: routes the
  grader blocks but cannot name yet, strict xfail);
* the files themselves hold together: ``POINTS`` is what the notebook awards,
  the release shows no solution and no hidden test, no cell uses ``course``.

A new assignment needs only its ``grading/source/<ps>/`` folder and its
``tests/assignments/<ps>.py``: nothing here changes.  Grading an assignment
starts only when one of its tests needs it, so ``-k ps2`` grades ps2 only.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbgrader_harness import (
    CONFIG_NAME,
    GRADING,
    fill_solutions,
    generate,
    grade_ids,
    hidden_test_lines,
    mistake,
    run_tests,
    solution_lines,
    source_notebook,
    source_solutions,
)

CASES_DIR = Path(__file__).resolve().parent / "assignments"

#: Students of every assignment besides its mistakes and shortcuts.
INSTRUCTOR, RELEASE = "instructor", "release"


@dataclass
class Cases:
    """One ``tests/assignments/<ps>.py`` file, loaded."""

    path: Path
    assignment: str
    points: dict[str, float]
    mistakes: dict[str, tuple[dict[str, str], dict[str, float]]]
    shortcuts: dict[str, tuple[dict[str, str], dict[str, float]]] = field(default_factory=dict)
    visible_pass: list[str] = field(default_factory=list)

    @property
    def source_nb(self) -> Path:
        return source_notebook(self.assignment)

    def expected(self, lost: dict[str, float]) -> dict[str, float]:
        """Points per test when the tests in ``lost`` score what they say and the others full marks."""
        return {test: float(lost.get(test, points)) for test, points in self.points.items()}


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"assignment_cases_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def discover(folder: Path = CASES_DIR) -> list[Cases]:
    """Every ``ps*.py`` in ``folder`` as :class:`Cases` (files starting with ``_`` are helpers)."""
    found = []
    for path in sorted(folder.glob("ps*.py")):
        module = _load(path)
        found.append(
            Cases(
                path=path,
                assignment=module.ASSIGNMENT,
                points=dict(module.POINTS),
                mistakes=dict(module.MISTAKES),
                shortcuts=dict(getattr(module, "SHORTCUTS", {})),
                visible_pass=list(getattr(module, "VISIBLE_PASS", [])),
            )
        )
    return found


CASES = discover()
BY_NAME = {cases.assignment: cases for cases in CASES}
ASSIGNMENTS = [pytest.param(c, id=c.assignment) for c in CASES]
MISTAKES = [pytest.param(c, name, id=f"{c.assignment}-{name}") for c in CASES for name in c.mistakes]
SHORTCUTS = [pytest.param(c, name, id=f"{c.assignment}-{name}") for c in CASES for name in c.shortcuts]
VISIBLE_PASS = [pytest.param(c, name, id=f"{c.assignment}-{name}") for c in CASES for name in c.visible_pass]

#: Shortcut routes the grader blocks (they score 0) but cannot name yet (strict xfail);
#: none today: sys.modules holds a reporting tripwire, and opening the course's files is audited.
NOT_REPORTED_YET: dict[str, str] = {}
SHORTCUT_REPORTS = [
    pytest.param(
        c,
        name,
        id=f"{c.assignment}-{name}",
        marks=[pytest.mark.xfail(reason=NOT_REPORTED_YET[name], strict=True)] if name in NOT_REPORTED_YET else [],
    )
    for c in CASES
    for name in c.shortcuts
]


# ----------------------------------------------------------------------------- grading


def _env() -> dict[str, str]:
    """os.environ with this interpreter's bin/ first on PATH (nbgrader runs ``alembic`` from it)."""
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


@dataclass
class Graded:
    """One ``course grade`` run of one assignment: its results per student, and its output."""

    results: dict[str, dict]
    output: str
    seconds: float

    def scores(self, student: str) -> dict[str, float]:
        """Points per test cell of ``student``, from the run's JSON result."""
        result = self.result(student)
        return {
            cell["grade_id"]: float(cell["score"] or 0)
            for notebook in result["notebooks"]
            for cell in notebook.get("cells", [])
        }

    def result(self, student: str) -> dict:
        result = self.results.get(student)
        assert result is not None, f"course grade wrote no result for {student!r}:\n{self.output}"
        assert result["status"] == "graded", f"{student!r} not graded: {result.get('error')}\n{self.output}"
        return result

    def assert_points(self, student: str, expected: dict[str, float], what: str) -> None:
        """``student`` scored ``expected`` points per test; if not, the message shows every test's status."""
        assert self.scores(student) == expected, f"{what}:\n{self.explain(student)}"

    def explain(self, student: str) -> str:
        """Each test's status and message, for an assertion message."""
        lines = []
        for notebook in self.result(student)["notebooks"]:
            for cell in notebook.get("cells", []):
                message = (cell.get("message") or "").splitlines()[-1:] or [""]
                lines.append(f"  {cell['grade_id']}: {cell['score']} {cell['status']} {message[0][:200]}")
        return "\n".join(lines)


def submissions(cases: Cases, release_nb: Path, folder: Path) -> dict[str, Path]:
    """The class for one assignment: instructor, release, each mistake, each shortcut."""
    answers = source_solutions(cases.source_nb)
    notebooks = {INSTRUCTOR: fill_solutions(release_nb, answers, folder / f"{INSTRUCTOR}.ipynb"), RELEASE: release_nb}
    for kind, table in (("mistake", cases.mistakes), ("shortcut", cases.shortcuts)):
        for name, (replaced, _) in table.items():
            student = f"{kind}_{name}"
            notebooks[student] = fill_solutions(release_nb, {**answers, **replaced}, folder / f"{student}.ipynb")
    return notebooks


def grade(course: Path, cases: Cases, release_nb: Path, work: Path) -> Graded:
    """Submit the class of ``cases.assignment`` (generated already) and grade it in one ``course grade`` run."""
    for student, notebook in submissions(cases, release_nb, work / cases.assignment).items():
        dest = course / "submitted" / student / cases.assignment
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, dest / release_nb.name)
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "course.cli", "grade", cases.assignment, "--course-dir", str(course), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - started
    folder = course / "results" / cases.assignment / "submissions"
    results = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")} if folder.is_dir() else {}
    output = f"$ {' '.join(cmd)}  (exit {proc.returncode}, {seconds:.1f} s)\n{proc.stdout}{proc.stderr}"
    return Graded(results=results, output=output, seconds=seconds)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """One nbgrader course holding every discovered assignment (as an instructor's course would)."""
    course = tmp_path_factory.mktemp("assignments") / "course"
    (course / "source").mkdir(parents=True)
    shutil.copy2(GRADING / CONFIG_NAME, course / CONFIG_NAME)
    for cases in CASES:
        shutil.copytree(
            cases.source_nb.parent,
            course / "source" / cases.assignment,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
    return course


@pytest.fixture(scope="module")
def released(course):
    """``released(cases)``: the assignment's released notebook, generated on first use."""
    notebooks: dict[str, Path] = {}

    def get(cases: Cases) -> Path:
        if cases.assignment not in notebooks:
            notebooks[cases.assignment] = generate(course, cases.assignment)
        return notebooks[cases.assignment]

    return get


@pytest.fixture(scope="module")
def graded(course, released):
    """``graded(cases)``: the assignment's ``course grade`` run, made on first use (once per session)."""
    runs: dict[str, Graded] = {}

    def get(cases: Cases) -> Graded:
        if cases.assignment not in runs:
            runs[cases.assignment] = grade(course, cases, released(cases), course.parent / "notebooks")
            print(f"\ncourse grade {cases.assignment}: {runs[cases.assignment].seconds:.1f} s")
        return runs[cases.assignment]

    return get


# ----------------------------------------------------------------------------- the case files themselves


def _course_uses(source: str) -> list[str]:
    """Lines of a code cell that import or name the ``course`` package."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: fall back to words
        return [line for line in source.splitlines() if "course" in line.split("#")[0]]
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        if any(name == "course" or name.startswith("course.") for name in names):
            found.append(source.splitlines()[node.lineno - 1].strip())
    return found


@pytest.mark.parametrize("cases", ASSIGNMENTS)
def test_case_file_matches_the_notebook(cases):
    """POINTS is what the notebook awards; mistakes name real solution cells and tests."""
    assert cases.path.stem == cases.assignment, f"{cases.path} must be named after its ASSIGNMENT"
    assert cases.source_nb.is_file(), f"no notebook {cases.source_nb}"
    nb = nbformat.read(cases.source_nb, as_version=4)
    tests, solutions = grade_ids(nb)
    assert cases.points == tests, f"POINTS in {cases.path.name} differ from the notebook's test cells"
    for table in (cases.mistakes, cases.shortcuts):
        for name, (replaced, lost) in table.items():
            assert set(replaced) <= set(solutions), f"{name}: not solution cells: {set(replaced) - set(solutions)}"
            assert set(lost) <= set(tests), f"{name}: not test cells: {set(lost) - set(tests)}"
    assert set(cases.visible_pass) <= set(cases.mistakes)


def test_a_mistake_is_the_solution_with_its_changes():
    """``mistake`` edits the instructor's answer, and refuses a change the solution no longer allows."""
    solution = source_solutions(source_notebook("ps1_attention"))["attention"]
    wrong = mistake("ps1_attention", "attention", (" / math.sqrt(d)", ""))
    assert wrong == solution.replace(" / math.sqrt(d)", "") != solution
    with pytest.raises(ValueError, match="the attention solution of ps1_attention no longer contains 'nowhere'"):
        mistake("ps1_attention", "attention", ("nowhere", "x"))


@pytest.mark.parametrize("cases", ASSIGNMENTS)
def test_no_cell_uses_the_course_package(cases):
    """Graded kernels cannot reach ``course``: no cell, test or helper may rely on it."""
    nb = nbformat.read(cases.source_nb, as_version=4)
    uses = {
        f"cell {i} ({cell.metadata.get('nbgrader', {}).get('grade_id', '?')})": found
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (found := _course_uses(cell.source))
    }
    assert not uses, f"{cases.assignment} uses the course package: {uses}"


@pytest.mark.slow
@pytest.mark.parametrize("cases", ASSIGNMENTS)
def test_release_shows_no_solution_and_no_hidden_test(cases, released):
    """Students get stubs in every solution cell and only the visible tests."""
    release = nbformat.read(released(cases), as_version=4)
    source = nbformat.read(cases.source_nb, as_version=4)
    text = "\n".join(cell.source for cell in release.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    shown = {line.strip() for line in text.splitlines()}
    leaked = [line for line in hidden_test_lines(source) + solution_lines(source) if line in shown]
    assert not leaked, f"the release of {cases.assignment} shows solution or hidden-test lines: {leaked[:5]}"
    stubs = [
        cell.metadata.nbgrader.grade_id
        for cell in release.cells
        if cell.metadata.get("nbgrader", {}).get("solution") and "raise NotImplementedError()" not in cell.source
    ]
    assert not stubs, f"solution cells without a stub in the release: {stubs}"


# ----------------------------------------------------------------------------- graded by course grade


@pytest.mark.slow
@pytest.mark.parametrize("cases", ASSIGNMENTS)
def test_instructor_answers_get_full_marks(cases, graded):
    run = graded(cases)
    run.assert_points(INSTRUCTOR, cases.expected({}), f"{cases.assignment}, the instructor's answers")
    assert run.result(INSTRUCTOR)["tampering"] == []


@pytest.mark.slow
@pytest.mark.parametrize("cases", ASSIGNMENTS)
def test_release_scores_zero(cases, graded):
    run = graded(cases)
    run.assert_points(RELEASE, cases.expected(dict.fromkeys(cases.points, 0)), f"{cases.assignment}, the release")
    assert run.result(RELEASE)["score"] == 0


@pytest.mark.slow
@pytest.mark.parametrize(("cases", "name"), MISTAKES)
def test_mistake_loses_exactly_its_points(cases, name, graded):
    """Partial credit follows the mistake: only the tests about it lose points."""
    run, student = graded(cases), f"mistake_{name}"
    _, lost = cases.mistakes[name]
    run.assert_points(student, cases.expected(lost), f"{cases.assignment}, {name}")
    assert run.result(student)["tampering"] == [], "an honest mistake is not tampering"


@pytest.mark.slow
@pytest.mark.parametrize(("cases", "name"), SHORTCUTS)
def test_shortcut_to_the_course_package_scores_nothing(cases, name, graded):
    """An answer that reaches the course's own implementation gets no points."""
    _, lost = cases.shortcuts[name]
    graded(cases).assert_points(f"shortcut_{name}", cases.expected(lost), f"{cases.assignment}, {name}")


@pytest.mark.slow
@pytest.mark.parametrize(("cases", "name"), SHORTCUT_REPORTS)
def test_shortcut_is_named_in_the_tamper_report(cases, name, graded):
    """The instructor sees the attempt: the tamper report names the course package."""
    tampering = graded(cases).result(f"shortcut_{name}")["tampering"]
    assert any("course" in json.dumps(finding) for finding in tampering), (
        f"the tamper report does not name the attempt to use the course package: {tampering}"
    )


@pytest.mark.slow
@pytest.mark.parametrize(("cases", "name"), VISIBLE_PASS)
def test_only_the_hidden_tests_catch(cases, name, released, tmp_path):
    """The released tests let this mistake through: the hidden tests are what catch it."""
    release_nb = released(cases)
    replaced, lost = cases.mistakes[name]
    answers = {**source_solutions(cases.source_nb), **replaced}
    notebook = fill_solutions(release_nb, answers, tmp_path / release_nb.name)
    assert run_tests(notebook) == dict.fromkeys(cases.points, True)
    assert lost, f"{name} loses no points: nothing for the hidden tests to catch"


def test_discovers_every_assignment():
    """Each assignment in grading/source has its case file (a new one cannot go untested)."""
    sources = sorted(p.name for p in (GRADING / "source").iterdir() if p.is_dir())
    assert sorted(BY_NAME) == sources
