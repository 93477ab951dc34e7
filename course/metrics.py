"""Record a lesson's measured numbers so they land in the run summary.

A notebook calls ``record("test_accuracy", 0.91)``.  The value travels as a
display output under a course-specific MIME type only, which
:mod:`course.run` reads back from the executed notebook into
``summary.json``.  It has no ``text/plain`` part, so JupyterLab, nbconvert
and papermill show nothing: recording is silent, and the lesson shows its
results in its own words (``print(f"test accuracy: {acc:.0%}")``).  Nothing
is written to disk by the notebook itself, so the same notebook works under
papermill, nbconvert or plain JupyterLab.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

#: The MIME type under which metrics travel inside notebook outputs.
METRIC_MIME = "application/vnd.course.metric+json"


def record(name: str, value: Any, unit: str = "") -> None:
    """Tag a measured number for the runner's summary, silently (nothing appears under the cell).

    ``value`` must be a number, a bool or a short string; a tensor or numpy
    scalar is converted with ``float()``.  ``unit`` goes into the summary.
    """
    from IPython import display as ipython_display

    value = _plain(value)
    ipython_display.display({METRIC_MIME: {"name": name, "value": value, "unit": unit}}, raw=True)


def _plain(value: Any) -> float | int | bool | str:
    """A JSON-friendly copy of a metric value (tensors and numpy scalars become floats)."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric values must be numbers or strings, not {type(value).__name__}") from None
    return number if math.isfinite(number) else str(number)


def metrics_from_notebook(nb: Any) -> dict[str, Any]:
    """Collect every recorded metric from an executed notebook (last value wins)."""
    found: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(METRIC_MIME)
            if payload:
                found[payload["name"]] = payload["value"]
    return found
