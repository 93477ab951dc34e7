"""course.viz: the three figures, the fast renderer, and the explorer's behaviour (no browser here)."""

import base64
import io

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from course.assets import load_model, load_tokenizer
from course.attention import AttentionMaps, extract
from course.errors import CourseError
from course.viz import AttentionExplorer, explore, plot_head, plot_head_view, plot_model_view
from course.viz.explorer import encode_png
from course.viz.figures import GAP_COLOR, BlitRenderer, HeadHeatmap, colorize, mosaic

matplotlib.use("Agg")
SENTENCE = "The committee said that the new bridge would finally open to traffic next Monday."


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_model(), load_tokenizer()


@pytest.fixture(scope="module")
def maps(model_and_tokenizer):
    return extract(*model_and_tokenizer, SENTENCE)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def toy_maps(layers=2, heads=3, seq=4) -> AttentionMaps:
    """Maps whose head (l, h) is filled with a recognisable constant pattern."""
    attn = torch.full((layers, heads, seq, seq), 1.0 / seq)
    attn[1, 2] = torch.eye(seq)
    return AttentionMaps("t", [f"t{i}" for i in range(seq)], attn, list(range(seq)), [False] * seq, False)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


# ------------------------------------------------------------------- figures


def test_colorize_uses_one_scale_and_grey_gutters():
    rgba = colorize(np.array([[0.0, 0.25, 1.0, np.nan]]))
    assert rgba.dtype == np.uint8 and rgba.shape == (1, 4, 4)
    blues = matplotlib.colormaps["Blues"]
    for got, position in zip(rgba[0, :3], (0.0, 0.5, 1.0), strict=True):  # sqrt stretch: 0.25 sits mid-scale
        assert np.abs(got.astype(int) - np.array(blues(position)) * 255).max() <= 2
    assert tuple(rgba[0, 3]) == tuple(int(c * 255) for c in matplotlib.colors.to_rgba(GAP_COLOR))


def test_mosaic_places_each_head_in_its_tile():
    grid = mosaic(toy_maps().attentions.numpy(), gap=1)
    assert grid.shape == (2 * 5 - 1, 3 * 5 - 1)
    assert np.isnan(grid[4]).all() and np.isnan(grid[:, 4]).all()  # gutters
    assert np.array_equal(grid[5:9, 10:14], np.eye(4))  # layer 1, head 2


def test_plot_head_shows_the_chosen_head_with_token_labels(maps):
    fig = plot_head(maps, 1, 3, token=2)
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and ax.get_title() == "layer 1, head 3"
    assert [t.get_text() for t in ax.get_xticklabels()] == maps.tokens
    assert np.array_equal(ax.images[0].get_array(), colorize(maps.attentions[1, 3].numpy()))
    assert len(fig.axes) == 2  # the heatmap and its colour bar


def test_plot_model_view_boxes_the_selected_head(maps):
    fig = plot_model_view(maps, layer=2, head=5)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape[:2] == mosaic(maps.attentions.numpy()).shape
    step = len(maps.tokens) + 1
    assert ax.patches[0].get_xy() == (5 * step - 0.5, 2 * step - 0.5)
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"L{i}" for i in range(6)]


def test_plot_head_view_draws_visible_lines_only_for_the_selected_token(maps):
    ax = plot_head_view(maps, 0, 2).axes[0]
    lines = ax.collections[0]
    assert 0 < len(lines.get_segments()) <= len(maps.tokens) ** 2
    ax = plot_head_view(maps, 0, 2, token=4).axes[0]
    starts = {seg[0][1] for seg in ax.collections[0].get_segments()}
    assert starts == {-4.0}  # every line leaves query 4
    all_heads = plot_head_view(maps, 0).axes[0].collections[0]
    assert len(all_heads.get_segments()) > len(lines.get_segments())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: plot_head(m, 6, 0), "layer 6 is out of range"),
        (lambda m: plot_head(m, 0, 12), "head 12 is out of range"),
        (lambda m: plot_model_view(m, token=99), "token 99 is out of range"),
        (lambda m: plot_head_view("not maps", 0, 0), "expected AttentionMaps"),
    ],
)
def test_figures_reject_bad_indices_with_one_line(maps, call, message):
    with pytest.raises(CourseError, match=message):
        call(maps)


def test_blit_renderer_draws_the_same_picture_as_a_full_draw(maps):
    """The fast path (background + dynamic artists + direct pixel painting) must not change the picture."""

    def frame(fast: bool) -> np.ndarray:
        fig = Figure(figsize=(6, 5), dpi=80, layout="constrained")
        painter = HeadHeatmap(fig.add_subplot(), maps)
        renderer = BlitRenderer(fig, painter.dynamic)
        painter.update(0, 0)
        renderer.render()
        painter.update(3, 7, token=2)
        if fast:
            buffer = renderer.render()
        else:
            for artist in painter.dynamic:
                artist.set_animated(False)
            renderer.canvas.draw()
            buffer = renderer.canvas.buffer_rgba()
        return np.asarray(buffer)[..., :3].astype(int)

    fast, full = frame(True), frame(False)
    assert fast.shape == full.shape
    differs = np.abs(fast - full).max(axis=-1) > 40
    assert differs.mean() < 0.01, f"{differs.mean():.2%} of pixels differ"  # at most a few edge pixels


def test_encode_png_is_a_valid_lossless_png():
    rgba = np.random.default_rng(0).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    png = encode_png(rgba.tobytes(), width=5, height=7)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), rgba[..., :3])


# ------------------------------------------------------------------ explorer


@pytest.fixture(scope="module")
def explorer(model_and_tokenizer):
    """One explorer for the module (building one takes seconds); each test starts from SENTENCE."""
    return AttentionExplorer(*model_and_tokenizer, SENTENCE)


@pytest.fixture(autouse=True)
def back_to_the_sentence(request):
    if "explorer" in request.fixturenames:
        request.getfixturevalue("explorer").set(text=SENTENCE, token=None)


def test_explorer_redraws_without_running_the_model_again(explorer):
    first, passes = explorer.png, explorer.forward_passes
    assert explorer.image.value == first
    figures = {name: r.fig for name, r in explorer.renderers.items()}
    explorer.set(layer=3)
    explorer.set(head=7)
    assert explorer.image.value != first
    for view in ("lines", "model", "heatmap"):
        explorer.set(view=view, token=3)
    explorer.set(token=None)
    assert explorer.forward_passes == passes, "layer/head/view/token changes must reuse the cached attention"
    assert {name: r.fig for name, r in explorer.renderers.items()} == figures, "figures are reused, not rebuilt"
    assert {t.what for t in explorer.timings} >= {"text", "layer", "head", "view", "token"}
    assert all(t.wall > 0 and t.cpu >= 0 for t in explorer.timings)


def test_explorer_each_control_changes_the_picture(explorer):
    seen = {explorer.png}
    for change in ({"layer": 2}, {"head": 5}, {"token": 4}, {"view": "lines"}, {"view": "model"}, {"head": 6}):
        explorer.set(**change)
        assert explorer.png not in seen, f"{change} did not change the figure"
        seen.add(explorer.png)
    assert explorer.png.startswith(b"\x89PNG")


def test_explorer_caches_attention_per_text(explorer):
    passes = explorer.forward_passes
    explorer.set(text="A different sentence about rivers.")
    assert explorer.forward_passes == passes + 1 and explorer.maps.tokens[1:3] == ["a", "different"]
    assert [label for label, _ in explorer.token.options][:2] == ["all tokens", "0: [CLS]"]
    explorer.set(text=SENTENCE)
    assert explorer.forward_passes == passes + 1  # served from the cache


def test_explorer_shows_bad_text_in_its_status_line_instead_of_raising(explorer):
    before = explorer.png
    explorer.text.value = "   "
    assert "empty" in explorer.status.value and explorer.png == before
    explorer.text.value = "word " * 600
    assert "keeping the first 512" in explorer.status.value
    assert "Showing the first 64 of 512 tokens" in explorer.status.value and len(explorer.maps.tokens) == 64


def test_explorer_rejects_out_of_range_controls(explorer, model_and_tokenizer):
    with pytest.raises(CourseError, match="layer 6 is out of range"):
        explorer.set(layer=6)
    with pytest.raises(CourseError, match="unknown control"):
        explorer.set(colour="red")
    with pytest.raises(CourseError, match="head 40"):
        AttentionExplorer(*model_and_tokenizer, "hi", head=40)


def test_explorer_leaves_a_static_snapshot_that_the_live_widget_hides(explorer):
    bundle = explorer.snapshot_bundle()
    assert base64.b64decode(bundle["image/png"]) == explorer.png
    assert f'class="course-static-{explorer.uid}"' in bundle["text/html"]
    assert f".course-static-{explorer.uid} {{display: none;}}" in explorer.status.value


def test_explorer_display_publishes_widget_then_image(explorer, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    explorer._ipython_display_()
    assert shown[0] is explorer.widget and "image/png" in shown[1]


def test_explore_builds_an_explorer_for_a_given_model(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    explorer = explore("Short text.", model=model, tokenizer=tokenizer, view="lines")
    assert isinstance(explorer, AttentionExplorer) and explorer.view.value == "lines"
    assert explorer.maps.tokens == ["[CLS]", "short", "text", ".", "[SEP]"]
