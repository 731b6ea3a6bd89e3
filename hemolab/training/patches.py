"""Patches for the Patel 3D CNN: sampling, the weight map, augmentation (Patel 2019; docs/methods.md §2.4).

Patel et al., *Sci Rep* 9:17858 (2019), Methods, "Training":

* **Patch sampling.** Patch centres are drawn *equally* from the haemorrhage (foreground) and from the
  cranial-cavity background. Around each centre an input patch (124^3 in the paper) is cut from the
  normalised CT and an output-size patch (36^3) from the label: the network's valid convolutions turn
  the first into the second (:mod:`hemolab.models.patel`). :func:`extract_patch`.
* **Weight map.** Per patch, all foreground voxels and an equal number of randomly chosen background
  voxels get weight 1, the others 0; if the foreground exceeds half of the patch, or there is no
  foreground, every weight is 1. Computed on the *output-size* label patch. :func:`patch_weight_map`.
* **Loss.** Categorical cross-entropy weighted by that map: :func:`hemolab.losses.weighted_cross_entropy`.
* **Augmentation.** With probability 0.5 a patch is mirrored or rotated in the axial plane by an angle in
  [-15°, 15°]. :func:`patel_augmentation`.

Our choices (documented in notebook 04):

* Volumes are used on their own voxel grid (no resampling) and scaled from the run's HU window to
  [0, 1] (:func:`hemolab.preprocess.prepare_patel`; the paper's [-200, 200] HU, the CPU profiles'
  [0, 100] HU, docs/methods.md §5.2). Where a patch reaches beyond the scan, it is padded with **0**, the
  normalised value of air (anything at or below the window's low end), so the padding looks like the air
  around a head. The tiny / small synthetic volumes (64x64x16, 128x128x32) are smaller
  than a patch: most of such a patch is this padding.
* The synthetic cohorts have thick slices (16-66 slices per head), like the paper's PATCH data, so every
  profile uses the paper's **thick-slice variant** (no pooling along z; 124x124x40 in ``full``). The
  isotropic 124^3 network is one keyword away (``thick_slice=False``).
* Augmentation is done on the input-size label patch together with the image, and the label is cropped
  to the output size afterwards, so that rotated corners never enter the label.
* Mirroring is left-right (the x axis); the transforms are :func:`hemolab.preprocess.patel_augmentation`.
* The CPU profiles may draw fewer foreground centres (``fg_fraction``) and take some background centres
  from *hard* voxels (``hard_negative_fraction``): cavity voxels that are not blood but as bright as blood or
  brighter (>= 50 HU: the dense band under the inner table, the dural sinuses, falx and tentorium, the
  choroid plexus, calcification and the partial-volume rim of the skull), the voxels a network calls blood
  by mistake (docs/methods.md §5.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hemolab.datasets import Case
from hemolab.errors import HemolabError
from hemolab.io import array_from_image
from hemolab.models.inference import center_crop
from hemolab.preprocess import PAD_VALUE, PATEL_HU_RANGE, cranial_cavity_mask, prepare_patel
from hemolab.preprocess import patel_augmentation as _augmentation
from hemolab.validation import check_triple

#: Hard background: cavity voxels at or above this HU that are not blood (:attr:`PatelVolume.hard_index`).
#: Above grey matter (37-41 HU, which a 40 HU level mostly drew), where acute blood begins.
HARD_NEGATIVE_HU = 50.0

#: A weight-map function: ``fn(label_patch, rng) -> weights`` of the same shape (:func:`patch_weight_map`).
WeightMapFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def extract_patch(
    volume: np.ndarray, centre: Sequence[int], size: int | Sequence[int], pad_value: float = PAD_VALUE
) -> np.ndarray:
    """Cut a patch of ``size`` centred on voxel ``centre``, padding with ``pad_value`` beyond the volume.

    The patch starts at ``centre - size // 2`` on each axis. For the Patel network the input patch
    (e.g. 124) and the output patch (36) cut around the same centre are aligned exactly: the output
    starts ``(124 - 36) / 2 = 44`` voxels further in, which is where the network's output lies.

    Args:
        volume: 3D array ``[x, y, z]``.
        centre: voxel index ``(i, j, k)``.
        size: patch size (one number or ``(x, y, z)``).
        pad_value: value outside the volume (0 = air after Patel's normalisation; 0 = background for labels).

    Returns:
        The patch, same dtype as ``volume``.
    """
    size = check_triple(size)
    out = np.full(size, pad_value, dtype=volume.dtype)
    src, dst = [], []
    for c, s, n in zip(centre, size, volume.shape, strict=True):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def patch_weight_map(label: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """The per-patch weight map of Patel 2019 ("Training"; docs/methods.md §2).

    All foreground voxels, plus as many background voxels chosen at random (without replacement), get
    weight 1; every other voxel gets 0. If the foreground is more than half of the patch (there are not
    enough background voxels to balance it), or the patch has no foreground at all, every weight is 1.
    Call it on the OUTPUT-size label patch: the weights say which output voxels enter the loss.

    Args:
        label: binary label patch (any shape).
        rng: a :class:`numpy.random.Generator` or a seed (``None``: fresh entropy).

    Returns:
        float32 weights of the same shape, in {0, 1}.
    """
    fg = np.asarray(label) > 0
    n_fg = int(fg.sum())
    if n_fg == 0 or n_fg > fg.size / 2:
        return np.ones(fg.shape, dtype=np.float32)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    weight = fg.astype(np.float32)
    bg_index = np.flatnonzero(~fg)
    chosen = rng.choice(bg_index, size=n_fg, replace=False)
    weight.reshape(-1)[chosen] = 1.0
    return weight


def patel_augmentation(max_angle_deg: float = 15.0, prob: float = 0.5):
    """Patel 2019's augmentation on keys ``"image"``, ``"label"``: :func:`hemolab.preprocess.patel_augmentation`.

    With probability ``prob`` a patch is augmented; an augmented patch is either mirrored left-right
    (x axis) or rotated in the axial (x-y) plane by a uniform angle in [-15°, 15°] (each half of the
    time; MONAI's ``range_z``, the rotation about z). Image: bilinear, label: nearest; outside the
    rotated patch: 0 (air / background). hemolab applies it to each input-size patch pair.

    Returns:
        A :class:`monai.transforms.OneOf` (call ``set_random_state`` on it for reproducibility).
    """

    return _augmentation(["image", "label"], prob=prob, max_angle_deg=max_angle_deg, image_key="image")


@dataclass
class PatelVolume:
    """One training scan, ready for patch sampling.

    Attributes:
        case_id: the case.
        image: normalised CT ``[x, y, z]`` float32 in [0, 1].
        label: haemorrhage mask ``[x, y, z]`` bool.
        cavity: cranial-cavity mask ``[x, y, z]`` bool.
        spacing: voxel size in mm.
        hu_window: the HU range ``image`` was scaled from (Patel 2019: [-200, 200]).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    cavity: np.ndarray
    spacing: tuple[float, float, float]
    hu_window: tuple[float, float] = PATEL_HU_RANGE
    _fg: np.ndarray | None = field(default=None, repr=False)
    _bg: np.ndarray | None = field(default=None, repr=False)
    _hard: np.ndarray | None = field(default=None, repr=False)

    @property
    def foreground_index(self) -> np.ndarray:
        """Flat indices of the haemorrhage voxels (patch centres for foreground)."""
        if self._fg is None:
            self._fg = np.flatnonzero(self.label)
        return self._fg

    @property
    def background_index(self) -> np.ndarray:
        """Flat indices of cranial-cavity voxels outside the haemorrhage (patch centres for background)."""
        if self._bg is None:
            bg = np.flatnonzero(self.cavity & ~self.label)
            if bg.size == 0:  # no cavity found: anywhere outside the bleed
                bg = np.flatnonzero(~self.label)
            self._bg = bg
        return self._bg

    @property
    def hard_index(self) -> np.ndarray:
        """Flat indices of cavity voxels that are not blood but at least :data:`HARD_NEGATIVE_HU` bright."""
        if self._hard is None:
            lo, hi = self.hu_window
            level = (HARD_NEGATIVE_HU - lo) / (hi - lo)  # the same HU on the normalised image
            self._hard = np.flatnonzero(self.cavity & ~self.label & (self.image >= level))
        return self._hard


def load_patel_volume(case: Case, hu_window: Sequence[float] = PATEL_HU_RANGE) -> PatelVolume:
    """Read a :class:`hemolab.datasets.Case`, normalise it and compute its cranial cavity.

    Args:
        case: the case.
        hu_window: the HU range scaled to [0, 1] (:func:`hemolab.preprocess.prepare_patel`; the paper:
            [-200, 200]; a run's settings and checkpoint carry their own).
    """

    window = (float(hu_window[0]), float(hu_window[1]))
    image = case.load_image()
    label = array_from_image(case.load_label()) > 0
    cavity = array_from_image(cranial_cavity_mask(image)) > 0
    spacing = tuple(float(s) for s in image.GetSpacing())
    return PatelVolume(
        str(case.case_id), prepare_patel(image, hu_window=window), label, cavity, spacing, window
    )


def sample_patch(
    vol: PatelVolume,
    foreground: bool,
    input_size: Sequence[int],
    output_size: Sequence[int],
    rng: np.random.Generator,
    transform=None,
    weight_map_fn: WeightMapFn | None = None,
    hard: bool = False,
) -> dict[str, np.ndarray]:
    """One training sample: a centre from the foreground or the cavity background, patches, weight map.

    Args:
        vol: the scan.
        foreground: draw the centre from the haemorrhage (``True``) or the cavity background; a scan
            without haemorrhage always gives a background centre.
        input_size: network input patch size.
        output_size: network output patch size.
        rng: random generator (centre, augmentation seed, weight map).
        transform: augmentation (e.g. :func:`patel_augmentation`) applied to image and input-size label.
        weight_map_fn: ``fn(label, rng) -> weights`` on the output-size label (default: the paper's
            :func:`patch_weight_map`); a hook for notebook 04's exercises.
        hard: for a background centre, draw it from the hard background (:attr:`PatelVolume.hard_index`)
            where the scan has any.

    Returns:
        ``{"image": (1, *input_size) float32, "label": (1, *output_size) float32,
        "weight": (1, *output_size) float32, "centre": (3,) int64}``.
    """
    if foreground and vol.foreground_index.size:
        index = vol.foreground_index
    elif hard and vol.hard_index.size:
        index = vol.hard_index
    else:
        index = vol.background_index
    flat = int(index[rng.integers(index.size)])
    centre = np.unravel_index(flat, vol.image.shape)
    image = extract_patch(vol.image, centre, input_size, PAD_VALUE)
    label = extract_patch(vol.label.astype(np.float32), centre, input_size, 0.0)
    if transform is not None:
        transform.set_random_state(seed=int(rng.integers(2**31)))
        out = transform({"image": image[None], "label": label[None]})
        image = np.asarray(out["image"], dtype=np.float32)[0]
        label = np.asarray(out["label"], dtype=np.float32)[0]
    label = (center_crop(label, output_size) > 0.5).astype(np.float32)
    weight = np.asarray((weight_map_fn or patch_weight_map)(label, rng), dtype=np.float32)
    if weight.shape != label.shape:
        raise HemolabError(
            f"weight_map_fn returned shape {weight.shape} for a label patch of shape {label.shape}"
        )
    return {
        "image": image[None].astype(np.float32),
        "label": label[None],
        "weight": weight[None],
        "centre": np.asarray(centre, dtype=np.int64),
    }


class PatelPatchDataset(torch.utils.data.Dataset):
    """Patches for the Patel 3D CNN, centres drawn from haemorrhage and cavity background.

    With the paper's equal sampling (``fg_fraction=0.5``) sample ``i`` takes its centre from the foreground
    when ``i`` is even and from the background when it is odd; in general a fraction ``fg_fraction`` of the
    samples, evenly spread, are foreground. Each from a scan chosen at random.

    * ``fixed=False`` (training): every access draws a new patch from the dataset's own generator, so
      each epoch sees new patches; with ``num_workers=0`` and the same access order a run is repeatable.
    * ``fixed=True`` (validation): sample ``i`` is always the same (seeded by ``(seed, i)``); the patches
      are made once and kept.

    Args:
        volumes: the scans (:func:`load_patel_volume`).
        n_patches: the dataset's length (patches per epoch).
        input_size, output_size: network patch sizes.
        transform: augmentation for training (``None`` for none).
        weight_map_fn: the weight map (:func:`sample_patch`; default :func:`patch_weight_map`).
        seed: random seed.
        fixed: see above.
        fg_fraction: the fraction of foreground centres (the paper: 0.5).
        hard_negative_fraction: the fraction of background centres drawn from the hard background.
        cases: the cases the volumes were read from, kept for whole-scan validation.
    """

    def __init__(
        self,
        volumes: Sequence[PatelVolume],
        n_patches: int,
        input_size: Sequence[int],
        output_size: Sequence[int],
        *,
        transform=None,
        weight_map_fn: WeightMapFn | None = None,
        seed: int = 0,
        fixed: bool = False,
        fg_fraction: float = 0.5,
        hard_negative_fraction: float = 0.0,
        cases: Sequence[Any] = (),
    ):
        if not 0.0 < float(fg_fraction) <= 1.0 or not 0.0 <= float(hard_negative_fraction) <= 1.0:
            raise HemolabError(
                f"fg_fraction must lie in (0, 1] and hard_negative_fraction in [0, 1], got {fg_fraction} and "
                f"{hard_negative_fraction}"
            )
        if not volumes:
            raise HemolabError("no scans to sample patches from: the training / validation split is empty")
        if n_patches < 1:
            raise HemolabError(f"n_patches must be at least 1, got {n_patches}")
        self.volumes = list(volumes)
        self.n_patches = int(n_patches)
        self.input_size = check_triple(input_size)
        self.output_size = check_triple(output_size)
        self.transform = transform
        self.weight_map_fn = weight_map_fn
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self.fg_fraction = float(fg_fraction)
        self.hard_negative_fraction = float(hard_negative_fraction)
        self.cases = list(cases)
        self._rng = np.random.default_rng(self.seed)
        self._cache: dict[int, dict[str, Any]] = {}
        with_fg = [v for v in self.volumes if v.foreground_index.size]
        self._fg_volumes = with_fg or self.volumes

    def __len__(self) -> int:
        return self.n_patches

    def is_foreground(self, i: int) -> bool:
        """Whether sample ``i`` has a foreground centre: a fraction ``fg_fraction`` of them, evenly spread."""
        f = self.fg_fraction
        return i == 0 or math.floor(i * f + 1e-9) != math.floor((i - 1) * f + 1e-9)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.fixed and i in self._cache:
            return self._cache[i]
        rng = np.random.default_rng([self.seed, int(i)]) if self.fixed else self._rng
        foreground = self.is_foreground(int(i))
        pool = self._fg_volumes if foreground else self.volumes
        vol = pool[int(rng.integers(len(pool)))]
        hard = (
            not foreground
            and self.hard_negative_fraction > 0
            and bool(rng.random() < self.hard_negative_fraction)
        )
        s = sample_patch(
            vol, foreground, self.input_size, self.output_size, rng, self.transform, self.weight_map_fn, hard
        )
        item = {k: torch.from_numpy(v) for k, v in s.items()}
        item["case_id"] = vol.case_id
        if self.fixed:
            self._cache[i] = item
        return item
