"""Early checks of user input, so that bad input gets a clear :class:`~hemolab.errors.HemolabError`
instead of a traceback deep inside NumPy or, worse, a silent wrong answer.

Every public hemolab function that takes a volume calls these first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
