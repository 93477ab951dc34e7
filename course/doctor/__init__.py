"""The environment doctor: is this machine ready for the course, and if not, why?

In a notebook::

    from course.doctor import run_doctor
    run_doctor()            # shows an HTML table of findings, facts folded below

On the command line: ``course doctor`` (text) or ``course doctor --json``;
the exit code is 0 (all good), 1 (warnings) or 2 (errors).

It works in two steps, and that split is what makes it testable:

1. :func:`collect_facts` probes the machine (torch, nvidia-smi, environment,
   disk, packages) and returns plain JSON data;
2. :func:`diagnose` turns those facts into :class:`Finding` objects, each
   with an id, a severity (info / warning / error), a cause and a fix.

Importing this package is instant: torch is imported only by the probe that
needs it, when :func:`collect_facts` runs.
"""

from __future__ import annotations

import sys

from course.doctor.facts import collect_facts
from course.doctor.finding import Finding
from course.doctor.report import Report
from course.doctor.rules import diagnose

__all__ = ["Finding", "Report", "collect_facts", "diagnose", "main", "run_doctor"]


def run_doctor() -> Report:
    """Collect the facts, diagnose them, and return the :class:`Report`."""
    facts = collect_facts()
    return Report(facts=facts, findings=diagnose(facts))


def _crash_report(exc: Exception) -> Report:
    """The report for a bug in the doctor itself: still a report, exit code 2."""
    finding = Finding(
        "doctor-crashed",
        "error",
        f"The doctor itself failed ({type(exc).__name__}: {exc}).",
        "Please report this bug with the command you ran and its output.",
    )
    return Report(facts={}, findings=[finding])


def main(as_json: bool = False) -> int:
    """Print the report (text, or JSON with ``as_json``) and return the exit code."""
    try:
        report = run_doctor()
        output = report.to_json() if as_json else report.to_text()
    except Exception as exc:  # the last line of defence: never a traceback
        report = _crash_report(exc)
        output = report.to_json() if as_json else report.to_text()
    print(output)
    sys.stdout.flush()
    return report.exit_code
