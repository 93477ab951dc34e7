"""course.checks: an exercise's self-check never raises and reports its verdict."""

from course.checks import CHECK_MIME, check, checks_from_notebook


def _capture(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    return shown


def test_solved_check_reports_passed(monkeypatch):
    shown = _capture(monkeypatch)
    verdict = check("heads", lambda: 2 + 2 == 4, hint="add")
    assert verdict and verdict == True  # noqa: E712 (a Verdict compares equal to the bool)
    assert shown[0][CHECK_MIME] == {"exercise": "heads", "passed": True}
    assert shown[0]["text/plain"].startswith("✓ heads")


def test_unsolved_stub_gives_a_hint_instead_of_raising(monkeypatch):
    shown = _capture(monkeypatch)

    def stub():
        raise NotImplementedError("write split_heads first")

    assert not check("heads", stub, hint="reshape, then transpose")
    text = shown[0]["text/plain"]
    assert "not yet" in text and "NotImplementedError" in text and "reshape" in text
    assert shown[0][CHECK_MIME]["passed"] is False


def test_false_condition_is_not_solved(monkeypatch):
    _capture(monkeypatch)
    assert not check("x", False, hint="h")
    assert not check("x", lambda: 0, hint="h")


def test_verdict_is_silent_as_a_cells_last_value(monkeypatch):
    """IPython calls _ipython_display_ instead of echoing Out[n]: False under the message."""
    from IPython.core.formatters import DisplayFormatter

    _capture(monkeypatch)
    verdict = check("x", False, hint="h")
    assert DisplayFormatter().format(verdict) == ({}, {})


def test_long_messages_wrap_between_words(monkeypatch):
    shown = _capture(monkeypatch)
    check("x", False, hint="word " * 60)
    lines = shown[0]["text/plain"].splitlines()
    assert len(lines) > 1 and all(len(line) <= 100 for line in lines)


def test_checks_read_back_from_an_executed_notebook():
    nb = {
        "cells": [
            {"outputs": [{"data": {CHECK_MIME: {"exercise": "a", "passed": False}}}]},
            {"outputs": [{"data": {"text/plain": "x"}}, {"data": {CHECK_MIME: {"exercise": "b", "passed": True}}}]},
        ]
    }
    assert checks_from_notebook(nb) == {"a": False, "b": True}
