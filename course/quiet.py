"""Expected library messages, kept out of what a student sees (and kept when they are not expected).

Loading the bundled MiniLM with a classification head makes transformers 5
log a "LOAD REPORT": a coloured box on stderr listing ``classifier.weight``
and ``classifier.bias`` as MISSING.  That is the point of the exercise (the
checkpoint has no head; a fresh one is initialised, to be trained), but a
beginner reads the red box as a failure, and it wraps mid-word in a narrow
notebook.  :func:`expected_load_report` drops exactly that report and tells
the lesson which parameters were new, so the notebook can say it in words::

    with expected_load_report() as fresh:
        model = load_model(task="sequence-classification")
    print("new, untrained parameters:", fresh.missing)   # ['classifier.bias', 'classifier.weight']

A report that says anything else (UNEXPECTED or MISMATCHED weights, keys
outside the expected head) is let through unchanged: that one matters.
While loading, transformers' "Loading weights" progress bar is off too: an
executed notebook would keep only its first frame, a bar stuck at 0 %.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: A row of the report's table: ``classifier.bias | MISSING |``.
_ROW = re.compile(r"^\s*(?P<key>[\w.\-]+)\s*\|\s*(?P<status>[A-Z_]+)\s*\|", re.MULTILINE)

#: Parameter-name prefixes of the heads the course adds on top of a bare encoder.
HEAD_PREFIXES = ("classifier.", "score.", "qa_outputs.", "pre_classifier.")


@dataclass
class LoadNotes:
    """What the silenced reports said: the freshly initialised (MISSING) parameters, sorted by name."""

    missing: list[str] = field(default_factory=list)


class _ExpectedReportFilter(logging.Filter):
    """A handler filter that swallows LOAD REPORTs listing only MISSING head parameters."""

    def __init__(self, notes: LoadNotes, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.notes = notes
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        rows = [(m["key"], m["status"]) for m in _ROW.finditer(message) if m["key"] != "Key"]
        expected = bool(rows) and all(status == "MISSING" and key.startswith(self.prefixes) for key, status in rows)
        if expected:
            self.notes.missing = sorted(set(self.notes.missing) | {key for key, _ in rows})
        return not expected


def _transformers_handlers() -> list[logging.Handler]:
    """The handlers transformers' log records reach (its own, and the root logger's)."""
    handlers = list(logging.getLogger("transformers").handlers)
    return handlers + [h for h in logging.getLogger().handlers if h not in handlers]


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Switch transformers' own progress bars off for the block ("Loading weights", "Writing model shards").

    In a live notebook they flash by; in a saved one only their first frame
    stays, a bar stuck at 0 %.  They come back on afterwards if they were on.
    """
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def expected_load_report(prefixes: tuple[str, ...] = HEAD_PREFIXES) -> Iterator[LoadNotes]:
    """Silence transformers' LOAD REPORT while loading a model whose only new parts are a fresh head.

    Yields a :class:`LoadNotes` whose ``missing`` lists the new parameters.
    Only reports made of MISSING rows whose names start with ``prefixes``
    are dropped; anything else still reaches the output.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")  # makes sure transformers' own handler exists before we attach to it
    notes = LoadNotes()
    quiet = _ExpectedReportFilter(notes, prefixes)
    handlers = _transformers_handlers()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        with no_progress_bars():  # "Loading weights: 0%": a saved notebook keeps only its first frame
            yield notes
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
