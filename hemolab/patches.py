"""Training the Patel 3D CNN on patches: sampling, the weight map, the weighted loss (Patel 2019; PAPERS.md §2).

Patel et al., *Sci Rep* 9:17858 (2019), Methods, "Training":

* **Patch sampling.** Patch centres are drawn *equally* from the haemorrhage (foreground) and from the
  cranial-cavity background. Around each centre an input patch (124^3 in the paper) is cut from the
  normalised CT and an output-size patch (36^3) from the label: the network's valid convolutions turn
  the first into the second (:mod:`hemolab.models.patel`). :func:`extract_patch`.
* **Weight map.** Per patch, all foreground voxels and an equal number of randomly chosen background
  voxels get weight 1, the others 0; if the foreground exceeds half of the patch, or there is no
  foreground, every weight is 1. Computed on the *output-size* label patch. :func:`patch_weight_map`.
* **Loss.** Categorical cross-entropy weighted by that map: :func:`weighted_cross_entropy`.
* **Augmentation.** With probability 0.5 a patch is mirrored or rotated in the axial plane by an angle in
  [-15°, 15°]. :func:`patel_augmentation`.
* **Optimiser.** SGD with Nesterov momentum 0.9, learning rate 1e-3; 50,000 training patches.

Our choices (documented in notebook 04):

* Volumes are used on their own voxel grid (no resampling) and normalised with
  :func:`hemolab.preprocess.normalise_patel` ([-200, 200] HU -> [0, 1]). Where a patch reaches beyond
  the scan, it is padded with **0**, the normalised value of air (anything <= -200 HU), so the padding
  looks like the air around a head. The tiny / small synthetic volumes (64x64x16, 128x128x32) are smaller
  than a patch: most of such a patch is this padding.
* The synthetic cohorts have thick slices (16-66 slices per head), like the paper's PATCH data, so every
  profile uses the paper's **thick-slice variant** (no pooling along z; 124x124x40 in ``full``). The
  isotropic 124^3 network is one keyword away (``thick_slice=False``).
* Augmentation is done on the input-size label patch together with the image, and the label is cropped
  to the output size afterwards, so that rotated corners never enter the label.
* Mirroring is left-right (the x axis); the transforms are :func:`hemolab.preprocess.patel_augmentation`.
* ``tiny`` and ``small`` use a learning rate of 1e-2 so that a few hundred patches teach something; the
  paper's schedule has no learning-rate decay, so the engine's plateau reduction is switched off
  (``lr_patience`` larger than the epoch limit) and training stops when the validation loss has not
  improved for ``stop_patience`` epochs ("training was suspended once optimal performance on the
  validation data was reached").
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from hemolab.config import ProfileSettings
from hemolab.errors import HemolabError
from hemolab.models.patel import patel_output_size
from hemolab.validation import check_triple

#: The paper's intensity window (Patel 2019, "Pre-processing"): [-200, 200] HU -> [0, 1].
HU_WINDOW: tuple[float, float] = (-200.0, 200.0)
#: Value used to pad beyond the scan: normalised air.
PAD_VALUE: float = 0.0


# ----------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class PatelSettings(ProfileSettings):
    """Everything that defines a Patel training run of one profile.

    Attributes:
        profile: ``"tiny"``, ``"small"`` or ``"full"``.
        base_filters: filters of the first convolution (paper: 32).
        thick_slice: the PATCH variant (no pooling along z).
        input_size: training patch size ``(x, y, z)`` fed to the network.
        inference_input_size: tile input size for whole-scan inference (a valid size; larger tiles mean
            fewer tiles, the network is fully convolutional).
        batch_size: patches per SGD step.
        patches_per_epoch: training patches per epoch (``patches_per_epoch * max_epochs`` patches in all;
            the paper: 50,000).
        val_patches: fixed validation patches (drawn once, no augmentation).
        max_epochs: the epoch limit.
        lr: SGD learning rate (paper: 1e-3). momentum: Nesterov momentum (paper: 0.9).
        dropout: dropout at the lowest scale (paper: 0.5).
        augment: mirror / rotate with probability 0.5.
        stop_patience: epochs without improvement of the validation loss before stopping.
        min_component_ml: clusters smaller than this are removed at inference (paper: 0.1 mL).
        bn_calibration_patches: training patches over which the batch-norm statistics are recomputed
            after every epoch (:func:`recalibrate_batch_norm`; 0 keeps PyTorch's running averages).
    """

    KIND: ClassVar[str] = "Patel"

    profile: str
    base_filters: int
    thick_slice: bool
    input_size: tuple[int, int, int]
    inference_input_size: tuple[int, int, int]
    batch_size: int
    patches_per_epoch: int
    val_patches: int
    max_epochs: int
    lr: float = 1e-3
    momentum: float = 0.9
    dropout: float = 0.5
    augment: bool = True
    stop_patience: int = 20
    min_component_ml: float = 0.1
    bn_calibration_patches: int = 16

    @property
    def output_size(self) -> tuple[int, int, int]:
        """The training output patch size (``input - 88``; z ``- 28`` for the thick-slice variant)."""
        return patel_output_size(self.input_size, self.thick_slice)

    @property
    def inference_output_size(self) -> tuple[int, int, int]:
        """The output tile size at inference."""
        return patel_output_size(self.inference_input_size, self.thick_slice)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``hemolab.models.build_model("patel", **kw)``."""
        return {
            "in_channels": 1,
            "n_classes": 2,
            "base_filters": self.base_filters,
            "thick_slice": self.thick_slice,
            "dropout": self.dropout,
        }

    def with_overrides(self, **overrides: Any) -> PatelSettings:
        """A copy with some settings changed (``None`` values are ignored); sizes are checked."""
        clean = self._checked_overrides(overrides)
        for key in ("input_size", "inference_input_size"):
            if key in clean:
                clean[key] = _triple(clean[key])
        s = replace(self, **clean)
        s.output_size, s.inference_output_size  # noqa: B018 - raise early for sizes that do not fit
        return s


def patel_settings(profile: str | None = None, **overrides: Any) -> PatelSettings:
    """The Patel training settings of a profile (``full`` = the paper's PATCH set-up).

    ``full``: base 32, thick-slice 124x124x40 -> 36x36x12, SGD 1e-3, 100 epochs x 500 = 50,000 patches.
    ``small``: base 8, 116x116x36 -> 28x28x8, lr 1e-2, 60 epochs x 32 patches (minutes on a CPU).
    ``tiny``: base 4, 108x108x36 -> 20x20x8, lr 1e-2, 3 epochs x 8 patches (seconds).

    Args:
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto).
        **overrides: settings to change, e.g. ``max_epochs=10``.
    """
    from hemolab.config import resolve_profile

    profile = resolve_profile(profile)
    if profile == "full":
        s = PatelSettings(
            "full", 32, True, (124, 124, 40), (124, 124, 40), batch_size=2, patches_per_epoch=500,
            val_patches=50, max_epochs=100, lr=1e-3, stop_patience=20,
        )  # fmt: skip
    elif profile == "small":
        s = PatelSettings(
            "small", 8, True, (116, 116, 36), (148, 148, 44), batch_size=2, patches_per_epoch=32,
            val_patches=16, max_epochs=60, lr=1e-2, stop_patience=20,
        )  # fmt: skip
    else:
        s = PatelSettings(
            "tiny", 4, True, (108, 108, 36), (124, 124, 44), batch_size=2, patches_per_epoch=8,
            val_patches=2, max_epochs=3, lr=1e-2, stop_patience=4, augment=True,
        )  # fmt: skip
    return s.with_overrides(**overrides)


# ------------------------------------------------------------------------------------ normalisation
def normalise(hu: np.ndarray) -> np.ndarray:
    """[-200, 200] HU -> [0, 1] (Patel 2019, "Pre-processing"), float32: :func:`hemolab.preprocess.normalise_patel`.

    One definition for training and inference (:func:`hemolab.preprocess.prepare_patel` uses it too).
    """
    from hemolab.preprocess import normalise_patel

    return np.asarray(normalise_patel(hu), dtype=np.float32)


def cranial_cavity(image) -> np.ndarray:
    """The cranial-cavity mask ``[x, y, z]`` (bool) of a scan: :func:`hemolab.preprocess.cranial_cavity_mask`.

    Patel 2019 segmented it by multi-atlas registration; hemolab's preprocess module provides a
    threshold-based stand-in.
    """
    from hemolab.io import array_from_image
    from hemolab.preprocess import cranial_cavity_mask

    return array_from_image(cranial_cavity_mask(image)) > 0


# ------------------------------------------------------------------------------------ patch geometry
def _triple(size) -> tuple[int, int, int]:
    return check_triple(size, "patch size")


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
    size = _triple(size)
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


def center_crop_array(arr: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Central crop of the last three axes of ``arr`` to ``size``."""
    sl = [slice(None)] * (arr.ndim - 3)
    for have, want in zip(arr.shape[-3:], size, strict=True):
        if want > have:
            raise HemolabError(f"cannot crop size {arr.shape[-3:]} to {tuple(size)}")
        start = (have - want) // 2
        sl.append(slice(start, start + want))
    return arr[tuple(sl)]


# ---------------------------------------------------------------------------------------- weight map
def patch_weight_map(label: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """The per-patch weight map of Patel 2019 ("Training"; PAPERS.md §2).

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


# ---------------------------------------------------------------------------------------------- loss
def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Categorical cross-entropy weighted per voxel (Patel 2019, "Training").

    For each patch ``b``: ``loss_b = sum_v w_bv * CE_bv / sum_v w_bv``, the mean cross-entropy over the
    voxels its weight map selects (``CE_v = -log softmax(logits_v)[target_v]``); the loss is the mean of
    ``loss_b`` over the patches that have any weight. Normalising each patch on its own is our choice (the
    paper does not say): pooling all voxels of a batch instead would let a background patch, whose weight
    map is all ones, outweigh the few hundred balanced voxels of a blood patch many times over, and the
    network would learn to call almost nothing blood. A batch with all weights 0 gives 0.

    Args:
        logits: ``(B, C, x, y, z)`` (C >= 2 classes).
        target: class indices ``(B, x, y, z)`` or ``(B, 1, x, y, z)`` (float 0/1 is accepted).
        weight: per-voxel weights of the same spatial shape as ``target``.

    Returns:
        A scalar tensor.

    Raises:
        HemolabError: for mismatched shapes or a single-channel ``logits``.
    """
    if logits.ndim < 3 or logits.shape[1] < 2:
        raise HemolabError(
            f"logits must be (B, C>=2, ...) for categorical cross-entropy, got {tuple(logits.shape)}"
        )
    if target.ndim == logits.ndim:
        target = target[:, 0]
    if weight.ndim == logits.ndim:
        weight = weight[:, 0]
    spatial = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != spatial or tuple(weight.shape) != spatial:
        raise HemolabError(
            f"target {tuple(target.shape)} and weight {tuple(weight.shape)} must match the logits' "
            f"batch and spatial size {spatial}: crop labels to the network's output size"
        )
    ce = F.cross_entropy(logits.float(), target.round().long(), reduction="none")
    w = weight.to(ce.dtype)
    dims = tuple(range(1, ce.ndim))
    w_sum = w.sum(dims)
    per_patch = (ce * w).sum(dims) / w_sum.clamp_min(1e-8)
    counted = w_sum > 0
    if not bool(counted.any()):
        return (ce * w).sum()  # 0, with a gradient path
    return per_patch[counted].mean()


class WeightedCELoss(torch.nn.Module):
    """:func:`weighted_cross_entropy` with the engine's ``loss_fn(logits, batch)`` contract (uses ``batch["weight"]``)."""

    def forward(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return weighted_cross_entropy(logits, batch["label"], batch["weight"])


# -------------------------------------------------------------------------------------- augmentation
def patel_augmentation(max_angle_deg: float = 15.0, prob: float = 0.5):
    """Patel 2019's augmentation on keys ``"image"``, ``"label"``: :func:`hemolab.preprocess.patel_augmentation`.

    With probability ``prob`` a patch is augmented; an augmented patch is either mirrored left-right
    (x axis) or rotated in the axial (x-y) plane by a uniform angle in [-15°, 15°] (each half of the
    time; MONAI's ``range_z``, the rotation about z). Image: bilinear, label: nearest; outside the
    rotated patch: 0 (air / background). hemolab applies it to each input-size patch pair.

    Returns:
        A :class:`monai.transforms.OneOf` (call ``set_random_state`` on it for reproducibility).
    """
    from hemolab.preprocess import patel_augmentation as _augmentation

    return _augmentation(["image", "label"], prob=prob, max_angle_deg=max_angle_deg, image_key="image")


# -------------------------------------------------------------------------------------------- data
@dataclass
class PatelVolume:
    """One training scan, ready for patch sampling.

    Attributes:
        case_id: the case.
        image: normalised CT ``[x, y, z]`` float32 in [0, 1].
        label: haemorrhage mask ``[x, y, z]`` bool.
        cavity: cranial-cavity mask ``[x, y, z]`` bool.
        spacing: voxel size in mm.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    cavity: np.ndarray
    spacing: tuple[float, float, float]
    _fg: np.ndarray | None = field(default=None, repr=False)
    _bg: np.ndarray | None = field(default=None, repr=False)

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


def load_patel_volume(case) -> PatelVolume:
    """Read a :class:`hemolab.datasets.Case`, normalise it and compute its cranial cavity."""
    from hemolab.io import array_from_image
    from hemolab.preprocess import prepare_patel

    image = case.load_image()
    label = array_from_image(case.load_label()) > 0
    cavity = cranial_cavity(image)
    return PatelVolume(
        str(case.case_id), prepare_patel(image), label, cavity, tuple(float(s) for s in image.GetSpacing())
    )


def sample_patch(
    vol: PatelVolume,
    foreground: bool,
    input_size: Sequence[int],
    output_size: Sequence[int],
    rng: np.random.Generator,
    transform=None,
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

    Returns:
        ``{"image": (1, *input_size) float32, "label": (1, *output_size) float32,
        "weight": (1, *output_size) float32, "centre": (3,) int64}``.
    """
    index = vol.foreground_index if (foreground and vol.foreground_index.size) else vol.background_index
    flat = int(index[rng.integers(index.size)])
    centre = np.unravel_index(flat, vol.image.shape)
    image = extract_patch(vol.image, centre, input_size, PAD_VALUE)
    label = extract_patch(vol.label.astype(np.float32), centre, input_size, 0.0)
    if transform is not None:
        transform.set_random_state(seed=int(rng.integers(2**31)))
        out = transform({"image": image[None], "label": label[None]})
        image = np.asarray(out["image"], dtype=np.float32)[0]
        label = np.asarray(out["label"], dtype=np.float32)[0]
    label = (center_crop_array(label, output_size) > 0.5).astype(np.float32)
    weight = patch_weight_map(label, rng)
    return {
        "image": image[None].astype(np.float32),
        "label": label[None],
        "weight": weight[None],
        "centre": np.asarray(centre, dtype=np.int64),
    }


class PatelPatchDataset(torch.utils.data.Dataset):
    """Patches for the Patel 3D CNN, centres drawn equally from haemorrhage and cavity background.

    Sample ``i`` takes its centre from the foreground when ``i`` is even and from the background when
    it is odd (equal sampling), from a scan chosen at random.

    * ``fixed=False`` (training): every access draws a new patch from the dataset's own generator, so
      each epoch sees new patches; with ``num_workers=0`` and the same access order a run is repeatable.
    * ``fixed=True`` (validation): sample ``i`` is always the same (seeded by ``(seed, i)``); the patches
      are made once and kept.

    Args:
        volumes: the scans (:func:`load_patel_volume`).
        n_patches: the dataset's length (patches per epoch).
        input_size, output_size: network patch sizes.
        transform: augmentation for training (``None`` for none).
        seed: random seed.
        fixed: see above.
    """

    def __init__(
        self,
        volumes: Sequence[PatelVolume],
        n_patches: int,
        input_size: Sequence[int],
        output_size: Sequence[int],
        *,
        transform=None,
        seed: int = 0,
        fixed: bool = False,
    ):
        if not volumes:
            raise HemolabError("no scans to sample patches from: the training / validation split is empty")
        if n_patches < 1:
            raise HemolabError(f"n_patches must be at least 1, got {n_patches}")
        self.volumes = list(volumes)
        self.n_patches = int(n_patches)
        self.input_size = _triple(input_size)
        self.output_size = _triple(output_size)
        self.transform = transform
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self._rng = np.random.default_rng(self.seed)
        self._cache: dict[int, dict[str, Any]] = {}
        with_fg = [v for v in self.volumes if v.foreground_index.size]
        self._fg_volumes = with_fg or self.volumes

    def __len__(self) -> int:
        return self.n_patches

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.fixed and i in self._cache:
            return self._cache[i]
        rng = np.random.default_rng([self.seed, int(i)]) if self.fixed else self._rng
        foreground = i % 2 == 0
        pool = self._fg_volumes if foreground else self.volumes
        vol = pool[int(rng.integers(len(pool)))]
        s = sample_patch(vol, foreground, self.input_size, self.output_size, rng, self.transform)
        item = {k: torch.from_numpy(v) for k, v in s.items()}
        item["case_id"] = vol.case_id
        if self.fixed:
            self._cache[i] = item
        return item


def make_patel_loaders(dataset, settings: PatelSettings, *, seed: int = 0, progress: bool = False):
    """Training and validation patch loaders for a hemolab dataset (``num_workers=0``).

    Args:
        dataset: a dataset folder or a loaded :class:`hemolab.datasets.Dataset`.
        settings: the profile's :class:`PatelSettings`.
        seed: random seed.
        progress: show a progress bar while the scans are read.

    Returns:
        ``(train_loader, val_loader)``; ``val_loader`` is ``None`` when there is no validation case.
    """
    from tqdm.auto import tqdm

    from hemolab.datasets import load_dataset

    ds = load_dataset(dataset) if isinstance(dataset, str | os.PathLike) else dataset
    train_cases = list(ds.train)
    if not train_cases:
        raise HemolabError(f"the dataset {ds.root} has no training case")
    val_cases = list(ds.validation)
    load = [
        load_patel_volume(c)
        for c in tqdm(train_cases + val_cases, desc="reading scans", disable=not progress)
    ]
    train_vols, val_vols = load[: len(train_cases)], load[len(train_cases) :]
    transform = patel_augmentation() if settings.augment else None
    train_ds = PatelPatchDataset(
        train_vols, settings.patches_per_epoch, settings.input_size, settings.output_size,
        transform=transform, seed=seed,
    )  # fmt: skip
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=settings.batch_size, shuffle=False)
    val_loader = None
    if val_vols:
        val_ds = PatelPatchDataset(
            val_vols,
            settings.val_patches,
            settings.input_size,
            settings.output_size,
            seed=seed + 1,
            fixed=True,
        )
        val_loader = torch.utils.data.DataLoader(val_ds, batch_size=settings.batch_size, shuffle=False)
    return train_loader, val_loader


# ---------------------------------------------------------------------------------------- training
def recalibrate_batch_norm(
    model: torch.nn.Module, images: Sequence[torch.Tensor], batch_size: int = 4
) -> None:
    """Recompute the batch-norm statistics of ``model`` over ``images`` ("precise BN").

    With two patches per step (Patel 2019 trains with small batches), the running averages that
    :class:`torch.nn.BatchNorm3d` keeps during training follow the last few batches, which differ a lot
    (a patch centred on blood, one on the cavity, much of it air padding): in evaluation mode the network
    then sees statistics that no training batch had, and its validation loss jumps from epoch to epoch.
    The paper is silent on this; hemolab recomputes the statistics after every epoch as the plain average
    over a fixed set of training patches, with :func:`torch.optim.swa_utils.update_bn` (which resets them,
    averages with ``momentum=None`` and restores the model's mode). Weights are not touched.

    Args:
        model: the network (on any device).
        images: input patches ``(1, x, y, z)`` (e.g. from :class:`PatelPatchDataset`).
        batch_size: patches per forward pass (larger batches give better variance estimates).

    Raises:
        HemolabError: if ``images`` is empty.
    """
    from torch.optim.swa_utils import update_bn

    if len(images) == 0:
        raise HemolabError("recalibrate_batch_norm needs at least one image patch")
    device = next(model.parameters()).device
    batches = [torch.stack(list(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    with torch.no_grad():
        update_bn(batches, model, device=device)


def patel_meta(settings: PatelSettings, **more: Any) -> dict[str, Any]:
    """The ``meta`` of a Patel checkpoint: how to rebuild the network and prepare its input."""
    return {
        "arch": "patel",
        "model_kwargs": settings.model_kwargs(),
        "profile": settings.profile,
        "input_size": list(settings.input_size),
        "output_size": list(settings.output_size),
        "inference_input_size": list(settings.inference_input_size),
        "inference_output_size": list(settings.inference_output_size),
        "normalisation": {
            "function": "hemolab.preprocess.normalise_patel",
            "hu_window": list(HU_WINDOW),
            "range": [0.0, 1.0],
            "pad_value": PAD_VALUE,
        },
        "threshold": 0.5,
        "min_component_ml": settings.min_component_ml,
        "restrict_to_cranial_cavity": True,
        "settings": settings.as_dict(),
        **more,
    }


def train_patel(
    dataset_root,
    profile: str | None = None,
    run_dir: str | os.PathLike | None = None,
    *,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    live_plot: bool = False,
    settings: PatelSettings | None = None,
    resume: bool = True,
    overwrite: bool = False,
    device=None,
    **overrides: Any,
):
    """Train the Patel 3D CNN on a hemolab dataset (Patel 2019, "Training"; PAPERS.md §2).

    Patches sampled equally from haemorrhage and cranial-cavity background, the weight map, weighted
    categorical cross-entropy, augmentation with probability 0.5, SGD with Nesterov momentum 0.9, via
    the shared loop :func:`hemolab.training.fit` (best weights by validation loss in ``run_dir/best.pt``).

    Args:
        dataset_root: a dataset folder (or a loaded Dataset).
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto).
        run_dir: where checkpoints go (default: ``workspace/checkpoints/patel-<profile>``).
        epochs: the epoch limit (default: the profile's).
        seed: random seed (patch sampling, augmentation, initialisation).
        progress: progress bars. live_plot: live loss curves in a notebook.
        settings: explicit :class:`PatelSettings` (else :func:`patel_settings` of ``profile``).
        resume: continue an interrupted run in ``run_dir``. overwrite: start afresh.
        device: ``None`` = CUDA if available.
        **overrides: settings to change, e.g. ``patches_per_epoch=16``.

    Returns:
        The :class:`hemolab.training.History`.
    """
    from hemolab.config import resolve_profile, seed_everything, workspace_dir
    from hemolab.models.patel import Patel3DCNN
    from hemolab.training import fit

    profile = resolve_profile(profile if settings is None else settings.profile)
    if epochs is not None and overrides.get("max_epochs") not in (None, epochs):
        raise HemolabError(
            f"epochs={epochs} and max_epochs={overrides['max_epochs']} disagree: give one of them"
        )
    if epochs is not None:
        overrides["max_epochs"] = epochs
    settings = (settings or patel_settings(profile)).with_overrides(**overrides)
    run_dir = Path(run_dir) if run_dir is not None else workspace_dir("checkpoints", f"patel-{profile}")
    seed_everything(seed)
    train_loader, val_loader = make_patel_loaders(dataset_root, settings, seed=seed, progress=progress)
    model = Patel3DCNN(**settings.model_kwargs())
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum, nesterov=True)
    before_validation = None
    if settings.bn_calibration_patches > 0:
        calibration = PatelPatchDataset(
            train_loader.dataset.volumes,
            settings.bn_calibration_patches,
            settings.input_size,
            settings.output_size,
            seed=seed + 2,
            fixed=True,
        )
        images = [calibration[i]["image"] for i in range(len(calibration))]

        def before_validation(net: torch.nn.Module) -> None:
            recalibrate_batch_norm(net, images, batch_size=4)

    return fit(
        model,
        optimizer,
        WeightedCELoss(),
        train_loader,
        val_loader,
        max_epochs=settings.max_epochs,
        run_dir=run_dir,
        lr_patience=settings.max_epochs + 1,  # the paper keeps the learning rate constant
        stop_patience=settings.stop_patience,
        device=device,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        live_plot=live_plot,
        meta=patel_meta(settings, dataset=str(getattr(dataset_root, "root", dataset_root)), seed=seed),
        before_validation=before_validation,
    )


def ensure_patel_checkpoint(profile: str | None = None, seed: int = 0) -> Path:
    """The checkpoint notebook 04 writes (``workspace/checkpoints/patel-<profile>/best.pt``); trained if missing.

    Args:
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto).
        seed: seed of the cohort and of the run.

    Returns:
        The path of ``best.pt``.
    """
    from hemolab.config import resolve_profile, workspace_dir
    from hemolab.datasets import ensure_cohort

    profile = resolve_profile(profile)
    run_dir = workspace_dir("checkpoints", f"patel-{profile}")
    path = run_dir / "best.pt"
    if path.is_file():
        return path
    print(f"no Patel checkpoint from notebook 04 found at {path}: training one now ({profile} profile) ...")
    start = time.perf_counter()
    root = ensure_cohort(profile, seed=seed)
    history = train_patel(root, profile, run_dir, seed=seed, progress=False)
    print(f"trained the Patel checkpoint in {time.perf_counter() - start:.0f} s ({history.summary()})")
    return path
