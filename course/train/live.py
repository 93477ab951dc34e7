"""A live loss / accuracy plot that leaves a static picture behind.

In Jupyter the plot is shown once and then *updated in place* (an IPython
display handle), at most every ``every_seconds`` and never taking more than
about a fifth of the time, so drawing does not slow training; an evaluation
point is drawn at once, together with the progress bar's evaluation line.
Each metric keeps its colour and the legends their place from the first
draw to the last, and the accuracy panel says what it waits for until the
first evaluation.  Each update
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


#: Fixed colours, so a line never changes colour when another metric appears.
COLOURS = {"loss": "tab:blue", "eval_loss": "tab:orange", "eval_accuracy": "tab:orange", "accuracy": "tab:blue"}
_OTHER_COLOURS = ("tab:green", "tab:red", "tab:purple", "tab:brown")


class LivePlot:
    """Collect ``(step, value)`` points per metric and draw loss and accuracy side by side.

    ``plot.log(step, loss=0.7)`` adds points; a metric whose name contains
    ``acc`` goes to the right-hand panel, everything else to the left.
    Logging an ``eval_*`` value redraws at once.
    """

    #: Figure size (inches) and resolution: readable in a notebook at 100 % zoom.
    FIGSIZE = (10, 3.6)
    DPI = 110

    def __init__(self, title: str = "Fine-tuning", every_seconds: float = 1.0, display: bool | None = None) -> None:
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
        evaluation = any(name.startswith("eval") for name in values)
        if self.display and (evaluation or time.monotonic() - self._last_draw >= self._wait):
            self._show()

    def figure(self) -> Figure:
        """A fresh matplotlib Figure of everything logged so far (not tied to pyplot)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=self.FIGSIZE)
        loss_ax, acc_ax = fig.subplots(1, 2)
        for index, (name, points) in enumerate(self.history.items()):  # insertion order: training loss first
            ax = acc_ax if "acc" in name else loss_ax
            steps, values = zip(*points, strict=True)
            colour = COLOURS.get(name, _OTHER_COLOURS[index % len(_OTHER_COLOURS)])
            evaluated = name.startswith("eval")
            ax.plot(steps, values, color=colour, marker="o" if evaluated else None, markersize=4, label=name)
        for ax, label, place in ((loss_ax, "loss", "upper right"), (acc_ax, "accuracy", "lower right")):
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(loc=place)
        if not acc_ax.lines:
            acc_ax.text(
                0.5,
                0.5,
                "accuracy appears after\nthe first evaluation",
                ha="center",
                va="center",
                transform=acc_ax.transAxes,
                color="grey",
            )
        acc_ax.set_ylim(0, 1.02)
        fig.suptitle(self.title)
        fig.tight_layout()
        return fig

    def _png(self) -> bytes:
        """The current figure rendered as PNG bytes."""
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=self.DPI)
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
        # Drawing may take a while on a busy CPU: keep it under ~20% of the time.
        self._wait = max(self.every_seconds, 5 * (self._last_draw - started))

    def close(self) -> None:
        """Draw the final state: the image that stays in the notebook."""
        if self.display and self.history:
            self._show()

    def save(self, path: str | Path) -> Path:
        """Write the figure to ``path`` (format from the suffix, e.g. .png or .svg)."""
        path = Path(path)
        self.figure().savefig(path, dpi=self.DPI)
        return path
