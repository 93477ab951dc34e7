"""Tampering: what a submission changed that a student should not have.

The reference is the *released* notebook (``release/<assignment>/``), the
exact file students received, compared cell by cell through nbgrader's
``grade_id``.  Only changes a student cannot make by honestly working in
Jupyter are reported:

* a locked or test cell deleted, or its source edited;
* nbgrader metadata changed (points, grade/solution/locked flags, cell type);
* a ``grade_id`` present twice (copied cells), or one the release never had
  (an id changed or invented).

Editing solution cells, adding cells without nbgrader metadata, moving
cells around, re-running, clearing outputs: none of these is reported.
nbgrader's own checksum warning fires for every student of an assignment
with hidden tests (the stored checksum includes them), so it is no signal
and is not used.

Whatever is reported, grading is unaffected: tests are restored from the
instructor's copy before anything runs (see :mod:`course.grade.preprocessors`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

#: nbgrader metadata keys a student never changes by working normally.
METADATA_KEYS = ("grade", "solution", "locked", "task", "points")


def nbgrader_meta(cell: dict) -> dict:
    """The cell's nbgrader metadata ({} when none)."""
    return (cell.get("metadata") or {}).get("nbgrader") or {}


def is_protected(meta: dict) -> bool:
    """Locked cells and autograder test cells must come back unchanged."""
    return bool(meta.get("locked")) or (bool(meta.get("grade")) and not meta.get("solution"))


def _source(cell: dict) -> str:
    """Cell source as one string, line endings and trailing blanks normalised."""
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(source)
    return source.replace("\r\n", "\n").rstrip()


def _points(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _metadata_changes(released: dict, submitted: dict) -> list[str]:
    """Human-readable differences in the nbgrader metadata that matters."""
    changes = []
    for key in METADATA_KEYS:
        old, new = released.get(key), submitted.get(key)
        if key == "points":
            if released.get("grade") and _points(old) != _points(new):
                changes.append(f"points {old} -> {new}")
        elif bool(old) != bool(new):
            changes.append(f"{key} {old} -> {new}")
    return changes


def find_tampering(released_nb: dict, submitted_nb: dict, notebook: str = "") -> list[dict]:
    """Compare a submitted notebook with the released one; return findings.

    Each finding is ``{"notebook", "grade_id", "kind", "detail"}`` with kind
    one of ``deleted``, ``edited``, ``metadata``, ``duplicated``, ``unknown-id``.
    An honest submission returns ``[]``.
    """
    released = {}
    for cell in released_nb.get("cells", []):
        meta = nbgrader_meta(cell)
        if meta.get("grade_id"):
            released[meta["grade_id"]] = cell

    submitted_ids = [nbgrader_meta(c).get("grade_id") for c in submitted_nb.get("cells", [])]
    counts = Counter(i for i in submitted_ids if i)
    findings = []

    def report(grade_id: str, kind: str, detail: str) -> None:
        findings.append({"notebook": notebook, "grade_id": grade_id, "kind": kind, "detail": detail})

    for grade_id, count in counts.items():
        if count > 1:
            report(grade_id, "duplicated", f"cell id {grade_id!r} appears {count} times")
        if grade_id not in released:
            report(grade_id, "unknown-id", f"cell id {grade_id!r} is not in the released notebook")

    first = {}
    for cell in submitted_nb.get("cells", []):
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id and grade_id not in first:
            first[grade_id] = cell

    for grade_id, ref in released.items():
        ref_meta = nbgrader_meta(ref)
        cell = first.get(grade_id)
        kind = "test" if ref_meta.get("grade") and not ref_meta.get("solution") else "locked"
        if cell is None:
            if is_protected(ref_meta):
                report(grade_id, "deleted", f"{kind} cell {grade_id!r} was deleted")
            else:
                report(grade_id, "deleted", f"solution cell {grade_id!r} was deleted")
            continue
        changes = _metadata_changes(ref_meta, nbgrader_meta(cell))
        if cell.get("cell_type") != ref.get("cell_type"):
            changes.append(f"cell type {ref.get('cell_type')} -> {cell.get('cell_type')}")
        if changes:
            report(grade_id, "metadata", f"cell {grade_id!r}: " + ", ".join(changes))
        if is_protected(ref_meta) and _source(cell) != _source(ref):
            report(grade_id, "edited", f"{kind} cell {grade_id!r} was edited")
    return findings


def summarize(findings: list[dict]) -> str:
    """One line for the run summary, e.g. ``2 tests deleted, 1 edited``."""
    if not findings:
        return ""
    counts = Counter(f["kind"] for f in findings)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
