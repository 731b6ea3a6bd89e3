"""Whole-scan segmentation with the Patel 3D CNN (Patel 2019, Methods, "Post-processing"; docs/methods.md §2.5).

Normalise the scan with the checkpoint's HU window, predict it tile by tile
(:func:`hemolab.segment.tiling.tiled_predict`), threshold, keep what lies in the cranial cavity, remove
clusters smaller than 0.1 mL (:func:`hemolab.segment.postprocess.remove_small_components`), measure the
volume -- all on the scan's own grid. Our choice: the prediction is restricted to the cranial cavity
*before* small clusters are removed, so that a cluster cut by the cavity boundary is measured by what is
left of it inside.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hemolab.errors import HemolabError
from hemolab.io import array_from_image
from hemolab.preprocess import cranial_cavity_mask, prepare_patel
from hemolab.segment.postprocess import finish_mask
from hemolab.segment.result import MetaLike, SegmentationResult, begin, make_result, synchronize
from hemolab.segment.tiling import tiled_predict


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
    mL. Everything happens on the scan's own grid.

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
    x = prepare_patel(image, hu_window=meta.hu_window)  # the same function as training
    timings["preprocess"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    prob = tiled_predict(
        model, x, input_size=ins, output_size=outs, device=dev, batch_size=batch_size, progress=progress,
        stride=stride if stride is not None else meta.tile_stride,
    )  # fmt: skip
    synchronize(dev)
    timings["network"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    cav = None
    if meta.restrict_to_cranial_cavity:
        if cavity is None:
            cavity = cranial_cavity_mask(image)
        cav = (array_from_image(cavity) if isinstance(cavity, sitk.Image) else np.asarray(cavity)) > 0
    timings["cavity"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    mask = finish_mask(prob, thr, image.GetSpacing(), cavity=cav, min_component_ml=meta.min_component_ml)
    timings["postprocess"] = time.perf_counter() - t3
    return make_result(image, prob, mask, thr, timings, t0)
