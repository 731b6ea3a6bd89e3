"""The Patel 3D CNN: a 3D U-Net with *valid* (unpadded) convolutions (Patel 2019; docs/methods.md §2).

Patel et al., *Sci Rep* 9:17858 (2019), Methods, "Network architecture" and Fig. 7: the 3D U-Net of
Çiçek et al. with four scales.

* Encoder: per scale two 3x3x3 convolutions (BatchNorm + leaky ReLU), filters 32->64, 64->128,
  128->256, 256->512 (the number of filters doubles between the first and second layer), 2x2x2 max
  pooling between scales, 50% dropout at the lowest scale.
* Decoder: x2 up-scaling "by regional repetition of the underlying values" (nearest-neighbour
  up-sampling), concatenation with the centre-cropped encoder map of the same scale (768, 384, 192
  channels in Fig. 7), two 3x3x3 convolutions (256-256, 128-128, 64-64), then a 1x1x1 convolution to
  2 classes. :meth:`Patel3DCNN.forward` returns **logits**; a softmax over the class axis gives the
  probability map of the paper.

Because no convolution is padded, every 3x3x3 convolution removes one voxel on each side: the output is
smaller than the input. For a 124^3 input patch the output is 36^3 (``output = input - 88`` per axis),
and the encoder maps must be cropped by 4, 16 and 40 voxels per side before they are concatenated.
Inputs must be ``≡ 4 (mod 8)`` so that every pooling sees an even size; the smallest is 92 (output 4).
:func:`patel_size_table` shows the arithmetic level by level.

The thick-slice variant (Patel 2019, "Quantitative evaluation", PATCH; input 124x124x40) removes the
pooling and up-scaling along z. The convolutions stay 3x3x3 (the paper changes nothing else), so each of
the 14 convolutions still removes 2 slices: ``output_z = input_z - 28`` (40 -> 12), any
``input_z >= 29`` is valid, and the z crops are 2, 6, 10 slices per side.

Tensors are ``(B, C, x, y, z)`` as everywhere in hemolab.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hemolab.errors import HemolabError
from hemolab.models.inference import center_crop

#: Number of scales (Fig. 7): fixed, as in the paper.
N_SCALES = 4
#: Voxels lost per axis by two unpadded 3x3x3 convolutions.
_CONV_PAIR_LOSS = 4


def _as_triple(size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(size, int | float):
        return (int(size),) * 3
    size = tuple(int(s) for s in size)
    if len(size) != 3:
        raise HemolabError(f"a patch size is one number or three (x, y, z), got {size!r}")
    return size  # type: ignore[return-value]


def _axis_sizes(n: int, pooled: bool) -> dict[str, list[int]] | None:
    """Sizes along one axis through the network, or ``None`` when ``n`` does not fit.

    Returns a dict with ``"encoder"`` (size after the two convolutions of scales 1-4), ``"up"``
    (size after up-scaling, decoder scales 3-1), ``"crop"`` (voxels cropped per side from the encoder
    map of scales 3-1) and ``"decoder"`` (size after the two convolutions of decoder scales 3-1).
    """
    factor = 2 if pooled else 1
    enc: list[int] = []
    size = n
    for scale in range(N_SCALES):
        size -= _CONV_PAIR_LOSS
        if size < 1:
            return None
        enc.append(size)
        if scale < N_SCALES - 1:
            if size % factor:
                return None  # max pooling needs an even size
            size //= factor
    up: list[int] = []
    crop: list[int] = []
    dec: list[int] = []
    for scale in range(N_SCALES - 2, -1, -1):
        size *= factor
        skip = enc[scale]
        if (skip - size) % 2 or skip < size:
            return None
        up.append(size)
        crop.append((skip - size) // 2)
        size -= _CONV_PAIR_LOSS
        if size < 1:
            return None
        dec.append(size)
    return {"encoder": enc, "up": up, "crop": crop, "decoder": dec}


def _nearest_valid(n: int, pooled: bool) -> tuple[int | None, int]:
    below = next((m for m in range(n - 1, 0, -1) if _axis_sizes(m, pooled) is not None), None)
    above = next(m for m in range(n + 1, n + 10_000) if _axis_sizes(m, pooled) is not None)
    return below, above


def patel_output_size(input_size: int | Sequence[int], thick_slice: bool = False) -> tuple[int, int, int]:
    """Output patch size of the Patel 3D CNN for an input patch size (Patel 2019, Fig. 7).

    Args:
        input_size: one number (a cube) or ``(x, y, z)``.
        thick_slice: the PATCH variant without pooling / up-scaling along z.

    Returns:
        ``(x, y, z)`` of the output: ``input - 88`` per pooled axis, ``input_z - 28`` along an unpooled z.

    Raises:
        HemolabError: if a size does not fit the network, naming the nearest valid sizes below and above.
    """
    sizes = _as_triple(input_size)
    out = []
    for axis, n in zip("xyz", sizes, strict=True):
        pooled = not (thick_slice and axis == "z")
        arith = _axis_sizes(n, pooled)
        if arith is None:
            below, above = _nearest_valid(n, pooled)
            rule = (
                "sizes ≡ 4 (mod 8) and at least 92 (4 scales of 2x2x2 pooling, 88 voxels lost to valid convolutions)"
                if pooled
                else "sizes of at least 29 along an unpooled z (28 slices lost to valid convolutions)"
            )
            near = [
                f"{m} (output {patel_output_size_1d(m, pooled)})" for m in (below, above) if m is not None
            ]
            raise HemolabError(
                f"input size {n} along {axis} does not fit the Patel 3D CNN{' (thick-slice)' if not pooled else ''}: "
                f"it needs {rule}. Nearest valid: {' or '.join(near)}"
            )
        out.append(arith["decoder"][-1])
    return tuple(out)  # type: ignore[return-value]


def patel_output_size_1d(n: int, pooled: bool = True) -> int:
    """Output size along one axis (``n - 88`` pooled, ``n - 28`` unpooled); raises if ``n`` does not fit."""
    arith = _axis_sizes(int(n), pooled)
    if arith is None:
        raise HemolabError(
            f"input size {n} does not fit the Patel 3D CNN along a {'pooled' if pooled else 'unpooled'} axis"
        )
    return arith["decoder"][-1]


def valid_input_sizes(lo: int = 1, hi: int = 200, pooled: bool = True) -> list[int]:
    """All input sizes in ``[lo, hi]`` that fit along an axis (pooled: 92, 100, 108, 116, 124, ...)."""
    return [n for n in range(lo, hi + 1) if _axis_sizes(n, pooled) is not None]


@dataclass(frozen=True)
class SizeRow:
    """One line of the size arithmetic: where in the network, how many channels, the spatial size."""

    stage: str
    operation: str
    channels: int
    size: tuple[int, int, int]


def patel_size_table(
    input_size: int | Sequence[int] = 124, base_filters: int = 32, thick_slice: bool = False
) -> list[SizeRow]:
    """The size arithmetic of the Patel 3D CNN level by level (for notebook 04).

    Args:
        input_size: the input patch size (one number or ``(x, y, z)``).
        base_filters: filters of the first convolution (the paper: 32).
        thick_slice: the PATCH variant (no pooling along z).

    Returns:
        A list of :class:`SizeRow`, from the input to the output.

    Raises:
        HemolabError: if the size does not fit (see :func:`patel_output_size`).
    """
    sizes = _as_triple(input_size)
    patel_output_size(sizes, thick_slice)  # raises with the nearest valid sizes
    arith = [_axis_sizes(n, not (thick_slice and i == 2)) for i, n in enumerate(sizes)]
    f = base_filters

    def at(key: str, i: int) -> tuple[int, int, int]:
        return tuple(a[key][i] for a in arith)  # type: ignore[return-value,index]

    rows = [SizeRow("input", "input patch", 1, sizes)]
    enc_ch = [2 * f * 2**s for s in range(N_SCALES)]  # 64, 128, 256, 512 (base 32)
    for s in range(N_SCALES):
        if s > 0:
            prev = at("encoder", s - 1)
            pooled = tuple(p // (1 if (thick_slice and i == 2) else 2) for i, p in enumerate(prev))
            rows.append(SizeRow(f"encoder {s + 1}", "2x2x2 max pooling", enc_ch[s - 1], pooled))
        rows.append(
            SizeRow(f"encoder {s + 1}", "2 x (3x3x3 conv + BN + leaky ReLU)", enc_ch[s], at("encoder", s))
        )
    rows[-1] = SizeRow(
        rows[-1].stage, rows[-1].operation + " + 50% dropout", rows[-1].channels, rows[-1].size
    )
    ch = enc_ch[-1]
    for j, s in enumerate(range(N_SCALES - 2, -1, -1)):
        rows.append(SizeRow(f"decoder {s + 1}", "x2 up-scaling (repetition)", ch, at("up", j)))
        crop = at("crop", j)
        rows.append(
            SizeRow(
                f"decoder {s + 1}",
                f"concat encoder {s + 1} cropped by {crop if len(set(crop)) > 1 else crop[0]} per side",
                ch + enc_ch[s],
                at("up", j),
            )
        )
        ch = enc_ch[s]  # 256, 128, 64 (base 32)
        rows.append(SizeRow(f"decoder {s + 1}", "2 x (3x3x3 conv + BN + leaky ReLU)", ch, at("decoder", j)))
    rows.append(
        SizeRow("output", "1x1x1 conv (logits; softmax = probabilities)", 2, at("decoder", N_SCALES - 2))
    )
    return rows


def format_size_table(rows: Sequence[SizeRow]) -> str:
    """:func:`patel_size_table` as aligned text."""
    lines = [f"{'stage':<11} {'operation':<52} {'channels':>8}  size (x, y, z)"]
    for r in rows:
        lines.append(f"{r.stage:<11} {r.operation:<52} {r.channels:>8}  {r.size}")
    return "\n".join(lines)


class _ConvPair(nn.Sequential):
    """Two unpadded 3x3x3 convolutions, each followed by BatchNorm and a leaky ReLU (Fig. 7)."""

    def __init__(self, cin: int, cmid: int, cout: int, negative_slope: float):
        super().__init__(
            nn.Conv3d(cin, cmid, 3, padding=0, bias=False),  # bias is redundant before BatchNorm
            nn.BatchNorm3d(cmid),
            nn.LeakyReLU(negative_slope, inplace=True),
            nn.Conv3d(cmid, cout, 3, padding=0, bias=False),
            nn.BatchNorm3d(cout),
            nn.LeakyReLU(negative_slope, inplace=True),
        )


class _HybridSizeMethod:
    """``Patel3DCNN.output_size(124)`` on the class, ``model.output_size(124)`` using the model's variant."""

    def __get__(self, obj, objtype=None):
        if obj is None:
            return lambda input_size, thick_slice=False: patel_output_size(input_size, thick_slice)
        return lambda input_size: patel_output_size(input_size, obj.thick_slice)


class Patel3DCNN(nn.Module):
    """The valid-convolution 3D U-Net of Patel et al. 2019 (Methods, "Network architecture", Fig. 7).

    Args:
        in_channels: input channels (1: the CT clipped to [-200, 200] HU and scaled to [0, 1]).
        out_channels: output classes (2: background, haemorrhage); softmax over them gives probabilities.
        base_filters: filters of the first convolution (the paper: 32; 4-16 fit a CPU). The encoder
            produces ``2*base * 2**s`` channels at scale ``s`` (64, 128, 256, 512 for 32).
        thick_slice: the PATCH variant: no pooling / up-scaling along z (input e.g. 124x124x40).
        dropout: dropout rate at the lowest scale (the paper: 0.5).
        negative_slope: slope of the leaky ReLU for negative inputs (not given in the paper; PyTorch's
            and Lasagne's default 0.01).

    At base 32 the network has 16,317,986 parameters (the paper: "about 16 M"): 16,313,184 convolution
    weights (no bias before BatchNorm, where it would be redundant), 4,672 BatchNorm scales and shifts, and
    the 1x1x1 head's 128 weights and 2 biases.

    Shapes:
        input ``(B, in_channels, x, y, z)`` with sizes accepted by :meth:`output_size`;
        output ``(B, out_channels, x - 88, y - 88, z - 88)`` (``z - 28`` for the thick-slice variant).
    """

    output_size = _HybridSizeMethod()

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        base_filters: int = 32,
        thick_slice: bool = False,
        dropout: float = 0.5,
        negative_slope: float = 0.01,
    ):
        super().__init__()
        if base_filters < 1 or in_channels < 1 or out_channels < 1:
            raise HemolabError(
                f"in_channels, out_channels and base_filters must be positive, got {in_channels}, {out_channels}, {base_filters}"
            )
        if not 0.0 <= dropout < 1.0:
            raise HemolabError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.base_filters = base_filters
        self.thick_slice = bool(thick_slice)
        f = base_filters
        pool = (2, 2, 1) if self.thick_slice else (2, 2, 2)
        # encoder: (first, second) filters per scale: (32, 64), (64, 128), (128, 256), (256, 512)
        enc = [(f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f), (8 * f, 16 * f)]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for cmid, cout in enc:
            self.encoders.append(_ConvPair(cin, cmid, cout, negative_slope))
            cin = cout
        self.pool = nn.MaxPool3d(pool)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.upsample = nn.Upsample(scale_factor=pool, mode="nearest")  # "regional repetition"
        # decoder: concat (768, 384, 192 for base 32) -> two convs (256, 128, 64)
        self.decoders = nn.ModuleList()
        for s in range(N_SCALES - 2, -1, -1):
            skip = enc[s][1]
            out = enc[s][1]  # 256, 128, 64 for base 32
            self.decoders.append(_ConvPair(cin + skip, out, out, negative_slope))
            cin = out
        self.head = nn.Conv3d(cin, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, *output_size)`` for an input ``(B, in_channels, *input_size)``.

        Raises:
            HemolabError: for a wrong number of dimensions or channels, or a size that does not fit.
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise HemolabError(
                f"Patel3DCNN expects a tensor (B, {self.in_channels}, x, y, z), got shape {tuple(x.shape)}"
            )
        self.output_size(tuple(x.shape[2:]))  # clear error with the nearest valid sizes
        skips = []
        for s, enc in enumerate(self.encoders):
            if s > 0:
                x = self.pool(x)
            x = enc(x)
            if s < N_SCALES - 1:
                skips.append(x)
        x = self.dropout(x)  # 50% dropout at the lowest scale
        for dec, skip in zip(self.decoders, reversed(skips), strict=True):
            x = self.upsample(x)
            x = torch.cat([center_crop(skip, x.shape[2:]), x], dim=1)
            x = dec(x)
        return self.head(x)

    @property
    def size_multiple(self) -> tuple[int, int, int]:
        """Total pooling factor per axis, ``(8, 8, 8)`` (``(8, 8, 1)`` thick-slice).

        The network's output is unchanged by a shift of the input by a multiple of this (its pooling grid
        stays aligned); a shift by anything else changes which voxels are pooled together, so tiles
        whose positions differ by such shifts give (slightly) different predictions
        (:func:`hemolab.segment.tiled_predict` uses it to align its tiles).
        """
        f = 2 ** (N_SCALES - 1)
        return (f, f, 1 if self.thick_slice else f)

    def size_table(self, input_size: int | Sequence[int] = 124) -> list[SizeRow]:
        """:func:`patel_size_table` for this network's width and variant."""
        return patel_size_table(input_size, self.base_filters, self.thick_slice)

    def print_sizes(self, input_size: int | Sequence[int] = 124) -> None:
        """Print the level-by-level size arithmetic for ``input_size``."""
        print(format_size_table(self.size_table(input_size)))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
