"""Analysing CNN-DS: receptive field, parameter counts per depth, and a diagram of the network.

Teaching aids for notebook 02 around :class:`hemolab.models.cnnds.CNNDS` (Arab 2020, Methods,
"Neural network architecture", Fig. 4; docs/methods.md §1.3): how far one output voxel sees, analytically
and measured with gradients, how the parameters grow with depth and what deep supervision adds, and the
network drawn as boxes and arrows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hemolab.models.cnnds import (
    CNNDS,
    N_SEGMENTATION_LEVELS,
    PAPER_DEPTHS,
    parameter_counts,
    size_multiple,
)


# --------------------------------------------------------------------------------- receptive field
def receptive_field_interval(depth: int, position: int, deep_supervision: bool = True) -> tuple[int, int]:
    """The input voxels (first, last) along one axis that can influence output voxel ``position`` (exact).

    Propagates an interval of voxel indices backwards through every path of the network (an axis taken
    as unbounded, so padding does not clip it): a 3x3x3 convolution widens ``[a, b]`` to
    ``[a-1, b+1]``; a stride-2 convolution maps ``[a, b]`` to ``[2a-1, 2b+1]`` on the finer level; x2
    voxel repetition maps ``[a, b]`` to ``[a//2, b//2]`` on the coarser level; a skip connection or a
    sum takes the union of its inputs' intervals. Instance normalisation is ignored: its mean and
    variance run over the whole volume, so strictly every output depends a little on every input.

    Args:
        depth: number of levels.
        position: the output voxel's index along the axis.
        deep_supervision: include the coarser segmentation layers' paths (they never reach further).

    Returns:
        ``(first, last)`` input indices (``first`` may be negative: the zero padding).
    """
    depth = int(depth)

    def encoder(level: int, a: int, b: int) -> tuple[int, int]:
        a, b = a - 2, b + 2  # context module: two 3x3x3 convolutions (the identity path is inside)
        if level == 0:
            return a - 1, b + 1  # entry 3x3x3 convolution
        return encoder(level - 1, 2 * a - 1, 2 * b + 1)  # 3x3x3 convolution with stride 2

    def decoder(level: int, a: int, b: int) -> tuple[int, int]:
        a, b = a - 1, b + 1  # localisation: 3x3x3 conv (the 1x1x1 adds nothing), on the concatenation
        skip = encoder(level, a, b)
        ua, ub = (a - 1) // 2, (b + 1) // 2  # up-sampling module: 3x3x3 conv on the repeated voxels
        below = encoder(level + 1, ua, ub) if level + 1 == depth - 1 else decoder(level + 1, ua, ub)
        return min(skip[0], below[0]), max(skip[1], below[1])

    n_seg = min(N_SEGMENTATION_LEVELS, depth - 1) if deep_supervision else 1
    spans = [decoder(i, int(position) >> i, int(position) >> i) for i in range(n_seg)]
    return min(s[0] for s in spans), max(s[1] for s in spans)


def receptive_field_range(depth: int) -> tuple[int, int]:
    """The smallest and largest receptive field (voxels per axis) over all output positions.

    Voxel repetition is not centred (fine voxels 2k and 2k+1 both copy coarse voxel k), so the field
    depends on the output voxel's position modulo ``2**(depth-1)``.
    """
    widths = [b - a + 1 for a, b in (receptive_field_interval(depth, p) for p in range(size_multiple(depth)))]
    return min(widths), max(widths)


def receptive_field(depth: int) -> int:
    """Receptive field of CNN-DS in input voxels per axis: the largest over output positions (analytic).

    See :func:`receptive_field_interval` for how it is computed and :func:`empirical_receptive_field`
    for the check by gradients.

    Args:
        depth: number of levels.

    Returns:
        The receptive field in voxels (e.g. 221 for depth 5: wider than the 128x128x64 input, so every
        output voxel can "see" the whole head).
    """
    return receptive_field_range(depth)[1]


def empirical_receptive_field_interval(
    depth: int,
    size: int | None = None,
    axis: int = 0,
    position: int | Sequence[int] | None = None,
    base_filters: int = 2,
    seed: int = 0,
) -> tuple[int, int] | list[tuple[int, int]]:
    """Measure which input voxels influence one output voxel, by the gradient of that voxel.

    A network with the same geometry (instance norms replaced by identities, see
    :func:`receptive_field_interval`; random weights) is run once on a line-shaped input; the input
    voxels along ``axis`` with a non-zero gradient of output voxel ``position`` are its field.

    Args:
        depth: number of levels.
        size: input length along ``axis`` (default: room for the field, a multiple of the size step).
        axis: 0, 1 or 2 (x, y, z).
        position: the output voxel along ``axis`` (default: the centre), or a list of them.
        base_filters: width of the probe network (the geometry does not depend on it).
        seed: weights' seed.

    Returns:
        ``(first, last)`` input indices with a non-zero gradient; a list of them for a list of positions.
    """
    m = size_multiple(depth)
    if size is None:
        size = -(-(receptive_field(depth) + 2 * m) // m) * m
    shape = [m, m, m]
    shape[axis] = int(size)
    gen = torch.Generator().manual_seed(seed)
    net = CNNDS(1, 1, base_filters, depth, dropout=0.0).eval()
    for name, mod in list(net.named_modules()):
        if isinstance(mod, nn.InstanceNorm3d):
            parent_name, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, child, nn.Identity())
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    x = torch.randn((1, 1, *shape), generator=gen).requires_grad_(True)
    out = net(x)
    single = position is None or isinstance(position, int)
    positions = (
        [shape[axis] // 2 if position is None else int(position)] if single else [int(p) for p in position]
    )
    other = tuple(a for a in range(3) if a != axis)
    result = []
    for k, pos in enumerate(positions):
        index = [s // 2 for s in shape]
        index[axis] = pos
        (grad,) = torch.autograd.grad(out[(0, 0, *index)], x, retain_graph=k < len(positions) - 1)
        nz = torch.nonzero(grad[0, 0].abs().sum(dim=other) > 0).flatten()
        if not nz.numel():  # pragma: no cover - would need exactly cancelling random weights
            raise RuntimeError("no input voxel influences the output voxel: re-run with another seed")
        result.append((int(nz.min()), int(nz.max())))
    return result[0] if single else result


def empirical_receptive_field(depth: int, **kwargs: Any) -> int:
    """The width of :func:`empirical_receptive_field_interval` (same arguments), in voxels."""
    a, b = empirical_receptive_field_interval(depth, **kwargs)
    return b - a + 1


def parameter_table(
    depths: Sequence[int] = PAPER_DEPTHS, base_filters: int = 16, out_channels: int = 1
) -> list[dict[str, Any]]:
    """Parameter counts for several depths, with and without deep supervision (built on ``meta``).

    Returns:
        One dict per depth: ``depth``, the :func:`parameter_counts` of the network with deep supervision,
        ``total_without_ds`` and ``receptive_field``.
    """
    rows = []
    for d in depths:
        with torch.device("meta"):
            ds = CNNDS(1, out_channels, base_filters, d, deep_supervision=True)
            no_ds = CNNDS(1, out_channels, base_filters, d, deep_supervision=False)
        row = {"depth": int(d), **parameter_counts(ds)}
        row["total_without_ds"] = parameter_counts(no_ds)["total"]
        row["receptive_field"] = receptive_field(d)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- diagram
def draw_architecture(
    depth: int = 5,
    base_filters: int = 16,
    deep_supervision: bool = True,
    input_size: Sequence[int] | None = (128, 128, 64),
    ax=None,
):
    """Draw the CNN-DS of Fig. 4 as boxes and arrows (matplotlib), level 0 at the top.

    Encoder (left): ``entry`` / ``down[i]`` then ``context[i]``; decoder (right): ``upsample[i]``,
    concatenation with the skip (dashed), ``localisation[i]``; segmentation layers (far right) and, with
    deep supervision, the "x2 up + add" chain that sums them into the output.

    Args:
        depth: number of levels.
        base_filters: channels of level 0.
        deep_supervision: draw the three segmentation layers (``True``) or only the finest.
        input_size: the grid to annotate sizes with (``None``: channels only).
        ax: a matplotlib Axes (``None``: a new figure).

    Returns:
        The Axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 1.1 * depth + 1))
    ch = [base_filters * 2**i for i in range(depth)]
    n_seg = min(N_SEGMENTATION_LEVELS, depth - 1) if deep_supervision else 1

    def size_at(i: int) -> str:
        if input_size is None:
            return ""
        return "\n" + "x".join(str(int(s) // 2**i) for s in input_size)

    def box(x, y, text, color, w=1.7, h=0.62):
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.03", fc=color, ec="0.3", lw=0.8
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=7.5)

    def arrow(x0, y0, x1, y1, style="-|>", ls="-", color="0.25"):
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={"arrowstyle": style, "ls": ls, "color": color, "lw": 1},
        )

    xe, xd, xs = 0.0, 3.2, 5.4
    for i in range(depth):
        y = -i
        first = "entry 3x3x3" if i == 0 else f"down[{i - 1}] 3x3x3 /2"
        box(xe, y, f"{first}\ncontext[{i}]: {ch[i]} ch{size_at(i)}", "#cfe2f3")
        if i > 0:
            arrow(xe, y + 0.69, xe, y + 0.31)
        if i < depth - 1:
            box(xd, y, f"upsample[{i}] + concat\nlocalisation[{i}]: {ch[i]} ch{size_at(i)}", "#d9ead3")
            arrow(xe + 0.85, y, xd - 0.85, y, ls="--")  # skip connection
            src = (xe + 0.5, y - 0.69) if i == depth - 2 else (xd, y - 0.69)
            arrow(src[0], src[1], xd - 0.2, y - 0.31)
        if i < n_seg:
            box(xs, y, f"segmentation[{i}]\n1x1x1 -> logits", "#f4cccc", w=1.5)
            arrow(xd + 0.85, y, xs - 0.75, y)
            if i > 0:
                arrow(xs, y + 0.31, xs, y + 0.69 - 0.0, color="#b45f06")
                ax.text(xs + 0.8, y + 0.5, "x2 up, add", fontsize=7, color="#b45f06", va="center")
    box(xs, 1.0, "output = sum (logits)" if n_seg > 1 else "output (logits)", "#fff2cc", w=1.7, h=0.45)
    arrow(xs, 0.31, xs, 0.78)
    box(xe, 1.0, "input (1 ch)", "#eeeeee", w=1.5, h=0.45)
    arrow(xe, 0.78, xe, 0.31)
    ax.set_xlim(-1.2, 6.6)
    ax.set_ylim(-depth + 0.4, 1.5)
    ax.axis("off")
    title = "with deep supervision" if deep_supervision else "without deep supervision (ablation)"
    ax.set_title(f"CNN-DS, depth {depth}, base {base_filters}: {title}", fontsize=9)
    return ax
