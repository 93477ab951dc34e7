"""How a cell's outcome becomes points, with the rules a PyTorch course needs.

nbgrader scores a test cell 0 when it has an error output *or any stderr
output*.  torch and transformers write warnings to stderr while a correct
answer runs (a UserWarning about copying a tensor, a load report, a
progress bar), so with nbgrader's rule a correct answer can score 0.
Here only an error counts; stderr stays visible in the feedback.
Everything else is nbgrader's ``determine_grade``, unchanged (partial
credit from a numeric result included).

When the kernel itself dies (``os._exit``, a segfault, the memory or CPU
limit) or a cell hangs where an interrupt cannot reach it, the cells
already run keep their outputs and scores; the cell that was running and
every cell after it get an error output naming the reason, so they score 0
and the student sees why.
"""

from __future__ import annotations

import signal

#: enames of the error outputs the grader adds to cells (shown in feedback).
#: The JSON status of a cell never comes from these names (a student can
#: raise an exception class of any name): it comes from the grader's own
#: record of what happened (see :func:`cell_status`).
TIMEOUT = "CellTimeoutError"
KERNEL_DIED = "KernelDied"
NOT_RUN = "NotRun"
TAMPERED = "KernelTampered"

#: What a signal that killed a kernel most likely means, for students.
_SIGNAL_REASONS = {
    signal.SIGKILL: "it was killed (SIGKILL), most likely for running out of memory",
    signal.SIGSEGV: "it crashed with a segmentation fault (SIGSEGV)",
    signal.SIGBUS: "it crashed with a bus error (SIGBUS)",
    signal.SIGABRT: "it aborted (SIGABRT)",
    signal.SIGFPE: "it crashed with a floating point exception (SIGFPE)",
    signal.SIGILL: "it crashed with an illegal instruction (SIGILL)",
    signal.SIGXCPU: "it used up its CPU time limit of {cpu} s (SIGXCPU)",
    signal.SIGXFSZ: "it wrote a file larger than the limit of {file_mb} MB (SIGXFSZ)",
}


def describe_exit(returncode: int | None, cpu: int = 0, file_mb: int = 0) -> str:
    """Why the kernel ended, as a phrase: ``Popen``-style return code in."""
    if returncode is None:
        return "it stopped responding"
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        template = _SIGNAL_REASONS.get(signum, f"it was killed by {name}")
        return template.format(cpu=cpu, file_mb=file_mb)
    if returncode == 0:
        return "it exited (status 0: exit(), quit() or os._exit(0))"
    return f"it exited with status {returncode} (os._exit or a crash)"


def is_test_cell(cell: dict) -> bool:
    """An autograder test: a graded code cell that is not a solution (the instructor's code)."""
    meta = (cell.get("metadata") or {}).get("nbgrader") or {}
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def error_output(ename: str, message: str) -> dict:
    """An nbformat error output with a one-line traceback."""
    from nbformat.v4 import new_output

    return new_output("error", ename=ename, evalue=message, traceback=[f"\x1b[0;31m{ename}\x1b[0m: {message}"])


def autograde_score(cell, stderr_fails: bool = False, log=None) -> tuple[float | None, float]:
    """``(score, max_score)`` of a graded cell after execution: an error means 0, always.

    nbgrader's ``determine_grade`` returns at the *first* ``execute_result``
    it meets, before it sees an error that follows, so student code that
    calls ``sys.displayhook("ok")`` inside a test made every failing test
    score full points (and ``sys.displayhook(1000)`` crashed nbgrader).
    Here, for a test cell:

    * any error output scores 0;
    * stderr output scores 0 only with ``stderr_fails`` (plain nbgrader's rule);
    * otherwise nbgrader's partial credit is read from the *last*
      ``execute_result`` (the test cell's own final expression comes after
      anything the student's code displayed while the test ran), clamped to
      ``[0, max_score]``; a non-numeric or absent result means full points.

    So nothing a student's code displays can grant more than a clean pass.
    Solution cells and markdown cells are scored by nbgrader unchanged.
    """
    from nbgrader.utils import determine_grade, is_solution

    max_points = float(cell.metadata["nbgrader"]["points"])
    if cell.get("cell_type") != "code" or is_solution(cell):
        return determine_grade(cell, log)
    outputs = cell.get("outputs", []) or []
    if any(o.get("output_type") == "error" for o in outputs):
        return 0.0, max_points
    if stderr_fails and any(o.get("output_type") == "stream" and o.get("name") == "stderr" for o in outputs):
        return 0.0, max_points
    results = [o for o in outputs if o.get("output_type") == "execute_result"]
    if not results:
        return max_points, max_points
    shown = results[-1].get("data", {}).get("text/plain", "")
    if isinstance(shown, list):
        shown = shown[0] if len(shown) == 1 else ""
    try:
        score = float(shown)
    except (TypeError, ValueError):
        return max_points, max_points
    if score != score:  # NaN
        return 0.0, max_points
    return min(max(score, 0.0), max_points), max_points


def cell_status(
    cell: dict, score: float | None, max_score: float, event: dict | None = None, manual: bool = False
) -> tuple[str, str]:
    """``(status, message)`` of a graded cell after autograding.

    status is one of passed, partial, failed, timeout, kernel-died, not-run,
    tampered (from ``event``, what the grader itself saw happen to this
    cell), or manual (waiting for a human: written answers, solution cells;
    ``manual`` is the gradebook's ``needs_manual_grade``).  An exception the
    student's code raised is a failure whatever its class is called.
    """
    if event:
        return event["status"], event["message"]
    errors = [o for o in cell.get("outputs", []) or [] if o.get("output_type") == "error"]
    if errors:
        error = errors[0]
        message = f"{error.get('ename', 'Error')}: {error.get('evalue', '')}".strip()
        if len(message) > 300:
            message = message[:297] + "..."
        return "failed", message
    if manual or score is None:
        return "manual", "needs manual grading"
    if score >= max_score:
        return "passed", ""
    if score > 0:
        return "partial", f"{score:g} of {max_score:g} points"
    return "failed", "no points"
