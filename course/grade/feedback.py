"""Feedback for students: nbgrader's HTML, without the hidden tests.

nbgrader's ``generate_feedback`` renders the autograded notebook, which
holds the instructor's complete test cells, hidden tests included, and
the tracebacks of failing hidden tests quote their lines.  Here, by
default, cells with hidden tests lose the hidden region (nbgrader's own
``ClearHiddenTests``) *and* the traceback frames that point into the test
cell; the error type and the test's message stay, and so do frames in the
student's own code.  ``--show-hidden-tests`` (or
``c.CourseGrade.show_hidden_tests = True``) shows everything.

A notebook that could not be graded at all (not JSON, unknown nbformat)
gets a short HTML page saying why, in the same place.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
HIDDEN_NOTE = "(the lines of hidden tests are not shown)"


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes."""
    return ANSI.sub("", text)


def hidden_lines(source: str, begin: str = "BEGIN HIDDEN TESTS", end: str = "END HIDDEN TESTS") -> list[str]:
    """The stripped, non-trivial source lines inside hidden-test regions."""
    lines, inside = [], False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside and len(line.strip()) > 6:
            lines.append(line.strip())
    return lines


def scrub_traceback(traceback: list[str], execution_count: int | None, secret_lines: list[str]) -> list[str]:
    """Drop traceback entries showing the test cell's own code or hidden lines.

    IPython writes one entry per frame, headed ``Cell In[N], line L``; the
    frames of the running cell (N = its execution count) are the test
    code.  Entries quoting a hidden line are dropped wherever they come from.
    """
    own = re.compile(rf"^\s*(Cell\s+)?In\s*\[\s*{execution_count}\s*\]") if execution_count else None
    kept: list[str] = []
    note_at = None
    for entry in traceback:
        plain = strip_ansi(entry)
        if (own is not None and own.search(plain)) or any(line in plain for line in secret_lines):
            note_at = len(kept) if note_at is None else note_at
            continue
        kept.append(entry)
    if note_at is not None:
        kept.insert(note_at, HIDDEN_NOTE)
    return kept


def scrub_text(text: str, secret_lines: list[str]) -> str:
    """``text`` with every line that quotes a hidden line replaced by :data:`HIDDEN_NOTE`."""
    if not secret_lines or not any(line in strip_ansi(text) for line in secret_lines):
        return text
    out = []
    for line in text.splitlines(keepends=True):
        if any(secret in strip_ansi(line) for secret in secret_lines):
            line = HIDDEN_NOTE + ("\n" if line.endswith("\n") else "")
        out.append(line)
    return "".join(out)


def scrub_output(output: dict, execution_count: int | None, secret_lines: list[str]) -> None:
    """Remove hidden-test lines from one output in place (text, rich data, errors)."""
    kind = output.get("output_type")
    if kind == "error":
        output["traceback"] = scrub_traceback(output.get("traceback", []), execution_count, secret_lines)
        output["traceback"] = [scrub_text(str(entry), secret_lines) for entry in output["traceback"]]
        if any(line in str(output.get("evalue", "")) for line in secret_lines):
            output["evalue"] = ""
    elif kind == "stream":
        output["text"] = scrub_text(str(output.get("text", "")), secret_lines)
    elif kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        for mime, value in list(data.items()):
            if isinstance(value, str):
                data[mime] = scrub_text(value, secret_lines)
            elif isinstance(value, list):
                data[mime] = [scrub_text(str(v), secret_lines) for v in value]
            elif any(line in json.dumps(value) for line in secret_lines):
                del data[mime]


@functools.cache
def hide_hidden_tests_class():
    """nbgrader's ClearHiddenTests, extended to scrub tracebacks (built lazily)."""
    from nbgrader.preprocessors import ClearHiddenTests

    class HideHiddenTests(ClearHiddenTests):
        """Remove hidden tests from the source, and their lines from every output of every cell.

        Student code can echo a hidden test into any output (a
        ``pre_run_cell`` hook that prints each cell, a traceback, a
        ``print`` of a frame's source): every line of every output that
        quotes a hidden line is replaced by a note, whatever cell it is in.
        """

        def preprocess(self, nb, resources):
            self._secret = []
            for cell in nb.cells:
                if cell.cell_type == "code" and self.begin_test_delimeter in cell.source:
                    self._secret += hidden_lines(cell.source, self.begin_test_delimeter, self.end_test_delimeter)
            return super().preprocess(nb, resources)

        def preprocess_cell(self, cell, resources, cell_index):
            secret = getattr(self, "_secret", [])
            if cell.cell_type == "code":
                own = self.begin_test_delimeter in cell.source
                for output in cell.get("outputs", []):
                    scrub_output(output, cell.get("execution_count") if own else None, secret)
            return super().preprocess_cell(cell, resources, cell_index)

    return HideHiddenTests


@functools.cache
def course_feedback_class():
    """nbgrader's GenerateFeedback, keeping its HTML exporter from one student to the next.

    nbgrader builds a fresh exporter per run, which recompiles the HTML
    templates (~0.3 s); a worker writes feedback for many students.
    """
    from nbconvert.writers import FilesWriter
    from nbgrader.converters import GenerateFeedback

    class CourseFeedback(GenerateFeedback):
        """GenerateFeedback that reuses its exporter across students."""

        _kept_exporter = None

        def start(self):
            if self._kept_exporter is None:
                self._kept_exporter = self.exporter_class(parent=self, config=self.config)
                for step in self.preprocessors:
                    self._kept_exporter.register_preprocessor(step)
            self.init_notebooks()
            self.writer = FilesWriter(parent=self, config=self.config)
            self.exporter = self._kept_exporter
            here = os.getcwd()
            os.chdir(self.coursedir.root)
            try:
                self.convert_notebooks()
            finally:
                os.chdir(here)

    return CourseFeedback


@functools.cache
def _converter(app, show_hidden_tests: bool):
    """This worker's feedback converter, configured once."""
    from nbgrader.preprocessors import GetGrades

    from course.grade.preprocessors import locked_class

    converter = course_feedback_class()(coursedir=app.coursedir, parent=app)
    converter.force = True
    steps = [locked_class(p) if p is GetGrades else p for p in converter.preprocessors]
    if not show_hidden_tests:
        # Right after the grades are read, before anything renders the source.
        steps.insert(1, hide_hidden_tests_class())
    converter.preprocessors = steps
    return converter


def generate_feedback(app, student: str, show_hidden_tests: bool) -> None:
    """Run nbgrader's GenerateFeedback for one student of ``app.coursedir.assignment_id``."""
    converter = _converter(app, show_hidden_tests)
    app.coursedir.student_id = student
    converter.start()


def warm_up(app, show_hidden_tests: bool, notebook: Path) -> None:
    """Render ``notebook`` once, unsaved, so templates and highlighters are ready.

    Runs while the zygote is still importing torch; the first student's
    feedback then costs what every other one does.
    """
    import nbformat

    converter = _converter(app, show_hidden_tests)
    if converter._kept_exporter is None:
        converter._kept_exporter = converter.exporter_class(parent=converter, config=converter.config)
        for step in converter.preprocessors:
            converter._kept_exporter.register_preprocessor(step)
    exporter = converter._kept_exporter
    steps, exporter._preprocessors = exporter._preprocessors, []  # no gradebook, no student
    try:
        nb = nbformat.read(notebook, as_version=4)
        for cell in nb.cells:  # what nbgrader's GetGrades would have added
            meta = cell.metadata.get("nbgrader")
            if meta is not None:
                meta.setdefault("score", 0.0)
                meta.setdefault("points", 0.0)
                meta.setdefault("comment", None)
        info = {"score": 0.0, "max_score": 0.0, "late_penalty": 0.0, "notebook": notebook.stem}
        exporter.from_notebook_node(nb, resources={"nbgrader": info})
    finally:
        exporter._preprocessors = steps


def write_rejection_page(path: Path, student: str, notebook: str, reason: str, max_score: float) -> None:
    """A minimal feedback page for a notebook that could not be graded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(notebook)}: not graded</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>{html.escape(notebook)}</h1>
<p>Student: {html.escape(student)}</p>
<p><strong>Score: 0 / {max_score:g}.</strong> This notebook could not be graded:</p>
<pre>{html.escape(reason)}</pre>
<p>Open it in Jupyter to check that it is the file you meant to submit, fix it, and submit again.</p>
</body></html>
"""
    path.write_text(body)
