"""Looking at head CT: window presets, a static slice renderer, montages, HU histograms and a slice browser.

Conventions (radiological, like a PACS viewer):

* **axial** slices are seen from the feet: the patient's left is on the right of the screen, anterior at
  the top;
* **coronal** slices are seen from the front (patient's left on the right), **sagittal** slices from the
  patient's left (anterior on the left); head at the top in both;
* axes are in millimetres from the first voxel, so a scan with 0.5 x 0.5 x 5 mm voxels keeps its true shape.

A **window** ``(width, level)`` maps HU ``level - width/2 ... level + width/2`` to black ... white; everything
below is black, above white. Presets (:data:`WINDOW_PRESETS`) are the usual head-CT ones.

:func:`render_slice` and :func:`montage` are pure functions returning matplotlib figures (they work
headless and in static renderings of a notebook); :class:`SliceBrowser` wraps :func:`render_slice` in
ipywidgets for a live notebook. :func:`view_3d` is an optional, online-only 3D viewer (itkwidgets).
"""

from __future__ import annotations

import base64
import io as _io
import threading
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hemolab.errors import HemolabError
from hemolab.io import array_from_image, image_from_array
from hemolab.validation import check_mask, check_same_shape, check_spacing, check_volume

#: Head-CT windows as ``(width, level)`` in HU. "blood" is a narrow window (20-80 HU) in which fresh blood
#: (about 50-90 HU) is near-white and brain (20-45 HU) dark-to-mid grey: a choice for teaching, close to the
#: "stroke" window radiologists use for subtle density differences.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (80.0, 40.0),
    "blood": (60.0, 50.0),
    "stroke": (40.0, 40.0),
    "subdural": (200.0, 80.0),
    "bone": (2000.0, 500.0),
}
#: The array axis that each view cuts across (arrays are ``[x, y, z]``).
VIEW_AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
#: Overlay colours, in the order masks are given (red, blue, green, orange, purple, yellow, brown, pink).
MASK_COLOURS: tuple[str, ...] = (
    "#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#ffff33", "#a65628", "#f781bf",
)  # fmt: skip


def _as_volume(volume, spacing) -> tuple[np.ndarray, tuple[float, float, float]]:
    if isinstance(volume, sitk.Image):
        return array_from_image(volume), tuple(volume.GetSpacing())
    if spacing is None:
        raise HemolabError(
            "give the voxel spacing (sx, sy, sz) in mm with an array (a sitk.Image carries its own)"
        )
    return check_volume(volume, "volume"), check_spacing(spacing)


def _as_masks(masks, shape) -> dict[str, np.ndarray]:
    if masks is None:
        return {}
    if not isinstance(masks, Mapping):
        masks = {"mask": masks}
    out = {}
    for name, mask in masks.items():
        arr = array_from_image(mask) if isinstance(mask, sitk.Image) else mask
        arr = check_mask(arr, f"mask {name!r}")
        check_same_shape(np.empty(shape, bool), arr, ("volume", f"mask {name!r}"))
        out[str(name)] = arr
    return out


def window_limits(window) -> tuple[float, float]:
    """``(vmin, vmax)`` in HU of a window given as ``(width, level)`` or a preset name."""
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise HemolabError(
                f"unknown window {window!r}: choose one of {', '.join(WINDOW_PRESETS)} or (width, level)"
            )
        window = WINDOW_PRESETS[window]
    try:
        width, level = (float(v) for v in window)
    except (TypeError, ValueError):
        raise HemolabError(f"window must be (width, level) in HU or a preset name, got {window!r}") from None
    if width <= 0:
        raise HemolabError(f"window width must be positive, got {width}")
    return level - width / 2.0, level + width / 2.0


def slice_plane(array: np.ndarray, spacing, index: int, axis: str = "axial"):
    """Cut one slice for display.

    Returns:
        ``(plane, extent, origin, labels)``: the 2D array as rows x columns on screen, the imshow ``extent``
        in mm, the imshow ``origin`` and the (horizontal, vertical) axis labels.

    Raises:
        HemolabError: unknown axis or an index outside the volume.
    """
    if axis not in VIEW_AXES:
        raise HemolabError(f"axis must be one of {', '.join(VIEW_AXES)}, got {axis!r}")
    ax_i = VIEW_AXES[axis]
    n = array.shape[ax_i]
    if not (isinstance(index, (int, np.integer)) and 0 <= index < n):
        raise HemolabError(f"{axis} slice index must be an integer in [0, {n - 1}], got {index!r}")
    (nx, ny, nz), (sx, sy, sz) = array.shape, spacing
    if axis == "axial":
        return array[:, :, index].T, (0, nx * sx, ny * sy, 0), "upper", ("x (mm, R → L)", "y (mm, A → P)")
    if axis == "coronal":
        return array[:, index, :].T, (0, nx * sx, 0, nz * sz), "lower", ("x (mm, R → L)", "z (mm, I → S)")
    return array[index, :, :].T, (0, ny * sy, 0, nz * sz), "lower", ("y (mm, A → P)", "z (mm, I → S)")


def render_slice(
    volume,
    spacing: Sequence[float] | None = None,
    index: int | None = None,
    axis: str = "axial",
    window=(80, 40),
    masks: Mapping | None = None,
    opacity: float | Mapping[str, float] = 0.4,
    ax=None,
    *,
    style: str = "fill",
    title: str | None = None,
    legend: bool = True,
    colours: Sequence[str] | None = None,
) -> Figure:
    """Draw one slice of a CT in a window, with coloured mask overlays, at its physical aspect ratio.

    Args:
        volume: a ``sitk.Image`` or an array ``[x, y, z]`` in HU.
        spacing: voxel size ``(sx, sy, sz)`` in mm (taken from the image when ``volume`` is one).
        index: the slice number along the view's axis (default: the middle slice).
        axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        window: ``(width, level)`` in HU, or a preset name from :data:`WINDOW_PRESETS`.
        masks: ``{name: mask}`` (arrays ``[x, y, z]`` or images), drawn in :data:`MASK_COLOURS` order.
        opacity: alpha of filled overlays (0-1), one for all or ``{name: alpha}``.
        ax: draw into this matplotlib axes (default: a new figure).
        style: ``"fill"`` (translucent) or ``"contour"`` (outline, opaque) overlays.
        title: axes title (default: view, slice and window).
        legend: add a legend naming the masks.
        colours: overlay colours overriding :data:`MASK_COLOURS`.

    Returns:
        The figure drawn into (not shown; call ``plt.show()`` or ``display(fig)``).

    Raises:
        HemolabError: bad volume, spacing, axis, index, window, style, opacity or a mask of another shape.
    """
    arr, sp = _as_volume(volume, spacing)
    mask_arrays = _as_masks(masks, arr.shape)
    if style not in ("fill", "contour"):
        raise HemolabError(f"style must be 'fill' or 'contour', got {style!r}")
    alphas = {k: float(opacity[k] if isinstance(opacity, Mapping) else opacity) for k in mask_arrays}
    if not all(0.0 <= a <= 1.0 for a in alphas.values()):
        raise HemolabError(f"opacity must lie in [0, 1], got {opacity}")
    if index is None:
        index = arr.shape[VIEW_AXES.get(axis, 2)] // 2
    plane, extent, origin, labels = slice_plane(arr, sp, index, axis)
    vmin, vmax = window_limits(window)
    if ax is None:
        width, height = abs(extent[1] - extent[0]), abs(extent[3] - extent[2])
        fig, ax = plt.subplots(figsize=(5.0, float(np.clip(5.0 * height / width, 2.0, 8.0)) + 0.4))
    fig = ax.figure
    ax.imshow(plane, cmap="gray", vmin=vmin, vmax=vmax, extent=extent, origin=origin, interpolation="nearest")
    colours = list(colours or MASK_COLOURS)
    handles = []
    for i, (name, mask) in enumerate(mask_arrays.items()):
        colour = colours[i % len(colours)]
        m = slice_plane(mask, sp, index, axis)[0]
        if style == "fill":
            rgba = np.zeros(m.shape + (4,), np.float32)
            rgba[m] = to_rgba(colour, alphas[name])
            ax.imshow(rgba, extent=extent, origin=origin, interpolation="nearest")
        elif m.any():
            ax.contour(
                m.astype(np.float32),
                levels=[0.5],
                colors=[colour],
                linewidths=1.2,
                extent=extent,
                origin=origin,
            )
        handles.append(Line2D([], [], color=colour, lw=4, label=name))
    if handles and legend:
        ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.6)
    width, level = vmax - vmin, (vmax + vmin) / 2
    ax.set_title(title if title is not None else f"{axis} {index} | W {width:g} L {level:g}", fontsize=9)
    ax.set_xlabel(labels[0], fontsize=8)
    ax.set_ylabel(labels[1], fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_aspect("equal")
    return fig


def _tissue_range(arr: np.ndarray, axis: str, threshold: float = -500.0) -> tuple[int, int]:
    keep = [a for a in range(3) if a != VIEW_AXES[axis]]
    has_tissue = np.nonzero((arr > threshold).any(axis=tuple(keep)))[0]
    if has_tissue.size == 0:
        return 0, arr.shape[VIEW_AXES[axis]] - 1
    return int(has_tissue[0]), int(has_tissue[-1])


def montage(
    volume,
    spacing: Sequence[float] | None = None,
    n: int = 6,
    axis: str = "axial",
    window=(80, 40),
    masks: Mapping | None = None,
    *,
    indices: Sequence[int] | None = None,
    ncols: int | None = None,
    opacity: float = 0.4,
    style: str = "fill",
    title: str | None = None,
) -> Figure:
    """A static grid of slices: what a notebook shows where widgets do not render.

    Args:
        volume, spacing, axis, window, masks, opacity, style: as in :func:`render_slice`.
        n: number of slices, evenly spread over the slices that contain tissue (HU > -500).
        indices: explicit slice numbers instead of ``n``.
        ncols: panels per row (default: up to 6).
        title: figure title.

    Returns:
        The figure.
    """
    arr, sp = _as_volume(volume, spacing)
    if axis not in VIEW_AXES:
        raise HemolabError(f"axis must be one of {', '.join(VIEW_AXES)}, got {axis!r}")
    if indices is None:
        if int(n) < 1:
            raise HemolabError(f"n must be at least 1, got {n}")
        first, last = _tissue_range(arr, axis)
        indices = np.unique(np.linspace(first, last, int(n) + 2).round().astype(int)[1:-1])
    indices = [int(i) for i in indices]
    ncols = int(ncols or min(len(indices), 6))
    nrows = int(np.ceil(len(indices) / ncols))
    _, extent, _, _ = slice_plane(arr, sp, indices[0], axis)
    aspect = abs(extent[3] - extent[2]) / abs(extent[1] - extent[0])
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows * aspect + 0.5), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(indices):
            ax.axis("off")
            continue
        render_slice(arr, sp, indices[k], axis, window, masks, opacity, ax, style=style, legend=(k == 0),
                     title=f"{axis} {indices[k]}")  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("")
        ax.set_ylabel("")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def hu_histogram(
    volume,
    masks: Mapping | None = None,
    *,
    hu_range: tuple[float, float] = (-100.0, 200.0),
    bins: int = 150,
    ax=None,
    density: bool = True,
    colours: Sequence[str] | None = None,
) -> Figure:
    """Histograms of the HU inside each mask (and of the whole volume in ``hu_range`` when no mask is given).

    Args:
        volume: a ``sitk.Image`` or an array ``[x, y, z]`` in HU.
        masks: ``{name: mask}``; each gets its own coloured histogram (median in the legend).
        hu_range: the HU range shown.
        bins: number of bins across ``hu_range``.
        ax: draw into these axes (default: a new figure).
        density: normalise each histogram to unit area (masks of very different size stay comparable).
        colours: overriding :data:`MASK_COLOURS`.

    Returns:
        The figure.
    """
    arr = array_from_image(volume) if isinstance(volume, sitk.Image) else check_volume(volume, "volume")
    groups = _as_masks(masks, arr.shape) or {"all voxels": np.ones(arr.shape, bool)}
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.5))
    colours = list(colours or MASK_COLOURS)
    edges = np.linspace(hu_range[0], hu_range[1], int(bins) + 1)
    for i, (name, mask) in enumerate(groups.items()):
        values = arr[mask]
        if values.size == 0:
            continue
        ax.hist(values, bins=edges, density=density, histtype="stepfilled", alpha=0.45,
                color=colours[i % len(colours)], label=f"{name} (median {np.median(values):.0f} HU, n={values.size})")  # fmt: skip
    ax.set_xlabel("Hounsfield units")
    ax.set_ylabel("fraction of voxels per HU" if density else "voxels")
    ax.set_xlim(*hu_range)
    ax.legend(fontsize=7)
    return ax.figure


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


class SliceBrowser:
    """Browse a CT slice by slice in a notebook, with windows and mask overlays (ipywidgets + matplotlib).

    Controls: view (axial / coronal / sagittal), slice slider, window preset and free width/level sliders,
    one show/opacity control per mask, filled or contour overlays. Every change re-renders the slice with
    :func:`render_slice` into an ``Output`` widget (a PNG replaces the previous one, so figures never pile up).

    The container has the CSS class ``hemolab-slice-browser`` and the slice slider ``hemolab-slice-slider``
    (for browser tests). Display with ``browser.show()`` or by ending a cell with the browser.

    Args:
        volume: a ``sitk.Image`` or an array ``[x, y, z]`` in HU.
        spacing: voxel size in mm (taken from the image when ``volume`` is one).
        masks: ``{name: mask}``, e.g. ``{"reference": ..., "rater1": ..., "prediction": ...}``.
        title: shown above the controls.
        axis, window, index, opacity, style: the initial view.
    """

    def __init__(self, volume, spacing=None, masks=None, *, title=None, axis="axial", window="brain",
                 index=None, opacity=0.4, style="fill"):  # fmt: skip
        import ipywidgets as w

        self.volume, self.spacing = _as_volume(volume, spacing)
        self.masks = _as_masks(masks, self.volume.shape)
        if axis not in VIEW_AXES:
            raise HemolabError(f"axis must be one of {', '.join(VIEW_AXES)}, got {axis!r}")
        width, level = (lambda lo_hi: (lo_hi[1] - lo_hi[0], (lo_hi[1] + lo_hi[0]) / 2))(window_limits(window))
        self.n_renders = 0
        self._hold = False
        n = self.volume.shape[VIEW_AXES[axis]]
        self.view = w.ToggleButtons(options=list(VIEW_AXES)[::-1], value=axis, description="view")
        self.slider = w.IntSlider(value=n // 2 if index is None else int(index), min=0, max=n - 1, description="slice",
                                  continuous_update=False)  # fmt: skip
        self.slider.add_class("hemolab-slice-slider")
        preset = window if isinstance(window, str) else "custom"
        self.preset = w.Dropdown(options=[*WINDOW_PRESETS, "custom"], value=preset, description="window")
        self.width = w.IntSlider(
            value=int(width), min=1, max=4000, description="width", continuous_update=False
        )
        self.level = w.IntSlider(
            value=int(level), min=-1000, max=3000, description="level", continuous_update=False
        )
        self.style = w.ToggleButtons(options=["fill", "contour"], value=style, description="overlay")
        self.show_mask = {name: w.Checkbox(value=True, description=name, indent=False) for name in self.masks}
        self.opacity = {
            name: w.FloatSlider(
                value=opacity, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
            )  # fmt: skip
            for name in self.masks
        }
        self.output = w.Output()
        mask_rows = [w.HBox([self.show_mask[k], self.opacity[k]]) for k in self.masks]
        header = [w.HTML(f"<b>{title}</b>")] if title else []
        controls = w.VBox([self.view, self.slider, self.preset, self.width, self.level]
                          + ([self.style, *mask_rows] if self.masks else []))  # fmt: skip
        self.widget = w.VBox([*header, w.HBox([controls, self.output])])
        self.widget.add_class("hemolab-slice-browser")
        self.view.observe(self._on_view, names="value")
        self.preset.observe(self._on_preset, names="value")
        for control in (self.width, self.level):
            control.observe(self._on_window, names="value")
        for control in (self.slider, self.style, *self.show_mask.values(), *self.opacity.values()):
            control.observe(self.update, names="value")
        self.update()

    def _on_view(self, change) -> None:
        self._hold = True
        n = self.volume.shape[VIEW_AXES[change["new"]]]
        self.slider.max = n - 1
        self.slider.value = n // 2
        self._hold = False
        self.update()

    def _on_preset(self, change) -> None:
        if change["new"] == "custom":
            return
        self._hold = True
        width, level = WINDOW_PRESETS[change["new"]]
        self.width.value, self.level.value = int(width), int(level)
        self._hold = False
        self.update()

    def _on_window(self, change) -> None:
        if self._hold:
            return
        if self.preset.value != "custom" and WINDOW_PRESETS[self.preset.value] != (
            self.width.value,
            self.level.value,
        ):
            self._hold = True
            self.preset.value = "custom"
            self._hold = False
        self.update()

    def render(self) -> Figure:
        """The figure of the current state (what :meth:`update` puts into the output)."""
        masks = {k: m for k, m in self.masks.items() if self.show_mask[k].value}
        colours = [MASK_COLOURS[i % len(MASK_COLOURS)] for i, k in enumerate(self.masks) if k in masks]
        opacity = {k: float(self.opacity[k].value) for k in masks}
        return render_slice(self.volume, self.spacing, int(self.slider.value), self.view.value,
                            (self.width.value, self.level.value), masks, opacity, style=self.style.value,
                            colours=colours)  # fmt: skip

    def update(self, change=None) -> None:
        """Re-render into the output widget (called on every control change)."""
        if self._hold:
            return
        fig = self.render()
        png = figure_png(fig)
        plt.close(fig)
        # Replace the output in one step (the ipywidgets "append_display_data" mechanism): no flicker, no
        # figure drawn twice, and it works from any callback, kernel or not.
        data = {"image/png": base64.b64encode(png).decode("ascii"),
                "text/plain": f"<{self.view.value} slice {self.slider.value}>"}  # fmt: skip
        self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)
        self.n_renders += 1

    def show(self):
        """Display the browser in the notebook."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self):
        self.show()


def _online(host: str = "cdn.jsdelivr.net", port: int = 443, timeout: float = 1.5) -> bool:
    """Whether ``host`` answers within ``timeout`` seconds (DNS included: a thread that is not waited for)."""
    result: list[bool] = []

    def probe():
        import socket

        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def view_3d(volume, spacing: Sequence[float] | None = None, *, timeout: float = 1.5):
    """An interactive 3D view with itkwidgets, when it is installed and the internet is reachable.

    itkwidgets loads its viewer from a CDN when it is displayed, so offline its output stays empty (and can
    stall the next cell). This function checks both conditions first and otherwise says why it does nothing.

    Returns:
        The itkwidgets viewer, or ``None`` (with a printed explanation).
    """
    try:
        import itkwidgets
    except ImportError:
        print("3D view unavailable: itkwidgets is not installed (pip install 'hemolab[viz3d]'); "
              "use SliceBrowser or montage instead.")  # fmt: skip
        return None
    if not _online(timeout=timeout):
        print("3D view unavailable: itkwidgets loads its viewer from the internet, which is not reachable "
              "from here; use SliceBrowser or montage instead.")  # fmt: skip
        return None
    image = (
        volume if isinstance(volume, sitk.Image) else image_from_array(volume, spacing=check_spacing(spacing))
    )
    return itkwidgets.view(image)
