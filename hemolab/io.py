"""Reading and writing scans (SimpleITK), and the array convention of hemolab.

hemolab arrays are indexed ``[x, y, z]``; SimpleITK's ``GetArrayFromImage`` gives ``[z, y, x]``.
:func:`array_from_image` and :func:`image_from_array` are the only places that cross between the two.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hemolab.errors import HemolabExistsError
from hemolab.validation import check_spacing, check_volume


def array_from_image(image: sitk.Image) -> np.ndarray:
    """The voxels of a SimpleITK image as a NumPy array indexed ``[x, y, z]`` (a copy)."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def image_from_array(
    array,
    reference: sitk.Image | None = None,
    *,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
) -> sitk.Image:
    """A SimpleITK image from a NumPy array indexed ``[x, y, z]``.

    Args:
        array: the 3D volume.
        reference: copy spacing, origin and direction from this image (its size must match).
        spacing: voxel size ``(sx, sy, sz)`` in mm, when there is no reference.
        origin: physical position of voxel (0, 0, 0) in mm.
        direction: 9 numbers, the direction cosine matrix (row-major).

    Returns:
        The image.
    """
    arr = check_volume(array, "array")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    if reference is not None:
        if tuple(reference.GetSize()) != tuple(arr.shape):
            from hemolab.errors import HemolabError

            raise HemolabError(
                f"array shape {arr.shape} does not match the reference image size {reference.GetSize()}"
            )
        image.CopyInformation(reference)
    if spacing is not None:
        image.SetSpacing(check_spacing(spacing))
    if origin is not None:
        image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    return image


def write_image(image: sitk.Image, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write an image (NIfTI, NRRD, MHA: chosen by the extension), atomically.

    Args:
        image: the image to write.
        path: the file to write, e.g. ``case.nii.gz``.
        overwrite: replace an existing file. Without it an existing file is never touched.

    Returns:
        The path written.

    Raises:
        HemolabExistsError: if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise HemolabExistsError(f"{path} exists: pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=suffix in (".nii.gz", ".nrrd", ".mha"))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
