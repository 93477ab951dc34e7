"""What one worker learns about the notebook being graded, shared by its nbgrader steps.

nbgrader builds its preprocessors itself, from class names, so the steps
``course grade`` adds cannot hand results to each other or to the worker
as arguments: the sanitize step records tampering, the execute step its
kernel events and timings, here, keyed by (student, notebook), and the
worker reads them when it writes the JSON result.  Plain module state, one
worker process each.
"""

from __future__ import annotations

#: What the sanitize/execute steps learned about each notebook of this
#: worker, keyed by (student, notebook): tampering findings, timings.
RECORDS: dict[tuple[str, str], dict] = {}

#: Submitted notebooks this worker found unreadable (absolute paths): nbgrader skips them.
SKIP: set[str] = set()


def record(resources: dict) -> dict:
    """The RECORDS entry for the notebook being converted."""
    info = resources.get("nbgrader", {})
    return RECORDS.setdefault((info.get("student", ""), info.get("notebook", "")), {})
