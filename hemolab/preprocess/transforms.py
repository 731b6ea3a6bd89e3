"""MONAI dictionary transform pipelines for both methods, on keys ``"image"`` and ``"label"``.

They give the same arrays as the plain functions (:func:`hemolab.preprocess.prepare_cnnds`,
:func:`hemolab.preprocess.prepare_patel`; tested to float tolerance), so a student can use either:

* :func:`cnnds_transforms` -- load, check HU, ``Resized`` to the CNN-DS grid (trilinear with
  ``align_corners=False`` is exactly SimpleITK's linear resampling keeping the field of view;
  ``nearest-exact`` is exactly SimpleITK's nearest neighbour), ``ScaleIntensityRanged`` [0, 100] HU -> [0, 1].
* :func:`patel_transforms` -- load, check HU, optional resampling to a voxel size (with
  :func:`hemolab.preprocess.resample_to_spacing`: MONAI's ``Spacingd`` keeps the first voxel centre rather
  than the centre of the field of view, so it does not give the same grid), ``ScaleIntensityRanged``
  [-200, 200] HU -> [0, 1], and for training Patel's augmentation.

Arrays are ``(1, x, y, z)`` (channel first, hemolab's ``[x, y, z]`` order). Loading goes through SimpleITK
and :func:`hemolab.io.array_from_image` (:class:`LoadScand`), not MONAI's ``ITKReader``, which needs the
``itk`` package hemolab does not depend on; for a NIfTI file MONAI's ``NibabelReader`` gives the same array
(tested).

Augmentation (Patel 2019, "Training"): with probability 0.5 a sample is either mirrored left-right (the x
axis) or rotated in the axial (x-y) plane by a uniform angle in [-15°, 15°] (MONAI's ``range_z`` is the
rotation about z). Arab 2020 does not describe any augmentation for CNN-DS, so by default its pipeline has
none (our choice, documented in notebook 03); ``augment=True`` adds Patel's for an ablation.
Seed a pipeline with ``pipeline.set_random_state(seed)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureTyped,
    Flipd,
    Identityd,
    MapTransform,
    OneOf,
    RandRotated,
    Resized,
    ScaleIntensityRanged,
)

from hemolab.errors import HemolabError
from hemolab.io import array_from_image, image_from_array, read_label, read_scan
from hemolab.preprocess.intensity import CNNDS_HU_RANGE, PATEL_HU_RANGE
from hemolab.preprocess.resample import _check_size, resample_to_spacing
from hemolab.validation import check_hu, check_mask, check_spacing

KEYS: tuple[str, str] = ("image", "label")


def _affine_of(image: sitk.Image) -> np.ndarray:
    """The 4x4 voxel-to-world matrix of a SimpleITK image (ITK's LPS world; columns = axes x, y, z)."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)[None, :]
    affine[:3, 3] = image.GetOrigin()
    return affine


def _image_of(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image from an ``[x, y, z]`` array and the 4x4 matrix of :func:`_affine_of`."""

    aff = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    direction = aff[:3, :3] / spacing[None, :]
    return image_from_array(array, spacing=spacing, origin=aff[:3, 3], direction=direction.ravel())


def _read(value: Any, is_label: bool) -> sitk.Image | np.ndarray:
    if isinstance(value, sitk.Image):
        return value
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        if not path.exists():
            raise HemolabError(f"cannot load {path}: no such file or folder")
        # hemolab.io's readers: DICOM folders, canonical orientation, clear errors
        return read_label(path) if is_label else read_scan(path)
    return np.asarray(value)


class LoadScand(MapTransform):
    """Load a scan / label into a channel-first MetaTensor ``(1, x, y, z)`` with its affine.

    Each value may be a path (a NIfTI/NRRD/MHA file or a DICOM folder, read with :mod:`hemolab.io`), a
    SimpleITK image, or a NumPy ``[x, y, z]`` array (identity affine). Images become float32, labels
    (every key but ``image_key``) float32 with values 0/1 (checked).

    Args:
        keys: keys to load.
        image_key: the key holding the CT; the other keys are labels.
        allow_missing_keys: skip keys that are absent (e.g. no label at inference).
    """

    def __init__(
        self, keys: KeysCollection = KEYS, image_key: str = "image", allow_missing_keys: bool = True
    ):
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:

        d = dict(data)
        for key in self.key_iterator(d):
            is_label = key != self.image_key
            value = _read(d[key], is_label)
            if isinstance(value, sitk.Image):
                arr, affine = array_from_image(value), _affine_of(value)
            else:
                arr = value[0] if value.ndim == 4 and value.shape[0] == 1 else value
                affine = np.eye(4)
            if is_label:
                arr = check_mask(arr, str(key)).astype(np.float32)
            else:
                arr = np.asarray(arr, dtype=np.float32)
            d[key] = MetaTensor(
                torch.from_numpy(np.ascontiguousarray(arr))[None], affine=torch.as_tensor(affine)
            )
        return d


class CheckHUd(MapTransform):
    """Raise a :class:`~hemolab.errors.HemolabError` unless ``image`` is a CT in Hounsfield units.

    A scan normalised twice (or never converted to HU) would otherwise give a network input that is all
    0 or all 1, without any error. Uses :func:`hemolab.validation.check_hu`; the data pass unchanged.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            arr = d[key]
            arr = arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else np.asarray(arr)
            check_hu(arr[0] if arr.ndim == 4 else arr, str(key))
        return d


class ResampleToSpacingd(MapTransform):
    """:func:`hemolab.preprocess.resample_to_spacing` as a MONAI dict transform (linear for ``image``,
    nearest neighbour for the other keys), keeping the centre of the field of view.

    Args:
        keys: keys to resample.
        spacing: the new voxel size ``(sx, sy, sz)`` in mm.
        image_key: the key resampled linearly; the others are labels.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing: Sequence[float],
        image_key: str = "image",
        allow_missing_keys: bool = True,
    ):
        super().__init__(keys, allow_missing_keys)
        self.spacing = check_spacing(spacing)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:

        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            affine = np.asarray(value.affine if isinstance(value, MetaTensor) else np.eye(4), dtype=float)
            arr = value.detach().cpu().numpy()[0] if isinstance(value, torch.Tensor) else np.asarray(value)[0]
            is_label = key != self.image_key
            img = _image_of(arr.astype(np.uint8) if is_label else arr, affine)
            out = resample_to_spacing(img, self.spacing, is_label=is_label)
            d[key] = MetaTensor(
                torch.from_numpy(array_from_image(out).astype(np.float32))[None],
                affine=torch.as_tensor(_affine_of(out)),
            )
        return d


def patel_augmentation(
    keys: KeysCollection = KEYS,
    prob: float = 0.5,
    max_angle_deg: float = 15.0,
    image_key: str = "image",
) -> OneOf:
    """Patel 2019's augmentation ("Training"): with probability ``prob`` mirror left-right OR rotate axially.

    Half of the augmented samples are mirrored along x (left-right), the other half rotated in the axial
    (x-y) plane by a uniform angle in [-``max_angle_deg``, ``max_angle_deg``]; the image with bilinear, the
    labels with nearest-neighbour interpolation, zeros (normalised air, background) where the rotation
    brings in space from outside.

    Args:
        keys: the keys to augment together.
        prob: probability that a sample is augmented at all.
        max_angle_deg: largest rotation angle in degrees.
        image_key: the key interpolated bilinearly.

    Returns:
        A MONAI :class:`~monai.transforms.OneOf`.
    """
    if not 0.0 <= prob <= 1.0:
        raise HemolabError(f"prob must lie in [0, 1], got {prob}")
    keys = [keys] if isinstance(keys, str) else list(keys)
    modes = ["bilinear" if k == image_key else "nearest" for k in keys]
    rotate = RandRotated(
        keys,
        range_z=math.radians(float(max_angle_deg)),
        prob=1.0,
        keep_size=True,
        mode=modes,
        padding_mode="zeros",
        allow_missing_keys=True,
    )
    mirror = Flipd(keys, spatial_axis=0, allow_missing_keys=True)
    return OneOf(
        [Identityd(keys, allow_missing_keys=True), mirror, rotate],
        weights=[1.0 - prob, prob / 2.0, prob / 2.0],
    )


def cnnds_transforms(
    size: Sequence[int],
    train: bool = False,
    *,
    augment: bool = False,
    keys: KeysCollection = KEYS,
) -> Compose:
    """The CNN-DS input pipeline (Arab 2020, Methods, "Preprocessing") as MONAI dict transforms.

    ``LoadScand`` -> ``CheckHUd`` -> ``Resized`` to ``size`` (image trilinear, label nearest-exact: the same
    grid as :func:`resample_to_size`) -> ``ScaleIntensityRanged`` [0, 100] HU -> [0, 1] with clipping ->
    float32. Gives the arrays of :func:`prepare_cnnds` (image) and of :func:`resample_to_size` with
    ``is_label=True`` (label).

    Args:
        size: the grid ``(x, y, z)``, e.g. :func:`hemolab.preprocess.cnnds_grid`.
        train: training pipeline. The paper describes no augmentation, so it equals the inference
            pipeline unless ``augment`` is set (our documented choice).
        augment: with ``train``, add Patel's mirror / axial-rotation augmentation (an ablation).
        keys: the keys; the first is the image, the others labels (missing ones are skipped).

    Returns:
        A :class:`monai.transforms.Compose`; call ``.set_random_state(seed)`` for reproducible augmentation.
    """
    size_t = _check_size(size)
    keys = [keys] if isinstance(keys, str) else list(keys)
    image_key, label_keys = keys[0], keys[1:]
    lo, hi = CNNDS_HU_RANGE
    transforms: list = [
        LoadScand(keys, image_key=image_key),
        CheckHUd(image_key),
        Resized(image_key, size_t, mode="trilinear", align_corners=False, anti_aliasing=False),
    ]
    if label_keys:
        transforms.append(Resized(label_keys, size_t, mode="nearest-exact", allow_missing_keys=True))
    transforms.append(ScaleIntensityRanged(image_key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    if train and augment:
        transforms.append(patel_augmentation(keys, image_key=image_key))
    transforms.append(EnsureTyped(keys, dtype=torch.float32, allow_missing_keys=True))
    return Compose(transforms)


def patel_transforms(
    train: bool = False,
    *,
    spacing: Sequence[float] | None = None,
    prob: float = 0.5,
    max_angle_deg: float = 15.0,
    keys: KeysCollection = KEYS,
) -> Compose:
    """The Patel 3D CNN input pipeline (Patel 2019, "Pre-processing" and "Training") as MONAI dict transforms.

    ``LoadScand`` -> ``CheckHUd`` -> (``ResampleToSpacingd`` if ``spacing``) -> ``ScaleIntensityRanged``
    [-200, 200] HU -> [0, 1] with clipping -> (training: :func:`patel_augmentation`) -> float32. Gives the
    array of :func:`prepare_patel` (without augmentation). Patches are cut afterwards
    (:mod:`hemolab.training.patches`).

    Args:
        train: add the paper's augmentation (probability ``prob``: mirror or rotate by up to
            ``max_angle_deg`` in the axial plane).
        spacing: optional voxel size in mm to resample to (``None`` keeps each scan's grid, as the paper did).
        prob: probability of augmenting a sample.
        max_angle_deg: the largest axial rotation.
        keys: the keys; the first is the image, the others labels (missing ones are skipped).

    Returns:
        A :class:`monai.transforms.Compose`; call ``.set_random_state(seed)`` for reproducible augmentation.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    image_key = keys[0]
    lo, hi = PATEL_HU_RANGE
    transforms: list = [LoadScand(keys, image_key=image_key), CheckHUd(image_key)]
    if spacing is not None:
        transforms.append(ResampleToSpacingd(keys, spacing, image_key=image_key))
    transforms.append(ScaleIntensityRanged(image_key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    if train:
        transforms.append(
            patel_augmentation(keys, prob=prob, max_angle_deg=max_angle_deg, image_key=image_key)
        )
    transforms.append(EnsureTyped(keys, dtype=torch.float32, allow_missing_keys=True))
    return Compose(transforms)
