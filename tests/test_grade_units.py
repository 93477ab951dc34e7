"""Fast tests of course.grade's pieces: no kernels, no nbgrader runs."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course.errors import CourseError
from course.grade import feedback, scoring, tamper
from course.grade.cli import add_arguments, settings_from_args
from course.grade.gradebook import GradebookLock, describe, sqlite_path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "grade" / "ps_fixture" / "ps_fixture.ipynb"


def test_import_is_instant_and_light():
    heavy = "('nbgrader', 'torch', 'nbclient', 'jupyter_client')"
    code = f"import sys, course.grade; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_arguments_and_defaults():
    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["ps1", "--jobs", "3", "--force", "--no-sandbox", "--timeout", "5", "--course-dir", "x"])
    settings = settings_from_args(args)
    assert (settings.assignment, settings.jobs, settings.force, settings.sandbox, settings.timeout) == (
        "ps1",
        3,
        True,
        False,
        5.0,
    )
    defaults = settings_from_args(parser.parse_args(["ps1"]))
    assert defaults.sandbox and not defaults.force and defaults.jobs >= 1
    with pytest.raises(CourseError):
        settings_from_args(parser.parse_args(["ps1", "--jobs", "0"]))


# -- tampering ---------------------------------------------------------------


def released():
    return nbformat.read(FIXTURE, as_version=4)


def find(nb, grade_id):
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_honest_edits_are_not_tampering():
    ref, nb = released(), released()
    nb.cells[find(nb, "relu")].source = "def relu(x):\n    return x.clamp(min=0)"
    nb.cells.append(nbformat.v4.new_code_cell("print('my scratch cell')"))
    nb.cells[find(nb, "test_relu")].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi")]
    nb.cells[find(nb, "test_labels")].source += "\n"  # an editor adding a trailing newline
    assert tamper.find_tampering(ref, nb) == []


def test_each_kind_of_tampering_is_found():
    ref, nb = released(), released()
    del nb.cells[find(nb, "test_labels")]
    nb.cells[find(nb, "test_relu")].source = "pass"
    nb.cells[find(nb, "test_normalize")].metadata.nbgrader["points"] = 50
    nb.cells[find(nb, "normalize")].metadata.nbgrader["solution"] = False
    nb.cells.append(nbformat.from_dict(json.loads(json.dumps(nb.cells[find(nb, "test_relu_hidden")]))))
    nb.cells[find(nb, "test_pick_device")].metadata.nbgrader["grade_id"] = "mine"
    found = {(f["kind"], f["grade_id"]) for f in tamper.find_tampering(ref, nb, "ps")}
    assert found == {
        ("deleted", "test_labels"),
        ("edited", "test_relu"),
        ("metadata", "test_normalize"),
        ("metadata", "normalize"),
        ("duplicated", "test_relu_hidden"),
        ("unknown-id", "mine"),
        ("deleted", "test_pick_device"),
    }
    assert tamper.summarize(tamper.find_tampering(ref, nb)).startswith("2 deleted")


# -- scoring -----------------------------------------------------------------


@pytest.mark.parametrize(
    "code, words",
    [
        (None, "stopped responding"),
        (0, "status 0"),
        (3, "status 3"),
        (-signal.SIGKILL, "memory"),
        (-signal.SIGSEGV, "segmentation fault"),
        (-signal.SIGXCPU, "CPU time limit of 60 s"),
        (-signal.SIGXFSZ, "larger than the limit of 8 MB"),
    ],
)
def test_describe_exit(code, words):
    assert words in scoring.describe_exit(code, cpu=60, file_mb=8)


def test_cell_status_comes_from_the_grader_not_from_exception_names():
    """Issue 14 item 8: a student's exception class named CellTimeoutError is a failure, not a timeout."""
    forged = {
        "outputs": [
            {"output_type": "error", "ename": scoring.TIMEOUT, "evalue": "\x1b[2K\x1b[1A0 failed"},
        ]
    }
    assert scoring.cell_status(forged, 0, 1)[0] == "failed"
    event = {"status": "timeout", "message": "CellTimeoutError: ran longer than 5 s"}
    assert scoring.cell_status(forged, 0, 1, event) == ("timeout", "CellTimeoutError: ran longer than 5 s")
    assert scoring.cell_status({"outputs": []}, 1, 1) == ("passed", "")
    assert scoring.cell_status({"outputs": []}, 0.5, 1)[0] == "partial"
    assert scoring.cell_status({"outputs": []}, None, 1)[0] == "manual"
    # nbgrader stores 0.0 for a written answer waiting for a human: the gradebook's flag decides.
    assert scoring.cell_status({"outputs": []}, 0.0, 2, manual=True)[0] == "manual"


def test_safe_text_escapes_terminal_control():
    from course.grade.text import safe_text

    evil = "ok\x1b[2K\x1b[1A\rgraded 30 submission(s); 0 failed\u202e\x07"
    shown = safe_text(evil)
    assert shown.isprintable() and "\x1b" not in shown and "\r" not in shown
    assert "\\x1b[2K" in shown and "\\u202e" in shown
    assert len(safe_text("x" * 1000, limit=50)) == 50


def test_stderr_alone_does_not_zero_but_errors_do():
    nb = released()
    cell = nb.cells[find(nb, "test_normalize")]
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something\n")]
    assert scoring.autograde_score(cell) == (2.0, 2.0)
    assert scoring.autograde_score(cell, stderr_fails=True) == (0, 2.0)
    from nbgrader.utils import determine_grade

    assert determine_grade(cell) == (0, 2.0)  # plain nbgrader
    cell.outputs.append(nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=[]))
    assert scoring.autograde_score(cell) == (0, 2.0)


def test_displayed_results_never_grant_points_to_a_failing_test():
    """Issue 14 item 3: ``sys.displayhook('ok')`` inside an answer, then the test fails."""
    nb = released()
    cell = nb.cells[find(nb, "test_normalize")]
    shown = nbformat.v4.new_output("execute_result", data={"text/plain": "'ok'"}, execution_count=3)
    error = nbformat.v4.new_output("error", ename="AssertionError", evalue="wrong", traceback=[])
    cell.outputs = [shown, error]
    from nbgrader.utils import determine_grade

    assert determine_grade(cell) == (2.0, 2.0)  # plain nbgrader: full points for a failing test
    assert scoring.autograde_score(cell) == (0.0, 2.0)
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "1000"}, execution_count=3)]
    assert scoring.autograde_score(cell) == (2.0, 2.0)  # a big number grants no more than a pass
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "0.5"}, execution_count=3)]
    assert scoring.autograde_score(cell) == (0.5, 2.0)  # nbgrader's partial credit still works
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "-5"}, execution_count=3)]
    assert scoring.autograde_score(cell) == (0.0, 2.0)


# -- feedback ----------------------------------------------------------------


def test_hidden_test_lines_leave_tracebacks_but_messages_stay():
    nb = released()
    cell = nb.cells[find(nb, "test_relu_hidden")]
    secret = feedback.hidden_lines(cell.source)
    assert 'assert type(y) is torch.Tensor, "relu must return a plain torch.Tensor"' in secret
    traceback = [
        "\x1b[31m-----\x1b[39m",
        "\x1b[31mAssertionError\x1b[39m   Traceback (most recent call last)",
        "\x1b[36mCell\x1b[39m \x1b[32mIn[7]\x1b[39m, line 5\n----> 5 assert type(y) is torch.Tensor",
        "\x1b[36mCell\x1b[39m \x1b[32mIn[3]\x1b[39m, line 2, in relu(x)\n----> 2 return x.foo",
        "File /somewhere/else.py:3\n" + secret[2],
        "\x1b[31mAssertionError\x1b[39m: relu is wrong on a grid",
    ]
    kept = feedback.scrub_traceback(traceback, 7, secret)
    assert feedback.HIDDEN_NOTE in kept
    assert not any("In[7]" in feedback.strip_ansi(k) for k in kept)
    assert any("In[3]" in feedback.strip_ansi(k) for k in kept)  # the student's own frame stays
    assert not any(secret[2] in k for k in kept)
    assert kept[-1].endswith("relu is wrong on a grid")


def test_hide_hidden_tests_preprocessor():
    nb = released()
    cell = nb.cells[find(nb, "test_relu_hidden")]
    cell.execution_count = 4
    cell.outputs = [
        nbformat.v4.new_output(
            "error",
            ename="AssertionError",
            evalue="relu is wrong on a grid",
            traceback=[
                "Cell In[4], line 6\n----> 6 assert torch.equal(y, ...)",
                "AssertionError: relu is wrong on a grid",
            ],
        )
    ]
    step = feedback.hide_hidden_tests_class()()
    out, _ = step.preprocess(nb, {})
    cell = out.cells[find(out, "test_relu_hidden")]
    assert "HIDDEN" not in cell.source and "type(y) is torch.Tensor" not in cell.source
    assert cell.outputs[0].traceback == [feedback.HIDDEN_NOTE, "AssertionError: relu is wrong on a grid"]


# -- notebooks that are not ----------------------------------------------------


def test_notebook_problems(tmp_path):
    from course.grade.preprocessors import notebook_problem

    good = tmp_path / "good.ipynb"
    good.write_bytes(FIXTURE.read_bytes())
    assert notebook_problem(good) is None
    junk = tmp_path / "junk.ipynb"
    junk.write_text("{not json")
    assert "not valid JSON" in notebook_problem(junk)
    future = tmp_path / "future.ipynb"
    data = json.loads(FIXTURE.read_text())
    data["nbformat"] = 5
    future.write_text(json.dumps(data))
    assert "version is 5" in notebook_problem(future)
    listy = tmp_path / "list.ipynb"
    listy.write_text("[1, 2]")
    assert "no list of cells" in notebook_problem(listy)


# -- gradebook helpers ---------------------------------------------------------


def test_db_url_helpers():
    assert sqlite_path("sqlite:////a/b/gradebook.db") == Path("/a/b/gradebook.db")
    assert sqlite_path("postgresql://u:p@h/db") is None
    assert describe("postgresql://grader:secret@localhost/db") == "postgresql://grader:***@localhost/db"


def _hold(path: str, seconds: float, started) -> None:
    lock = GradebookLock(path)
    with lock:
        started.set()
        time.sleep(seconds)


def test_gradebook_lock_excludes_other_processes(tmp_path):
    path = str(tmp_path / "lock")
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=_hold, args=(path, 1.0, started))
    proc.start()
    assert started.wait(60)
    before = time.monotonic()
    lock = GradebookLock(path)
    with lock, lock:  # re-entrant within one process
        waited = time.monotonic() - before
    proc.join()
    assert waited > 0.5


def test_config_file_settings(tmp_path):
    from course.grade.config import Settings, apply_config_file

    class App:
        config = {"CourseGrade": {"memory_mb": 512, "show_hidden_tests": True, "preload": ["torch"]}}

    settings = apply_config_file(Settings(course_dir=tmp_path, assignment="a"), App())
    assert settings.limits.memory_mb == 512 and settings.show_hidden_tests and settings.preload == ["torch"]
    App.config = {"CourseGrade": {"memroy_mb": 1}}
    with pytest.raises(CourseError, match="memroy_mb"):
        apply_config_file(Settings(course_dir=tmp_path, assignment="a"), App())
    App.config = {"CourseGrade": {"memory_mb": "lots"}}  # typed traits: one clear line
    with pytest.raises(CourseError, match="memory_mb.*expected an int"):
        apply_config_file(Settings(course_dir=tmp_path, assignment="a"), App())
    from course.grade.config import course_grade_class

    documented = course_grade_class().class_traits(config=True)
    assert {"blocked_packages", "submission_seconds", "max_cells", "uid_base"} <= set(documented)
    assert all(trait.help for trait in documented.values())


def test_find_course_dir(tmp_path, monkeypatch):
    from course.grade.config import find_course_dir

    (tmp_path / "grading" / "source").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert find_course_dir(None) == tmp_path / "grading"
    with pytest.raises(CourseError, match="does not exist"):
        find_course_dir(tmp_path / "nope")
    with pytest.raises(CourseError, match="not an nbgrader course"):
        find_course_dir(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox probe needs root")
def test_sandbox_probe_and_leftover_killer():
    import threading

    from course.grade.isolation import sandbox

    assert sandbox.unavailable_reason() is None
    uid = 2_099_999_999
    stray = subprocess.Popen(  # a process of a sandbox uid that outlived its kernel
        [sys.executable, "-c", f"import os, time; os.setresuid({uid}, {uid}, {uid}); time.sleep(60)"]
    )
    threading.Thread(target=stray.wait, daemon=True).start()  # its parent reaps it once killed
    deadline = time.monotonic() + 30
    while not sandbox.processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.processes_of(uid)
    assert sandbox.kill_leftovers_of(uid, patience=30)
    assert stray.wait() == -signal.SIGKILL


def test_supervisor_mirrors_sigkill_as_sigkill():
    """Issue 14 item 14: signal.signal(SIGKILL, ...) raises, so an OOM kill once read "status 1"."""
    from course.grade.isolation.zygote import _die_of

    for signum in (signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                _die_of(signum)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signum
    assert "memory" in scoring.describe_exit(-signal.SIGKILL)


def test_blocked_packages_guard_refuses_every_import_route(tmp_path):
    """Issue 14 item 15, in a child process: import, importlib, __import__, sys.modules, each reported."""
    code = """
import importlib, os, sys
import course.grade.isolation.kernel_io
from course.grade.isolation import guard
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
os.dup2(log, 2)
guard.install(["course"])
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # as ipykernel does: fd 2 goes elsewhere
real = [m for m in sys.modules if m.partition(".")[0] == "course" and not isinstance(sys.modules[m], guard.Tripwire)]
print(sorted(real))
print(sys.modules[guard.KERNEL_IO_ALIAS].__name__)
seen = 0
for attempt in ("import course.pipelines", "importlib.import_module('cour' + 'se.train')",
                "__import__('course').pipelines", "sys.modules['course'].__path__", "import course; course.train"):
    try:
        exec(attempt)
        print("REACHED")
    except (ModuleNotFoundError, AttributeError):
        reported = open(sys.argv[1]).read().count("blocked import of course")
        print("refused", "reported" if reported > seen else "UNREPORTED")
        seen = reported
import inspect, json
inspect._filesbymodname["course"] = "/the/real/course/__init__.py"  # as in a zygote that had mapped it
inspect.getmodule(json.dumps)  # scans sys.modules: the tripwire passes, unharmed and unreported
getattr(sys.modules["course"], "anything", None)
try:
    open(sys.argv[2])
except OSError:
    pass
print("json still imports")
"""
    log = tmp_path / "kernel.log"
    import course.pipelines

    source = course.pipelines.__file__
    out = subprocess.run(
        [sys.executable, "-c", code, str(log), source], capture_output=True, text=True, check=True
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "[]" and lines[1] == "course.grade.isolation.kernel_io"
    assert lines[2:7] == ["refused reported"] * 5
    assert lines[7] == "json still imports"
    from course.grade.isolation.guard import attempts, reads

    assert set(attempts(log.read_text())) == {"course"}
    assert reads(log.read_text()) == [source]
