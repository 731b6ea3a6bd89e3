"""hemolab's array and orientation conventions, and writing images.

hemolab arrays are indexed ``[x, y, z]``; SimpleITK's ``GetArrayFromImage`` gives ``[z, y, x]``.
:func:`array_from_image` and :func:`image_from_array` are the only places that cross between the two.
Every scan is brought to one orientation, :data:`CANONICAL_ORIENTATION` ("LPS": array axis x points to the
patient's left, y to posterior, z to superior).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hemolab.atomic import atomic_write
from hemolab.errors import HemolabError, HemolabExistsError
from hemolab.validation import check_spacing, check_volume

#: hemolab's one orientation: array axis x runs to the patient's Left, y to Posterior, z to Superior
#: (DICOM's LPS, SimpleITK's default physical frame). ``image[x, y, :]`` is a column from feet to head.
CANONICAL_ORIENTATION = "LPS"
#: What a voxel without data becomes: outside the scanner's field of view, or outside a tilted stack.
AIR_HU = -1024.0


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
    compress = path.name.endswith((".nii.gz", ".nrrd", ".mha"))
    atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=compress))
    return path


def orientation_code(image: sitk.Image) -> str:
    """Three letters naming where each array axis points (``"LPS"`` after :func:`read_scan`)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def to_canonical(image: sitk.Image, name: str) -> sitk.Image:
    """3D, scalar, float32 and oriented :data:`CANONICAL_ORIENTATION`."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise HemolabError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour?): a CT has one"
        )
    dim = image.GetDimension()
    if dim != 3 or min(image.GetSize()) < 2:
        raise HemolabError(
            f"{name} is {dim}D with size {image.GetSize()}: hemolab needs one 3D volume"
            + (
                " (a single slice is not a head CT; read the whole series folder)"
                if dim == 2 or min(image.GetSize()) < 2
                else ""
            )
            + (
                ": a 4D image holds several volumes (time points/channels); extract one, e.g. image[:, :, :, 0]"
                if dim == 4
                else ""
            )
        )
    image = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), CANONICAL_ORIENTATION)
    return image
