"""An attention explorer built from stock ipywidgets and matplotlib's Agg backend.

Why not bertviz?  It injects require.js and d3 from a CDN (dead offline, and
often in JupyterLab), needs eager attention set by hand and shows one text
at a time.  This explorer has no JavaScript of its own: every picture is a
PNG drawn in the kernel and shown by an ``ipywidgets.Image``, which JupyterLab
4 renders out of the box.

Speed comes from doing as little as possible per click:

* the model runs once per *text*; changing the layer, head, view or token
  never runs it again (the last few texts stay cached, figures included);
* each view's figure, axes, labels and colour bar are built once per text
  and drawn once; a click only swaps pixel data or line colours and redraws
  those few artists over the saved background (blitting:
  :class:`course.viz.figures.BlitRenderer`);
* the PNG is encoded by :func:`encode_png` with light compression: a bit
  larger than Pillow's, several times faster.

Each redraw's kernel time is kept in :attr:`AttentionExplorer.timings`
(``bench/bench_explorer.py`` reports its p50/p95).

Displaying the explorer also leaves a static snapshot: an executed notebook
(papermill, nbconvert HTML) has no live kernel to draw the widget, so a plain
image sits right below it.  While the widget is live it hides the snapshot
with one CSS rule, so you see the figure only once.
"""

from __future__ import annotations

import base64
import html
import struct
import time
import uuid
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from course.attention import AttentionMaps, check_index, extract
from course.errors import CourseError
from course.viz.figures import BlitRenderer, HeadHeatmap, HeadLines, ModelGrid

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: The views, as (button label, internal name).
VIEWS = (("heatmap", "heatmap"), ("lines", "lines"), ("all heads", "model"))
ALL_TOKENS = -1  # the token picker's "no selection" value


def encode_png(rgba: Any, width: int, height: int, level: int = 1) -> bytes:
    """Encode an Agg RGBA buffer as a PNG file: about 10 lines, and 3x faster than Pillow here.

    A PNG is a signature and three chunks: IHDR (size, 8-bit RGB), IDAT (the
    rows, each prefixed by a filter byte, 0 = none, zlib-compressed) and IEND.
    Skipping Pillow's adaptive row filters and using zlib level 1 trades a
    slightly bigger file for much less kernel time per redraw.
    """
    import numpy as np

    pixels = np.frombuffer(rgba, dtype=np.uint8).reshape(height, width, 4)
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # column 0: filter byte 0
    rows[:, 1:] = pixels[:, :, :3].reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, colour type 2 = RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC of type+data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _figure(width: float, height: float, dpi: int) -> Figure:
    """A figure that pyplot does not know about, so notebooks do not auto-display it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


@dataclass
class Scene:
    """Everything drawn for one text: its maps, a note for the status line, painters and renderers per view."""

    maps: AttentionMaps
    note: str
    painters: dict[str, Any]
    renderers: dict[str, BlitRenderer]


class Timing(NamedTuple):
    """One redraw: what changed, kernel wall-clock seconds, and CPU seconds of the kernel thread.

    On a busy machine wall time includes waiting for a CPU; ``cpu`` does not.
    """

    what: str
    wall: float
    cpu: float


class AttentionExplorer:
    """Explore every head of a model on any text: text box, layer, head, view and token controls.

    >>> explorer = AttentionExplorer(model, tokenizer, "The cat sat on the mat.")  # doctest: +SKIP
    >>> explorer  # in a notebook: the widget, plus a static snapshot for exports  # doctest: +SKIP

    The same controls work from code (what the tests and the benchmark do)::

        explorer.set(layer=2, head=7, view="lines", token=3)
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        text: str,
        *,
        layer: int = 0,
        head: int = 0,
        view: str = "heatmap",
        dpi: int = 80,
        max_tokens: int = 64,
        cache_size: int = 8,
    ) -> None:
        import ipywidgets as widgets

        self.model, self.tokenizer, self.dpi, self.max_tokens = model, tokenizer, dpi, max_tokens
        self.cache_size = cache_size
        self.timings: list[Timing] = []  # one per redraw
        self.png = b""
        self.uid = uuid.uuid4().hex[:8]
        self.forward_passes = 0
        self._quiet = False
        self.scenes: OrderedDict[str, Scene] = OrderedDict()
        scene = self._scene(text)  # errors here (empty text, ...) surface as CourseError
        maps = scene.maps
        check_index("layer", layer, maps.num_layers)
        check_index("head", head, maps.num_heads)
        if view not in dict(VIEWS).values():
            raise CourseError(f"unknown view '{view}': choose one of {', '.join(v for _, v in VIEWS)}")

        full = widgets.Layout(width="100%")
        self.text = widgets.Text(value=text, description="text", continuous_update=False, layout=full)
        self.layer = widgets.IntSlider(value=layer, min=0, max=maps.num_layers - 1, description="layer")
        self.head = widgets.IntSlider(value=head, min=0, max=maps.num_heads - 1, description="head")
        self.view = widgets.ToggleButtons(options=VIEWS, value=view, description="view")
        self.token = widgets.Dropdown(description="token", options=[("all tokens", ALL_TOKENS)], value=ALL_TOKENS)
        self.image = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start", max_width="100%"))
        self.status = widgets.HTML()
        self.widget = widgets.VBox(
            [
                self.text,
                widgets.HBox([self.layer, self.head]),
                widgets.HBox([self.view, self.token]),
                self.image,
                self.status,
            ],
            layout=widgets.Layout(border="1px solid #ddd", padding="6px"),
        )
        self.widget.add_class("course-attention-explorer")
        self._show(scene)
        self.text.observe(self._on_text, names="value")
        for control in (self.layer, self.head, self.view, self.token):
            control.observe(self._on_control, names="value")

    # ------------------------------------------------------------------ state

    @property
    def maps(self) -> AttentionMaps:
        """The attention maps of the text on display (cut to ``max_tokens``)."""
        return self.scene.maps

    @property
    def painters(self) -> dict[str, Any]:
        """The current text's painter per view."""
        return self.scene.painters

    @property
    def renderers(self) -> dict[str, BlitRenderer]:
        """The current text's renderer per view."""
        return self.scene.renderers

    def _scene(self, text: str) -> Scene:
        """Everything needed to draw ``text``: from the cache, else one forward pass and new figures.

        Texts longer than ``max_tokens`` are drawn cut to their first tokens:
        hundreds of labels cannot be read, and would take seconds to draw.
        """
        if text in self.scenes:
            self.scenes.move_to_end(text)
            return self.scenes[text]
        with warnings.catch_warnings(record=True) as caught:  # a truncation warning goes to the status line
            warnings.simplefilter("always")
            maps = extract(self.model, self.tokenizer, text)
        self.forward_passes += 1
        note = " ".join(str(w.message) for w in caught)
        if len(maps.tokens) > self.max_tokens:
            note += f" Showing the first {self.max_tokens} of {len(maps.tokens)} tokens."
            maps = maps.first(self.max_tokens)
        seq = len(maps.tokens)
        figures = {
            "heatmap": _figure(2.8 + seq * 0.17, 2.2 + seq * 0.17, self.dpi),
            "lines": _figure(5.5, 1.0 + 0.26 * seq, self.dpi),
            "model": _figure(1.2 + 0.75 * maps.num_heads, 0.8 + 0.75 * maps.num_layers, self.dpi),
        }
        painters = {
            "heatmap": HeadHeatmap(figures["heatmap"].add_subplot(), maps),
            "lines": HeadLines(figures["lines"].add_subplot(), maps),
            "model": ModelGrid(figures["model"].add_subplot(), maps),
        }
        renderers = {name: BlitRenderer(fig, painters[name].dynamic) for name, fig in figures.items()}
        for renderer in renderers.values():  # the slow first draw happens now, not on a view switch
            renderer.prepare()
        scene = self.scenes[text] = Scene(maps, note.strip(), painters, renderers)
        if len(self.scenes) > self.cache_size:
            self.scenes.popitem(last=False)
        return scene

    def _show(self, scene: Scene) -> None:
        """Make ``scene`` the current one, refill the token picker, draw."""
        self.scene = scene
        self._quiet = True  # changing the picker's options must not trigger extra redraws
        try:
            tokens = scene.maps.tokens
            self.token.options = [("all tokens", ALL_TOKENS)] + [(f"{i}: {t}", i) for i, t in enumerate(tokens)]
            self.token.value = ALL_TOKENS
        finally:
            self._quiet = False
        self.redraw("text")

    # --------------------------------------------------------------- controls

    def set(self, **values: Any) -> None:
        """Set controls by name (``text``, ``layer``, ``head``, ``view``, ``token``) as a click would."""
        for name, value in values.items():
            if name not in ("text", "layer", "head", "view", "token"):
                raise CourseError(f"unknown control '{name}': use text, layer, head, view or token")
            if name == "token":
                value = ALL_TOKENS if value is None else check_index("token", value, len(self.maps.tokens))
            elif name in ("layer", "head"):
                check_index(name, value, getattr(self.maps, f"num_{name}s"))
            getattr(self, name).value = value

    def _on_control(self, change: dict) -> None:
        """Layer, head, view or token changed: redraw from cached attention, no forward pass."""
        if not self._quiet:
            self.redraw(change["owner"].description)

    def _on_text(self, change: dict) -> None:
        """New text: one forward pass (unless cached), new figures; errors go to the status line."""
        try:
            scene = self._scene(change["new"])
        except CourseError as error:
            self.status.value = self._status_html(f"<b style='color:#b00'>{html.escape(str(error))}</b>")
            return
        self._show(scene)

    # ---------------------------------------------------------------- drawing

    def redraw(self, what: str = "redraw") -> bytes:
        """Update the current view's artists, render it to PNG and show it; returns the PNG."""
        start, start_cpu = time.perf_counter(), time.thread_time()
        view = self.view.value
        token = None if self.token.value == ALL_TOKENS else self.token.value
        self.painters[view].update(self.layer.value, self.head.value, token)
        renderer = self.renderers[view]
        rgba = renderer.render()
        width, height = renderer.canvas.get_width_height(physical=True)
        self.png = encode_png(rgba, width, height)
        self.image.width = str(width)  # shown at its own size: crisp, not stretched to the cell
        self.image.value = self.png
        elapsed = time.perf_counter() - start
        self.timings.append(Timing(what, elapsed, time.thread_time() - start_cpu))
        shown = f"{len(self.maps.tokens)} tokens; redrawn in {elapsed * 1000:.0f} ms"
        note = f"<br><i>{html.escape(self.scene.note)}</i>" if self.scene.note else ""
        self.status.value = self._status_html(shown + note)
        return self.png

    def _status_html(self, message: str) -> str:
        """Status line, plus the CSS rule that hides this explorer's static snapshot while live."""
        return f"<style>.course-static-{self.uid} {{display: none;}}</style><small>{message}</small>"

    # ---------------------------------------------------------------- display

    def snapshot_bundle(self) -> dict[str, str]:
        """A plain-image copy of the current figure, for outputs viewed without a kernel."""
        encoded = base64.b64encode(self.png).decode("ascii")
        return {
            "text/html": f'<div class="course-static-{self.uid}"><img src="data:image/png;base64,{encoded}"'
            ' alt="attention explorer (static snapshot)"/></div>',
            "image/png": encoded,
            "text/plain": f"<attention explorer snapshot: {self.view.value}, layer {self.layer.value}, "
            f"head {self.head.value}>",
        }

    def _ipython_display_(self) -> None:
        """Show the live widget, then the static snapshot that exports keep."""
        from IPython.display import display

        display(self.widget)
        display(self.snapshot_bundle(), raw=True)


def explore(
    text: str = "The quick brown fox jumps over the lazy dog because the dog was asleep.",
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **options: Any,
) -> AttentionExplorer:
    """An :class:`AttentionExplorer` on ``text``; the bundled default model when none is given."""
    from course.assets import load_model, load_tokenizer

    model = model if model is not None else load_model()
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    return AttentionExplorer(model, tokenizer, text, **options)
