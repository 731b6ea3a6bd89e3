"""Early checks of user input, so that bad input gets a clear :class:`~hemolab.errors.HemolabError`
instead of a traceback deep inside NumPy or, worse, a silent wrong answer.

Every public hemolab function that takes a volume calls these first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from hemolab.errors import HemolabError

#: Plausible range of a CT in Hounsfield units: air is -1000, dense bone and metal reach a few thousand.
CT_HU_RANGE: tuple[float, float] = (-1100.0, 4100.0)


def check_volume(array, name: str = "volume", *, allow_channel: bool = False) -> np.ndarray:
    """Check that ``array`` is a finite 3D volume indexed ``[x, y, z]``.

    Args:
        array: array-like volume.
        name: what to call it in the error message.
        allow_channel: also accept a 4D ``[1, x, y, z]`` array with a single channel (it is squeezed).

    Returns:
        The volume as a NumPy array (no copy where possible).

    Raises:
        HemolabError: for a non-3D array, an empty one, or one containing NaN or infinity.
    """
    arr = np.asarray(array)
    if allow_channel and arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise HemolabError(
            f"{name} must be a 3D volume indexed [x, y, z], got a {arr.ndim}D array of shape {arr.shape}"
            + (": pass one volume at a time (a 2D slice is not a head CT)" if arr.ndim == 2 else "")
            + (
                ": a 4D array has several channels or time points; select one with array[..., i]"
                if arr.ndim == 4
                else ""
            )
        )
    if arr.size == 0:
        raise HemolabError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise HemolabError(f"{name} contains {n_bad} NaN or infinite values: fill or mask them before use")
    if arr.dtype.kind not in "biuf":
        raise HemolabError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def check_hu(array, name: str = "image") -> np.ndarray:
    """Check that a volume looks like a CT in Hounsfield units.

    A CT of a head contains air (about -1000 HU) around it and bone (above 300 HU); an image whose
    values lie in [0, 1] or [0, 255] has already been normalised or is not a CT.

    Args:
        array: the volume, indexed ``[x, y, z]``.
        name: what to call it in the error message.

    Returns:
        The volume as a float32 NumPy array.

    Raises:
        HemolabError: if the volume is not 3D/finite or its intensities are not in a CT's HU range.
    """
    arr = check_volume(array, name).astype(np.float32, copy=False)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < CT_HU_RANGE[0] - 1e-3 or hi > CT_HU_RANGE[1] + 1e-3:
        raise HemolabError(
            f"{name} has intensities in [{lo:.1f}, {hi:.1f}], outside a CT's Hounsfield range {CT_HU_RANGE}: "
            "is the DICOM rescale (slope/intercept) applied, and is this a CT?"
        )
    if hi - lo < 200.0:
        raise HemolabError(
            f"{name} has intensities only in [{lo:.1f}, {hi:.1f}]: this does not look like a CT in Hounsfield units "
            "(a head CT spans air at -1000 to bone above 300). Was it already normalised or clipped?"
        )
    return arr


def check_mask(array, name: str = "mask", *, require_nonempty: bool = False) -> np.ndarray:
    """Check that a volume is a binary mask and return it as ``bool``.

    Args:
        array: the mask, indexed ``[x, y, z]``, with values in {0, 1} (or bool).
        name: what to call it in the error message.
        require_nonempty: raise when the mask has no foreground voxel.

    Returns:
        The mask as a boolean NumPy array.

    Raises:
        HemolabError: for values other than 0 and 1, or an empty mask when ``require_nonempty``.
    """
    arr = check_volume(array, name)
    if arr.dtype != bool:
        values = np.unique(arr)
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
            raise HemolabError(
                f"{name} must be binary (0/1), found values {shown}: threshold a probability map first "
                "(e.g. mask = prob >= 0.5), and resample labels with nearest-neighbour interpolation"
            )
        arr = arr.astype(bool)
    if require_nonempty and not arr.any():
        raise HemolabError(f"{name} is empty (no foreground voxel)")
    return arr


def check_spacing(spacing: Sequence[float], name: str = "spacing") -> tuple[float, float, float]:
    """Check a voxel spacing ``(sx, sy, sz)`` in mm: three positive finite numbers."""
    try:
        sp = tuple(float(s) for s in spacing)
    except TypeError as exc:
        raise HemolabError(f"{name} must be three numbers (sx, sy, sz) in mm, got {spacing!r}") from exc
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise HemolabError(f"{name} must be three positive numbers (sx, sy, sz) in mm, got {spacing!r}")
    return sp  # type: ignore[return-value]


def check_window(window: Sequence[float], name: str = "hu_window") -> tuple[float, float]:
    """Check an HU window ``(low, high)``: two numbers with ``low < high``; returned as floats."""
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise HemolabError(f"{name} must be (low, high) HU with low < high, got {window!r}") from exc
    if not lo < hi:
        raise HemolabError(f"{name} must be (low, high) HU with low < high, got {window!r}")
    return lo, hi


def check_triple(size, name: str = "size") -> tuple[int, int, int]:
    """A size given as one whole number (the same on every axis) or three ``(x, y, z)``, as three ints.

    Raises:
        HemolabError: for anything else, naming ``name``.
    """
    if isinstance(size, int | float | np.integer | np.floating):
        return (int(size),) * 3
    t = tuple(int(s) for s in size)
    if len(t) != 3:
        raise HemolabError(f"a {name} is one number or three (x, y, z), got {size!r}")
    return t  # type: ignore[return-value]


def check_same_shape(a, b, names: tuple[str, str] = ("image", "label")) -> None:
    """Raise when two volumes do not have the same shape (they must share one voxel grid)."""
    sa, sb = np.shape(a), np.shape(b)
    if sa != sb:
        raise HemolabError(
            f"{names[0]} and {names[1]} must have the same shape, got {sa} and {sb}: "
            f"resample the {names[1]} onto the {names[0]}'s grid first"
        )


# ----------------------------------------------------------------------------------------------------------
# Is this a head CT? The one check every entry point (segment, train, evaluate, datasets) runs on a scan.
# ----------------------------------------------------------------------------------------------------------

#: Air: a head CT has a large share of voxels near -1000 HU around the head. Measured share below -500 HU:
#: 75.7% in the real GE scan shipped with hemolab, 66-76% in synthetic heads of every profile.
AIR_BELOW_HU: float = -500.0
MIN_AIR_FRACTION: float = 0.05
#: Bone: the skull lies above 300 HU. Measured share above 300 HU: 4.2% (GE scan), 5.0-8.6% (synthetic).
BONE_ABOVE_HU: float = 300.0
MIN_BONE_FRACTION: float = 0.005
#: Geometry that can hold a head: every axis at least this many voxels and this many mm of field of view,
#: voxels no larger than MAX_VOXEL_MM on any axis. Measured: GE scan 512x489x60 voxels, 0.49x0.49x4.0 mm,
#: field of view 250x239x240 mm; synthetic tiny 64x64x16, up to 3.7x3.7x10.0 mm, at least 218x218x145 mm;
#: small 128x128x32, 1.7-1.9 x 4.5-5.0 mm; full 512x512x40-66, 0.42-0.50 x 2.4-4.0 mm.
MIN_VOXELS_PER_AXIS: int = 8
MIN_FOV_MM: float = 100.0
MAX_VOXEL_MM: float = 10.0


def _where(name: str, source) -> str:
    return f"{name} ({source})" if source is not None and str(source) not in name else name


def check_head_ct(
    image_or_array,
    spacing: Sequence[float] | None = None,
    *,
    name: str = "the scan",
    source=None,
    geometry: bool = True,
) -> np.ndarray:
    """Check that a volume can be a non-contrast head CT in Hounsfield units; the one check of a scan.

    :func:`hemolab.io.read_scan`, ``hemolab segment``, ``hemolab train`` (through
    :func:`hemolab.datasets.validate_dataset`) and :func:`hemolab.architectures.segment_scan` all run it, so
    a scan that cannot be a head CT stops with one clear message instead of giving a silent "no bleed".

    The rules (limits are the module constants, with the values measured on real and synthetic heads):

    * 3D, numeric, every value finite (no NaN / infinity);
    * values in a CT's HU range :data:`CT_HU_RANGE` (values below it are a scanner's padding:
      :func:`hemolab.io.read_scan` sets them to air and says so);
    * air: at least :data:`MIN_AIR_FRACTION` of the voxels below :data:`AIR_BELOW_HU`;
    * bone: at least :data:`MIN_BONE_FRACTION` of the voxels above :data:`BONE_ABOVE_HU`;
    * geometry (when ``geometry``): at least :data:`MIN_VOXELS_PER_AXIS` voxels on every axis; and, when
      the spacing is known, voxels at most :data:`MAX_VOXEL_MM` and a field of view of at least
      :data:`MIN_FOV_MM` on every axis.

    Args:
        image_or_array: a SimpleITK image or an array indexed ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm for an array (an image brings its own).
        name: what to call the scan in messages, e.g. ``"the scan case_001.nii.gz"``.
        source: the file or folder it came from, named in messages.
        geometry: also check the voxel count, voxel size and field of view. :func:`hemolab.io.read_scan`
            reads small test phantoms too and leaves these to the functions that segment or train.

    Returns:
        The voxels as a float32 array indexed ``[x, y, z]``.

    Raises:
        HemolabError: naming the scan, what is wrong and what to do.
    """
    where = _where(name, source)
    if isinstance(image_or_array, sitk.Image):
        if image_or_array.GetDimension() != 3:
            raise HemolabError(
                f"{where} is a {image_or_array.GetDimension()}D image: hemolab needs one 3D head CT volume"
            )
        if spacing is None:
            spacing = image_or_array.GetSpacing()
        arr = np.ascontiguousarray(sitk.GetArrayViewFromImage(image_or_array).transpose(2, 1, 0))
    else:
        arr = image_or_array
    arr = check_volume(arr, where)
    sp = check_spacing(spacing, f"the spacing of {where}") if spacing is not None else None
    if geometry:
        _check_head_geometry(arr.shape, sp, where)
    hu = arr.astype(np.float32, copy=False)
    lo, hi = float(hu.min()), float(hu.max())
    if lo < CT_HU_RANGE[0] - 1e-3:
        raise HemolabError(
            f"{where} has values down to {lo:g}, below a CT's air ({CT_HU_RANGE[0]:g} HU): a scanner's padding "
            "outside the field of view, or values that are not Hounsfield units. Read the file with "
            "hemolab.io.read_scan, which sets padding to air and says so"
        )
    check_hu(hu, where)
    n = hu.size
    air = float(np.count_nonzero(hu < AIR_BELOW_HU)) / n
    if air < MIN_AIR_FRACTION:
        raise HemolabError(
            f"{where} has no air around the head: {100 * air:.1f}% of its voxels are below {AIR_BELOW_HU:g} HU, "
            f"where a head CT has at least {100 * MIN_AIR_FRACTION:g}% (about 70% in real and synthetic scans); "
            f"its values span [{lo:g}, {hi:g}]. Is it an MRI, a CT cropped inside the skull, or a CT stored "
            "without the DICOM rescale (HU = stored value x slope + intercept, often -1024)? "
            "Give a whole head CT in Hounsfield units"
        )
    bone = float(np.count_nonzero(hu > BONE_ABOVE_HU)) / n
    if bone < MIN_BONE_FRACTION:
        raise HemolabError(
            f"{where} has no skull: {100 * bone:.2f}% of its voxels are above {BONE_ABOVE_HU:g} HU, where a head CT "
            f"has at least {100 * MIN_BONE_FRACTION:g}% (4-9% in real and synthetic scans); its values span "
            f"[{lo:g}, {hi:g}]. Is it skull-stripped, windowed/clipped, or not a head CT? "
            "Give the whole head CT in Hounsfield units"
        )
    return hu


def _check_head_geometry(
    shape: tuple[int, ...], spacing: tuple[float, float, float] | None, where: str
) -> None:
    if min(shape) < MIN_VOXELS_PER_AXIS:
        raise HemolabError(
            f"{where} has {'x'.join(str(s) for s in shape)} voxels: a head CT needs at least "
            f"{MIN_VOXELS_PER_AXIS} voxels (slices) on every axis. Is it a crop, a thumbnail or a few slices of "
            "a series? Give the whole scan (for DICOM, the folder of all slices)"
        )
    if spacing is None:
        return
    sp = ", ".join(f"{s:g}" for s in spacing)
    if max(spacing) > MAX_VOXEL_MM + 1e-3:
        raise HemolabError(
            f"{where} has voxels of ({sp}) mm: at most {MAX_VOXEL_MM:g} mm on every axis can show a bleed. "
            "Check the spacing in the file's header (was it written in cm, or was the scan down-sampled?) "
            "and give the scan at its acquired resolution"
        )
    fov = [n * s for n, s in zip(shape, spacing, strict=True)]
    if min(fov) < MIN_FOV_MM:
        raise HemolabError(
            f"{where} covers only {' x '.join(f'{f:.0f}' for f in fov)} mm ({'x'.join(str(s) for s in shape)} "
            f"voxels of ({sp}) mm): a head needs at least {MIN_FOV_MM:g} mm on every axis. Is it a crop, or is "
            "the spacing wrong (e.g. written in cm or m)? Give the whole head CT with its true spacing"
        )
