"""What whole-scan segmentation returns, and the steps every architecture's pipeline shares.

A :class:`SegmentationResult` holds the mask and the probability map on the input scan's own grid and
the bleed's volume in mL (voxel count x voxel volume, Arab 2020, Methods; docs/methods.md §4), with the
time each stage took (the papers report seconds per scan: 0.74 s for CNN-DS on a GPU, 104 s for Patel).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hemolab import metrics
from hemolab.checkpoint import CheckpointMeta
from hemolab.config import get_device
from hemolab.errors import HemolabError
from hemolab.io import array_from_image, image_from_array

#: A checkpoint's meta, or a plain mapping of it (e.g. in a test): what every pipeline accepts.
MetaLike = CheckpointMeta | Mapping[str, Any]


@dataclass
class SegmentationResult:
    """What :func:`hemolab.architectures.segment_scan` returns.

    Attributes:
        mask: the binary haemorrhage mask (uint8) on the input scan's grid (same size, spacing, origin,
            direction).
        probability: the network's haemorrhage probability (float32) on the same grid.
        volume_ml: the haemorrhage volume, voxel count x voxel volume / 1000.
        seconds: the total time, preprocessing included (the paper reports 0.74 s per scan on a GPU).
        timings: seconds per stage (``preprocess``, ``network``, ``postprocess``, ...).
        threshold: the probability threshold used.
    """

    mask: sitk.Image
    probability: sitk.Image
    volume_ml: float
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    threshold: float = 0.5

    def mask_array(self) -> np.ndarray:
        """The mask as a boolean array indexed ``[x, y, z]``."""
        return array_from_image(self.mask).astype(bool)

    def probability_array(self) -> np.ndarray:
        """The probability as a float32 array indexed ``[x, y, z]``."""
        return array_from_image(self.probability)


def as_meta(meta: MetaLike) -> CheckpointMeta:
    """A :class:`~hemolab.checkpoint.CheckpointMeta` from a meta or a plain mapping (e.g. in a test)."""
    return (
        meta if isinstance(meta, CheckpointMeta) else CheckpointMeta.from_dict(meta, source="the meta given")
    )


def check_scan(image: Any, who: str) -> sitk.Image:
    """The scan a pipeline segments must be a 3D SimpleITK image.

    Raises:
        HemolabError: otherwise, saying how to get one.
    """
    if not isinstance(image, sitk.Image):
        raise HemolabError(
            f"{who} needs a SimpleITK image in HU (e.g. from hemolab.io.read_scan), got {type(image).__name__}"
        )
    if image.GetDimension() != 3:
        raise HemolabError(f"{who} needs a 3D scan, got a {image.GetDimension()}D image")
    return image


def check_threshold(threshold: float | None, meta: CheckpointMeta) -> float:
    """The threshold to use: the one given, else the checkpoint's.

    Raises:
        HemolabError: for a threshold outside (0, 1).
    """
    t = float(meta.threshold if threshold is None else threshold)
    if not 0.0 < t < 1.0:
        raise HemolabError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    return t


def model_device(model: torch.nn.Module, device: Any) -> torch.device:
    """Where to run ``model``: ``device`` (the model is moved there), else where its parameters are."""
    if device is not None:
        dev = device if isinstance(device, torch.device) else get_device(device)
        model.to(dev)
        return dev
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a network without parameters
        return torch.device("cpu")


def begin(
    image: Any,
    model: torch.nn.Module,
    meta: CheckpointMeta | Mapping[str, Any],
    threshold: float | None,
    device: Any,
    who: str,
) -> tuple[CheckpointMeta, float, torch.device]:
    """The checks every pipeline starts with: a 3D scan, a typed meta, a threshold, the device (model in eval mode).

    Returns:
        ``(meta, threshold, device)``.

    Raises:
        HemolabError: for a scan that is not a 3D SimpleITK image or a threshold outside (0, 1).
    """
    check_scan(image, who)
    meta = as_meta(meta)
    thr = check_threshold(threshold, meta)
    dev = model_device(model, device)
    model.eval()
    return meta, thr, dev


def synchronize(device: torch.device) -> None:
    """Wait for the GPU, so that a stage's time is the time it took."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_result(
    image: sitk.Image,
    probability: np.ndarray,
    mask: np.ndarray,
    threshold: float,
    timings: dict[str, float],
    t0: float,
) -> SegmentationResult:
    """Wrap arrays ``[x, y, z]`` on ``image``'s grid into a :class:`SegmentationResult` (volume in mL)."""
    return SegmentationResult(
        mask=image_from_array(mask.astype(np.uint8), reference=image),
        probability=image_from_array(probability.astype(np.float32), reference=image),
        volume_ml=metrics.volume_ml(mask, image.GetSpacing()),
        seconds=time.perf_counter() - t0,
        timings=timings,
        threshold=threshold,
    )
