"""Matplotlib figures of attention: one head, every head, token-to-token lines.

Each view is a small *painter* class that creates its artists once for a
text and afterwards only swaps their data (``set_data``, ``set_color``...).
Re-creating axes and tick labels costs tens of milliseconds; updating an
image's pixels costs almost nothing.  A painter lists the few artists that
change (its ``dynamic`` artists); :class:`BlitRenderer` draws everything
else (tick labels, colour bar, token names) once, keeps that picture, and per
update pastes it back and draws only the dynamic artists on top: matplotlib's
"blitting", done here without any GUI.  The ``plot_*`` functions use the same
painters for ordinary one-off figures.

All views share one colour scale, 0 to 1, with a square-root stretch so the
many small probabilities (1/seq is typical) stay visible.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from course.attention import AttentionMaps, check_index
from course.errors import CourseError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CMAP = "Blues"
GAMMA = 0.5  # colour ~ sqrt(probability): 0.03 is faint but visible, 1.0 is dark
GAP_COLOR = "#d9d9d9"  # the gutters between heads in the model view
HEAD_COLORS = "tab20"  # one colour per head when the line view shows several heads
MIN_LINE = 0.01  # lines fainter than this are not drawn at all (they would be invisible)


def _norm() -> Any:
    """The shared colour scale: probabilities 0..1, square-root stretched."""
    from matplotlib.colors import PowerNorm

    return PowerNorm(GAMMA, vmin=0.0, vmax=1.0)


@lru_cache(maxsize=1)
def _colormap_table() -> np.ndarray:
    """256 RGBA colours (uint8): entry k is the colour of probability (k/255)**(1/GAMMA)."""
    import matplotlib
    import numpy as np

    return (matplotlib.colormaps[CMAP](np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)


def colorize(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities (NaN = gutter) -> an RGBA uint8 image on the shared colour scale.

    Looking colours up in a 256-entry table at the data's own resolution is
    far cheaper than letting matplotlib normalise and colour-map the image
    after scaling it up to screen size, which it would do on every draw.
    """
    import numpy as np
    from matplotlib.colors import to_rgba

    table = _colormap_table()
    gaps = np.isnan(probabilities)
    stretched = np.clip(np.nan_to_num(probabilities), 0.0, 1.0) ** GAMMA
    rgba = table[(stretched * 255).round().astype(np.intp)]
    rgba[gaps] = (np.array(to_rgba(GAP_COLOR)) * 255).astype(np.uint8)
    return rgba


def _colorbar(ax: Axes) -> None:
    """A colour bar for the shared scale, attached to ``ax``."""
    from matplotlib.cm import ScalarMappable

    scale = ScalarMappable(norm=_norm(), cmap=CMAP)
    ax.figure.colorbar(scale, ax=ax, shrink=0.8, label="attention probability")


def _new_axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    """``ax`` itself, or the axes of a new pyplot figure of ``size`` inches."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _label_fontsize(seq: int) -> float:
    """Token labels shrink for long texts so they do not overlap."""
    return 9.0 if seq <= 24 else max(5.0, 9.0 - (seq - 24) / 8)


class BlitRenderer:
    """Render a figure again and again when only a few of its artists change.

    The first :meth:`render` draws the figure without the painter's dynamic
    artists (they are marked *animated*, which the normal draw skips), stores
    that background, and freezes the layout.  Every later call restores the
    background and draws just the dynamic artists: a memory copy plus a few
    small draws instead of laying out and rasterising dozens of tick labels.

    Images get one more shortcut: their pixels are written straight into the
    canvas buffer through a nearest-neighbour index map worked out once,
    instead of being resampled by matplotlib on every draw (the slowest step
    of a redraw otherwise).
    """

    def __init__(self, fig: Figure, dynamic: list[Any]) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.fig, self.dynamic = fig, dynamic
        self.canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        self.background = None
        self.pixel_maps: dict[int, tuple[slice, slice, np.ndarray, np.ndarray]] = {}
        for artist in dynamic:
            artist.set_animated(True)

    def render(self) -> memoryview:
        """Draw and return the RGBA pixel buffer (``height x width x 4`` bytes)."""
        from matplotlib.image import AxesImage

        self.prepare()
        self.canvas.restore_region(self.background)
        for artist in self.dynamic:
            if isinstance(artist, AxesImage):
                self._paint(artist)
            else:
                self.fig.draw_artist(artist)
        return self.canvas.buffer_rgba()

    def prepare(self) -> None:
        """Lay out and draw the static parts once (the slow step); later calls do nothing."""
        if self.background is None:
            self.canvas.draw()
            self.fig.set_layout_engine("none")  # keep these positions from now on
            self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    def _paint(self, image: Any) -> None:
        """Copy an RGBA image into its place on the canvas, scaled by nearest neighbour."""
        import numpy as np

        if id(image) not in self.pixel_maps:
            self.pixel_maps[id(image)] = self._pixel_map(image)
        rows, cols, source_rows, source_cols = self.pixel_maps[id(image)]
        pixels = np.asarray(self.canvas.buffer_rgba())
        pixels[rows, cols] = np.asarray(image.get_array())[source_rows][:, source_cols]

    def _pixel_map(self, image: Any) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """Where the image lands on the canvas and which source pixel each canvas pixel shows."""
        import numpy as np

        height, width = image.get_array().shape[:2]
        left, right, bottom, top = image.get_extent()
        (x0, y0), (x1, y1) = image.axes.transData.transform([(left, top), (right, bottom)])
        canvas_height = self.canvas.get_width_height(physical=True)[1]
        # display y grows upwards, buffer rows grow downwards
        x_lo, x_hi = sorted((x0, x1))
        r_lo, r_hi = sorted((canvas_height - y0, canvas_height - y1))
        cols = np.arange(int(round(x_lo)), int(round(x_hi)))
        rows = np.arange(int(round(r_lo)), int(round(r_hi)))
        source_cols = ((cols + 0.5 - x_lo) / (x_hi - x_lo) * width).astype(np.intp).clip(0, width - 1)
        source_rows = ((rows + 0.5 - r_lo) / (r_hi - r_lo) * height).astype(np.intp).clip(0, height - 1)
        if x0 > x1:  # an x-inverted axis shows the columns backwards
            source_cols = source_cols[::-1]
        if (canvas_height - y0) > (canvas_height - y1):
            source_rows = source_rows[::-1]
        return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1), source_rows, source_cols


# --------------------------------------------------------------------- heatmap


class HeadHeatmap:
    """One head as a heatmap: row i = query token i, column j = key token j."""

    def __init__(self, ax: Axes, maps: AttentionMaps, colorbar: bool = True) -> None:
        from matplotlib.patches import Rectangle

        self.ax, self.maps = ax, maps
        self.data = maps.attentions.numpy()
        seq = len(maps.tokens)
        self.image = ax.imshow(colorize(self.data[0, 0]), interpolation="nearest")
        ticks = range(seq)
        size = _label_fontsize(seq)
        ax.set_xticks(ticks, maps.tokens, rotation=90, fontsize=size)
        ax.set_yticks(ticks, maps.tokens, fontsize=size)
        ax.set_xlabel("key: the token attended to")
        ax.set_ylabel("query: the token attending")
        self.row = Rectangle((-0.5, -0.5), seq, 1, fill=False, edgecolor="crimson", linewidth=2, visible=False)
        ax.add_patch(self.row)
        if colorbar:
            _colorbar(ax)
        ax.set_title("layer 0, head 0")  # a title of the final length, so the layout leaves room
        self.dynamic = [self.image, self.row, ax.title]

    def update(self, layer: int, head: int, token: int | None = None) -> None:
        """Show another head (new pixels only) and outline the selected query row."""
        self.image.set_data(colorize(self.data[layer, head]))
        self.ax.set_title(f"layer {layer}, head {head}")
        self.row.set_visible(token is not None)
        if token is not None:
            self.row.set_y(token - 0.5)


# ------------------------------------------------------------------ model view


def mosaic(attentions: np.ndarray, gap: int = 1) -> np.ndarray:
    """Tile ``layers x heads x seq x seq`` into one 2-D image, NaN gutters between tiles.

    One image with ``layers*heads`` tiles draws in a few milliseconds;
    ``layers*heads`` separate axes would take a second.
    """
    import numpy as np

    layers, heads, seq, _ = attentions.shape
    padded = np.full((layers, heads, seq + gap, seq + gap), np.nan, dtype=np.float32)
    padded[:, :, :seq, :seq] = attentions
    tiled = padded.transpose(0, 2, 1, 3).reshape(layers * (seq + gap), heads * (seq + gap))
    return tiled[:-gap, :-gap] if gap else tiled


class ModelGrid:
    """Every layer (rows) x head (columns) as small heatmaps, with a box on the chosen head."""

    DIM = 0.15  # with a token selected, other query rows fade to this fraction

    def __init__(self, ax: Axes, maps: AttentionMaps, gap: int = 1) -> None:
        from matplotlib.patches import Rectangle

        self.ax, self.gap = ax, gap
        self.data = maps.attentions.numpy()
        layers, heads, seq, _ = self.data.shape
        self.step = seq + gap
        self.image = ax.imshow(colorize(mosaic(self.data, gap)), interpolation="nearest")
        centers = [i * self.step + (seq - 1) / 2 for i in range(max(layers, heads))]
        ax.set_xticks(centers[:heads], [f"H{h}" for h in range(heads)], fontsize=8)
        ax.set_yticks(centers[:layers], [f"L{layer}" for layer in range(layers)], fontsize=8)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        self.box = Rectangle((-0.5, -0.5), seq, seq, fill=False, edgecolor="crimson", linewidth=2)
        ax.add_patch(self.box)
        self.token: int | None = None
        ax.set_title("every layer x head; the box marks the selected head")
        self.dynamic = [self.image, self.box]

    def update(self, layer: int, head: int, token: int | None = None) -> None:
        """Move the box to (layer, head); with a token, fade every other query row."""
        if token != self.token:
            data = self.data
            if token is not None:
                data = self.data * self.DIM
                data[:, :, token, :] = self.data[:, :, token, :]
            self.image.set_data(colorize(mosaic(data, self.gap)))
            self.token = token
        self.box.set_xy((head * self.step - 0.5, layer * self.step - 0.5))


# ------------------------------------------------------------------- head view


class HeadLines:
    """Lines from each query token (left column) to each key token (right column).

    A line's opacity is the attention probability, so a head's pattern reads
    at a glance: parallel lines = "attend to myself", lines shifted one row
    = "attend to the previous token", a fan into [SEP] = "nothing to do".
    One ``LineCollection`` holds all ``seq x seq`` lines; a head change only
    rewrites its colours.
    """

    def __init__(self, ax: Axes, maps: AttentionMaps) -> None:
        import numpy as np
        from matplotlib.collections import LineCollection

        self.ax, self.maps = ax, maps
        self.data = maps.attentions.numpy()
        seq = self.seq = len(maps.tokens)
        query, key = np.meshgrid(np.arange(seq), np.arange(seq), indexing="ij")
        # segment (i, j) runs from query i at x=0 to key j at x=1; y goes down the token list
        self.segments = np.stack(
            [np.stack([np.zeros(seq * seq), -query.ravel()], 1), np.stack([np.ones(seq * seq), -key.ravel()], 1)], 1
        )
        self.lines = LineCollection([], linewidths=1.5)
        ax.add_collection(self.lines)
        size = _label_fontsize(seq)
        for i, tok in enumerate(maps.tokens):
            ax.text(-0.04, -i, tok, ha="right", va="center", fontsize=size)
            ax.text(1.04, -i, tok, ha="left", va="center", fontsize=size)
        (self.marker,) = ax.plot([-0.02], [0], marker=">", color="crimson", markersize=7, visible=False)
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(-seq + 0.5, 0.5)
        ax.set_axis_off()
        ax.text(0.5, -seq + 0.2, "query (left) attends to key (right)", ha="center", va="top", fontsize=8)
        ax.set_title("layer 0, head 0")
        self.dynamic = [self.lines, self.marker, ax.title]

    def colors(self, layer: int, heads: list[int], token: int | None = None) -> np.ndarray:
        """RGBA per line, ``heads x seq*seq x 4``: the head's colour, alpha = probability.

        With a ``token``, only that query's lines keep their alpha.
        """
        import matplotlib
        import numpy as np

        palette = matplotlib.colormaps[HEAD_COLORS] if len(heads) > 1 else None
        rgba = np.zeros((len(heads), self.seq, self.seq, 4), dtype=np.float32)
        for n, head in enumerate(heads):
            rgba[n, ..., :3] = palette(head % 20)[:3] if palette else (0.12, 0.35, 0.75)
            rgba[n, ..., 3] = self.data[layer, head]
        if token is not None:
            others = np.arange(self.seq) != token
            rgba[:, others, :, 3] = 0.0
        return rgba.reshape(len(heads), -1, 4)

    def update(self, layer: int, head: int | list[int], token: int | None = None) -> None:
        """Redraw the lines of (layer, head), skipping invisible ones; point at the selected query token."""
        import numpy as np

        heads = [head] if isinstance(head, int) else list(head)
        rgba = self.colors(layer, heads, token).reshape(-1, 4)
        segments = np.tile(self.segments, (len(heads), 1, 1))
        visible = rgba[:, 3] >= MIN_LINE
        self.lines.set_segments(segments[visible])
        self.lines.set_color(rgba[visible])
        self.marker.set_visible(token is not None)
        if token is not None:
            self.marker.set_ydata([-token])
        which = f"head {heads[0]}" if len(heads) == 1 else f"all {len(heads)} heads"
        self.ax.set_title(f"layer {layer}, {which}")


# ------------------------------------------------------------ one-off figures


def plot_head(
    maps: AttentionMaps, layer: int, head: int, *, token: int | None = None, ax: Axes | None = None
) -> Figure:
    """Heatmap of one head: rows are queries, columns the keys they attend to.

    ``token`` outlines that query's row.  Pass ``ax`` to draw into your own axes.
    """
    _check(maps, layer, head, token)
    seq = len(maps.tokens)
    ax = _new_axes(ax, (2.5 + seq * 0.18, 2 + seq * 0.18))
    HeadHeatmap(ax, maps).update(layer, head, token)
    return ax.figure


def plot_model_view(
    maps: AttentionMaps, layer: int = 0, head: int = 0, *, token: int | None = None, ax: Axes | None = None
) -> Figure:
    """Every layer x head as a grid of heatmaps; ``(layer, head)`` is boxed."""
    _check(maps, layer, head, token)
    ax = _new_axes(ax, (1.2 + 0.75 * maps.num_heads, 0.8 + 0.75 * maps.num_layers))
    ModelGrid(ax, maps).update(layer, head, token)
    return ax.figure


def plot_head_view(
    maps: AttentionMaps,
    layer: int,
    head: int | None = None,
    *,
    token: int | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Token-to-token lines of one head (or, with ``head=None``, all heads of the layer in colours)."""
    heads = list(range(maps.num_heads)) if head is None else [head]
    _check(maps, layer, heads[0], token)
    ax = _new_axes(ax, (5.0, 1.0 + 0.28 * len(maps.tokens)))
    HeadLines(ax, maps).update(layer, heads, token)
    return ax.figure


def _check(maps: AttentionMaps, layer: int, head: int, token: int | None) -> None:
    """One-line errors for out-of-range layer, head or token."""
    if not isinstance(maps, AttentionMaps):
        raise CourseError(f"expected AttentionMaps from course.attention.extract(), got {type(maps).__name__}")
    check_index("layer", layer, maps.num_layers)
    check_index("head", head, maps.num_heads)
    if token is not None:
        check_index("token", token, len(maps.tokens))
