"""Resampling a scan (or its label) onto another voxel grid, with SimpleITK, keeping the physical geometry.

CNN-DS resamples every whole-head scan to a fixed grid of 128x128x64 voxels (Arab 2020, Methods,
"Preprocessing"; docs/methods.md §1): the *field of view* stays the same, so the voxels get bigger (about
1.8x1.8x2.4 mm from 0.45x0.45x2.7 mm). The image is interpolated linearly, the label with the nearest
neighbour so that it stays binary. A prediction made on that grid is mapped back onto the original scan
with :func:`resample_like`.

Geometry, in words. A voxel is a small box; its *centre* is what an image's ``origin`` and ``spacing``
locate. The field of view of an axis with ``n`` voxels of size ``s`` spans from ``origin - s/2`` to
``origin + (n - 1/2) s`` (along the image's direction). Keeping that span with ``m`` voxels of size
``s' = n s / m`` moves the first centre by half the change of voxel size:
``origin' = origin + D (s' - s) / 2``, with ``D`` the direction matrix. Forgetting this half voxel shifts
every resampled scan by up to a millimetre, enough to move a thin bleed off its label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from hemolab.config import resolve_profile
from hemolab.errors import HemolabError
from hemolab.validation import check_spacing

#: The CNN-DS input grid of each profile, ``(x, y, z)`` (Arab 2020 used 128x128x64: "full").
CNNDS_GRIDS: dict[str, tuple[int, int, int]] = {
    "tiny": (32, 32, 16),
    "small": (64, 64, 32),
    "full": (128, 128, 64),
}

#: Fraction of an input voxel by which nearest-neighbour sampling is nudged to break ties consistently.
_TIE_BREAK = 1e-4

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}


def cnnds_grid(profile: str | None = None) -> tuple[int, int, int]:
    """The CNN-DS input/output grid ``(x, y, z)`` of a profile.

    ``full`` is the paper's 128x128x64 (Arab 2020, Methods, "Preprocessing"); ``small`` (64x64x32) and
    ``tiny`` (32x32x16) halve it so that a CPU can train in minutes. Every size divides by 16, so a
    depth-5 CNN-DS (four stride-2 convolutions) fits (:func:`check_grid_for_cnnds`).

    Args:
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto, :func:`hemolab.config.resolve_profile`).

    Returns:
        The grid size.
    """

    return CNNDS_GRIDS[resolve_profile(profile)]


def check_grid_for_cnnds(size: Sequence[int], depth: int = 5) -> tuple[int, int, int]:
    """Check that a grid fits a CNN-DS of the given depth, i.e. survives ``depth - 1`` halvings.

    CNN-DS joins its levels by stride-2 convolutions and comes back up by x2 up-scaling (Arab 2020,
    Methods, "Network architecture"), so each dimension must divide by ``2 ** (depth - 1)``; otherwise the
    skip connections would not line up.

    Args:
        size: the grid ``(x, y, z)``.
        depth: number of levels of the network (the paper searched 3 to 6).

    Returns:
        The size as a tuple of ints.

    Raises:
        HemolabError: naming the nearest valid sizes for each dimension that does not fit.
    """
    size_t = _check_size(size)
    if int(depth) < 1:
        raise HemolabError(f"depth must be at least 1, got {depth}")
    factor = 2 ** (int(depth) - 1)
    bad = []
    for axis, n in zip("xyz", size_t, strict=True):
        if n % factor:
            below = max(factor, (n // factor) * factor)
            above = (n // factor + 1) * factor
            bad.append(f"{axis}={n} (nearest valid: {below} or {above})")
    if bad:
        raise HemolabError(
            f"grid {size_t} does not fit a CNN-DS of depth {depth}: every dimension must be a multiple of "
            f"2**(depth-1) = {factor}, but {', '.join(bad)}"
        )
    return size_t


def _check_size(size: Sequence[int]) -> tuple[int, int, int]:
    try:
        size_t = tuple(int(s) for s in size)
    except TypeError as exc:
        raise HemolabError(f"size must be three integers (x, y, z), got {size!r}") from exc
    if (
        len(size_t) != 3
        or any(s < 1 for s in size_t)
        or any(float(a) != b for a, b in zip(size, size_t, strict=True))
    ):
        raise HemolabError(f"size must be three positive integers (x, y, z), got {size!r}")
    return size_t  # type: ignore[return-value]


def _check_image(image, name: str = "image") -> sitk.Image:
    if not isinstance(image, sitk.Image):
        raise HemolabError(
            f"{name} must be a SimpleITK image (it carries the spacing and position resampling needs), got "
            f"{type(image).__name__}: wrap an array with hemolab.io.image_from_array(array, spacing=...)"
        )
    if image.GetDimension() != 3:
        raise HemolabError(
            f"{name} must be a 3D image, got a {image.GetDimension()}D one of size {image.GetSize()}"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise HemolabError(
            f"{name} must have one value per voxel, got {image.GetNumberOfComponentsPerPixel()}"
        )
    return image


def _is_integer(image: sitk.Image) -> bool:
    return image.GetPixelID() in (
        sitk.sitkUInt8,
        sitk.sitkInt8,
        sitk.sitkUInt16,
        sitk.sitkInt16,
        sitk.sitkUInt32,
        sitk.sitkInt32,
        sitk.sitkUInt64,
        sitk.sitkInt64,
    )


def _values_are_binary(image: sitk.Image) -> bool:
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    lo, hi = stats.GetMinimum(), stats.GetMaximum()
    if lo < 0 or hi > 1:
        return False
    if _is_integer(image):
        return True
    arr = sitk.GetArrayViewFromImage(image)
    return bool(np.all((arr == 0) | (arr == 1)))


def _choose_interpolator(image: sitk.Image, is_label: bool, interpolator: str | None, name: str) -> int:
    """Pick the interpolator and refuse the combinations that silently damage data."""
    if is_label:
        if not _values_are_binary(image):
            stats = sitk.MinimumMaximumImageFilter()
            stats.Execute(image)
            raise HemolabError(
                f"{name} was passed with is_label=True but its values span [{stats.GetMinimum():g}, "
                f"{stats.GetMaximum():g}], not just 0 and 1: a label must be binary. If this is a CT or a "
                "probability map, pass is_label=False (linear interpolation); threshold a probability map "
                "(prob >= 0.5) only after resampling it"
            )
        default = "nearest"
    else:
        if interpolator is None and _is_integer(image) and _values_are_binary(image):
            raise HemolabError(
                f"{name} is an integer image holding only 0 and 1: it looks like a label, and linear "
                "interpolation would turn its edges into fractions (0.25, 0.5, ...), no longer a label. Pass "
                "is_label=True to resample it with nearest-neighbour interpolation, so it stays binary"
            )
        default = "linear"
    key = default if interpolator is None else str(interpolator).lower()
    if key not in _INTERPOLATORS:
        raise HemolabError(
            f"unknown interpolator {interpolator!r}: choose one of {', '.join(_INTERPOLATORS)}"
        )
    return _INTERPOLATORS[key]


def _default_value(image: sitk.Image, is_label: bool, default_value: float | None) -> float:
    if default_value is not None:
        return float(default_value)
    if is_label:
        return 0.0
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    return float(stats.GetMinimum())  # air for a CT, 0 for a probability map


def _resample_onto(
    image: sitk.Image,
    size: Sequence[int],
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float] | None = None,
    *,
    is_label: bool,
    interpolator: str | None,
    default_value: float | None = None,
) -> sitk.Image:
    direction = image.GetDirection() if direction is None else direction
    name = "label" if is_label else "image"
    interp = _choose_interpolator(image, is_label, interpolator, name)
    src = image if is_label else sitk.Cast(image, sitk.sitkFloat32)  # no rounding of interpolated HU
    transform = sitk.Transform()
    if interp == sitk.sitkNearestNeighbor:
        # A new voxel centre often falls exactly halfway between two old ones (any even size ratio, e.g.
        # 64 -> 32). Which one wins would then depend on floating-point noise in the physical coordinates;
        # sampling 1e-4 voxel further along each axis makes ties go to the higher index, every time
        # (the same rule as torch's "nearest-exact", so MONAI's Resized gives the same label).
        axes = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
        shift = axes @ (_TIE_BREAK * np.array(image.GetSpacing(), dtype=float))
        transform = sitk.TranslationTransform(3, [float(v) for v in shift])
    out = sitk.Resample(
        src,
        [int(s) for s in size],
        transform,
        interp,
        [float(o) for o in origin],
        [float(s) for s in spacing],
        [float(d) for d in direction],
        _default_value(image, is_label, default_value),
        sitk.sitkUInt8 if is_label else sitk.sitkFloat32,
    )
    return out


def grid_for_size(image: sitk.Image, size: Sequence[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Spacing and origin of a grid of ``size`` voxels covering exactly the field of view of ``image``.

    Args:
        image: the scan.
        size: the new grid ``(x, y, z)``.

    Returns:
        ``(spacing, origin)`` of the new grid; its direction is the image's.
    """
    image = _check_image(image)
    size_t = _check_size(size)
    old_size = np.array(image.GetSize(), dtype=float)
    old_sp = np.array(image.GetSpacing(), dtype=float)
    new_sp = old_sp * old_size / np.array(size_t, dtype=float)
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.array(image.GetOrigin(), dtype=float) + direction @ ((new_sp - old_sp) / 2.0)
    return tuple(float(s) for s in new_sp), tuple(float(o) for o in origin)


def resample_to_size(
    image: sitk.Image,
    size: Sequence[int],
    is_label: bool = False,
    *,
    interpolator: str | None = None,
) -> sitk.Image:
    """Resample a scan to a fixed number of voxels, keeping its field of view (CNN-DS's 128x128x64 grid).

    Arab 2020, Methods, "Preprocessing": every whole-head CT is resampled to 128x128x64 voxels, linear
    interpolation for the image and nearest neighbour for the label (docs/methods.md §1). The physical extent
    and the direction are kept; the spacing becomes ``old_spacing * old_size / size`` and the origin moves
    by half the change of voxel size (see the module docstring).

    Args:
        image: a 3D SimpleITK image (a CT in HU, a probability map, or a binary label).
        size: the new grid ``(x, y, z)``, e.g. :func:`cnnds_grid`.
        is_label: the image is a binary label: nearest-neighbour interpolation, output uint8 {0, 1}.
            Otherwise linear interpolation, output float32.
        interpolator: override the interpolation (``"linear"``, ``"nearest"``, ``"bspline"``), e.g. to
            show what goes wrong with the wrong one; ``None`` picks it from ``is_label``. An explicit
            choice also switches off the check that refuses a 0/1 integer image without ``is_label``.

    Returns:
        The resampled image (uint8 for a label, float32 otherwise).

    Raises:
        HemolabError: for a non-image or non-3D input, a bad size, a label (integer image of 0/1) passed
            without ``is_label=True``, or ``is_label=True`` with non-binary values.
    """
    image = _check_image(image)
    size_t = _check_size(size)
    spacing, origin = grid_for_size(image, size_t)
    return _resample_onto(image, size_t, spacing, origin, is_label=is_label, interpolator=interpolator)


def resample_to_spacing(
    image: sitk.Image,
    spacing: Sequence[float],
    is_label: bool = False,
    *,
    interpolator: str | None = None,
) -> sitk.Image:
    """Resample a scan to a given voxel size in mm, keeping the centre of its field of view.

    The new grid has ``round(old_size * old_spacing / spacing)`` voxels per axis (at least 1), centred
    on the same physical point as the original; its extent differs from the original by less than one
    new voxel. Used for the Patel 3D CNN when a scan's voxel size should be changed (Patel 2019 worked
    on each data set's native resolution; hemolab does the same by default, ``spacing=None`` in
    :func:`hemolab.preprocess.prepare_patel`).

    Args:
        image: a 3D SimpleITK image.
        spacing: the new voxel size ``(sx, sy, sz)`` in mm.
        is_label: binary label: nearest neighbour, uint8 output; else linear, float32 output.
        interpolator: override the interpolation (``"linear"``, ``"nearest"``, ``"bspline"``).

    Returns:
        The resampled image.

    Raises:
        HemolabError: as :func:`resample_to_size`, and for a spacing that is not three positive numbers.
    """
    image = _check_image(image)
    new_sp = np.array(check_spacing(spacing), dtype=float)
    old_size = np.array(image.GetSize(), dtype=float)
    old_sp = np.array(image.GetSpacing(), dtype=float)
    new_size = np.maximum(1, np.round(old_size * old_sp / new_sp)).astype(int)
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    centre = np.array(image.GetOrigin(), dtype=float) + direction @ ((old_size - 1) / 2.0 * old_sp)
    origin = centre - direction @ ((new_size - 1) / 2.0 * new_sp)
    return _resample_onto(image, new_size, new_sp, origin, is_label=is_label, interpolator=interpolator)


def resample_like(
    image: sitk.Image,
    reference: sitk.Image,
    is_label: bool = False,
    *,
    interpolator: str | None = None,
    default_value: float | None = None,
) -> sitk.Image:
    """Resample ``image`` onto the voxel grid of ``reference`` (size, spacing, origin, direction).

    This is the inverse of :func:`resample_to_size`: a prediction made on the CNN-DS grid goes back onto
    the original scan with it. Map a network's *probability* back with linear interpolation and threshold
    it afterwards (smoother edges than resampling a thresholded mask with nearest neighbour).

    Args:
        image: the image to move (a CT, a probability map, a binary label).
        reference: the image whose grid to use (only its geometry is read).
        is_label: binary label: nearest neighbour, uint8 output; else linear, float32 output.
        interpolator: override the interpolation (``"linear"``, ``"nearest"``, ``"bspline"``).
        default_value: value where the reference grid reaches beyond ``image``; ``None`` = 0 for a label,
            the image's minimum (air for a CT, 0 for a probability) otherwise.

    Returns:
        The resampled image, on the reference's grid.

    Raises:
        HemolabError: as :func:`resample_to_size`.
    """
    image = _check_image(image)
    reference = _check_image(reference, "reference")
    return _resample_onto(
        image,
        reference.GetSize(),
        reference.GetSpacing(),
        reference.GetOrigin(),
        reference.GetDirection(),
        is_label=is_label,
        interpolator=interpolator,
        default_value=default_value,
    )


def field_of_view(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Physical positions (mm) of the two outer corners of an image's field of view (voxel edges, not centres).

    Args:
        image: a 3D SimpleITK image.

    Returns:
        ``(first_corner, last_corner)``: the outer corner of voxel (0, 0, 0) and of the last voxel.
    """
    image = _check_image(image)
    sp = np.array(image.GetSpacing(), dtype=float)
    n = np.array(image.GetSize(), dtype=float)
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.array(image.GetOrigin(), dtype=float)
    return origin - direction @ (sp / 2.0), origin + direction @ ((n - 0.5) * sp)
