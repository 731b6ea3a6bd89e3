"""CNN-DS: the 3D U-Net with residual context modules and deep supervision of Arab et al. 2020.

Arab et al., *Sci Rep* 10:19389 (2020), Methods, "Neural network architecture" and Fig. 4; the design
is the "improved U-Net" of Isensee et al. (BraTS 2017). docs/methods.md §1. Line by line, with the names of
the submodules of :class:`CNNDS`:

Contracting path (level ``i = 0 .. depth-1``, ``C_i = base_filters * 2**i`` channels: 16, 32, 64, ...):

* ``entry``: a 3x3x3 convolution from the input channel(s) to ``C_0`` (level 0 only);
* ``down[i-1]``: a 3x3x3 convolution **with stride 2** joining level ``i-1`` to level ``i`` and
  doubling the channels ("connected by 3x3x3 convolutions with stride 2");
* ``context[i]``: the context module, a pre-activation residual block (:class:`ContextModule`). Its
  output is the level's skip connection.

Expansive path (level ``i = depth-2 .. 0``):

* ``upsample[i]``: x2 up-scale by voxel repetition, then a 3x3x3 conv ``C_{i+1} -> C_i``;
* concatenation with the skip ``context[i]`` output (``2 C_i`` channels);
* ``localisation[i]``: a 3x3x3 conv then a 1x1x1 conv ``2 C_i -> C_i``.

Deep supervision ("segmentation layers at different levels ... merged using element-wise summation"):

* ``segmentation[i]``: a 1x1x1 convolution to ``out_channels`` at the three finest decoder levels
  ``i = 0, 1, 2`` (two for ``depth=3``, which has only two decoder levels);
* starting from the coarsest, each segmentation map is up-sampled x2 (voxel repetition) and added to the
  next finer one; the sum at level 0 is the network output -- one loss on the sum.
* ``deep_supervision=False`` (the paper's ablation, Table 4) keeps only ``segmentation[0]``.

The output are **logits** ``(B, out_channels, x, y, z)`` of the input's size: a sigmoid (1 channel) or a
softmax (2 channels) gives the probability map, thresholded at 0.5 in the paper.

Choices where the paper is silent (documented in notebook 02): convolutions have a bias (Keras' default);
instance norms are affine; the decoder's convolutions are conv -> norm -> leaky ReLU; the localisation
module keeps ``2C`` channels in its 3x3x3 conv and halves them in the 1x1x1 conv (Isensee's wording).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hemolab.errors import HemolabError
from hemolab.models.blocks import ContextModule, LocalisationModule, UpsamplingModule, make_upscale

#: Depths of the paper's grid search (Arab 2020, Methods, "Neural network training").
PAPER_DEPTHS: tuple[int, ...] = (3, 4, 5, 6)
#: Segmentation layers used for deep supervision (the three finest decoder levels).
N_SEGMENTATION_LEVELS = 3


# ----------------------------------------------------------------------------------------- input sizes
def size_multiple(depth: int) -> int:
    """Every spatial size must divide by ``2**(depth-1)`` (one halving per stride-2 convolution)."""
    return 2 ** (int(depth) - 1)


def nearest_valid_sizes(n: int, depth: int) -> tuple[int | None, int]:
    """The valid sizes nearest to ``n`` along one axis: ``(below or None, above)``."""
    m = size_multiple(depth)
    below = (int(n) // m) * m
    above = -(-int(n) // m) * m
    return (below if below >= m else None), max(above, m)


def check_input_size(size: Sequence[int], depth: int) -> tuple[int, ...]:
    """Check that a spatial size ``(x, y, z)`` fits a CNN-DS of ``depth`` levels.

    Raises:
        HemolabError: naming, for each axis that does not fit, the nearest valid sizes below and above.
    """
    size = tuple(int(s) for s in size)
    if len(size) != 3:
        raise HemolabError(f"CNN-DS needs a 3D spatial size (x, y, z), got {size}")
    m = size_multiple(depth)
    bad = []
    for axis, n in zip("xyz", size, strict=True):
        if n < m or n % m:
            below, above = nearest_valid_sizes(n, depth)
            near = f"{below} or {above}" if below is not None else f"{above}"
            bad.append(f"{axis}={n} (nearest valid: {near})")
    if bad:
        raise HemolabError(
            f"a CNN-DS of depth {depth} halves the grid {depth - 1} times, so every size must be a multiple "
            f"of {m}; got {size}: " + ", ".join(bad) + ". Resample the scan to a valid grid "
            "(hemolab.preprocess.resample_to_size; the paper uses 128x128x64) or use a smaller depth."
        )
    return size


# ------------------------------------------------------------------------------------------- network
class CNNDS(nn.Module):
    """The CNN-DS network (Arab 2020, Methods, "Neural network architecture", Fig. 4; docs/methods.md §1).

    Args:
        in_channels: input channels (1: the CT clipped to [0, 100] HU and scaled to [0, 1]).
        out_channels: output channels: 1 (sigmoid) or 2 (softmax over background / haemorrhage).
        base_filters: channels of level 0; they double at each level (16, 32, 64, 128, 256 for depth 5).
        depth: number of levels (the paper's grid search: 3, 4, 5, 6; default 5).
        dropout: dropout rate inside the context modules (the paper's grid: 0.3, 0.4, 0.5).
        deep_supervision: sum the segmentation layers of the three finest decoder levels (``True``) or
            use only the finest one (``False``, the ablation of Table 4).
        negative_slope: leaky ReLU slope (0.01).
        upsample_mode: how the decoder and the deep-supervision sum up-scale x2: ``"nearest"`` (voxel
            repetition, the paper's) or ``"trilinear"`` (for the exercises of notebook 02).

    Shapes:
        input ``(B, in_channels, x, y, z)`` with every size a multiple of ``2**(depth-1)``;
        output ``(B, out_channels, x, y, z)``: logits.

    Raises:
        HemolabError: for invalid settings.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_filters: int = 16,
        depth: int = 5,
        dropout: float = 0.3,
        deep_supervision: bool = True,
        negative_slope: float = 0.01,
        upsample_mode: str = "nearest",
    ):
        super().__init__()
        if int(depth) < 2:
            raise HemolabError(f"depth must be at least 2 (the paper tried 3-6), got {depth}")
        if min(int(in_channels), int(out_channels), int(base_filters)) < 1:
            raise HemolabError(
                f"in_channels, out_channels and base_filters must be positive, got "
                f"{in_channels}, {out_channels}, {base_filters}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise HemolabError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.base_filters = int(base_filters)
        self.depth = int(depth)
        self.dropout = float(dropout)
        self.deep_supervision = bool(deep_supervision)
        self.negative_slope = float(negative_slope)
        self.upsample_mode = str(upsample_mode)

        ch = self.channels
        # contracting path
        self.entry = nn.Conv3d(self.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.Conv3d(ch[i - 1], ch[i], 3, stride=2, padding=1) for i in range(1, self.depth)
        )
        self.context = nn.ModuleList(ContextModule(c, self.dropout, self.negative_slope) for c in ch)
        # expansive path: index i = the level the module's output lives on (0 = finest)
        self.upsample = nn.ModuleList(
            UpsamplingModule(ch[i + 1], ch[i], self.negative_slope, self.upsample_mode)
            for i in range(self.depth - 1)
        )
        self.localisation = nn.ModuleList(
            LocalisationModule(2 * ch[i], ch[i], self.negative_slope) for i in range(self.depth - 1)
        )
        # segmentation layers (1x1x1) at the finest decoder levels
        self.segmentation = nn.ModuleList(
            nn.Conv3d(ch[i], self.out_channels, 1) for i in range(self.n_segmentation_levels)
        )
        self.segmentation_upscale = make_upscale(self.upsample_mode)

    # ---------------------------------------------------------------------------------- description
    @property
    def channels(self) -> list[int]:
        """Channels at each level: ``base_filters * 2**i``."""
        return [self.base_filters * 2**i for i in range(self.depth)]

    @property
    def n_segmentation_levels(self) -> int:
        """How many segmentation layers: ``min(3, depth-1)`` with deep supervision, else 1."""
        return min(N_SEGMENTATION_LEVELS, self.depth - 1) if self.deep_supervision else 1

    @property
    def size_multiple(self) -> int:
        """Every input size must be a multiple of this (``2**(depth-1)``)."""
        return size_multiple(self.depth)

    def model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this network (``build_model("cnnds", **kw)``)."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "base_filters": self.base_filters,
            "depth": self.depth,
            "dropout": self.dropout,
            "deep_supervision": self.deep_supervision,
            "negative_slope": self.negative_slope,
            "upsample_mode": self.upsample_mode,
        }

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, channels={self.channels}, dropout={self.dropout}, "
            f"deep_supervision={self.deep_supervision} ({self.n_segmentation_levels} segmentation layer(s))"
        )

    # -------------------------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise HemolabError(
                f"CNN-DS expects a 5D tensor (B, C, x, y, z), got {x.ndim}D of shape {tuple(x.shape)}: "
                "add the batch and channel axes, e.g. x[None, None] for one volume"
            )
        if x.shape[1] != self.in_channels:
            raise HemolabError(
                f"CNN-DS was built for {self.in_channels} input channel(s), got {x.shape[1]} "
                f"(tensor shape {tuple(x.shape)}; tensors are (B, C, x, y, z))"
            )
        check_input_size(x.shape[2:], self.depth)

    def _run(self, x: torch.Tensor, keep: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._check_input(x)
        seen: dict[str, torch.Tensor] = {}
        skips: list[torch.Tensor] = []
        for i in range(self.depth):
            x = self.entry(x) if i == 0 else self.down[i - 1](x)
            x = self.context[i](x)
            skips.append(x)
            if keep:
                seen[f"context[{i}]"] = x
        decoded: dict[int, torch.Tensor] = {}
        for i in range(self.depth - 2, -1, -1):
            up = self.upsample[i](x)
            x = self.localisation[i](torch.cat([skips[i], up], dim=1))
            decoded[i] = x
            if keep:
                seen[f"upsample[{i}]"] = up
                seen[f"localisation[{i}]"] = x
        out: torch.Tensor | None = None
        for i in range(self.n_segmentation_levels - 1, -1, -1):
            seg = self.segmentation[i](decoded[i])
            if keep:
                seen[f"segmentation[{i}]"] = seg
            out = seg if out is None else self.segmentation_upscale(out) + seg
            if keep:
                seen[f"sum[{i}]"] = out
        assert out is not None
        return out, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, x, y, z)`` for an input ``(B, in_channels, x, y, z)``.

        Raises:
            HemolabError: for a tensor that is not 5D, has the wrong number of channels, or a spatial
                size that is not a multiple of ``2**(depth-1)`` (the message names the nearest valid sizes).
        """
        return self._run(x, keep=False)[0]

    def forward_with_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The logits and every intermediate map, for looking inside the network (notebook 02).

        Returns:
            ``(logits, maps)`` where ``maps`` has the keys ``"context[i]"`` (the skips),
            ``"upsample[i]"``, ``"localisation[i]"``, ``"segmentation[i]"`` (the raw 1x1x1 outputs at
            their own level's size) and ``"sum[i]"`` (the running deep-supervision sum at level ``i``;
            ``"sum[0]"`` is the output).
        """
        return self._run(x, keep=True)

    # --------------------------------------------------------------------------------- shapes, sizes
    def level_shapes(self, input_size: Sequence[int], batch_size: int = 1) -> list[dict[str, Any]]:
        """The tensor shape after every module, measured by forward hooks on the ``meta`` device.

        Nothing is computed (meta tensors carry shapes only), so this is instant even for 128x128x64.

        Args:
            input_size: the spatial size ``(x, y, z)``.
            batch_size: the batch size ``B``.

        Returns:
            One dict per module in execution order: ``module`` (its name, e.g. ``"context[2]"``),
            ``kind``, ``level``, ``shape`` ``(B, C, x, y, z)`` and ``voxels`` (x*y*z).
        """
        size = check_input_size(input_size, self.depth)
        with torch.device("meta"):
            probe = CNNDS(**self.model_kwargs())
        rows: list[dict[str, Any]] = []
        handles = []

        def hook(name: str, kind: str, level: int):
            def fn(_module, _inp, out):
                shape = tuple(int(s) for s in out.shape)
                rows.append(
                    {
                        "module": name,
                        "kind": kind,
                        "level": level,
                        "shape": shape,
                        "voxels": math.prod(shape[2:]),
                    }
                )

            return fn

        named = [("entry", probe.entry, "3x3x3 conv", 0)]
        named += [(f"down[{i}]", m, "3x3x3 conv, stride 2", i + 1) for i, m in enumerate(probe.down)]
        named += [(f"context[{i}]", m, "context module", i) for i, m in enumerate(probe.context)]
        named += [(f"upsample[{i}]", m, "up-sampling module", i) for i, m in enumerate(probe.upsample)]
        named += [
            (f"localisation[{i}]", m, "localisation module", i) for i, m in enumerate(probe.localisation)
        ]
        named += [
            (f"segmentation[{i}]", m, "segmentation layer 1x1x1", i) for i, m in enumerate(probe.segmentation)
        ]
        for name, module, kind, level in named:
            handles.append(module.register_forward_hook(hook(name, kind, level)))
        try:
            out = probe(torch.empty((int(batch_size), self.in_channels, *size), device="meta"))
        finally:
            for h in handles:
                h.remove()
        rows.append(
            {
                "module": "output",
                "kind": "sum of segmentation maps" if self.n_segmentation_levels > 1 else "logits",
                "level": 0,
                "shape": tuple(int(s) for s in out.shape),
                "voxels": math.prod(int(s) for s in out.shape[2:]),
            }
        )
        return rows

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per part (:func:`parameter_counts`)."""
        return parameter_counts(self)


def parameter_counts(model: CNNDS) -> dict[str, int]:
    """Trainable parameters of a CNN-DS per part: contracting path, expansive path, segmentation layers.

    Returns:
        ``{"contracting": ..., "expansive": ..., "segmentation": ..., "total": ...}``.
    """

    def n(*mods: nn.Module) -> int:
        return sum(p.numel() for m in mods for p in m.parameters() if p.requires_grad)

    out = {
        "contracting": n(model.entry, model.down, model.context),
        "expansive": n(model.upsample, model.localisation),
        "segmentation": n(model.segmentation),
    }
    out["total"] = n(model)
    return out
