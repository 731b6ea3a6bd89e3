"""Whole-scan inference with the Patel 3D CNN: valid-convolution tiling and small-cluster removal.

Patel et al. 2019, Methods, "Post-processing" (PAPERS.md §2): the scan is processed in consecutive
tiles -- each 36^3 output tile is predicted from its 124^3 input context -- the probability map is
thresholded at 0.5 and every cluster smaller than 0.1 mL is removed.

Why not MONAI's :class:`~monai.inferers.SlidingWindowInferer`? It assumes a network whose output is as
large as its input (padded convolutions) and blends overlapping windows. A valid-convolution network is
different, and simpler: its output tiles can be laid side by side with no blending, because every
output voxel was computed from its full receptive field. That is the lesson of :func:`tiled_predict`:
pad the volume by the network's margin (44 voxels per side for 124 -> 36) with the normalised value of
air (0), cut input tiles every ``stride`` voxels, and write each output tile where it belongs. With the
stride aligned to the pooling grid (32 for a 36 output; see :func:`tiled_predict`) the result is
identical (up to floating point) to running the network on the whole padded volume at once, which
``tests/test_tiling.py`` checks; the paper's edge-to-edge tiles (``stride="paper"``) are 1.42x cheaper
but mix two pooling phases.

Our choices: connected components use 26-connectivity (voxels touching at a corner belong to the same
cluster, the most conservative choice for removing clusters); the prediction is restricted to the
cranial cavity *before* small clusters are removed, so that a cluster cut by the cavity boundary is
measured by what is left of it inside.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch

from hemolab.errors import HemolabError
from hemolab.validation import check_mask, check_spacing, check_triple, check_volume

#: Value used to pad beyond the scan: 0 = air after Patel's normalisation ([-200, 200] HU -> [0, 1]).
PAD_VALUE: float = 0.0


def _triple(size) -> tuple[int, int, int]:
    return check_triple(size, "tile size")


@dataclass(frozen=True)
class Tile:
    """One tile of :func:`tile_grid`.

    Attributes:
        index: position in the tile grid ``(i, j, k)``.
        output_start: first voxel of the output tile in the volume ``(x, y, z)``.
        output_stop: one past its last voxel, clipped to the volume.
        input_start: first voxel of the input context in the volume (may be negative: padding).
        input_stop: one past the last voxel of the input context (may exceed the volume: padding).
    """

    index: tuple[int, int, int]
    output_start: tuple[int, int, int]
    output_stop: tuple[int, int, int]
    input_start: tuple[int, int, int]
    input_stop: tuple[int, int, int]


def aligned_stride(output_size: int | Sequence[int], multiple: int | Sequence[int]) -> tuple[int, int, int]:
    """The largest step <= ``output_size`` that is a multiple of ``multiple`` on each axis (36, 8 -> 32)."""
    outs, mult = _triple(output_size), _triple(multiple)
    return tuple(max(m, (o // m) * m) if o >= m else o for o, m in zip(outs, mult, strict=True))  # type: ignore[return-value]


def _check_sizes(ins, outs, stride) -> list[int]:
    margin = []
    for i, o, s in zip(ins, outs, stride, strict=True):
        if o < 1 or i < o or (i - o) % 2:
            raise HemolabError(
                f"input tile {ins} and output tile {outs} do not fit a valid-convolution network: the input must "
                "exceed the output by an even number of voxels on every axis (e.g. 124 -> 36)"
            )
        if not 1 <= s <= o:
            raise HemolabError(f"the tile stride {stride} must be between 1 and the output tile size {outs}")
        margin.append((i - o) // 2)
    return margin


def _counts(shape, outs, stride) -> list[int]:
    return [
        1 if n <= o else int(np.ceil((n - o) / s)) + 1 for n, o, s in zip(shape, outs, stride, strict=True)
    ]


def tile_grid(
    shape: Sequence[int],
    input_size: int | Sequence[int],
    output_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
) -> list[Tile]:
    """The tiles that cover a volume: output tiles every ``stride`` voxels, each with its input context.

    Args:
        shape: volume shape ``(x, y, z)``.
        input_size: network input tile size.
        output_size: network output tile size (``input_size - 88`` for the Patel network).
        stride: step between tiles (default: ``output_size``, tiles edge to edge as in the paper).

    Returns:
        The tiles in C order (z fastest).

    Raises:
        HemolabError: if ``input_size - output_size`` is negative or odd on an axis, or a bad stride.
    """
    shape, ins, outs = _triple(shape), _triple(input_size), _triple(output_size)
    stride = outs if stride is None else _triple(stride)
    margin = _check_sizes(ins, outs, stride)
    tiles = []
    for idx in product(*(range(c) for c in _counts(shape, outs, stride))):
        start = tuple(k * s for k, s in zip(idx, stride, strict=True))
        tiles.append(
            Tile(
                index=tuple(idx),
                output_start=start,
                output_stop=tuple(min(s + o, n) for s, o, n in zip(start, outs, shape, strict=True)),
                input_start=tuple(s - m for s, m in zip(start, margin, strict=True)),
                input_stop=tuple(s - m + i for s, m, i in zip(start, margin, ins, strict=True)),
            )
        )
    return tiles  # type: ignore[return-value]


def _probability(logits: torch.Tensor) -> torch.Tensor:
    """Foreground probability (B, x, y, z): softmax class 1 for >= 2 classes, sigmoid for 1 channel."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=1)[:, 1]


def _batches(tiles: list[Tile], n: int) -> Iterator[list[Tile]]:
    for i in range(0, len(tiles), n):
        yield tiles[i : i + n]


def default_stride(model: torch.nn.Module, output_size: int | Sequence[int]) -> tuple[int, int, int]:
    """Tile step that keeps every tile on the network's pooling grid (``model.size_multiple``; 1 if absent)."""
    return aligned_stride(output_size, getattr(model, "size_multiple", 1))


def tiled_predict(
    model: torch.nn.Module,
    volume: np.ndarray,
    *,
    input_size: int | Sequence[int],
    output_size: int | Sequence[int],
    device=None,
    batch_size: int = 1,
    progress: bool = True,
    amp: bool = False,
    stride: int | Sequence[int] | str | None = None,
    output: str = "probability",
) -> np.ndarray:
    """Predict a whole volume with a valid-convolution network, tile by tile, without seams.

    The volume is padded with :data:`PAD_VALUE` (normalised air) by the margin ``(input - output) / 2``
    on each side (plus enough at the far end to fill the last tile); input tiles are cut every
    ``stride`` voxels, and each output tile is written where it belongs. Nothing is averaged: every
    output voxel is computed once from its full receptive field.

    The stride. The Patel network pools three times by 2, so its prediction is unchanged by shifting the
    input by a multiple of 8 voxels -- but not by other shifts (they change which voxels are pooled
    together). Valid output sizes are ``≡ 4 (mod 8)`` (36), so tiles laid edge to edge, as in the paper
    (``stride="paper"``), alternate between two pooling phases and neighbouring tiles can disagree
    slightly at their common face. The default steps by the largest multiple of 8 that fits in the
    output tile (32 for 36; ``model.size_multiple``): tiles then overlap by 4 voxels, every tile sits
    on the same pooling grid, and the result is *identical* to running the network on the whole padded
    volume at once -- at the cost of (36/32)^3 = 1.42x more tiles.

    Args:
        model: the network (e.g. :class:`hemolab.models.Patel3DCNN`); its output for an input tile must
            have exactly ``output_size`` (checked on the first batch).
        volume: the NORMALISED volume ``[x, y, z]`` (:func:`hemolab.patches.normalise`).
        input_size: input tile size (e.g. 124 or ``(124, 124, 40)``).
        output_size: output tile size (e.g. 36; :meth:`Patel3DCNN.output_size`).
        device: ``None`` = where the model is.
        batch_size: tiles per forward pass (larger batches use the GPU better).
        progress: show a progress bar over the tiles.
        amp: autocast to bfloat16 for speed; probabilities are returned as float32.
        stride: step between tiles: ``None`` = aligned to the pooling grid (see above), ``"paper"`` =
            ``output_size`` (edge to edge), or explicit numbers.
        output: ``"probability"`` (softmax class 1, or sigmoid of a 1-channel output) or ``"raw"``
            (the network's first output channel unchanged: for testing with identity-like models).

    Returns:
        float32 array ``[x, y, z]`` of the volume's shape.

    Raises:
        HemolabError: for a bad volume, tile sizes that do not fit, or a network whose output size
            differs from ``output_size``.
    """
    from tqdm.auto import tqdm

    vol = check_volume(volume, "volume").astype(np.float32, copy=False)
    if batch_size < 1:
        raise HemolabError(f"batch_size must be at least 1, got {batch_size}")
    if output not in ("probability", "raw"):
        raise HemolabError(f"output must be 'probability' or 'raw', got {output!r}")
    ins, outs = _triple(input_size), _triple(output_size)
    if stride is None:
        step = default_stride(model, outs)
    elif isinstance(stride, str):
        if stride != "paper":
            raise HemolabError(f"stride must be None, 'paper' or numbers, got {stride!r}")
        step = outs
    else:
        step = _triple(stride)
    tiles = tile_grid(vol.shape, ins, outs, step)
    margin = _check_sizes(ins, outs, step)
    counts = _counts(vol.shape, outs, step)
    covered = [(c - 1) * s + o for c, s, o in zip(counts, step, outs, strict=True)]
    # pad: the margin in front; behind, the margin plus what the last output tile overhangs
    pad = [(m, m + L - n) for m, L, n in zip(margin, covered, vol.shape, strict=True)]
    padded = np.pad(vol, pad, mode="constant", constant_values=PAD_VALUE)
    result = np.zeros(covered, dtype=np.float32)

    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    else:
        from hemolab.config import get_device

        device = device if isinstance(device, torch.device) else get_device(device)
        model.to(device)
    was_training = model.training
    model.eval()
    checked = False
    bar = tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress, leave=False)
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(amp)):
            for group in _batches(tiles, batch_size):
                # a tile's input starts at output_start - margin in the volume = output_start in `padded`
                x = np.stack(
                    [
                        padded[tuple(slice(s, s + i) for s, i in zip(t.output_start, ins, strict=True))]
                        for t in group
                    ]
                )
                logits = model(torch.from_numpy(x)[:, None].to(device))
                if not checked:
                    got = tuple(logits.shape[2:])
                    if got != outs:
                        raise HemolabError(
                            f"the network turns an input tile of {ins} into {got}, not the output_size {outs} "
                            "given: use model.output_size(input_size)"
                        )
                    checked = True
                y = _probability(logits) if output == "probability" else logits[:, 0].float()
                y = y.cpu().numpy()
                for t, yt in zip(group, y, strict=True):
                    result[tuple(slice(s, s + o) for s, o in zip(t.output_start, outs, strict=True))] = yt
                bar.update(len(group))
    finally:
        bar.close()
        model.train(was_training)
    return np.ascontiguousarray(result[tuple(slice(0, n) for n in vol.shape)])


# ----------------------------------------------------------------------------------- post-processing
def _structure(connectivity: int) -> np.ndarray:
    from scipy import ndimage

    rank = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise HemolabError(
            f"connectivity must be 6, 18 or 26 (face, edge or corner neighbours), got {connectivity}"
        )
    return ndimage.generate_binary_structure(3, rank)


def component_volumes_ml(mask, spacing: Sequence[float], connectivity: int = 26) -> np.ndarray:
    """Physical volume (mL) of each connected component of a mask, largest first.

    Args:
        mask: binary mask ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        connectivity: 6, 18 or 26 neighbours (default 26).

    Returns:
        A float array of component volumes in mL (empty for an empty mask).
    """
    from scipy import ndimage

    m = check_mask(mask)
    sp = check_spacing(spacing)
    labels, n = ndimage.label(m, structure=_structure(connectivity))
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return np.sort(counts * float(np.prod(sp)) / 1000.0)[::-1]


def remove_small_components(
    mask, spacing: Sequence[float], min_volume_ml: float = 0.1, connectivity: int = 26
) -> np.ndarray:
    """Remove every connected component smaller than ``min_volume_ml`` (Patel 2019, "Post-processing").

    The size is the PHYSICAL volume, voxel count x voxel volume (mm^3) / 1000, so the same rule works on
    any grid: 0.1 mL is 100 mm^3, i.e. about 1,080 voxels of the paper's 0.43 x 0.43 x 0.5 mm but only
    80 voxels of 0.5 x 0.5 x 5 mm. A rule in voxels would mean a different volume on every scanner.

    Args:
        mask: binary mask ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        min_volume_ml: smallest component kept (paper: 0.1 mL). Components of exactly this volume stay.
        connectivity: 6, 18 or 26 neighbours (default 26: corner-touching voxels are one cluster).

    Returns:
        A boolean mask of the same shape.

    Raises:
        HemolabError: for a non-binary mask, bad spacing or a negative threshold.
    """
    from scipy import ndimage

    m = check_mask(mask)
    sp = check_spacing(spacing)
    if not min_volume_ml >= 0:
        raise HemolabError(f"min_volume_ml must be >= 0, got {min_volume_ml}")
    labels, n = ndimage.label(m, structure=_structure(connectivity))
    if n == 0:
        return m.copy()
    volumes = np.bincount(labels.ravel(), minlength=n + 1) * float(np.prod(sp)) / 1000.0
    keep = volumes >= min_volume_ml - 1e-12
    keep[0] = False
    return keep[labels]


# ---------------------------------------------------------------------------------- whole pipeline
def _meta_size(meta: Mapping[str, Any], key: str, fallback: str) -> tuple[int, int, int] | None:
    value = meta.get(key) or meta.get(fallback)
    return None if value is None else _triple(value)


def segment_patel(
    image,
    model: torch.nn.Module,
    meta: Mapping[str, Any],
    threshold: float = 0.5,
    *,
    device=None,
    batch_size: int = 1,
    stride: int | Sequence[int] | str | None = None,
    cavity=None,
    progress: bool = False,
):
    """Segment one head CT with a trained Patel 3D CNN (Patel 2019, "Post-processing").

    Steps: normalise ([-200, 200] HU -> [0, 1]) -> tiled inference (:func:`tiled_predict`) ->
    threshold -> restrict to the cranial cavity -> remove clusters < 0.1 mL (:func:`remove_small_components`)
    -> volume in mL. Everything happens on the scan's own grid.

    Args:
        image: the scan in HU (:class:`SimpleITK.Image`, e.g. :func:`hemolab.io.read_scan`).
        model: the trained network (:func:`hemolab.training.load_checkpoint`).
        meta: the checkpoint's meta (``inference_input_size``/``inference_output_size`` or
            ``input_size``/``output_size``; ``min_component_ml``; ``restrict_to_cranial_cavity``).
        threshold: probability threshold (paper: 0.5).
        device: where to run the network (``None`` = where the model is).
        batch_size: tiles per forward pass.
        stride: tile step (:func:`tiled_predict`; ``None`` = aligned to the pooling grid, ``"paper"`` =
            edge to edge); ``meta["tile_stride"]`` when given there.
        cavity: a precomputed cranial-cavity mask (``[x, y, z]`` array or image); ``None`` computes it
            with :func:`hemolab.preprocess.cranial_cavity_mask` when the meta asks for it.
        progress: a progress bar over the tiles.

    Returns:
        A :class:`hemolab.segment.SegmentationResult` (mask and probability on the scan's grid).

    Raises:
        HemolabError: for an input that is not a 3D image in HU or a bad threshold.
    """
    import SimpleITK as sitk

    from hemolab.io import array_from_image, image_from_array
    from hemolab.patches import cranial_cavity
    from hemolab.preprocess import prepare_patel
    from hemolab.segment import SegmentationResult

    if not isinstance(image, sitk.Image) or image.GetDimension() != 3:
        raise HemolabError("segment_patel needs a 3D SimpleITK image in HU (e.g. from hemolab.io.read_scan)")
    if not 0.0 < float(threshold) < 1.0:
        raise HemolabError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    ins = _meta_size(meta, "inference_input_size", "input_size")
    outs = _meta_size(meta, "inference_output_size", "output_size")
    if ins is None:
        raise HemolabError(
            "the checkpoint's meta has no 'input_size': it was not written by hemolab.patches.train_patel"
        )
    if outs is None:
        outs = model.output_size(ins)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    x = prepare_patel(image)  # [-200, 200] HU -> [0, 1], the same function as training
    timings["preprocess"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    prob = tiled_predict(
        model,
        x,
        input_size=ins,
        output_size=outs,
        device=device,
        batch_size=batch_size,
        progress=progress,
        stride=stride if stride is not None else meta.get("tile_stride"),
    )
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    timings["network"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    spacing = image.GetSpacing()
    mask = prob >= float(threshold)
    if meta.get("restrict_to_cranial_cavity", True):
        if cavity is None:
            cav = cranial_cavity(image)
        else:
            cav = array_from_image(cavity) if isinstance(cavity, sitk.Image) else np.asarray(cavity)
            cav = cav > 0
        mask &= cav
    timings["cavity"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    mask = remove_small_components(mask, spacing, float(meta.get("min_component_ml", 0.1)))
    volume = float(mask.sum()) * float(np.prod(spacing)) / 1000.0
    result = SegmentationResult(
        mask=image_from_array(mask.astype(np.uint8), reference=image),
        probability=image_from_array(prob.astype(np.float32), reference=image),
        volume_ml=volume,
        seconds=0.0,
        timings=timings,
        threshold=float(threshold),
    )
    timings["postprocess"] = time.perf_counter() - t3
    result.seconds = time.perf_counter() - t0
    return result


def cluster_removal_effect(
    probability: np.ndarray,
    reference,
    spacing: Sequence[float],
    *,
    hu: np.ndarray | None = None,
    cavity=None,
    threshold: float = 0.5,
    min_volume_ml: float = 0.1,
    dense_hu: float = 100.0,
) -> dict[str, float]:
    """What removing clusters < ``min_volume_ml`` does to one prediction (for notebook 04).

    Thresholds ``probability`` (restricted to ``cavity`` when given), then compares the mask before and
    after :func:`remove_small_components` with the reference: number of components, false-positive
    volume, the part of it denser than ``dense_hu`` (calcification-like: blood is 40-90 HU), and Dice.

    Args:
        probability: haemorrhage probability ``[x, y, z]``.
        reference: reference mask on the same grid.
        spacing: voxel size in mm.
        hu: the CT in HU (for the dense false positives; NaN without it).
        cavity: cranial-cavity mask (optional).
        threshold: probability threshold (paper: 0.5).
        min_volume_ml: smallest cluster kept (paper: 0.1 mL).
        dense_hu: HU above which a false positive counts as dense.

    Returns:
        A dict with ``components_before/after``, ``fp_components_before/after`` (components with no
        reference voxel), ``fp_ml_before/after``, ``fp_dense_ml_before/after``, ``dice_before/after``.
    """
    from scipy import ndimage

    ref = check_mask(reference, "reference")
    sp = check_spacing(spacing)
    before = np.asarray(probability) >= threshold
    if cavity is not None:
        before &= np.asarray(cavity) > 0
    after = remove_small_components(before, sp, min_volume_ml)
    voxel_ml = float(np.prod(sp)) / 1000.0
    out: dict[str, float] = {}
    for name, m in (("before", before), ("after", after)):
        labels, n = ndimage.label(m, structure=_structure(26))
        hit = np.unique(labels[m & ref])
        fp = m & ~ref
        inter = float(np.count_nonzero(m & ref))
        total = float(m.sum() + ref.sum())
        out[f"components_{name}"] = float(n)
        out[f"fp_components_{name}"] = float(n - np.count_nonzero(hit))
        out[f"fp_ml_{name}"] = float(fp.sum()) * voxel_ml
        out[f"fp_dense_ml_{name}"] = (
            float(np.count_nonzero(fp & (np.asarray(hu) > dense_hu))) * voxel_ml
            if hu is not None
            else float("nan")
        )
        out[f"dice_{name}"] = 2 * inter / total if total > 0 else 1.0
    return out


def draw_tile_grid(
    ax, tiles: Sequence[Tile], z: int, *, highlight: int | None = None, cmap: str = "tab10"
) -> None:
    """Draw the output tiles (and one tile's input context) that cross axial slice ``z`` on a matplotlib axis.

    The image on ``ax`` must be shown as ``imshow(slice.T, origin="lower")`` (x to the right, y up).

    Args:
        ax: a matplotlib axis.
        tiles: from :func:`tile_grid`.
        z: the slice index.
        highlight: position (in ``tiles``) of a tile whose input context is drawn dashed.
        cmap: colours of the tiles.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    colours = plt.get_cmap(cmap)
    shown = [t for t in tiles if t.output_start[2] <= z < t.output_stop[2]]
    for n, t in enumerate(shown):
        (x0, y0, _), (x1, y1, _) = t.output_start, t.output_stop
        c = colours(n % colours.N)
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=c, lw=2))
        ax.text(x0 + 1, y0 + 1, f"{t.index[0]},{t.index[1]}", color=c, fontsize=8, va="bottom")
    if highlight is not None:
        t = tiles[highlight]
        (x0, y0, _), (x1, y1, _) = t.input_start, t.input_stop
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="w", lw=1.5, ls="--"))
