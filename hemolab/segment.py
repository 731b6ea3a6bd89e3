"""Whole-scan segmentation with a trained network: scan in, mask on the scan's own grid and volume out.

For CNN-DS (Arab 2020, Methods, "Preprocessing" and "Network architecture"; PAPERS.md §1):

1. **preprocess**: :func:`hemolab.preprocess.prepare_cnnds` -- the whole head resampled (linear) to the
   network's grid (128x128x64 in the paper; stored in the checkpoint's ``meta["grid_size"]``), HU
   clipped to [0, 100] and scaled to [0, 1]; the same function training used;
2. **network**: one forward pass; the logits go through a sigmoid to a probability map;
3. **back to the scan**: the probability map is resampled onto the ORIGINAL scan's grid with
   :func:`hemolab.preprocess.resample_like` using *linear* interpolation, and only then thresholded at
   0.5. (Our choice: thresholding on the coarse 128x128x64 grid and resampling the mask with
   nearest-neighbour would give a staircase boundary 4 original voxels wide in-plane; interpolating the
   probability gives a smooth boundary at the original resolution, and the volume changes by less than
   the difference between raters.)
4. **volume**: voxel count x voxel volume of the original scan, in mL (PAPERS.md §4).

For the Patel 3D CNN (``meta["arch"] == "patel"``) the tiled inference of :mod:`hemolab.tiling` is used.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hemolab.errors import HemolabError


@dataclass
class SegmentationResult:
    """What :func:`segment_scan` returns.

    Attributes:
        mask: the binary haemorrhage mask (uint8) on the input scan's grid (same size, spacing, origin,
            direction).
        probability: the network's haemorrhage probability (float32) on the same grid.
        volume_ml: the haemorrhage volume, voxel count x voxel volume / 1000.
        seconds: the total time, preprocessing included (the paper reports 0.74 s per scan on a GPU).
        timings: seconds per stage (``preprocess``, ``network``, ``postprocess``).
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
        from hemolab.io import array_from_image

        return array_from_image(self.mask).astype(bool)

    def probability_array(self) -> np.ndarray:
        """The probability as a float32 array indexed ``[x, y, z]``."""
        from hemolab.io import array_from_image

        return array_from_image(self.probability)


def mask_volume_ml(mask: sitk.Image) -> float:
    """Volume of a binary mask image in mL: voxel count x voxel volume (mm^3) / 1000 (PAPERS.md §4)."""
    from hemolab.io import array_from_image

    count = int(np.count_nonzero(array_from_image(mask)))
    return count * float(np.prod(mask.GetSpacing())) / 1000.0


def _model_device(model: torch.nn.Module, device) -> torch.device:
    from hemolab.config import get_device

    if device is not None:
        dev = device if isinstance(device, torch.device) else get_device(device)
        model.to(dev)
        return dev
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a network without parameters
        return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_image(image) -> None:
    if not isinstance(image, sitk.Image):
        raise HemolabError(
            f"segment_scan needs a SimpleITK image in HU (e.g. from hemolab.io.read_scan), got {type(image).__name__}"
        )
    if image.GetDimension() != 3:
        raise HemolabError(f"segment_scan needs a 3D scan, got a {image.GetDimension()}D image")


def segment_scan(
    image: sitk.Image,
    model: torch.nn.Module,
    meta: Mapping[str, Any],
    *,
    threshold: float = 0.5,
    device=None,
) -> SegmentationResult:
    """Segment the haemorrhage in one non-contrast head CT with a trained network.

    Args:
        image: the scan in Hounsfield units (:func:`hemolab.io.read_scan`), any size and spacing.
        model: the trained network (e.g. from :func:`hemolab.training.load_checkpoint`).
        meta: the checkpoint's meta: ``arch`` (``"cnnds"`` or ``"patel"``) and, for CNN-DS,
            ``grid_size``.
        threshold: probability threshold (the papers: 0.5).
        device: where to run the network (``None`` = where the model is).

    Returns:
        A :class:`SegmentationResult` whose mask lies on the input scan's grid.

    Raises:
        HemolabError: for an input that is not a 3D image, an unknown ``arch`` or a bad threshold.
    """
    _check_image(image)
    if not 0.0 < float(threshold) < 1.0:
        raise HemolabError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    arch = str(meta.get("arch", "cnnds"))
    if arch == "cnnds":
        return _segment_cnnds(image, model, meta, threshold=float(threshold), device=device)
    if arch == "patel":
        return _segment_patel(image, model, meta, threshold=float(threshold), device=device)
    raise HemolabError(f"cannot segment with a network of arch {arch!r}: hemolab knows 'cnnds' and 'patel'")


def _grid_size(meta: Mapping[str, Any]) -> tuple[int, int, int]:
    size = meta.get("grid_size")
    if size is None:
        from hemolab.preprocess import cnnds_grid

        size = cnnds_grid(meta.get("profile") or "full")
    size = tuple(int(s) for s in size)
    if len(size) != 3:
        raise HemolabError(f"meta['grid_size'] must be three numbers (x, y, z), got {size}")
    return size  # type: ignore[return-value]


def _segment_cnnds(image, model, meta, *, threshold: float, device) -> SegmentationResult:
    from hemolab.io import array_from_image, image_from_array
    from hemolab.preprocess import grid_for_size, prepare_cnnds, resample_like
    from hemolab.training.engine import probabilities

    dev = _model_device(model, device)
    model.eval()
    size = _grid_size(meta)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    arr = np.asarray(prepare_cnnds(image, size), dtype=np.float32)
    # the grid the network sees, as an image, to map its output back to the scan
    grid_spacing, grid_origin = grid_for_size(image, size)  # the grid resample_to_size puts the scan on
    x = torch.from_numpy(arr)[None, None].to(dev)
    timings["preprocess"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    try:  # the CNN-DS module's fast inference settings (eval, channels-last, bfloat16 where native)
        from hemolab.models import predict
    except ImportError:  # pragma: no cover - models is part of hemolab
        predict = None
    if predict is not None:
        prob = predict(model, x, fast=True)[0, 0]
    else:  # pragma: no cover
        with torch.inference_mode():
            prob = probabilities(model(x))[0, 0]
    prob = prob.float().cpu().numpy()
    _sync(dev)
    timings["network"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    prob_grid = image_from_array(
        prob.astype(np.float32), spacing=grid_spacing, origin=grid_origin, direction=image.GetDirection()
    )
    # linear interpolation of the probability, then the threshold: see the module docstring
    prob_img = resample_like(prob_grid, image, is_label=False, interpolator="linear", default_value=0.0)
    prob_arr = np.clip(array_from_image(prob_img).astype(np.float32), 0.0, 1.0)
    result = _finish(image, prob_arr, threshold, timings, t2, t0)
    return result


def _finish(
    image, prob_arr: np.ndarray, threshold: float, timings: dict, t2: float, t0: float
) -> SegmentationResult:
    from hemolab.io import image_from_array

    prob_img = image_from_array(prob_arr.astype(np.float32), reference=image)
    mask = image_from_array((prob_arr >= threshold).astype(np.uint8), reference=image)
    volume = mask_volume_ml(mask)
    timings["postprocess"] = time.perf_counter() - t2
    return SegmentationResult(
        mask=mask,
        probability=prob_img,
        volume_ml=volume,
        seconds=time.perf_counter() - t0,
        timings=timings,
        threshold=threshold,
    )


def _segment_patel(image, model, meta, *, threshold: float, device) -> SegmentationResult:
    try:
        from hemolab.tiling import segment_patel
    except ImportError as exc:  # pragma: no cover - tiling is part of hemolab
        raise HemolabError(
            "segmenting with the Patel 3D CNN needs hemolab.tiling, which is not available"
        ) from exc
    dev = _model_device(model, device)
    model.eval()
    return segment_patel(image, model, meta, threshold, device=dev)


# ------------------------------------------------------------------------------------ evaluating cases
def overlap_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Dice, precision, recall and volumes of a predicted vs a reference mask (PAPERS.md §4).

    Uses :mod:`hemolab.metrics` and its conventions for empty masks (Dice, precision and recall are 1
    when both masks are empty; precision 0 when only the prediction is empty, recall 0 when only the
    reference is).

    Returns:
        ``{"dice", "precision", "recall", "true_volume_ml", "pred_volume_ml"}``.
    """
    from hemolab import metrics

    return {
        "dice": metrics.dice(pred, ref),
        "precision": metrics.precision(pred, ref),
        "recall": metrics.recall(pred, ref),
        "true_volume_ml": metrics.volume_ml(ref, spacing),
        "pred_volume_ml": metrics.volume_ml(pred, spacing),
    }


def evaluate_cases(cases, model, meta, *, threshold: float = 0.5, device=None, progress: bool = False):
    """Segment cases of a hemolab dataset and compare with their reference labels.

    Args:
        cases: :class:`hemolab.datasets.Case` objects (e.g. ``dataset.test``).
        model, meta: from :func:`hemolab.training.load_checkpoint`.
        threshold: probability threshold.
        device: where to run the network.
        progress: show a progress bar.

    Returns:
        ``(table, results)``: a :class:`pandas.DataFrame` with one row per case (case_id, dice,
        precision, recall, true_volume_ml, pred_volume_ml, seconds) and a dict case_id ->
        :class:`SegmentationResult`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from hemolab.io import array_from_image

    rows, results = [], {}
    for case in tqdm(list(cases), desc="segmenting", unit="case", disable=not progress, leave=False):
        image = case.load_image()
        res = segment_scan(image, model, meta, threshold=threshold, device=device)
        ref = array_from_image(case.load_label()) > 0
        row = {"case_id": case.case_id, **overlap_metrics(res.mask_array(), ref, image.GetSpacing())}
        row["seconds"] = res.seconds
        rows.append(row)
        results[case.case_id] = res
    columns = ["case_id", "dice", "precision", "recall", "true_volume_ml", "pred_volume_ml", "seconds"]
    return pd.DataFrame(rows, columns=columns), results
