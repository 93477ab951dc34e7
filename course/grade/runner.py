"""The coordinator of ``course grade``: check, plan, start workers, report.

::

    course grade ps1            # from the course directory (or ./grading)

1. **Check** (one clear line and exit code 2 on failure, before anything
   is touched): the course directory, the assignment (source/, release/,
   gradebook), the gradebook (present, writable, not locked), at least one
   submission, writable output folders, and the sandbox (root, namespaces).
2. **Plan**: a submission whose JSON result matches the fingerprint of its
   files is already graded and skipped, unless ``--force``.
3. **Grade**: a zygote imports torch once; N worker processes (default:
   one per core) each take the next submission (see
   :mod:`course.grade.worker`); a progress bar shows the rate and ETA.
4. **Report**: the grades CSV from the gradebook, a summary of failures
   and tampering, and the exit code (1 when a submission could not be
   graded; such a submission is retried by the next run).
"""

from __future__ import annotations

import glob
import json
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

from course.errors import CourseError
from course.grade import export
from course.grade.codes import ExitCode
from course.grade.config import Settings, apply_config_file, find_course_dir, load_nbgrader_app
from course.grade.isolation.lifecycle import Kernels
from course.grade.text import safe_text

# --------------------------------------------------------------------------
# checks


def _probe_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and prove a file can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".course-grade-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise CourseError(f"the {what} folder {folder} is not writable ({error.strerror or error})") from None


def private_results(folder: Path) -> None:
    """results/<assignment>/ and what is in it: the instructor's only (0700 folders, 0600 files)."""
    os.chmod(folder, 0o700)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


def check_assignment(app, assignment: str) -> None:
    """The assignment must exist in source/ and have been released."""
    cd = app.coursedir
    source = Path(cd.format_path(cd.source_directory, ".", assignment))
    if not source.is_dir():
        parent = source.parent
        known = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
        raise CourseError(f"unknown assignment {assignment!r}: {parent} has {', '.join(known) or 'no assignments'}")
    release = Path(cd.format_path(cd.release_directory, ".", assignment))
    if not release.is_dir():
        raise CourseError(
            f"{release} is missing: run `nbgrader generate_assignment {assignment}` first "
            "(tampering is checked against the released notebooks)"
        )


def find_submissions(app, assignment: str) -> list[str]:
    """Student ids with a ``submitted/<student>/<assignment>/`` folder."""
    cd = app.coursedir
    pattern = cd.format_path(cd.submitted_directory, "*", assignment)
    found = []
    for path in sorted(glob.glob(pattern)):
        # lexists, not isdir: a link or a file in place of a folder is found,
        # so that it is rejected with its reason rather than silently skipped.
        if os.path.lexists(path):
            found.append(Path(path).parent.name)
    if not found:
        raise CourseError(
            f"no submissions of {assignment!r} in {cd.format_path(cd.submitted_directory, '.', '.')}: "
            f"collect them first (nbgrader collect {assignment} / zip_collect)"
        )
    return found


def already_graded(app, settings: Settings, student: str) -> bool:
    """A JSON result exists, says graded, matches the files, and the autograded copy is there."""
    from course.grade.submissions import fingerprint, submission_dir

    result = export.read_json(settings.submission_result(student))
    if not result or result.get("status") != "graded":
        return False
    cd = app.coursedir
    autograded = Path(cd.format_path(cd.autograded_directory, student, settings.assignment))
    if result.get("autograded", True) and not autograded.is_dir():
        return False  # a rejected or empty submission has no autograded copy, and needs none
    return result.get("fingerprint") == fingerprint(submission_dir(app, student, settings.assignment))


# --------------------------------------------------------------------------
# running


def _progress(total: int, settings: Settings):
    """A tqdm bar with rate and ETA on stderr (a no-op object when disabled)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=f"grading {settings.assignment}",
        unit="sub",
        file=sys.stderr,
        disable=not settings.progress or total == 0,
        dynamic_ncols=True,
    )


def run_workers(
    settings: Settings, run_dir: str, notebooks: list[str], todo: list[str], zygote, timeline: dict, started: float
) -> dict[str, dict]:
    """Grade ``todo`` with ``settings.jobs`` worker processes; return results by student.

    ``timeline`` receives when workers were ready and the first result came
    (seconds since ``started``, a ``time.time()``).
    """
    import multiprocessing as mp

    from course.grade.worker import worker_main

    # fork: workers start with nbgrader already imported by this process.
    # They are forked before this process starts any thread (the queue's
    # feeder, the progress bar, the zygote watcher); spawn elsewhere.
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    jobs = max(1, min(settings.jobs, len(todo)))

    def launch(slot: int):
        proc = ctx.Process(target=worker_main, args=(slot, settings, run_dir, notebooks, tasks, results), daemon=True)
        proc.start()
        return proc

    workers = {slot: launch(slot) for slot in range(jobs)}
    for student in todo:
        tasks.put(student)
    _watch_zygote(zygote, timeline, started)
    busy: dict[int, str] = {}
    since: dict[int, float] = {}
    deadline = settings.watchdog_seconds()
    restarts = 0
    done: dict[str, dict] = {}
    bar = _progress(len(todo), settings)
    try:
        while len(done) < len(todo):
            try:
                kind, slot, student, summary = results.get(timeout=1.0)
            except queue.Empty:
                if zygote.poll() is not None:
                    log = settings.results_dir / "grade.log"
                    raise CourseError(f"the kernel zygote exited (status {zygote.returncode}); see {log}") from None
                for slot, proc in list(workers.items()):
                    stuck = slot in busy and time.monotonic() - since.get(slot, time.monotonic()) > deadline
                    if stuck and proc.exitcode is None:
                        # The watchdog: no submission may hold a worker forever.
                        proc.kill()
                        proc.join(timeout=10)
                        why = f"grading it took longer than {deadline:.0f} s, so the worker was stopped"
                    elif proc.exitcode is None or proc.exitcode == 0:
                        continue
                    else:
                        why = f"the grading worker crashed (exit code {proc.exitcode})"
                    student = busy.pop(slot, None)
                    if student is not None and student not in done:
                        done[student] = {"student_id": student, "status": "error", "error": why}
                        bar.update(1)
                    if restarts >= 2 * jobs:
                        raise CourseError("grading workers keep crashing; see grade.log") from None
                    restarts += 1
                    workers[slot] = launch(slot)
                continue
            if kind == "ready":
                timeline.setdefault("workers_ready", []).append(round(summary - started, 3))
            elif kind == "start":
                busy[slot] = student
                since[slot] = time.monotonic()
                bar.set_postfix_str(student, refresh=False)
            else:
                busy.pop(slot, None)
                done[student] = summary
                timeline.setdefault("first_done", round(time.time() - started, 3))
                bar.update(1)
    finally:
        bar.close()
        for _ in workers:
            tasks.put(None)
        for proc in workers.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return done


def _summary_lines(
    settings: Settings, done: dict[str, dict], skipped: list[str], seconds: float, limits_note: str = ""
) -> list[str]:
    """What the instructor reads at the end of a run.

    Every status comes from the grader's own records; every string a
    student could have chosen (ids, file names, error messages) is escaped
    with :func:`~course.grade.text.safe_text`, so a submission cannot
    rewrite the instructor's terminal.
    """
    graded = [r for r in done.values() if r.get("status") == "graded"]
    failed = {s: r for s, r in done.items() if r.get("status") != "graded"}
    mode = "sandbox on" if settings.sandbox else "SANDBOX OFF"
    lines = [
        f"graded {len(graded)} submission(s) of {settings.assignment} in {seconds:.1f} s "
        f"({settings.jobs} worker(s), {mode}); skipped {len(skipped)} already graded; {len(failed)} failed"
    ]
    if limits_note:
        lines.append(f"kernel limits: {limits_note}")
    for student, result in sorted(failed.items()):
        lines.append(f"  not graded: {safe_text(student)}: {safe_text(result.get('error', 'unknown error'))}")
    for student, result in sorted(done.items()):
        problems = []
        if result.get("late_penalty"):
            problems.append(f"late: -{result['late_penalty']:g} points")
        for nb in result.get("notebooks", []):
            if nb.get("status") in ("rejected", "missing"):
                problems.append(f"{nb['name']} {nb['status']}: {nb['reason']}")
            for event in nb.get("kernel_events", []):
                if event["status"] in ("timeout", "kernel-died", "tampered", "budget"):
                    problems.append(f"{event['cell']}: {event['message']}")
            used = nb.get("resources") or {}
            if used.get("oom_kills"):
                problems.append(
                    f"{nb['name']}: its processes hit their memory limit of {used['memory_limit_mb']:g} MiB "
                    f"({used['oom_kills']} killed by the out-of-memory killer)"
                )
        if result.get("tampering"):
            from course.grade.tamper import summarize

            problems.append("tampering: " + summarize(result["tampering"]))
        if problems:
            lines.append(f"  {safe_text(student)}: " + safe_text("; ".join(problems), limit=600))
    lines.append(f"results: {settings.results_dir} (grades.csv, submissions/<student>.json, grade.log)")
    return lines


def ungraded_students(settings: Settings, students: list[str], done: dict[str, dict]) -> dict[str, str]:
    """Students without a graded result (this run's or an earlier one's) -> why, for the CSV."""
    out = {}
    for student in students:
        result = done.get(student) or export.read_json(settings.submission_result(student))
        if not result:
            out[student] = "not graded yet"
        elif result.get("status") != "graded":
            out[student] = "not graded: " + safe_text(result.get("error", "unknown error"))
    return out


def _watch_zygote(zygote, timeline: dict, started: float) -> None:
    """Record when the zygote has finished preloading (its one stdout line)."""
    import threading

    def read() -> None:
        line = zygote.stdout.readline()
        try:
            info = json.loads(line)
        except ValueError:
            return
        timeline["zygote_ready"] = round(time.time() - started, 3)
        timeline["zygote_preload"] = info.get("seconds")
        timeline["preload_failed"] = info.get("failed", {})

    threading.Thread(target=read, daemon=True).start()


def _skip_slow_optional_imports() -> None:
    """Keep jsonschema from compiling the rfc3987_syntax grammar (~2-3 s).

    nbformat's validator imports jsonschema, whose optional "iri" format
    checker imports rfc3987_syntax, which builds a lark grammar at import
    time.  No notebook schema uses that format, so this process (and the
    workers forked from it) declare the module absent; jsonschema then
    simply goes without that checker, as it does when it is not installed.
    """
    if "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None


def grade(settings: Settings) -> int:
    """Run ``course grade`` with resolved settings; return the exit code."""
    _skip_slow_optional_imports()
    started = time.perf_counter()
    wall_start = time.time()
    timeline: dict = {}
    settings.course_dir = find_course_dir(settings.course_dir)
    if settings.sandbox:
        from course.grade.isolation.sandbox import unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise CourseError(f"{reason}; pass --no-sandbox to grade without isolation (only for trusted code)")
    resolve_settings(settings)
    kernels = Kernels(settings)
    try:
        return _grade(settings, kernels, timeline, started, wall_start)
    finally:
        kernels.close(settings)


def resolve_settings(settings: Settings) -> Settings:
    """Apply ``c.CourseGrade`` from the course's nbgrader_config.py, once, before anything starts."""
    from course.grade.config import read_config_file

    class Holder:
        config = read_config_file(settings.course_dir)

    return apply_config_file(settings, Holder())


def _grade(settings: Settings, kernels: Kernels, timeline: dict, started: float, wall_start: float) -> int:
    """Checks, plan, workers, report (the zygote is already importing torch)."""
    app = load_nbgrader_app(settings.course_dir, log_level="ERROR")
    if settings.db_url:
        app.coursedir.db_url = settings.db_url
    settings.db_url = app.coursedir.db_url
    cd = app.coursedir

    check_assignment(app, settings.assignment)
    from course.grade.gradebook import check_gradebook

    notebooks = check_gradebook(settings.db_url, cd.course_id, settings.assignment)
    students = find_submissions(app, settings.assignment)
    _probe_writable(Path(cd.format_path(cd.feedback_directory, ".", ".")), "feedback")
    _probe_writable(Path(cd.format_path(cd.autograded_directory, ".", ".")), "autograded")
    _probe_writable(settings.results_dir, "results")
    private_results(settings.results_dir)

    skipped = [] if settings.force else [s for s in students if already_graded(app, settings, s)]
    todo = [s for s in students if s not in skipped]
    done: dict[str, dict] = {}
    if todo:
        settings.jobs = max(1, min(settings.jobs, len(todo)))
        timeline["checks_done"] = round(time.time() - wall_start, 3)
        timeline["preload_modules"] = kernels.modules
        uid_range = None
        if settings.sandbox:
            from course.grade.isolation import uids

            # Held until the workers are gone; another run picks the next range.
            uid_range = uids.allocate(settings.uid_base, settings.jobs)
            settings.uid_base = uid_range.base
        try:
            done = run_workers(settings, kernels.run_dir, notebooks, todo, kernels.zygote, timeline, wall_start)
        finally:
            if uid_range is not None:
                uid_range.release()
    timeline["finished"] = round(time.time() - wall_start, 3)
    export.write_json(
        settings.results_dir / "run.json",
        {
            "assignment": settings.assignment,
            "jobs": settings.jobs,
            "sandbox": settings.sandbox,
            "graded": sorted(done),
            "skipped": skipped,
            "uid_base": settings.uid_base if settings.sandbox else None,
            "kernel_limits": kernels.limits_note,
            "timeline": timeline,
        },
    )
    ungraded = ungraded_students(settings, students, done)
    csv_path = settings.results_dir / "grades.csv"
    rows = export.write_csv(settings.db_url, cd.course_id, settings.assignment, csv_path, ungraded)
    for line in _summary_lines(settings, done, skipped, time.perf_counter() - started, kernels.limits_note):
        print(line)
    print(f"grades.csv: {rows} student(s); feedback: {cd.format_path(cd.feedback_directory, '*', settings.assignment)}")
    if any(r.get("status") != "graded" for r in done.values()):
        return ExitCode.NOT_ALL_GRADED
    return ExitCode.OK
