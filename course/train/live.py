"""A live loss / accuracy plot that leaves a static picture behind.

In Jupyter the plot is shown once and then *updated in place* (an IPython
display handle), at most every ``every_seconds`` and never taking more than
about a tenth of the time, so drawing does not slow training.  Each update
is a plain PNG image, so the last one stays in the saved notebook:
papermill, nbconvert and a PDF export all show the final curves, with no
widget or JavaScript needed.

Outside Jupyter (a script, a test) nothing is displayed; call :meth:`save`
to write the figure to a file.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where images can be displayed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


class LivePlot:
    """Collect ``(step, value)`` points per metric and draw loss and accuracy side by side.

    ``plot.log(step, loss=0.7)`` adds points; a metric whose name contains
    ``acc`` goes to the right-hand panel, everything else to the left.
    """

    def __init__(self, title: str = "Fine-tuning", every_seconds: float = 2.0, display: bool | None = None) -> None:
        self.title = title
        self.every_seconds = every_seconds
        self.display = in_notebook() if display is None else display
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._handle: Any = None
        self._last_draw = 0.0
        self._wait = 0.0  # seconds until the next redraw is allowed

    def log(self, step: int, **values: float) -> None:
        """Add one point per named value; redraw if enough time has passed."""
        for name, value in values.items():
            if value is not None:
                self.history[name].append((step, float(value)))
        if self.display and time.monotonic() - self._last_draw >= self._wait:
            self._show()

    def figure(self) -> Figure:
        """A fresh matplotlib Figure of everything logged so far (not tied to pyplot)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 3.2))
        loss_ax, acc_ax = fig.subplots(1, 2)
        for name, points in sorted(self.history.items()):
            ax = acc_ax if "acc" in name else loss_ax
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=name)
        for ax, label in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        acc_ax.set_ylim(0, 1.02)
        fig.suptitle(self.title)
        fig.tight_layout()
        return fig

    def _png(self) -> bytes:
        """The current figure rendered as PNG bytes."""
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=80)
        return buffer.getvalue()

    def _show(self) -> None:
        """Display the figure the first time, update it in place afterwards."""
        from IPython.display import Image, display

        started = time.monotonic()
        image = Image(data=self._png(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
        self._last_draw = time.monotonic()
        # Drawing may take a while on a busy CPU: keep it under ~10% of the time.
        self._wait = max(self.every_seconds, 10 * (self._last_draw - started))

    def close(self) -> None:
        """Draw the final state: the image that stays in the notebook."""
        if self.display and self.history:
            self._show()

    def save(self, path: str | Path) -> Path:
        """Write the figure to ``path`` (format from the suffix, e.g. .png or .svg)."""
        path = Path(path)
        self.figure().savefig(path, dpi=100)
        return path
