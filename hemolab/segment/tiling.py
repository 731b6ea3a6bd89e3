"""Tiled inference for a valid-convolution network: output tiles side by side, each from its full context.

Patel et al. 2019, Methods, "Post-processing" (docs/methods.md §2.5): the scan is processed in consecutive
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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from tqdm.auto import tqdm

from hemolab.config import get_device
from hemolab.errors import HemolabError
from hemolab.models.inference import foreground_probability
from hemolab.preprocess import PAD_VALUE
from hemolab.validation import check_triple, check_volume


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
    outs, mult = check_triple(output_size), check_triple(multiple)
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
    shape, ins, outs = check_triple(shape), check_triple(input_size), check_triple(output_size)
    stride = outs if stride is None else check_triple(stride)
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
        volume: the NORMALISED volume ``[x, y, z]`` (:func:`hemolab.preprocess.prepare_patel`).
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
    vol = check_volume(volume, "volume").astype(np.float32, copy=False)
    if batch_size < 1:
        raise HemolabError(f"batch_size must be at least 1, got {batch_size}")
    if output not in ("probability", "raw"):
        raise HemolabError(f"output must be 'probability' or 'raw', got {output!r}")
    ins, outs = check_triple(input_size), check_triple(output_size)
    if stride is None:
        step = default_stride(model, outs)
    elif isinstance(stride, str):
        if stride != "paper":
            raise HemolabError(f"stride must be None, 'paper' or numbers, got {stride!r}")
        step = outs
    else:
        step = check_triple(stride)
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
                y = foreground_probability(logits)[:, 0] if output == "probability" else logits[:, 0].float()
                y = y.cpu().numpy()
                for t, yt in zip(group, y, strict=True):
                    result[tuple(slice(s, s + o) for s, o in zip(t.output_start, outs, strict=True))] = yt
                bar.update(len(group))
    finally:
        bar.close()
        model.train(was_training)
    return np.ascontiguousarray(result[tuple(slice(0, n) for n in vol.shape)])


def draw_tile_grid(
    ax, tiles: Sequence[Tile], z: int, *, highlight: int | None = None, cmap: str = "tab10"
) -> None:
    """Draw the output tiles (and one tile's input context) that cross axial slice ``z`` on a matplotlib axis.

    The image on ``ax`` must be shown as ``imshow(slice.T)`` with the default origin, as every slice of the
    course is (x to the right, y down: anterior at the top).

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
        ax.text(x0 + 1, y0 + 1, f"{t.index[0]},{t.index[1]}", color=c, fontsize=8, va="top")
    if highlight is not None:
        t = tiles[highlight]
        (x0, y0, _), (x1, y1, _) = t.input_start, t.input_stop
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="w", lw=1.5, ls="--"))
