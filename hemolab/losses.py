"""The loss of CNN-DS: the soft Dice averaged over the label set, exactly as Arab et al. 2020 write it.

Arab et al., *Sci Rep* 10:19389 (2020), Methods, "Neural network training" (docs/methods.md §1.5):

.. math::

    \\text{loss} = -\\frac{1}{|L|} \\sum_{l \\in L} \\frac{2 \\sum_i g_l^i p_l^i}{\\sum_i (g_l^i + p_l^i)},
    \\qquad L = \\{0, 1\\}

with ``g_l^i`` the reference (1 where voxel ``i`` has label ``l``) and ``p_l^i`` the network's probability
of label ``l`` at voxel ``i``. Averaging over *both* labels -- background (0) and haemorrhage (1) -- is
what the paper writes; MONAI's :class:`monai.losses.DiceLoss` with ``include_background=True`` on a
two-channel probability computes the same average but reports ``1 - mean Dice``, so
``paper loss = MONAI loss - 1`` (tested in ``tests/test_losses.py``).

The loss is **negative**: -1 is a perfect overlap. It does not run to 0 for a useless network: the
background term is close to 1 for any prediction that leaves the (huge) background alone, so a network that
predicts no blood at all scores about -0.5 (``loss ≈ -(1 + D_1)/2``, docs/methods.md §1.5), the plateau a
network that has not learned yet sits on. ``offset=True`` gives the MONAI-style
``1 + loss = 1 - mean Dice`` in [0, 1] (same gradients).

The loss of the Patel 3D CNN, the categorical cross-entropy weighted per voxel by the weight map of
Patel 2019, "Training" (docs/methods.md §2.4), is :func:`weighted_cross_entropy`.

:class:`SoftDiceLoss` takes ``(logits, target)``; the training loop calls ``loss_fn(logits, batch)``:
:class:`DiceLossOnBatch` and :class:`WeightedCELoss` adapt the two losses to it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hemolab.errors import HemolabError

#: Added to numerator and denominator of each label's Dice (MONAI's ``smooth_nr``/``smooth_dr``
#: default). It keeps the loss finite when a label is absent from both reference and prediction, where
#: the Dice of that label is then (0 + eps) / (0 + eps) = 1: "nothing there, nothing found" is perfect.
DEFAULT_EPS = 1e-5


def label_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Per-label probabilities ``p_l`` ``(B, |L|, ...)`` from the network's logits ``(B, C, ...)``.

    One channel (CNN-DS's output): ``p_1 = sigmoid(z)``, ``p_0 = 1 - p_1`` (computed as ``sigmoid(-z)``
    for accuracy). Two or more channels: a softmax over the channel axis.
    """
    if logits.ndim < 3:
        raise HemolabError(f"logits must be (B, C, x, y, z), got shape {tuple(logits.shape)}")
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.cat([torch.sigmoid(-logits), torch.sigmoid(logits)], dim=1)
    return torch.softmax(logits, dim=1)


def label_references(target: torch.Tensor, n_labels: int, like: torch.Tensor) -> torch.Tensor:
    """Per-label references ``g_l`` ``(B, |L|, ...)`` from a label map.

    Args:
        target: ``(B, 1, ...)`` (or ``(B, ...)``) with values in {0, .., n_labels-1}; for two labels it may
            also be a soft reference in [0, 1] (``g_1 = t``, ``g_0 = 1 - t``). A ``(B, n_labels, ...)``
            tensor is taken as already one-hot.
        n_labels: ``|L|``.
        like: the probabilities, for the shape check and the dtype/device.

    Raises:
        HemolabError: if the shapes do not match.
    """
    target = target.to(device=like.device)
    if target.ndim == like.ndim - 1:
        target = target.unsqueeze(1)
    spatial_ok = (
        target.ndim == like.ndim and target.shape[0] == like.shape[0] and target.shape[2:] == like.shape[2:]
    )
    if not spatial_ok or target.shape[1] not in (1, n_labels):
        raise HemolabError(
            f"target of shape {tuple(target.shape)} does not fit logits of shape {tuple(like.shape)}: "
            f"expected (B, 1, ...) labels or (B, {n_labels}, ...) one-hot on the same grid"
        )
    if target.shape[1] == n_labels and n_labels > 1:
        return target.to(like.dtype)
    t = target.to(like.dtype)
    if n_labels == 2:
        if float(t.min()) < 0.0 or float(t.max()) > 1.0:
            raise HemolabError(f"binary target must lie in [0, 1], got [{float(t.min())}, {float(t.max())}]")
        return torch.cat([1.0 - t, t], dim=1)
    labels = target[:, 0].long()
    if int(labels.min()) < 0 or int(labels.max()) >= n_labels:
        raise HemolabError(
            f"target labels must be in 0..{n_labels - 1}, got {int(labels.min())}..{int(labels.max())}"
        )
    return torch.movedim(nn.functional.one_hot(labels, n_labels), -1, 1).to(like.dtype)


def soft_dice_per_label(
    logits: torch.Tensor, target: torch.Tensor, *, eps: float = DEFAULT_EPS, batch: bool = True
) -> torch.Tensor:
    """The soft Dice ``2 Σ_i g_l p_l / Σ_i (g_l + p_l)`` of every label ``l`` (Arab 2020's loss term).

    Args:
        logits: network output ``(B, C, x, y, z)`` (C = 1: sigmoid; C >= 2: softmax).
        target: the reference, see :func:`label_references`.
        eps: added to numerator and denominator (:data:`DEFAULT_EPS`).
        batch: sum over the whole batch as one volume (``True``, shape ``(|L|,)``) or per sample
            (``False``, shape ``(B, |L|)``). The paper trains with batch size 1, where both agree.

    Returns:
        The Dice per label (and per sample when ``batch=False``), each in [0, 1].
    """
    p = label_probabilities(logits)
    g = label_references(target, p.shape[1], p)
    dims = tuple(range(2, p.ndim))
    inter = (g * p).sum(dims)
    total = (g + p).sum(dims)
    if batch:
        inter, total = inter.sum(0), total.sum(0)
    return (2.0 * inter + eps) / (total + eps)


class SoftDiceLoss(nn.Module):
    """Arab 2020's soft Dice loss over the label set L = {0, 1} (docs/methods.md §1.5).

    ``loss = -(1/|L|) Σ_l (2 Σ_i g_l^i p_l^i + eps) / (Σ_i (g_l^i + p_l^i) + eps)``

    Args:
        eps: smoothing added to numerator and denominator of each label's Dice (default 1e-5, MONAI's
            default): a label absent from both reference and prediction counts as Dice 1, and the loss
            stays finite (and its gradient too) on an empty reference.
        batch: ``True`` (default): sums run over all voxels of the whole batch, as if the batch were one
            volume (MONAI ``batch=True``); ``False``: one Dice per sample, then the mean over samples.
            Identical for the paper's batch size 1.
        include_background: ``True`` (the paper): average over L = {0, 1}. ``False``: only the
            haemorrhage label (what MONAI's ``DiceLoss(sigmoid=True)`` computes on one channel).
        offset: ``False`` (the paper): the negative loss in [-1, 0]. ``True``: ``1 - mean Dice`` in
            [0, 1], MONAI's convention; the gradients are the same.

    Call:
        ``loss(logits, target)`` with logits ``(B, C, x, y, z)`` (C = 1: sigmoid, the CNN-DS output;
        C = 2: softmax) and target ``(B, 1, x, y, z)`` in {0, 1}.

    Returns:
        A scalar tensor.
    """

    def __init__(
        self,
        eps: float = DEFAULT_EPS,
        batch: bool = True,
        include_background: bool = True,
        offset: bool = False,
    ):
        super().__init__()
        if not eps >= 0:
            raise HemolabError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)
        self.batch = bool(batch)
        self.include_background = bool(include_background)
        self.offset = bool(offset)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, batch={self.batch}, include_background={self.include_background}, offset={self.offset}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = soft_dice_per_label(logits, target, eps=self.eps, batch=self.batch)
        if not self.include_background:
            dice = dice[..., 1:]
        mean = dice.mean()
        return 1.0 - mean if self.offset else -mean


class DiceLossOnBatch(nn.Module):
    """:class:`SoftDiceLoss` with the training loop's ``loss_fn(logits, batch)`` contract (uses ``batch["label"]``).

    Args:
        **kwargs: passed to :class:`SoftDiceLoss` (default: the paper's loss).
    """

    def __init__(self, **kwargs):
        super().__init__()
        self.dice = SoftDiceLoss(**kwargs)

    def forward(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.dice(logits.float(), batch["label"])


class DiceBCELossOnBatch(nn.Module):
    """The paper's soft Dice loss plus ``bce_weight`` x binary cross-entropy, on ``batch["label"]``.

    Our choice for the CPU profiles (docs/methods.md §5.1; the paper trains with the Dice loss alone): early
    in training the soft Dice of a small bleed gives almost no gradient to voxels far from it, so a network
    on a small budget can settle on the "no blood" plateau (loss about -0.5, see :class:`SoftDiceLoss`)
    or on a constant blob. The voxel-wise cross-entropy pulls every voxel towards its label from the first
    step on; the Dice term keeps the overlap in charge.

    Args:
        bce_weight: weight of the cross-entropy term.
        **kwargs: passed to :class:`SoftDiceLoss`.
    """

    def __init__(self, bce_weight: float = 1.0, **kwargs):
        super().__init__()
        if not float(bce_weight) >= 0.0:
            raise HemolabError(f"bce_weight must be >= 0, got {bce_weight!r}")
        self.dice = SoftDiceLoss(**kwargs)
        self.bce_weight = float(bce_weight)

    def forward(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = logits.float()
        label = batch["label"].float()
        bce = F.binary_cross_entropy_with_logits(logits, label)
        return self.dice(logits, label) + self.bce_weight * bce


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Categorical cross-entropy weighted per voxel (Patel 2019, "Training").

    For each patch ``b``: ``loss_b = sum_v w_bv * CE_bv / sum_v w_bv``, the mean cross-entropy over the
    voxels its weight map selects (``CE_v = -log softmax(logits_v)[target_v]``); the loss is the mean of
    ``loss_b`` over the patches that have any weight. Normalising each patch on its own is our choice (the
    paper does not say): pooling all voxels of a batch instead would let a background patch, whose weight
    map is all ones, outweigh the few hundred balanced voxels of a blood patch many times over, and the
    network would learn to call almost nothing blood. A batch with all weights 0 gives 0.

    Args:
        logits: ``(B, C, x, y, z)`` (C >= 2 classes).
        target: class indices ``(B, x, y, z)`` or ``(B, 1, x, y, z)`` (float 0/1 is accepted).
        weight: per-voxel weights of the same spatial shape as ``target``.

    Returns:
        A scalar tensor.

    Raises:
        HemolabError: for mismatched shapes or a single-channel ``logits``.
    """
    if logits.ndim < 3 or logits.shape[1] < 2:
        raise HemolabError(
            f"logits must be (B, C>=2, ...) for categorical cross-entropy, got {tuple(logits.shape)}"
        )
    if target.ndim == logits.ndim:
        target = target[:, 0]
    if weight.ndim == logits.ndim:
        weight = weight[:, 0]
    spatial = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != spatial or tuple(weight.shape) != spatial:
        raise HemolabError(
            f"target {tuple(target.shape)} and weight {tuple(weight.shape)} must match the logits' "
            f"batch and spatial size {spatial}: crop labels to the network's output size"
        )
    ce = F.cross_entropy(logits.float(), target.round().long(), reduction="none")
    w = weight.to(ce.dtype)
    dims = tuple(range(1, ce.ndim))
    w_sum = w.sum(dims)
    per_patch = (ce * w).sum(dims) / w_sum.clamp_min(1e-8)
    counted = w_sum > 0
    if not bool(counted.any()):
        return (ce * w).sum()  # 0, with a gradient path
    return per_patch[counted].mean()


class WeightedCELoss(torch.nn.Module):
    """:func:`weighted_cross_entropy` with the engine's ``loss_fn(logits, batch)`` contract (uses ``batch["weight"]``)."""

    def forward(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return weighted_cross_entropy(logits, batch["label"], batch["weight"])
