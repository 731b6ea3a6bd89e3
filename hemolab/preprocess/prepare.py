"""The network inputs of both methods: the ONE place training and inference get their input from.

If training and inference prepared their inputs in two places, a small difference (a forgotten /100, a
different interpolation) would silently cost accuracy. Every hemolab code path -- the training data sets,
:func:`hemolab.architectures.segment_scan`, the MONAI pipelines of :mod:`hemolab.preprocess.transforms` (tested
to give the same arrays) -- goes through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from hemolab.errors import HemolabError
from hemolab.io import array_from_image
from hemolab.preprocess.intensity import CNNDS_HU_RANGE, PATEL_HU_RANGE, scale_window
from hemolab.preprocess.resample import (
    _check_image,
    _check_size,
    check_grid_for_cnnds,
    resample_to_size,
    resample_to_spacing,
)
from hemolab.validation import check_hu, check_mask


def _hu_array(image: sitk.Image) -> np.ndarray:

    return check_hu(array_from_image(image), "image")


def prepare_cnnds(
    image: sitk.Image,
    size: Sequence[int],
    depth: int | None = None,
    hu_window: Sequence[float] = CNNDS_HU_RANGE,
) -> np.ndarray:
    """A CT as the CNN-DS network sees it: whole head on a fixed grid, [0, 100] HU divided by 100.

    Arab 2020, Methods, "Preprocessing" (docs/methods.md §1): linear resampling to 128x128x64 voxels (field of
    view kept, :func:`resample_to_size`), HU < 0 -> 0 and HU > 100 -> 100 (:func:`clip_cnnds`); hemolab then
    divides by 100 so the input lies in [0, 1].

    Args:
        image: the CT in HU (SimpleITK image, e.g. from :func:`hemolab.io.read_scan`).
        size: the grid ``(x, y, z)``, e.g. :func:`hemolab.preprocess.cnnds_grid`.
        depth: if given, also check that the grid fits a CNN-DS of this depth (:func:`check_grid_for_cnnds`).
        hu_window: the HU range scaled to [0, 1] (the paper: [0, 100]; a checkpoint stores its own).

    Returns:
        float32 array ``[x, y, z]`` of shape ``size`` with values in [0, 1].

    Raises:
        HemolabError: for a non-image, intensities that are not HU, a bad size, or a grid that does not fit.
    """
    image = _check_image(image)
    size_t = check_grid_for_cnnds(size, depth) if depth is not None else _check_size(size)
    _hu_array(image)  # the scan must be in HU before anything else

    resampled = array_from_image(resample_to_size(image, size_t, is_label=False))
    return scale_window(resampled, hu_window)


def prepare_patel(
    image: sitk.Image,
    spacing: Sequence[float] | None = None,
    hu_window: Sequence[float] = PATEL_HU_RANGE,
) -> np.ndarray:
    """A CT as the Patel 3D CNN sees it: [-200, 200] HU scaled to [0, 1], on its own grid or resampled.

    Patel 2019, "Pre-processing" (docs/methods.md §2.2). Patel 2019 resampled its data to 5 mm slices;
    hemolab keeps each scan on its own grid by default (the synthetic cohorts already have thick slices);
    ``spacing`` resamples first (linear, :func:`resample_to_spacing`) when a model trained at one voxel
    size is applied to scans of another.

    Args:
        image: the CT in HU (SimpleITK image).
        spacing: optional voxel size ``(sx, sy, sz)`` in mm to resample to; ``None`` keeps the grid.
        hu_window: the HU range scaled to [0, 1] (the paper: [-200, 200]; a checkpoint stores its own).

    Returns:
        float32 array ``[x, y, z]`` in [0, 1].

    Raises:
        HemolabError: for a non-image or intensities that are not HU.
    """
    image = _check_image(image)
    hu = _hu_array(image)
    if spacing is not None:
        hu = array_from_image(resample_to_spacing(image, spacing, is_label=False))
    return scale_window(hu, hu_window)


def prepare_label(
    label: sitk.Image, size: Sequence[int] | None = None, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """A binary label on the grid the network sees (nearest neighbour), as a bool array ``[x, y, z]``.

    Args:
        label: the label (SimpleITK image of 0/1).
        size: the CNN-DS grid (:func:`resample_to_size`), or
        spacing: a voxel size for the Patel 3D CNN (:func:`resample_to_spacing`); neither keeps the grid.

    Returns:
        Boolean array.

    Raises:
        HemolabError: for a non-binary label, or both ``size`` and ``spacing`` given.
    """

    label = _check_image(label, "label")
    if size is not None and spacing is not None:
        raise HemolabError("give either size (CNN-DS) or spacing (Patel), not both")
    if size is not None:
        label = resample_to_size(label, size, is_label=True)
    elif spacing is not None:
        label = resample_to_spacing(label, spacing, is_label=True)
    else:
        return check_mask(array_from_image(label), "label")
    return array_from_image(label).astype(bool)
