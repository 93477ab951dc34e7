"""One grading worker: a process that grades submissions one after another.

Per submission (:func:`grade_submission`):

1. fingerprint the submitted files (a later run skips an unchanged, graded one);
2. refuse files that are not notebooks (score 0, with the reason);
3. run nbgrader's Autograde converter (:class:`CourseAutograde`): sanitize
   against the instructor's copy, execute in the sandbox, save scores;
4. read the scores back from the gradebook and each test's status from
   the autograded notebook;
5. write the HTML feedback (nbgrader's GenerateFeedback) and the JSON result.

A submission the grader could not process (the kernel would not start,
the gradebook failed) gets no JSON result, so the next run retries it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from course.grade import export, gradebook, scoring
from course.grade.config import Settings, nbgrader_overrides
from course.grade.submissions import fingerprint, inspect_submission, submission_dir

log = logging.getLogger("course.grade")


def _cell_results(nb_path: Path, scores: dict, events: dict) -> list[dict]:
    """Status and message of every graded cell of an autograded notebook.

    ``events`` are what the grader itself saw happen per cell (timeouts,
    kernel deaths, cells not run, tampered kernels), keyed by grade_id: only
    they give a cell a status other than passed/partial/failed/manual, never
    the name of an exception the student's code raised.
    """
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    cells = {}
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id:
            cells[grade_id] = cell
    out = []
    for grade_id, grade in scores.items():
        cell = cells.get(grade_id, {})
        manual = grade.get("needs_manual_grade") and not grade.get("manual")
        status, message = scoring.cell_status(cell, grade["score"], grade["max_score"], events.get(grade_id), manual)
        out.append(
            {
                "grade_id": grade_id,
                "score": grade["score"],
                "max_score": grade["max_score"],
                "status": status,
                "message": message,
            }
        )
    return out


def new_result(settings: Settings, student: str, folder: Path) -> dict:
    """The skeleton of a submission's JSON result."""
    return {
        "student_id": student,
        "assignment": settings.assignment,
        "status": "graded",
        "graded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": fingerprint(folder),
        "sandbox": settings.sandbox,
        "score": 0.0,
        "max_score": 0.0,
        "notebooks": [],
        "tampering": [],
        "timing": {},
    }


def run_autograde(app, student: str, assignment: str) -> str | None:
    """nbgrader's Autograde converter (our subclass) on one student; the error, if any.

    nbgrader logs what went wrong and raises a generic exception at the
    end; the last error it logged is the useful message.
    """
    from nbgrader.converters import NbGraderException

    from course.grade.preprocessors import course_autograde_class

    cd = app.coursedir
    cd.student_id, cd.assignment_id, cd.notebook_id = student, assignment, "*"
    converter = course_autograde_class()(coursedir=cd, parent=app)
    converter.force = True
    try:
        converter.start()
    except NbGraderException:
        return _last_error(app) or "nbgrader could not autograde this submission (see grade.log)"
    return None


def notebook_entry(name: str, scores: dict, autograded: Path, files: dict, rejected: dict, info: dict) -> dict:
    """One notebook's part of the result: its score, status, tests and kernel events."""
    entry = {
        "name": name,
        "score": sum(g["score"] or 0 for g in scores.values()),
        "max_score": sum(g["max_score"] or 0 for g in scores.values()),
    }
    if name in rejected:
        entry.update(status="rejected", reason=rejected[name], cells=[])
    elif name not in files:
        entry.update(status="missing", reason="not submitted", cells=[])
    else:
        events = info.get("events", {})
        entry.update(status="graded", cells=_cell_results(autograded / f"{name}.ipynb", scores, events))
        entry["kernel_events"] = list(events.values())
        if info.get("resources"):
            entry["resources"] = info["resources"]
    return entry


def write_feedback(app, settings: Settings, student: str, result: dict, autograded: Path | None) -> None:
    """nbgrader's feedback for what was graded, a short page for what could not be."""
    from course.grade import feedback

    cd = app.coursedir
    if autograded is not None and autograded.is_dir() and any(autograded.glob("*.ipynb")):
        feedback.generate_feedback(app, student, settings.show_hidden_tests)
    folder = Path(cd.format_path(cd.feedback_directory, student, settings.assignment))
    for nb in result["notebooks"]:
        if nb["status"] in ("rejected", "missing"):
            page = folder / f"{nb['name']}.html"
            feedback.write_rejection_page(page, student, nb["name"], nb["reason"], nb["max_score"])


def grade_submission(app, settings: Settings, notebooks: list[str], student: str) -> dict:
    """Grade one student's submission; return its JSON result (also written to disk).

    ``notebooks`` are the assignment's notebook names from the gradebook.
    A submission holding anything but regular files and folders is
    rejected whole, before any of it is read (see :func:`inspect_submission`).
    """
    from course.grade import preprocessors, records

    started = time.perf_counter()
    waited_before, held_before = gradebook.lock_times()
    cd = app.coursedir
    folder = submission_dir(app, student, settings.assignment)
    result = new_result(settings, student, folder)
    regular, problems = inspect_submission(folder)
    files = {p.stem: p for p in regular if p.parent == folder and p.suffix == ".ipynb"}
    if problems:
        reason = "the submission was rejected: " + "; ".join(problems[:5])
        rejected = {name: reason for name in notebooks}
        result["rejected"] = problems
    else:
        rejected = {name: preprocessors.notebook_problem(path, settings.max_cells) for name, path in files.items()}
        rejected = {name: why for name, why in rejected.items() if why}
    records.RECORDS.clear()
    records.SKIP.clear()
    records.SKIP.update(os.path.abspath(files[name]) for name in rejected if name in files)

    ran_nbgrader = not problems and len(rejected) < len(files)
    if ran_nbgrader:
        error = run_autograde(app, student, settings.assignment)
        if error:
            result.update(status="error", error=error, timing={"total": round(time.perf_counter() - started, 3)})
            return result
    result["autograded"] = ran_nbgrader
    for name in notebooks:
        if name in rejected or name not in files:
            gradebook.zero_notebook(cd.db_url, cd.course_id, settings.assignment, student, name)

    scores = gradebook.read_scores(cd.db_url, cd.course_id, settings.assignment, student)
    autograded = Path(cd.format_path(cd.autograded_directory, student, settings.assignment))
    timing = {"autograde": round(time.perf_counter() - started, 3)}
    for name in notebooks:
        info = records.RECORDS.get((student, name), {})
        entry = notebook_entry(name, scores.get(name, {}), autograded, files, rejected, info)
        result["tampering"] += info.get("tampering", [])
        for key, value in info.get("timing", {}).items():
            timing[key] = round(timing.get(key, 0) + value, 3)
        result["notebooks"].append(entry)
        result["score"] += entry["score"]
        result["max_score"] += entry["max_score"]
    late = gradebook.late_penalty(cd.db_url, cd.course_id, settings.assignment, student)
    if late:
        result["late_penalty"] = late
        result["score_before_penalty"] = result["score"]
        result["score"] = max(0.0, result["score"] - late)

    feedback_started = time.perf_counter()
    write_feedback(app, settings, student, result, autograded if ran_nbgrader else None)
    timing["feedback"] = round(time.perf_counter() - feedback_started, 3)
    timing["total"] = round(time.perf_counter() - started, 3)
    waited, held = gradebook.lock_times()
    timing["gradebook_wait"] = round(waited - waited_before, 3)
    timing["gradebook_held"] = round(held - held_before, 3)
    result["timing"] = timing
    export.write_json(settings.submission_result(student), result)
    return result


class _ErrorCatcher(logging.Handler):
    """Remembers the last ERROR line nbgrader logged (its exceptions are logged, not raised)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        if message.startswith("Traceback"):
            lines = [line for line in message.splitlines() if line.strip()]
            message = lines[-1] if lines else message
        if message and not message.startswith(("There was an error processing", "Please see")):
            self.last = message


_CATCHER = _ErrorCatcher()


def _last_error(app) -> str | None:
    """The last meaningful error nbgrader logged, then forget it."""
    message, _CATCHER.last = _CATCHER.last, None
    return message


def _setup_logging(app, settings: Settings, slot: int) -> None:
    """nbgrader's log and anything printed go to results/<assignment>/grade.log."""
    from course.grade.safeio import private_append

    path = settings.results_dir / "grade.log"
    handler = logging.StreamHandler(os.fdopen(private_append(path), "a", buffering=1))
    handler.setFormatter(logging.Formatter(f"%(asctime)s [worker {slot}] %(levelname)s %(message)s"))
    for logger in (app.log, log, logging.getLogger("traitlets")):
        logger.handlers[:] = [handler, _CATCHER]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers[:] = [handler]
    fd = private_append(path)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def worker_main(slot: int, settings: Settings, run_dir: str, notebooks: list[str], tasks, results) -> None:
    """Entry point of a worker process: grade students from ``tasks`` until None."""
    from course.grade.config import load_nbgrader_app
    from course.grade.gradebook import GradebookLock, set_lock
    from course.grade.isolation import context
    from course.grade.isolation.kernel import ZygoteClient
    from course.grade.isolation.sandbox import kill_leftovers_of

    app = load_nbgrader_app(settings.course_dir, log_level="ERROR")
    app.update_config(nbgrader_overrides(settings))
    if settings.db_url:
        app.coursedir.db_url = settings.db_url
    _setup_logging(app, settings, slot)
    # SQLite has one writer at a time anyway: serialize nbgrader's steps so
    # none of them meets a locked database.  A database server (PostgreSQL)
    # handles concurrent transactions, and each worker writes other rows.
    if gradebook.sqlite_path(app.coursedir.db_url) is not None:
        set_lock(GradebookLock(os.path.join(run_dir, "gradebook.lock")))
    os.chdir(settings.course_dir)
    warm_up(app, settings, notebooks)
    zygote = ZygoteClient(os.path.join(run_dir, "zygote.sock"))
    ctx = kernel_context(app, settings, slot, run_dir, zygote)
    context.install(ctx)
    if settings.sandbox:
        kill_leftovers_of(ctx.uid)  # a previous run killed hard may have left some
    results.put(("ready", slot, None, time.time()))
    while True:
        student = tasks.get()
        if student is None:
            break
        results.put(("start", slot, student, None))
        try:
            summary = grade_submission(app, settings, notebooks, student)
        except Exception as error:
            log.error("grading %s failed:\n%s", student, traceback.format_exc())
            summary = {"student_id": student, "status": "error", "error": f"{type(error).__name__}: {error}"}
        results.put(("done", slot, student, summary))
    zygote.close()
    sys.exit(0)


def warm_up(app, settings: Settings, notebooks: list[str]) -> None:
    """Import and compile what the first submission needs, while the zygote preloads."""
    from course.grade import execute, feedback, preprocessors
    from course.grade.isolation import kernel

    started = time.perf_counter()
    preprocessors.course_autograde_class()
    execute.sandbox_execute_class()
    kernel.sandbox_kernel_manager_class()
    import jupyter_client.asynchronous.client  # noqa: F401
    import nbclient.client  # noqa: F401

    cd = app.coursedir
    release = Path(cd.format_path(cd.release_directory, ".", settings.assignment))
    for name in notebooks[:1]:
        try:
            feedback.warm_up(app, settings.show_hidden_tests, release / f"{name}.ipynb")
        except Exception:  # best effort: the real run reports real problems
            log.warning("feedback warm-up failed:\n%s", traceback.format_exc())
    log.info("warm-up took %.2f s", time.perf_counter() - started)


def kernel_context(app, settings: Settings, slot: int, run_dir: str, zygote):
    """What this worker's kernels are: uid, limits, what they see, their environment."""
    from course.grade.isolation import context

    return context.KernelContext(
        isolate=settings.sandbox,
        slot=slot,
        uid=settings.uid_base + slot,
        run_dir=run_dir,
        zygote=zygote,
        limits=settings.limits,
        threads=context_threads(settings),
        max_output_bytes=settings.max_output_bytes,
        hide=context.hidden_paths(settings.hide),
        protect=protected_paths(app, settings, run_dir) + context.package_dirs(settings.blocked_packages),
        expose=context.exposed_paths(settings.expose, settings.blocked_packages),
        blocked_packages=list(settings.blocked_packages),
        budget_seconds=settings.submission_budget(settings.execute_timeout),
        max_cells=settings.max_cells,
        cgroups=settings.cgroups,
        pass_env=list(settings.pass_env),
    )


def context_threads(settings: Settings) -> int:
    """Threads per kernel: the cores shared among the workers."""
    from course.grade.config import default_jobs

    return max(1, default_jobs() // max(1, settings.jobs))


def protected_paths(app, settings: Settings, run_dir: str) -> list[str]:
    """What no kernel may see: the course, the exchange, the gradebook's folder, the run folder."""
    paths = {str(settings.course_dir), run_dir}
    exchange = app.config.get("Exchange", {}).get("root", "/srv/nbgrader/exchange")
    paths.add(str(exchange))
    db_file = gradebook.sqlite_path(app.coursedir.db_url)
    if db_file is not None:
        paths.add(str(db_file.resolve().parent))
    return sorted(os.path.realpath(p) for p in paths if p)
