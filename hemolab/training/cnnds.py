"""Training CNN-DS end to end: a dataset folder in, ``run_dir/best.pt`` out.

Puts together the pieces of Arab 2020, Methods (PAPERS.md §1): the preprocessing
(:func:`hemolab.preprocess.prepare_cnnds`), the network (:class:`hemolab.models.CNNDS`), the soft Dice
loss over L = {0, 1} (:class:`hemolab.losses.SoftDiceLoss`), Adam with batch size 1, and the schedule of
:func:`hemolab.training.fit`. The settings of each profile are in :mod:`hemolab.training.profiles`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from hemolab.errors import HemolabError
from hemolab.training.engine import History, fit
from hemolab.training.profiles import CNNDSSettings, cnnds_settings

ARCHS: tuple[str, ...] = ("cnnds", "patel")

#: How the network's input is made; stored in every checkpoint's meta (inference reads grid_size).
PREPROCESSING: dict[str, Any] = {
    "function": "hemolab.preprocess.prepare_cnnds",
    "image_interpolation": "linear",
    "label_interpolation": "nearest",
    "hu_clip": [0.0, 100.0],
    "scale": 0.01,
}


class DiceLossOnBatch(torch.nn.Module):
    """Adapts :class:`hemolab.losses.SoftDiceLoss` to the engine's ``loss_fn(logits, batch)`` contract."""

    def __init__(self):
        super().__init__()
        from hemolab.losses import SoftDiceLoss

        self.dice = SoftDiceLoss()

    def forward(self, logits: torch.Tensor, batch) -> torch.Tensor:
        return self.dice(logits.float(), batch["label"])


def cnnds_meta(settings: CNNDSSettings, **more: Any) -> dict[str, Any]:
    """The ``meta`` of a CNN-DS checkpoint: how to rebuild the network and prepare its input."""
    return {
        "arch": "cnnds",
        "model_kwargs": settings.model_kwargs(),
        "profile": settings.profile,
        "grid_size": list(settings.grid_size),
        "preprocessing": dict(PREPROCESSING),
        "threshold": 0.5,
        "settings": settings.as_dict(),
        **more,
    }


def train_cnnds(
    dataset,
    profile: str | None = None,
    run_dir: str | os.PathLike | None = None,
    *,
    settings: CNNDSSettings | None = None,
    seed: int = 0,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    live_plot: bool = False,
    device=None,
    loaders=None,
    **overrides: Any,
) -> History:
    """Train CNN-DS on a hemolab dataset with the settings of a profile (Arab 2020, "Training").

    Args:
        dataset: a dataset folder (``hemolab synth`` / the data scripts) or a loaded Dataset.
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto).
        run_dir: where ``best.pt``, ``last.pt`` and ``history.csv`` go (default:
            ``workspace/runs/cnnds-<profile>``).
        settings: explicit settings (default: :func:`cnnds_settings` of the profile).
        seed: the random seed (weights, shuffling, dropout, augmentation).
        resume: continue an interrupted run in ``run_dir``.
        overwrite: start again even though ``run_dir`` has checkpoints.
        progress: progress bars.
        live_plot: live loss curves in a notebook.
        device: ``None`` = CUDA if available, else CPU.
        loaders: ``(train_loader, val_loader)`` already made (e.g. shared by several runs of a grid
            search or an ablation, so the preprocessing is done once).
        **overrides: settings to change, e.g. ``max_epochs=20``, ``deep_supervision=False``.

    Returns:
        The :class:`~hemolab.training.History`; the best weights are in ``history.run_dir / "best.pt"``.
    """
    from hemolab.config import seed_everything, workspace_dir
    from hemolab.models import build_model

    settings = (settings or cnnds_settings(profile)).with_overrides(**overrides)
    if run_dir is None:
        run_dir = workspace_dir("runs", f"cnnds-{settings.profile}")
    if loaders is None:
        train_loader, val_loader = make_loaders_for(dataset, settings, seed=seed, progress=progress)
    else:
        train_loader, val_loader = loaders
    seed_everything(seed)  # the same initial weights for the same seed, whatever ran before
    model = build_model("cnnds", **settings.model_kwargs())
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    root = getattr(dataset, "root", dataset)
    meta = cnnds_meta(settings, seed=int(seed), dataset=str(root))
    return fit(
        model,
        optimizer,
        DiceLossOnBatch(),
        train_loader,
        val_loader,
        max_epochs=settings.max_epochs,
        run_dir=run_dir,
        lr_patience=settings.lr_patience,
        lr_factor=settings.lr_factor,
        stop_patience=settings.stop_patience,
        device=device,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        live_plot=live_plot,
        meta=meta,
        channels_last=True,
    )


def make_loaders_for(dataset, settings: CNNDSSettings, *, seed: int = 0, progress: bool = False):
    """Training and validation loaders for ``settings`` (grid, batch size, augmentation)."""
    from hemolab.training.data import make_cnnds_loaders

    return make_cnnds_loaders(
        dataset,
        settings.grid_size,
        batch_size=settings.batch_size,
        augment=settings.augment,
        seed=seed,
        progress=progress,
    )


def checkpoint_path(arch: str = "cnnds", profile: str | None = None) -> Path:
    """Where notebook 03 (CNN-DS) / 04 (Patel) save their checkpoint: ``workspace/checkpoints/<arch>-<profile>/best.pt``."""
    from hemolab.config import resolve_profile, workspace_dir

    if arch not in ARCHS:
        raise HemolabError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHS)}")
    return workspace_dir("checkpoints", f"{arch}-{resolve_profile(profile)}") / "best.pt"


def ensure_checkpoint(arch: str = "cnnds", profile: str | None = None, seed: int = 0) -> Path:
    """The checkpoint notebook 03 (or 04 for Patel) writes; trained here first if it is missing.

    For CNN-DS: ``workspace/checkpoints/cnnds-<profile>/best.pt``. If it does not exist, a network is
    trained on :func:`hemolab.datasets.ensure_cohort` with the profile's settings (the full profile's
    epoch limit capped at 150 so it stays well under an hour on a GPU) and the time it took is printed.
    For Patel the Patel module's own ``ensure_patel_checkpoint`` is used.

    Args:
        arch: ``"cnnds"`` or ``"patel"``.
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto).
        seed: the seed of the cohort and of the training run.

    Returns:
        The path of ``best.pt``.

    Raises:
        HemolabError: for an unknown ``arch``, or ``"patel"`` when the Patel module is not available.
    """
    from hemolab.config import resolve_profile

    profile = resolve_profile(profile)
    path = checkpoint_path(arch, profile)
    if path.is_file():
        return path
    if arch == "patel":
        try:
            from hemolab.patches import ensure_patel_checkpoint
        except ImportError as exc:
            raise HemolabError(
                "no Patel checkpoint found and hemolab.patches.ensure_patel_checkpoint is not available: "
                "run notebook 04 or `hemolab train --arch patel`"
            ) from exc
        return Path(ensure_patel_checkpoint(profile=profile))
    from hemolab.datasets import ensure_cohort

    start = time.perf_counter()
    print(f"no checkpoint from notebook 03 found at {path}: training a small one now ({profile} profile) ...")
    root = ensure_cohort(profile, seed=seed)
    overrides = {"max_epochs": 150} if profile == "full" else {}
    history = train_cnnds(root, profile, path.parent, seed=seed, resume=True, progress=False, **overrides)
    print(
        f"no checkpoint from notebook 03 found: trained a small one now ({time.perf_counter() - start:.0f} s; "
        f"{history.summary()})"
    )
    return path
