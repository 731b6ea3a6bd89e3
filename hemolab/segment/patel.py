"""Whole-scan segmentation with the Patel 3D CNN (Patel 2019, Methods, "Post-processing"; docs/methods.md §2.5).

Normalise the scan with the checkpoint's HU window, predict it tile by tile
(:func:`hemolab.segment.tiling.tiled_predict`), threshold, keep what lies in the cranial cavity, remove
clusters smaller than 0.1 mL (:func:`hemolab.segment.postprocess.remove_small_components`), measure the
volume -- all on the scan's own grid. Our choices: the prediction is restricted to the cranial cavity
*before* small clusters are removed, so that a cluster cut by the cavity boundary is measured by what is
left of it inside; and a scan whose voxels are far finer or coarser than any training scan's is first
resampled to the nearest voxel size the network was trained on (:func:`working_spacing`), its probability
map brought back to the scan's grid by linear interpolation. The network's filters are learnt in voxels: on
0.5 mm voxels, a network trained on 1.8 mm voxels sees every structure almost four times larger than it
learnt it, and its receptive field spans a quarter of the anatomy along each axis (docs/methods.md §5.3).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hemolab.errors import HemolabError
from hemolab.io import image_from_array
from hemolab.preprocess import cranial_cavity_mask, prepare_patel, resample_to_spacing
from hemolab.segment.postprocess import as_mask_array, calcification_hu, finish_mask, probability_on_scan
from hemolab.segment.result import MetaLike, SegmentationResult, begin, make_result, synchronize
from hemolab.segment.tiling import tiled_predict

#: A scan is resampled only when a voxel size lies more than this fraction outside the training range.
VOXEL_SIZE_TOLERANCE = 0.1


def working_spacing(
    spacing: Sequence[float], voxel_size_range: Sequence[Sequence[float]] | None
) -> tuple[float, float, float] | None:
    """The voxel size to run the network at, or ``None`` to keep the scan's own grid.

    Each axis is clipped into the training scans' range (``CheckpointMeta.voxel_size_range``), but only when
    some axis lies more than :data:`VOXEL_SIZE_TOLERANCE` outside it: scans like the training ones are never
    interpolated.

    Args:
        spacing: the scan's voxel size ``(x, y, z)`` in mm.
        voxel_size_range: ``((x, y, z) smallest, (x, y, z) largest)`` or ``None``.

    Returns:
        The voxel size in mm, or ``None``.
    """
    if voxel_size_range is None:
        return None
    sp = np.asarray(spacing, dtype=float)
    lo, hi = (np.asarray(v, dtype=float) for v in voxel_size_range)
    if np.all(sp >= lo * (1.0 - VOXEL_SIZE_TOLERANCE)) and np.all(sp <= hi * (1.0 + VOXEL_SIZE_TOLERANCE)):
        return None
    return tuple(float(v) for v in np.clip(sp, lo, hi))


def segment_patel(
    image: sitk.Image,
    model: torch.nn.Module,
    meta: MetaLike,
    *,
    threshold: float | None = None,
    device: Any = None,
    batch_size: int = 1,
    stride: int | Sequence[int] | str | None = None,
    cavity: np.ndarray | sitk.Image | None = None,
    progress: bool = False,
) -> SegmentationResult:
    """Segment one head CT with a trained Patel 3D CNN (Patel 2019, "Post-processing").

    Steps: normalise (the checkpoint's HU window, [-200, 200] in the paper, -> [0, 1]) -> tiled inference
    (:func:`~hemolab.segment.tiling.tiled_predict`) -> threshold -> restrict to the cranial cavity ->
    remove clusters smaller than the checkpoint's ``min_component_ml`` (0.1 mL in the paper) -> volume in
    mL. Everything happens on the scan's own grid, except that a scan with voxels far outside the training
    scans' sizes is run through the network at the nearest training size (:func:`working_spacing`).

    Args:
        image, model, meta, threshold, device: as for :func:`hemolab.architectures.segment_scan`, which
            checks the scan and calls this for a Patel checkpoint; the meta gives the tile sizes, the HU
            window, the threshold, the cluster rule and whether to keep only the cranial cavity.
        batch_size: tiles per forward pass.
        stride: tile step (``None`` = the checkpoint's ``tile_stride``, else aligned to the pooling grid;
            ``"paper"`` = edge to edge).
        cavity: a precomputed cranial-cavity mask (``[x, y, z]`` array or image); ``None`` computes it
            with :func:`hemolab.preprocess.cranial_cavity_mask` when the meta asks for it.
        progress: a progress bar over the tiles.

    Returns:
        A :class:`~hemolab.segment.SegmentationResult` (mask and probability on the scan's grid).

    Raises:
        HemolabError: for an input that is not a 3D image in HU, a meta without tile sizes, or a bad
            threshold.
    """
    meta, thr, dev = begin(image, model, meta, threshold, device, "segment_patel")
    ins = meta.inference_input_size or meta.input_size
    if ins is None:
        raise HemolabError(
            "the checkpoint's meta has no input_size: it was not written by hemolab.training.train_patel"
        )
    outs = meta.inference_output_size or meta.output_size or model.output_size(ins)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    target = working_spacing(image.GetSpacing(), meta.voxel_size_range)
    grid = image if target is None else resample_to_spacing(image, target, is_label=False)
    x = prepare_patel(grid, hu_window=meta.hu_window)  # the same function as training
    timings["preprocess"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    prob = tiled_predict(
        model, x, input_size=ins, output_size=outs, device=dev, batch_size=batch_size, progress=progress,
        stride=stride if stride is not None else meta.tile_stride,
    )  # fmt: skip
    synchronize(dev)
    timings["network"] = time.perf_counter() - t1
    if target is not None:  # back onto the scan's own grid, then thresholded (as for CNN-DS)
        prob = probability_on_scan(image_from_array(prob, reference=grid), image)

    t2 = time.perf_counter()
    cav = None
    if meta.restrict_to_cranial_cavity:
        if cavity is None:
            cavity = cranial_cavity_mask(image)
        cav = as_mask_array(cavity)
    timings["cavity"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    mask = finish_mask(prob, thr, image.GetSpacing(), cavity=cav, min_component_ml=meta.min_component_ml,
                       hu=calcification_hu(image, meta), max_calcified_fraction=meta.max_calcified_fraction,
                       min_cluster_median_hu=meta.min_cluster_median_hu)  # fmt: skip
    timings["postprocess"] = time.perf_counter() - t3
    return make_result(image, prob, mask, thr, timings, t0)
