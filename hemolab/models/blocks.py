"""The building blocks of CNN-DS, one class per module of the paper's Fig. 4.

Arab et al., *Sci Rep* 10:19389 (2020), Methods, "Neural network architecture", which builds on the
"improved U-Net" of Isensee et al. (BraTS 2017; docs/methods.md §1):

* :class:`ConvNormAct` -- a convolution followed by instance normalisation and a leaky ReLU (slope
  0.01): Isensee uses leaky ReLUs "for all feature map computing convolutions" and instance instead of
  batch normalisation.
* :class:`ContextModule` -- "a residual block consisting of two 3x3x3 convolutional layers with a
  dropout layer in between"; *pre-activation* (norm -> leaky ReLU -> conv), its output added to its input.
* :class:`UpsamplingModule` -- "x2 up-scale by voxel repetition, then a 3x3x3 convolution that halves
  the number of channels".
* :class:`LocalisationModule` -- "a 3x3x3 followed by a 1x1x1 convolution" halving the channels of the
  concatenation (skip + up-sampled) back to the level's width.

Tensors are ``(B, C, x, y, z)``.
"""

from __future__ import annotations

import torch
from torch import nn

from hemolab.errors import HemolabError


class ConvNormAct(nn.Sequential):
    """Convolution -> InstanceNorm3d -> LeakyReLU (a "post-activation" convolution of the decoder).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: 3 (3x3x3, padded to keep the size) or 1 (1x1x1).
        negative_slope: slope of the leaky ReLU for negative inputs (0.01).

    Submodules are named ``conv``, ``norm``, ``act`` so that a printed network reads like the paper.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, negative_slope: float = 0.01
    ):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.InstanceNorm3d(out_channels, affine=True)
        self.act = nn.LeakyReLU(negative_slope)


class ContextModule(nn.Module):
    """The context module: a pre-activation residual block (Arab 2020, Methods; Isensee 2017).

    ``out = x + conv2(act(norm2(dropout(conv1(act(norm1(x)))))))``

    i.e. InstanceNorm -> LeakyReLU -> 3x3x3 conv -> Dropout3d -> InstanceNorm -> LeakyReLU -> 3x3x3 conv,
    added to the input. The number of channels does not change.

    Args:
        channels: channels in and out.
        dropout: probability of dropping a whole feature map (``nn.Dropout3d``, "spatial dropout" as in
            the Keras code base this design comes from); 0 disables it.
        negative_slope: leaky ReLU slope (0.01).
    """

    def __init__(self, channels: int, dropout: float = 0.3, negative_slope: float = 0.01):
        super().__init__()
        self.norm1 = nn.InstanceNorm3d(channels, affine=True)
        self.act1 = nn.LeakyReLU(negative_slope)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.norm2 = nn.InstanceNorm3d(channels, affine=True)
        self.act2 = nn.LeakyReLU(negative_slope)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch alone (what is added to the input)."""
        y = self.conv1(self.act1(self.norm1(x)))
        y = self.dropout(y)
        return self.conv2(self.act2(self.norm2(y)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


#: The x2 up-scalings a CNN-DS can use: voxel repetition (the paper) or trilinear interpolation.
UPSAMPLE_MODES: tuple[str, ...] = ("nearest", "trilinear")


def make_upscale(mode: str = "nearest") -> nn.Upsample:
    """A x2 up-scaling of a 3D feature map: ``"nearest"`` repeats each voxel into a 2x2x2 block.

    Raises:
        HemolabError: for a mode that is not in :data:`UPSAMPLE_MODES`.
    """
    if mode not in UPSAMPLE_MODES:
        raise HemolabError(f"upsample_mode must be one of {', '.join(UPSAMPLE_MODES)}, got {mode!r}")
    return nn.Upsample(scale_factor=2, mode=mode, **({"align_corners": False} if mode == "trilinear" else {}))


class UpsamplingModule(nn.Module):
    """The up-sampling module: x2 up-scale by voxel repetition, then a 3x3x3 conv halving the channels.

    "Voxel repetition" is nearest-neighbour up-sampling (each voxel becomes a 2x2x2 block), as Keras'
    ``UpSampling3D`` in the original code; the convolution is followed by instance norm and leaky ReLU.

    Args:
        in_channels: channels of the coarser level.
        out_channels: channels of the finer level (``in_channels // 2``).
        negative_slope: leaky ReLU slope (0.01).
        upsample_mode: ``"nearest"`` (voxel repetition, the paper's) or ``"trilinear"`` (an exercise).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        negative_slope: float = 0.01,
        upsample_mode: str = "nearest",
    ):
        super().__init__()
        self.upscale = make_upscale(upsample_mode)
        self.conv = ConvNormAct(in_channels, out_channels, 3, negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.upscale(x))


class LocalisationModule(nn.Module):
    """The localisation module: a 3x3x3 conv then a 1x1x1 conv that halves the channels.

    Its input is the concatenation of the skip (``C`` channels) and the up-sampled map (``C``
    channels), so it maps ``2C -> 2C`` (3x3x3) ``-> C`` (1x1x1), following Isensee 2017: "a 3x3x3
    convolution followed by a 1x1x1 convolution that halves the number of feature maps".

    Args:
        in_channels: channels of the concatenation (``2C``).
        out_channels: channels after the module (``C``).
        negative_slope: leaky ReLU slope (0.01).
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.01):
        super().__init__()
        self.conv3 = ConvNormAct(in_channels, in_channels, 3, negative_slope)
        self.conv1 = ConvNormAct(in_channels, out_channels, 1, negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv3(x))
