"""From a network's logits to haemorrhage probabilities, fast: one implementation for every caller.

* :func:`foreground_probability` -- sigmoid of a one-channel output, softmax class 1 of a two-class one
  (Arab 2020 and Patel 2019 both threshold this probability at 0.5; docs/methods.md §1.3, §2.5);
* :func:`center_crop` -- the central crop of the last three axes (valid-convolution outputs, Patel 2019
  Fig. 7; labels cropped to the output size);
* :func:`fast_inference_context` and :func:`predict` -- inference mode with bfloat16 autocast where the
  hardware runs it natively (measured in ``benchmarks/``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from hemolab.errors import HemolabError

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """Haemorrhage probability ``(B, 1, ...)`` (float32) from logits ``(B, C, ...)``.

    One channel (CNN-DS): the sigmoid; two or more channels (Patel's background / haemorrhage): the
    softmax over the channel axis, class 1.

    Raises:
        HemolabError: if ``logits`` has no channel axis.
    """
    if logits.ndim < 2:
        raise HemolabError(f"logits must be (B, C, ...), got shape {tuple(logits.shape)}")
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:2]


def center_crop(x: ArrayOrTensor, size: Sequence[int]) -> ArrayOrTensor:
    """Crop the last three axes of ``x`` (array or tensor) centrally to ``size`` (Patel 2019, Fig. 7 "crop").

    Args:
        x: an array or tensor with at least three axes; the last three are spatial.
        size: the wanted spatial size ``(x, y, z)``, no larger than ``x``'s.

    Returns:
        A view of ``x``.

    Raises:
        HemolabError: if ``size`` is larger than ``x`` on an axis.
    """
    have = tuple(x.shape[-3:])
    want = tuple(int(s) for s in size)
    if len(want) != 3 or any(w > h or w < 1 for w, h in zip(want, have, strict=True)):
        raise HemolabError(f"cannot crop spatial size {have} to {want}: need 1 <= size <= {have} per axis")
    if want == have:
        return x
    slices = [slice(None)] * (x.ndim - 3)
    for h, w in zip(have, want, strict=True):
        start = (h - w) // 2
        slices.append(slice(start, start + w))
    return x[tuple(slices)]


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
    return foreground_probability(logits)
