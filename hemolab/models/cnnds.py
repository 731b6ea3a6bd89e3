"""CNN-DS: the 3D U-Net with residual context modules and deep supervision of Arab et al. 2020.

Arab et al., *Sci Rep* 10:19389 (2020), Methods, "Neural network architecture" and Fig. 4; the design
is the "improved U-Net" of Isensee et al. (BraTS 2017). PAPERS.md §1. Line by line, with the names of
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from hemolab.errors import HemolabError
from hemolab.models.blocks import ContextModule, LocalisationModule, UpsamplingModule

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
    """The CNN-DS network (Arab 2020, Methods, "Neural network architecture", Fig. 4; PAPERS.md §1).

    Args:
        in_channels: input channels (1: the CT clipped to [0, 100] HU and scaled to [0, 1]).
        out_channels: output channels: 1 (sigmoid) or 2 (softmax over background / haemorrhage).
        base_filters: channels of level 0; they double at each level (16, 32, 64, 128, 256 for depth 5).
        depth: number of levels (the paper's grid search: 3, 4, 5, 6; default 5).
        dropout: dropout rate inside the context modules (the paper's grid: 0.3, 0.4, 0.5).
        deep_supervision: sum the segmentation layers of the three finest decoder levels (``True``) or
            use only the finest one (``False``, the ablation of Table 4).
        negative_slope: leaky ReLU slope (0.01).

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

        ch = self.channels
        # contracting path
        self.entry = nn.Conv3d(self.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.Conv3d(ch[i - 1], ch[i], 3, stride=2, padding=1) for i in range(1, self.depth)
        )
        self.context = nn.ModuleList(ContextModule(c, self.dropout, self.negative_slope) for c in ch)
        # expansive path: index i = the level the module's output lives on (0 = finest)
        self.upsample = nn.ModuleList(
            UpsamplingModule(ch[i + 1], ch[i], self.negative_slope) for i in range(self.depth - 1)
        )
        self.localisation = nn.ModuleList(
            LocalisationModule(2 * ch[i], ch[i], self.negative_slope) for i in range(self.depth - 1)
        )
        # segmentation layers (1x1x1) at the finest decoder levels
        self.segmentation = nn.ModuleList(
            nn.Conv3d(ch[i], self.out_channels, 1) for i in range(self.n_segmentation_levels)
        )
        self.segmentation_upscale = nn.Upsample(scale_factor=2, mode="nearest")

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

    def receptive_field(self) -> int:
        """Receptive field of one output voxel, in input voxels per axis (:func:`receptive_field`)."""
        return receptive_field(self.depth)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per part (:func:`parameter_counts`)."""
        return parameter_counts(self)


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


# ------------------------------------------------------------------------------------- parameters
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


# -------------------------------------------------------------------------------- fast inference
def bf16_supported(device: torch.device | str) -> bool:
    """Whether bfloat16 autocast runs natively (fast) on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # pragma: no cover - older torch builds
            return False
    return False


@contextmanager
def fast_inference_context(
    device: torch.device | str, *, low_precision: bool | None = None
) -> Iterator[None]:
    """The fastest settings for a CNN-DS forward pass that stay accurate (``benchmarks/README.md``).

    Inside the context autograd is off (``torch.inference_mode``) and, when ``low_precision`` allows it,
    the convolutions run in bfloat16 under ``torch.autocast`` (on a GPU without bfloat16: float16).
    Measured on a 2-core AMD EPYC (AVX512-BF16) at the paper's size (128x128x64, base 16, depth 5):
    about 2x faster than float32; on a trained network the 0.5-thresholded masks agree with float32 to a
    Dice above 0.99 and the volumes to better than 1 % (far below the 9 % between raters).

    Args:
        device: where the network runs.
        low_precision: ``True`` / ``False`` forces autocast on / off; ``None`` = on where the hardware does
            bfloat16 natively (a CPU with AVX512-BF16 or AMX, or any CUDA GPU).

    Yields:
        Nothing; use as ``with fast_inference_context(dev): logits = model(x)``.
    """
    device = torch.device(device)
    if low_precision is None:
        low_precision = device.type == "cuda" or bf16_supported(device)
    with torch.inference_mode():
        if low_precision and device.type in ("cpu", "cuda"):
            dtype = torch.bfloat16 if (device.type == "cpu" or bf16_supported(device)) else torch.float16
            with torch.autocast(device.type, dtype=dtype):
                yield
        else:
            yield


def predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    fast: bool = True,
    device: torch.device | str | None = None,
    low_precision: bool | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Foreground probabilities ``(B, 1, x, y, z)`` (float32) of a CNN-DS for a batch ``x``.

    Sigmoid of the logits for one output channel, softmax channel 1 for two (Arab 2020: "the probability
    map ... a threshold of 0.5"). The model is put in ``eval()`` mode (dropout off).

    Args:
        model: a CNN-DS.
        x: input ``(B, C, x, y, z)``, on any device (moved to the model's).
        fast: run under :func:`fast_inference_context` (bfloat16 autocast where the hardware has it);
            ``False`` = plain float32 under ``torch.inference_mode``.
        device: where to run (``None`` = where the model's parameters are; the model is moved otherwise).
        low_precision: passed to :func:`fast_inference_context` (``None`` = automatic).
        channels_last: convert model and input to ``torch.channels_last_3d`` first (in place for the
            model). Off by default: it was *slower* on the CPU measured in ``benchmarks/README.md``;
            try it on a GPU with ``benchmarks/bench_cnnds.py``.

    Returns:
        The probability map on the model's device, float32.
    """
    if device is not None:
        model.to(torch.device(device))
    dev = next(model.parameters()).device
    model.eval()
    x = x.to(dev, dtype=torch.float32)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    if fast:
        with fast_inference_context(dev, low_precision=low_precision):
            logits = model(x)
    else:
        with torch.inference_mode():
            logits = model(x)
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:2]


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
