"""hemolab.viz: slice rendering (headless), montage, histogram and the ipywidgets slice browser."""

from __future__ import annotations

import base64
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hemolab import viz  # noqa: E402
from hemolab.errors import HemolabError  # noqa: E402
from hemolab.io import image_from_array  # noqa: E402

SPACING = (0.5, 0.5, 5.0)


@pytest.fixture
def volume():
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (40, 32, 10)), indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    arr = np.where(r < 0.95, 1000.0, -1000.0).astype(np.float32)
    arr[r < 0.8] = 30.0
    return arr


@pytest.fixture
def bleed(volume):
    mask = np.zeros(volume.shape, bool)
    mask[15:25, 10:20, 3:7] = True
    return mask


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


@pytest.mark.parametrize(
    "axis, extent",
    [("axial", (0, 20.0, 16.0, 0)), ("coronal", (0, 20.0, 0, 50.0)), ("sagittal", (0, 16.0, 0, 50.0))],
)
def test_render_slice_uses_physical_extent(volume, axis, extent):
    fig = viz.render_slice(volume, SPACING, 5, axis)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_extent(), extent)
    assert ax.get_aspect() == 1.0  # equal mm per screen unit: 5 mm slices look 10x thicker than 0.5 mm pixels
    plt.close(fig)


def test_render_slice_window_maps_hu(volume):
    fig = viz.render_slice(volume, SPACING, 5, "axial", window="brain")
    assert fig.axes[0].images[0].get_clim() == (0.0, 80.0)
    plt.close(fig)
    fig = viz.render_slice(volume, SPACING, 5, "axial", window=(2000, 500))
    assert fig.axes[0].images[0].get_clim() == (-500.0, 1500.0)
    plt.close(fig)


@pytest.mark.parametrize("style", ["fill", "contour"])
def test_overlays_change_pixels(volume, bleed, style):
    plain = viz.render_slice(volume, SPACING, 5, "axial", legend=False)
    over = viz.render_slice(
        volume, SPACING, 5, "axial", masks={"reference": bleed}, style=style, legend=False
    )
    diff = np.abs(_pixels(plain) - _pixels(over)).sum(-1) > 30
    assert diff.mean() > 0.002  # the overlay shows
    reds = _pixels(over)
    assert (reds[diff][:, 0] > reds[diff][:, 2]).mean() > 0.9  # first mask colour is red
    plt.close("all")


def test_render_slice_accepts_images_and_checks_input(volume, bleed):
    image = image_from_array(volume, spacing=SPACING)
    fig = viz.render_slice(image, None, 2, "coronal", masks={"m": image_from_array(bleed.astype(np.uint8))})
    np.testing.assert_allclose(fig.axes[0].images[0].get_extent(), (0, 20.0, 0, 50.0))
    plt.close(fig)
    with pytest.raises(HemolabError, match="axis must be one of"):
        viz.render_slice(volume, SPACING, 0, "oblique")
    with pytest.raises(HemolabError, match=r"index must be an integer in \[0, 9\]"):
        viz.render_slice(volume, SPACING, 10, "axial")
    with pytest.raises(HemolabError, match="spacing"):
        viz.render_slice(volume, None, 0)
    with pytest.raises(HemolabError, match="unknown window"):
        viz.render_slice(volume, SPACING, 0, window="lung-ish")
    with pytest.raises(HemolabError, match="same shape"):
        viz.render_slice(volume, SPACING, 0, masks={"m": bleed[:, :, :5]})
    with pytest.raises(HemolabError, match="binary"):
        viz.render_slice(volume, SPACING, 0, masks={"m": bleed * 3})
    plt.close("all")


def test_montage_and_histogram(volume, bleed):
    fig = viz.montage(volume, SPACING, n=4, masks={"bleed": bleed})
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4
    assert all(1 <= int(ax.get_title().split()[-1]) <= 8 for ax in shown)  # slices with tissue
    plt.close(fig)
    fig = viz.hu_histogram(volume, {"brain": volume == 30, "bleed": bleed}, hu_range=(-100, 200))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("brain (median 30 HU")
    plt.close(fig)


def _shown_png(browser) -> bytes:
    (out,) = browser.output.outputs
    return base64.b64decode(out["data"]["image/png"])


def test_slice_browser_renders_on_every_change(volume, bleed):
    browser = viz.SliceBrowser(volume, SPACING, {"reference": bleed, "rater1": bleed}, title="phantom")
    assert "hemolab-slice-browser" in browser.widget._dom_classes
    assert "hemolab-slice-slider" in browser.slider._dom_classes
    first = _shown_png(browser)
    assert browser.n_renders == 1 and first.startswith(b"\x89PNG")

    browser.slider.value = 2  # what dragging the slider does: the observer re-renders
    assert browser.n_renders == 2 and _shown_png(browser) != first
    assert len(browser.output.outputs) == 1  # replaced, not appended

    browser.preset.value = "bone"
    assert (browser.width.value, browser.level.value) == (2000, 500)
    browser.level.value = 400  # a free level leaves the preset
    assert browser.preset.value == "custom"

    browser.view.value = "sagittal"
    assert browser.slider.max == volume.shape[0] - 1 and browser.slider.value == volume.shape[0] // 2
    before = _shown_png(browser)
    browser.show_mask["reference"].value = False
    browser.show_mask["rater1"].value = False
    assert _shown_png(browser) != before
    browser.update()  # the handler can also be called directly
    assert browser.n_renders >= 7


def test_view_3d_says_why_not(volume, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "itkwidgets", None)  # "not installed", whatever this machine has
    assert viz.view_3d(volume, SPACING) is None
    assert "itkwidgets is not installed" in capsys.readouterr().out
