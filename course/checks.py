"""Self-checks for a lesson's "your turn" exercises: immediate, ungraded feedback.

A lesson pairs every exercise cell (tag ``exercise``, metadata
``"exercise": "<name>"``) with a check cell (tag ``check``) a few cells
below it::

    # exercise cell: the student edits this
    def split_heads(x, heads):
        ...  # your code here

    # check cell: the student only runs this
    check("split_heads", lambda: split_heads(x, 12).shape == (1, 12, 7, 32),
          hint="reshape to (batch, seq, heads, head_dim), then swap seq and heads")

An unsolved exercise must not stop "Run all": :func:`check` never raises.
It prints one line a student can act on ("✓ ..." or "not yet: <hint>")
and also shows its verdict under a course MIME type, so the tests (and
``course run``) can read from an executed notebook which checks passed
without parsing prose.

Why a callable rather than a bool: the check runs the student's code, and
an unsolved stub raises (``NotImplementedError``, a shape error ...).  The
callable lets :func:`check` catch that and turn it into a hint.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

#: The MIME type under which check verdicts travel inside notebook outputs.
CHECK_MIME = "application/vnd.course.check+json"


#: Width at which a check's message is wrapped (JupyterLab wraps long lines mid-word).
WIDTH = 100


class Verdict:
    """What :func:`check` returns: truthy when solved, and silent as a cell's last value.

    A plain ``True``/``False`` would be echoed as ``Out[n]: False`` under the
    message :func:`check` already showed; ``_ipython_display_`` doing nothing
    keeps the cell to that one message.
    """

    def __init__(self, passed: bool) -> None:
        self.passed = passed

    def __bool__(self) -> bool:
        return self.passed

    def __eq__(self, other: object) -> bool:
        return bool(self) == bool(other) if isinstance(other, (bool, Verdict)) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.passed)

    def __repr__(self) -> str:
        return f"Verdict(passed={self.passed})"

    def _ipython_display_(self) -> None:
        """Show nothing: the check's message is already on screen."""


def check(name: str, condition: bool | Callable[[], Any], *, hint: str, success: str = "") -> Verdict:
    """Tell the student whether exercise ``name`` is solved; never raise.

    ``condition`` is a bool or a no-argument callable returning something
    truthy when the exercise is solved.  An exception inside the callable
    means "not yet", and its type and message are shown beside the hint.
    Returns the verdict (truthy when solved), so a lesson can branch on it.
    """
    from IPython.display import display

    error = ""
    try:
        passed = bool(condition() if callable(condition) else condition)
    except Exception as exc:  # the student's unfinished code: any error means "not yet"
        passed = False
        error = f" ({type(exc).__name__}: {_short(str(exc))})"
    if passed:
        text = f"✓ {name}: solved. {success}".rstrip()
    else:
        text = f"not yet: {name}{error}. Hint: {hint}"
    text = textwrap.fill(text, WIDTH, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
    display({CHECK_MIME: {"exercise": name, "passed": passed}, "text/plain": text}, raw=True)
    return Verdict(passed)


def _short(message: str, limit: int = 160) -> str:
    """The first line of an error message, cut to ``limit`` characters."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def checks_from_notebook(nb: Any) -> dict[str, bool]:
    """Every check verdict in an executed notebook, by exercise name (last wins)."""
    found: dict[str, bool] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(CHECK_MIME)
            if payload:
                found[payload["exercise"]] = bool(payload["passed"])
    return found
