"""The nbgrader pieces ``course grade`` adds or swaps, all subclasses of nbgrader's own.

nbgrader's ``Autograde`` converter runs two lists of preprocessors on each
submitted notebook: *sanitize* (clear outputs, de-duplicate ids, restore
the instructor's cells from the gradebook) and *autograde* (execute, limit
output, save scores, late penalties).  :class:`CourseAutograde` keeps those
lists, as configured in ``nbgrader_config.py``, and swaps a few entries:

=========================  ===============================================
``RestoreReleasedCells``   new, first: reports tampering against the
                           released notebook, then puts back the released
                           nbgrader metadata and source of locked and test
                           cells, so nbgrader's ``OverwriteCells`` restores
                           the instructor's tests (hidden ones included)
                           instead of crashing on altered metadata
``OverwriteCells``         with ``add_missing_cells``: deleted tests come
                           back and run
``Execute``                :class:`~course.grade.execute.SandboxExecute`
``SaveAutoGrades``         :class:`CourseSaveAutoGrades`: stderr alone
                           does not zero a test (see scoring)
=========================  ===============================================

Every step that touches the gradebook runs under the gradebook lock
(:func:`locked_class`), so parallel workers write one at a time.

Classes are built on first use (they subclass nbgrader, which is heavy to
import) and keep nbgrader's class names where they replace one, so
configuration written for nbgrader's class still applies.
"""

from __future__ import annotations

import copy
import functools
import json
import os

from course.grade import gradebook, scoring, tamper
from course.grade.records import SKIP, record

#: Larger submitted notebooks are refused rather than loaded.
MAX_NOTEBOOK_BYTES = 200 * 1024 * 1024


def notebook_problem(path: str | os.PathLike, max_cells: int = 500) -> str | None:
    """Why a submitted file cannot be graded as a notebook, or None if it can.

    The file is opened without following a link and without blocking, and
    read only when it is a regular file within the size limit.
    """
    import nbformat

    from course.grade.safeio import open_regular

    fd = open_regular(path)
    if fd is None:
        return "the file is not a regular file (a link, FIFO or device), so it was not read"
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(fd).st_size
        if size > MAX_NOTEBOOK_BYTES:
            return f"the file is {size // 2**20} MB, more than the {MAX_NOTEBOOK_BYTES // 2**20} MB a notebook may have"
        raw = handle.read(MAX_NOTEBOOK_BYTES + 1)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"the file is not a notebook: it is not valid JSON ({error})"
    if not isinstance(data, dict) or not isinstance(data.get("cells", data.get("worksheets")), list):
        return "the file is not a notebook: it has no list of cells"
    major, minor = data.get("nbformat"), data.get("nbformat_minor")
    if major not in (3, 4):
        return f"the notebook format version is {major}.{minor}; Jupyter notebooks are version 4"
    code_cells = sum(1 for c in data.get("cells", []) if isinstance(c, dict) and c.get("cell_type") == "code")
    if max_cells and code_cells > max_cells:
        return f"the notebook has {code_cells} code cells, more than the {max_cells} a submission may have"
    try:
        nbformat.reads(raw.decode(), as_version=4)
    except Exception as error:
        return f"the notebook cannot be read: {type(error).__name__}: {error}"
    return None


@functools.cache
def locked_class(cls: type) -> type:
    """A subclass of ``cls`` whose ``preprocess`` holds the gradebook lock (one per class)."""
    if getattr(cls, "_holds_gradebook_lock", False):
        return cls

    class Locked(cls):
        _holds_gradebook_lock = True

        def preprocess(self, nb, resources):
            with gradebook.locked():
                return super().preprocess(nb, resources)

    Locked.__name__ = cls.__name__
    Locked.__qualname__ = cls.__qualname__
    Locked.__doc__ = f"{cls.__doc__ or cls.__name__} (under the gradebook lock)"
    return Locked


@functools.cache
def restore_released_cells_class() -> type:
    """Build the RestoreReleasedCells preprocessor (see the module docstring)."""
    import nbformat
    from nbgrader.preprocessors import NbGraderPreprocessor

    class RestoreReleasedCells(NbGraderPreprocessor):
        """Report tampering, then undo it from the released notebook."""

        def preprocess(self, nb, resources):
            release = resources["nbgrader"].get("release")
            entry = record(resources)
            if not release or not os.path.exists(release):
                entry["tampering"] = []
                entry["release_missing"] = True
                return nb, resources
            released = nbformat.read(release, as_version=4)
            entry["tampering"] = tamper.find_tampering(released, nb, notebook=resources["nbgrader"]["notebook"])
            # Copies of a cell: keep the last (as nbgrader's DeduplicateIds
            # does) and make the others plain cells, metadata and all.
            last = {}
            for index, cell in enumerate(nb.cells):
                grade_id = tamper.nbgrader_meta(cell).get("grade_id")
                if grade_id:
                    last[grade_id] = index
            for index, cell in enumerate(nb.cells):
                grade_id = tamper.nbgrader_meta(cell).get("grade_id")
                if grade_id and last[grade_id] != index:
                    del cell.metadata["nbgrader"]
            by_id = {}
            for cell in released.cells:
                grade_id = tamper.nbgrader_meta(cell).get("grade_id")
                if grade_id:
                    by_id[grade_id] = cell
            for index, cell in enumerate(nb.cells):
                grade_id = tamper.nbgrader_meta(cell).get("grade_id")
                if not grade_id:
                    continue
                ref = by_id.get(grade_id)
                if ref is None:
                    # An id the release never had: just an ordinary cell now.
                    del cell.metadata["nbgrader"]
                elif tamper.is_protected(tamper.nbgrader_meta(ref)):
                    fresh = copy.deepcopy(ref)
                    if fresh.cell_type == "code":
                        fresh.outputs, fresh.execution_count = [], None
                    nb.cells[index] = fresh
                else:
                    cell.metadata["nbgrader"] = copy.deepcopy(ref.metadata["nbgrader"])
            return nb, resources

    return RestoreReleasedCells


@functools.cache
def overwrite_cells_class() -> type:
    """Build nbgrader's OverwriteCells with ``add_missing_task_cells`` fixed (same class name).

    nbgrader's ``preprocess_cell`` deletes the ``grade_id`` of a cell that
    has nbgrader metadata but is not in the gradebook (say an ungraded,
    unlocked scratch cell such as ``try_it``), and ``add_missing_task_cells``
    (run with ``add_missing_cells = True``) then reads every cell's
    ``grade_id`` and raises ``KeyError: 'grade_id'``.  Here such cells are
    simply not task cells.
    """
    from nbgrader.preprocessors import OverwriteCells as NbgraderOverwriteCells

    class OverwriteCells(NbgraderOverwriteCells):
        """nbgrader's OverwriteCells; cells without a grade_id are skipped when adding missing task cells."""

        def add_missing_task_cells(self, nb, resources):
            source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
            source_cells = {cell.name: cell for cell in source_nb.source_cells}
            submitted = {tamper.nbgrader_meta(cell).get("grade_id") for cell in nb.cells}
            for task_cell in source_nb.task_cells:
                if task_cell.name not in submitted:
                    cell = self.missing_cell_transform(source_cells[task_cell.name], task_cell.max_score, is_task=True)
                    nb.cells.append(cell)
            return nb, resources

    return OverwriteCells


@functools.cache
def course_save_autogrades_class() -> type:
    """Build CourseSaveAutoGrades: nbgrader's SaveAutoGrades, stderr-tolerant by default."""
    from nbgrader.preprocessors import SaveAutoGrades
    from traitlets import Bool

    class CourseSaveAutoGrades(SaveAutoGrades):
        """Save scores; a test that passed but wrote warnings to stderr keeps its points."""

        stderr_fails = Bool(False, help="score 0 for any stderr output, as plain nbgrader does").tag(config=True)

        def _add_score(self, cell, resources):
            # nbgrader's _add_score, with the score from scoring.autograde_score
            grade = self.gradebook.find_grade(
                cell.metadata["nbgrader"]["grade_id"], self.notebook_id, self.assignment_id, self.student_id
            )
            grade.auto_score, _ = scoring.autograde_score(cell, self.stderr_fails, self.log)
            grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None
            self.gradebook.db.commit()

    return CourseSaveAutoGrades


@functools.cache
def course_autograde_class() -> type:
    """Build CourseAutograde, nbgrader's Autograde converter with the swaps above."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import AssignLatePenalties, Execute, OverwriteCells, SaveAutoGrades

    from course.grade.execute import sandbox_execute_class

    class CourseAutograde(Autograde):
        """Autograde in the sandbox; skip files that are not notebooks; lock the gradebook."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            restore = restore_released_cells_class()
            overwrite = locked_class(overwrite_cells_class())
            sanitize = [overwrite if p is OverwriteCells else p for p in self.sanitize_preprocessors]
            self.sanitize_preprocessors = [restore, *[p for p in sanitize if p is not restore]]
            swaps = {SaveAutoGrades: course_save_autogrades_class()}
            steps = []
            for step in self.autograde_preprocessors:
                if isinstance(step, type) and issubclass(step, Execute):
                    step = sandbox_execute_class()
                step = swaps.get(step, step)
                if step in (AssignLatePenalties, course_save_autogrades_class()):
                    step = locked_class(step)
                steps.append(step)
            self.autograde_preprocessors = steps

        def init_notebooks(self):
            super().init_notebooks()
            for folder, notebooks in self.assignments.items():
                self.assignments[folder] = [path for path in notebooks if os.path.abspath(path) not in SKIP]

        def init_assignment(self, assignment_id, student_id):
            with gradebook.locked():
                super().init_assignment(assignment_id, student_id)

        def init_single_notebook_resources(self, notebook_filename):
            resources = super().init_single_notebook_resources(notebook_filename)
            info = resources["nbgrader"]
            release = self.coursedir.format_path(self.coursedir.release_directory, ".", info["assignment"])
            info["release"] = os.path.join(release, info["notebook"] + ".ipynb")
            return resources

    return CourseAutograde
