"""Whole-scan segmentation with CNN-DS: scan in, mask on the scan's own grid and volume out.

Arab 2020, Methods, "Preprocessing" and "Network architecture" (docs/methods.md §1.2-1.3):

1. **preprocess**: :func:`hemolab.preprocess.prepare_cnnds` -- the whole head resampled (linear) to the
   network's grid (128x128x64 in the paper; the checkpoint's ``grid_size``), HU clipped to the
   checkpoint's window ([0, 100] in the paper) and scaled to [0, 1]; the same function training used;
2. **network**: one forward pass; the logits go through a sigmoid to a probability map
   (:func:`hemolab.models.predict`, bfloat16 where the hardware runs it natively);
3. **back to the scan**: the probability map is resampled onto the ORIGINAL scan's grid with
   :func:`hemolab.preprocess.resample_like` using *linear* interpolation, and only then thresholded (at
   the checkpoint's threshold, 0.5 in the paper). (Our choice: thresholding on the coarse 128x128x64
   grid and resampling the mask with nearest-neighbour would give a staircase boundary 4 original
   voxels wide in-plane; interpolating the probability gives a smooth boundary at the original
   resolution, and the volume changes by less than the difference between raters.)
4. **volume**: voxel count x voxel volume of the original scan, in mL (docs/methods.md §4).

A checkpoint of the CPU profiles (``small``, ``tiny``; docs/methods.md §5.1) also asks, through its meta, to
crop the scan to the box around the cranial cavity before step 1 (``crop_head``; the probability outside
the box is 0), to keep only the mask inside the cranial cavity (``restrict_to_cranial_cavity``) and to
remove clusters smaller than ``min_component_ml`` -- Patel's post-processing (docs/methods.md §2.5).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from hemolab.errors import HemolabError
from hemolab.io import image_from_array
from hemolab.models.inference import predict
from hemolab.preprocess import (
    cranial_cavity_mask,
    crop_to_box,
    grid_for_size,
    head_box,
    prepare_cnnds,
)
from hemolab.segment.postprocess import as_mask_array, calcification_hu, finish_mask, probability_on_scan
from hemolab.segment.result import MetaLike, SegmentationResult, begin, make_result, synchronize


def segment_cnnds(
    image: sitk.Image,
    model: nn.Module,
    meta: MetaLike,
    *,
    threshold: float | None = None,
    device: Any = None,
    cavity: np.ndarray | sitk.Image | None = None,
) -> SegmentationResult:
    """Segment one head CT with a trained CNN-DS (the steps of the module docstring).

    The arguments are those of :func:`hemolab.architectures.segment_scan`, which checks the scan and calls
    this for a CNN-DS checkpoint; the meta gives the grid (``grid_size``), the HU window and the threshold.
    ``cavity`` is a precomputed cranial-cavity mask (``[x, y, z]`` array or image), as for
    :func:`hemolab.segment.segment_patel`; ``None`` computes it when the meta asks for it.

    Returns:
        A :class:`~hemolab.segment.SegmentationResult` on the input scan's grid.

    Raises:
        HemolabError: for an input that is not a 3D image, a meta without ``grid_size``, or a bad threshold.
    """
    meta, thr, dev = begin(image, model, meta, threshold, device, "segment_cnnds")
    if meta.grid_size is None:
        raise HemolabError(
            "the checkpoint's meta has no grid_size: it was not written by a CNN-DS training run"
        )
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    if cavity is None and (meta.crop_head or meta.restrict_to_cranial_cavity):
        cavity = cranial_cavity_mask(image)
    if cavity is not None:
        cavity = as_mask_array(cavity)
    region = crop_to_box(image, head_box(image, cavity=cavity)) if meta.crop_head else image
    arr = prepare_cnnds(region, meta.grid_size, hu_window=meta.hu_window)
    grid_spacing, grid_origin = grid_for_size(region, meta.grid_size)  # the grid prepare_cnnds resampled to
    x = torch.from_numpy(arr)[None, None].to(dev)
    timings["preprocess"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    prob = predict(model, x, fast=True)[0, 0].float().cpu().numpy()
    synchronize(dev)
    timings["network"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    prob_grid = image_from_array(
        prob.astype(np.float32), spacing=grid_spacing, origin=grid_origin, direction=image.GetDirection()
    )
    # linear interpolation of the probability, then the threshold: see the module docstring
    prob_arr = probability_on_scan(prob_grid, image)
    keep = cavity if meta.restrict_to_cranial_cavity else None
    mask = finish_mask(prob_arr, thr, image.GetSpacing(), cavity=keep, min_component_ml=meta.min_component_ml,
                       hu=calcification_hu(image, meta), max_calcified_fraction=meta.max_calcified_fraction,
                       min_cluster_median_hu=meta.min_cluster_median_hu)  # fmt: skip
    timings["postprocess"] = time.perf_counter() - t2
    return make_result(image, prob_arr, mask, thr, timings, t0)
