"""Training CNN-DS: its settings per profile and the driver, a dataset folder in, ``run_dir/best.pt`` out.

Puts together the pieces of Arab 2020, Methods (docs/methods.md §1): the preprocessing
(:func:`hemolab.preprocess.prepare_cnnds`), the network (:class:`hemolab.models.CNNDS`), the soft Dice
loss over L = {0, 1} (:class:`hemolab.losses.SoftDiceLoss`), Adam with batch size 1, and the schedule of
:func:`hemolab.training.fit`.

Settings: ``full`` is the paper's set-up (Arab 2020, Methods, "Training"; docs/methods.md §1.5): 128x128x64 grid, base 16
filters, depth 5, Adam at 5e-4, dropout 0.3, batch 1, learning rate halved after 10 epochs without
improvement, early stop after 50, at most 500 epochs. (Base 16 / depth 5 / 5e-4 / 0.3 are the defaults of
the code base the design comes from, marked as recovered in docs/methods.md §1.5; the paper chose its values by grid search.)

``small`` and ``tiny`` shrink the grid, the width and the number of epochs so that training fits a CPU
laptop (minutes) or CI (seconds). They are our choices (documented in notebook 03 and docs/methods.md §5.1).
Chosen so that the small network learns in minutes (how far it does: ``benchmarks/bench_learning.py``), they
also: crop each scan to the box around its cranial cavity before resampling (more voxels on the brain),
add synthetic training cases (data is free) and validation cases up to twelve, add binary cross-entropy to
the Dice loss, train in bfloat16 on the CPU, anneal the learning rate along a half cosine, choose the epoch
(the best by validation Dice, or one of the last epochs kept as snapshots) and the threshold together on
the whole validation scans, keep only clusters of at least 0.1 mL inside the cranial cavity (Patel's
post-processing, docs/methods.md §2.5) and remove clusters mostly brighter than blood (calcifications, §5.1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from hemolab.checkpoint import CheckpointMeta
from hemolab.config import ProfileSettings, resolve_profile, seed_everything, workspace_dir
from hemolab.datasets import Dataset, validate_dataset
from hemolab.errors import HemolabError
from hemolab.losses import DiceBCELossOnBatch, DiceLossOnBatch
from hemolab.models.cnnds import CNNDS
from hemolab.preprocess import CNNDS_HU_RANGE, cnnds_grid
from hemolab.segment import segment_cnnds
from hemolab.segment.postprocess import ACUTE_BLOOD_MEDIAN_HU
from hemolab.training.data import make_cnnds_loaders
from hemolab.training.engine import Hook, Snapshots, fit
from hemolab.training.history import History
from hemolab.training.schedule import SnapshotChoice
from hemolab.training.threshold import tune_run


@dataclass(frozen=True)
class CNNDSSettings(ProfileSettings, SnapshotChoice):
    """Everything that defines a CNN-DS training run of one profile.

    Attributes:
        profile: ``"tiny"``, ``"small"`` or ``"full"``.
        grid_size: the network's input/output grid ``(x, y, z)`` (:func:`hemolab.preprocess.cnnds_grid`).
        base_filters: channels of the first level (doubled at each level below).
        depth: number of levels of the contracting path.
        dropout: dropout rate inside the context modules.
        lr: Adam's learning rate.
        batch_size: cases per step (the paper: 1).
        max_epochs: the epoch limit.
        lr_patience: epochs without improvement of the validation loss before the learning rate is halved.
        lr_factor: the factor applied then.
        stop_patience: epochs without improvement before stopping early.
        augment: random left-right mirroring of the training cases (our choice; not in the paper).
        deep_supervision: the paper's network; ``False`` for the ablation (notebook 05).
        loss: ``"dice"`` (the paper) or ``"dice_bce"`` (:class:`hemolab.losses.DiceBCELossOnBatch`).
        monitor: what picks the best epoch and drives the schedule: ``"val_loss"`` (the paper) or
            ``"val_dice"``.
        crop_head: crop each scan to the box around its cranial cavity before resampling.
        synthetic_train: synthetic cases added to the training split
            (:func:`hemolab.training.data.synthetic_cases`).
        min_val_cases: synthetic cases are added to the validation split up to this many scans.
        cpu_bf16: bfloat16 autocast when training on a CPU.
        tune_threshold: choose the threshold on the validation scans after training
            (:mod:`hemolab.training.threshold`); otherwise 0.5 (the paper).
        restrict_to_cranial_cavity: at inference keep only predictions inside the cranial cavity.
        min_component_ml: at inference remove clusters smaller than this (0: none).
        max_calcified_fraction: at inference remove clusters with a larger share of voxels above 120 HU
            (calcification, not blood; 0: none, the paper).
        min_cluster_median_hu: at inference remove clusters whose median HU is lower (brain, not acute
            blood; :func:`hemolab.segment.postprocess.remove_isodense_components`; 0: none, the paper).
        lr_decay: ``"plateau"`` (the paper: halved after ``lr_patience`` epochs without improvement) or
            ``"cosine"`` (annealed to zero at ``max_epochs``; :class:`hemolab.training.engine.Schedule`).
        snapshot_every: with ``tune_threshold``, the weights of every ``snapshot_every``-th epoch of the
            second half of the run are kept too, and the epoch is chosen with the threshold on the whole
            validation scans (:class:`hemolab.training.schedule.SnapshotChoice`); 0: by ``monitor``.
        blood_free_calibration: with ``tune_threshold``, synthetic heads without haemorrhage added to the
            scans the threshold and epoch are chosen on, for the false-alarm budget
            (:func:`hemolab.training.data.blood_free_cases`); never trained or validated on.
        grid_depths, grid_lrs, grid_dropouts: the values :func:`hemolab.training.grid_search` tries.
    """

    KIND: ClassVar[str] = "CNN-DS"

    profile: str
    grid_size: tuple[int, int, int]
    base_filters: int
    depth: int
    dropout: float = 0.3
    lr: float = 5e-4
    batch_size: int = 1
    max_epochs: int = 500
    lr_patience: int = 10
    lr_factor: float = 0.5
    stop_patience: int = 50
    augment: bool = True
    deep_supervision: bool = True
    loss: str = "dice"
    monitor: str = "val_loss"
    crop_head: bool = False
    synthetic_train: int = 0
    min_val_cases: int = 0
    cpu_bf16: bool = False
    tune_threshold: bool = False
    restrict_to_cranial_cavity: bool = False
    min_component_ml: float = 0.0
    max_calcified_fraction: float = 0.0
    min_cluster_median_hu: float = 0.0
    lr_decay: str = "plateau"
    snapshot_every: int = 0
    blood_free_calibration: int = 0
    grid_depths: tuple[int, ...] = (3, 4, 5, 6)
    grid_lrs: tuple[float, ...] = (1e-2, 5e-3, 1e-3, 5e-4, 1e-4)
    grid_dropouts: tuple[float, ...] = (0.3, 0.4, 0.5)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`hemolab.models.CNNDS`."""
        return {
            "in_channels": 1,
            "out_channels": 1,
            "base_filters": self.base_filters,
            "depth": self.depth,
            "dropout": self.dropout,
            "deep_supervision": self.deep_supervision,
        }

    def with_overrides(self, **overrides: Any) -> CNNDSSettings:
        """A copy with some settings changed (``None`` values are ignored)."""
        clean = self.check_schedule_overrides(self._checked_overrides(overrides))
        if "grid_size" in clean:
            clean["grid_size"] = tuple(int(s) for s in clean["grid_size"])
        return replace(self, **clean)


#: What the CPU profiles add to the paper's recipe so that a small network learns on a CPU
#: budget (measured in benchmarks/bench_learning.py; docs/methods.md §5.1).
_CPU_RECIPE: dict[str, Any] = {
    "loss": "dice_bce",
    "monitor": "val_dice",
    "crop_head": True,
    "cpu_bf16": True,
    "tune_threshold": True,
    "restrict_to_cranial_cavity": True,
    "min_component_ml": 0.1,
    "max_calcified_fraction": 0.25,
    "min_cluster_median_hu": ACUTE_BLOOD_MEDIAN_HU,
    "lr_decay": "cosine",
}


def cnnds_settings(profile: str | None = None, **overrides: Any) -> CNNDSSettings:
    """The CNN-DS training settings of a profile.

    Args:
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto, see :func:`hemolab.config.resolve_profile`).
        **overrides: settings to change, e.g. ``max_epochs=20`` (``None`` values are ignored).

    Returns:
        A frozen :class:`CNNDSSettings`.
    """

    profile = resolve_profile(profile)
    if profile == "full":
        s = CNNDSSettings("full", cnnds_grid("full"), base_filters=16, depth=5)
    elif profile == "small":
        s = CNNDSSettings(
            "small",
            cnnds_grid("small"),
            base_filters=8,
            depth=4,
            lr=5e-3,
            max_epochs=36,
            lr_patience=3,
            stop_patience=36,
            grid_depths=(3, 4),
            grid_lrs=(5e-3,),
            grid_dropouts=(0.3,),
            **_CPU_RECIPE,
            synthetic_train=40,
            min_val_cases=12,
            snapshot_every=6,
            blood_free_calibration=6,
        )
    else:
        s = CNNDSSettings(
            "tiny",
            cnnds_grid("tiny"),
            base_filters=4,
            depth=3,
            lr=5e-3,
            max_epochs=3,
            lr_patience=1,
            stop_patience=3,
            augment=False,
            grid_depths=(2, 3),
            **_CPU_RECIPE,
            synthetic_train=2,
            min_val_cases=2,
            snapshot_every=1,
            blood_free_calibration=1,
            grid_lrs=(5e-3,),
            grid_dropouts=(0.3,),
        )
    return s.with_overrides(**overrides)


def cnnds_meta(settings: CNNDSSettings, **more: Any) -> CheckpointMeta:
    """The checkpoint meta of a CNN-DS run: how to rebuild the network and prepare a scan for it.

    Args:
        settings: the run's settings.
        **more: further :class:`~hemolab.checkpoint.CheckpointMeta` fields, e.g. ``seed``, ``dataset``.
    """
    return CheckpointMeta.for_run(
        "cnnds",
        settings,
        CNNDS_HU_RANGE,
        grid_size=settings.grid_size,
        crop_head=settings.crop_head,
        restrict_to_cranial_cavity=settings.restrict_to_cranial_cavity,
        min_component_ml=settings.min_component_ml,
        max_calcified_fraction=settings.max_calcified_fraction,
        min_cluster_median_hu=settings.min_cluster_median_hu,
        **more,
    )


def train_cnnds(
    dataset: Dataset | str | os.PathLike,
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
    hooks: tuple[Hook, ...] = (),
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
        hooks: extra :class:`~hemolab.training.Hook` objects (e.g. a time limit, a throughput probe).
        **overrides: settings to change, e.g. ``max_epochs=20``, ``deep_supervision=False``.

    Returns:
        The :class:`~hemolab.training.History`; the best weights are in ``history.run_dir / "best.pt"``.
    """

    settings = (settings or cnnds_settings(profile)).with_overrides(**overrides)
    if settings.loss not in ("dice", "dice_bce"):
        raise HemolabError(f"loss must be 'dice' (the paper) or 'dice_bce', got {settings.loss!r}")
    if loaders is None:  # every case read and checked before the first epoch; one error names them all
        dataset = validate_dataset(dataset, ("train", "validation"), progress=progress)
    if run_dir is None:
        run_dir = workspace_dir("runs", f"cnnds-{settings.profile}")
    if loaders is None:
        train_loader, val_loader = make_loaders_for(dataset, settings, seed=seed, progress=progress)
    else:
        train_loader, val_loader = loaders
    seed_everything(seed)  # the same initial weights for the same seed, whatever ran before
    model = CNNDS(**settings.model_kwargs())
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    root = getattr(dataset, "root", dataset)
    meta = cnnds_meta(settings, seed=int(seed), dataset=str(root))
    loss_fn = DiceBCELossOnBatch() if settings.loss == "dice_bce" else DiceLossOnBatch()
    if settings.snapshot_epochs:
        hooks = (*hooks, Snapshots(settings.snapshot_epochs))
    history = fit(
        model,
        optimizer,
        loss_fn,
        train_loader,
        val_loader,
        max_epochs=settings.max_epochs,
        run_dir=run_dir,
        lr_patience=settings.lr_patience,
        lr_factor=settings.lr_factor,
        stop_patience=settings.stop_patience,
        monitor=settings.monitor,
        lr_decay=settings.lr_decay,
        cpu_bf16=settings.cpu_bf16,
        device=device,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        live_plot=live_plot,
        meta=meta,
        hooks=hooks,
        channels_last=True,
    )
    if settings.tune_threshold:
        tune_run(model, history.run_dir, val_loader.dataset.cases, segment_cnnds, settings, seed)
    return history


def make_loaders_for(
    dataset: Dataset | str | os.PathLike, settings: CNNDSSettings, *, seed: int = 0, progress: bool = False
):
    """Training and validation loaders for ``settings`` (grid, batch size, augmentation)."""

    return make_cnnds_loaders(
        dataset,
        settings.grid_size,
        batch_size=settings.batch_size,
        crop_head=settings.crop_head,
        augment=settings.augment,
        synthetic_train=settings.synthetic_train,
        min_val_cases=settings.min_val_cases,
        synthetic_profile=settings.profile,
        seed=seed,
        progress=progress,
    )
