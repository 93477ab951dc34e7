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

#: enames of the error outputs the grader adds (also in the JSON results).
TIMEOUT = "CellTimeoutError"
KERNEL_DIED = "KernelDied"
NOT_RUN = "NotRun"

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

#: Exit code of the sandbox supervisor when it could not build the sandbox.
SUPERVISOR_FAILED = 70


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


def error_output(ename: str, message: str) -> dict:
    """An nbformat error output with a one-line traceback."""
    from nbformat.v4 import new_output

    return new_output("error", ename=ename, evalue=message, traceback=[f"\x1b[0;31m{ename}\x1b[0m: {message}"])


def grade_ignoring_stderr(cell, log=None) -> tuple[float | None, float]:
    """nbgrader's ``determine_grade`` for a copy of ``cell`` without stderr outputs."""
    import copy

    from nbgrader.utils import determine_grade

    if cell.get("cell_type") == "code":
        cell = copy.deepcopy(cell)
        cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return determine_grade(cell, log)


def first_error(cell: dict) -> dict | None:
    """The first error output of a cell, or None."""
    for output in cell.get("outputs", []) or []:
        if output.get("output_type") == "error":
            return output
    return None


def cell_status(cell: dict, score: float | None, max_score: float) -> tuple[str, str]:
    """``(status, message)`` of a graded cell after autograding.

    status is one of passed, partial, failed, timeout, kernel-died, not-run,
    manual (waiting for a human: written answers, solution cells).
    """
    errors = [o for o in cell.get("outputs", []) or [] if o.get("output_type") == "error"]
    ours = [o for o in errors if o.get("ename") in (TIMEOUT, KERNEL_DIED, NOT_RUN)]
    error = (ours or errors or [None])[0]
    if error is not None:
        message = f"{error.get('ename', 'Error')}: {error.get('evalue', '')}".strip()
        if len(message) > 300:
            message = message[:297] + "..."
        status = {TIMEOUT: "timeout", KERNEL_DIED: "kernel-died", NOT_RUN: "not-run"}.get(error.get("ename"), "failed")
        return status, message
    if score is None:
        return "manual", "needs manual grading"
    if score >= max_score:
        return "passed", ""
    if score > 0:
        return "partial", f"{score:g} of {max_score:g} points"
    return "failed", "no points"
