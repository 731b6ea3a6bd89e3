"""Training the Patel 3D CNN: its settings per profile and the training driver (Patel 2019, "Training").

docs/methods.md §2.4. Patches sampled equally from haemorrhage and cranial-cavity background with the
weight map (:mod:`hemolab.training.patches`), the weighted categorical cross-entropy
(:func:`hemolab.losses.weighted_cross_entropy`), augmentation with probability 0.5, SGD with Nesterov
momentum 0.9 at 1e-3, 50,000 training patches, through the shared loop :func:`hemolab.training.fit`.

Our choices (documented in notebook 04):

* The paper's schedule has no learning-rate decay (``lr_decay="constant"``) and training stops when the
  validation loss has not improved for ``stop_patience`` epochs ("training was suspended once optimal
  performance on the validation data was reached").
* Batch-norm statistics are recomputed after every epoch over a fixed set of training patches
  (:func:`recalibrate_batch_norm`, "precise BN"): with two patches per step the running averages are
  too erratic for evaluation.
* ``small`` (a CPU budget of minutes, measured in ``benchmarks/bench_learning.py``; docs/methods.md §5.2)
  also: scales [0, 100] HU to [0, 1] (CNN-DS's window) instead of [-200, 200], so that blood stands out
  from brain by 0.2-0.3 of the input range instead of 0.05; draws a third of the centres from blood and
  half of the background centres from hard background
  (:mod:`hemolab.training.patches`), adds synthetic training scans and validation scans up to eight, trains
  with Adam in bfloat16 and a learning rate annealed along a half cosine, and chooses the probability
  threshold -- and the epoch, among the best-loss epoch and every sixth of the second half -- on the whole
  validation scans (:mod:`hemolab.training.threshold`): a network trained on balanced patches has learnt a
  prior of far more blood than a whole scan holds, so 0.5 is not where its masks are best, and the loss on
  a few validation patches does not rank epochs as the masks of whole scans do; at inference it removes
  clusters mostly brighter than blood (calcifications; docs/methods.md §5.1, item 8).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch.optim.swa_utils import update_bn
from tqdm.auto import tqdm

from hemolab.checkpoint import CheckpointMeta
from hemolab.config import ProfileSettings, resolve_profile, seed_everything, workspace_dir
from hemolab.datasets import Dataset, validate_dataset
from hemolab.errors import HemolabError
from hemolab.losses import WeightedCELoss
from hemolab.models.patel import Patel3DCNN, patel_output_size
from hemolab.preprocess import CNNDS_HU_RANGE, PATEL_HU_RANGE
from hemolab.segment import segment_patel
from hemolab.segment.postprocess import ACUTE_BLOOD_MEDIAN_HU
from hemolab.training.data import with_synthetic_cases
from hemolab.training.engine import Hook, Snapshots, Trainer, fit
from hemolab.training.history import History
from hemolab.training.patches import PatelPatchDataset, load_patel_volume, patel_augmentation
from hemolab.training.schedule import SnapshotChoice
from hemolab.training.threshold import tune_run
from hemolab.validation import check_triple, check_window


@dataclass(frozen=True)
class PatelSettings(ProfileSettings, SnapshotChoice):
    """Everything that defines a Patel training run of one profile.

    Attributes:
        profile: ``"tiny"``, ``"small"`` or ``"full"``.
        base_filters: filters of the first convolution (paper: 32).
        thick_slice: the PATCH variant (no pooling along z).
        input_size: training patch size ``(x, y, z)`` fed to the network.
        inference_input_size: tile input size for whole-scan inference (a valid size; larger tiles mean
            fewer tiles, the network is fully convolutional).
        batch_size: patches per SGD step.
        patches_per_epoch: training patches per epoch (``patches_per_epoch * max_epochs`` patches in all;
            the paper: 50,000).
        val_patches: fixed validation patches (drawn once, no augmentation).
        max_epochs: the epoch limit.
        lr: SGD learning rate (paper: 1e-3). momentum: Nesterov momentum (paper: 0.9).
        dropout: dropout at the lowest scale (paper: 0.5).
        augment: mirror / rotate with probability 0.5.
        stop_patience: epochs without improvement of the validation loss before stopping.
        min_component_ml: clusters smaller than this are removed at inference (paper: 0.1 mL).
        max_calcified_fraction: at inference remove clusters with a larger share of voxels above 120 HU
            (calcification, not blood; 0: none, the paper).
        min_cluster_median_hu: at inference remove clusters whose median HU is lower (brain, not acute
            blood; :func:`hemolab.segment.postprocess.remove_isodense_components`; 0: none, the paper).
        bn_calibration_patches: training patches over which the batch-norm statistics are recomputed
            after every epoch (:func:`recalibrate_batch_norm`; 0 keeps PyTorch's running averages).
        optimizer: ``"sgd"`` (the paper: SGD with Nesterov momentum) or ``"adam"``.
        fg_fraction: the fraction of patch centres drawn from blood (the paper: 0.5).
        hard_negative_fraction: the fraction of background centres drawn from hard background.
        synthetic_train: synthetic scans added to the training split
            (:func:`hemolab.training.data.synthetic_cases`).
        min_val_cases: synthetic scans are added to the validation split up to this many.
        cpu_bf16: bfloat16 autocast when training on a CPU.
        tune_threshold: choose the threshold on the whole validation scans after training; otherwise 0.5.
        hu_window: the HU range scaled to [0, 1] (the paper: [-200, 200]).
        lr_decay: ``"constant"`` (the paper) or ``"cosine"`` (annealed to zero at ``max_epochs``;
            :class:`hemolab.training.engine.Schedule`).
        snapshot_every: with ``tune_threshold``, the weights of every ``snapshot_every``-th epoch of the
            second half of the run are kept too, and the epoch is chosen with the threshold on the whole
            validation scans (:func:`hemolab.training.threshold.tune_threshold`); 0: by the validation loss.
        blood_free_calibration: with ``tune_threshold``, synthetic heads without haemorrhage added to the
            scans the threshold and epoch are chosen on, for the false-alarm budget
            (:func:`hemolab.training.data.blood_free_cases`); never trained or validated on.
    """

    KIND: ClassVar[str] = "Patel"

    profile: str
    base_filters: int
    thick_slice: bool
    input_size: tuple[int, int, int]
    inference_input_size: tuple[int, int, int]
    batch_size: int
    patches_per_epoch: int
    val_patches: int
    max_epochs: int
    lr: float = 1e-3
    momentum: float = 0.9
    dropout: float = 0.5
    augment: bool = True
    stop_patience: int = 20
    min_component_ml: float = 0.1
    max_calcified_fraction: float = 0.0
    min_cluster_median_hu: float = 0.0
    bn_calibration_patches: int = 16
    optimizer: str = "sgd"
    fg_fraction: float = 0.5
    hard_negative_fraction: float = 0.0
    synthetic_train: int = 0
    min_val_cases: int = 0
    cpu_bf16: bool = False
    tune_threshold: bool = False
    hu_window: tuple[float, float] = PATEL_HU_RANGE
    lr_decay: str = "constant"
    snapshot_every: int = 0
    blood_free_calibration: int = 0

    @property
    def output_size(self) -> tuple[int, int, int]:
        """The training output patch size (``input - 88``; z ``- 28`` for the thick-slice variant)."""
        return patel_output_size(self.input_size, self.thick_slice)

    @property
    def inference_output_size(self) -> tuple[int, int, int]:
        """The output tile size at inference."""
        return patel_output_size(self.inference_input_size, self.thick_slice)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`hemolab.models.Patel3DCNN`."""
        return {
            "in_channels": 1,
            "out_channels": 2,
            "base_filters": self.base_filters,
            "thick_slice": self.thick_slice,
            "dropout": self.dropout,
        }

    def with_overrides(self, **overrides: Any) -> PatelSettings:
        """A copy with some settings changed (``None`` values are ignored); sizes are checked."""
        clean = self._checked_overrides(overrides)
        for key in ("input_size", "inference_input_size"):
            if key in clean:
                clean[key] = check_triple(clean[key], key)
        if "hu_window" in clean:
            clean["hu_window"] = check_window(clean["hu_window"])
        self.check_schedule_overrides(clean)
        s = replace(self, **clean)
        s.output_size, s.inference_output_size  # noqa: B018 - raise early for sizes that do not fit
        return s


#: What the CPU profiles change in the paper's recipe (module docstring; docs/methods.md §5.2).
_CPU_RECIPE: dict[str, Any] = {
    "hu_window": CNNDS_HU_RANGE,
    "optimizer": "adam",
    "fg_fraction": 1 / 3,
    "hard_negative_fraction": 0.5,
    "cpu_bf16": True,
    "tune_threshold": True,
    "lr_decay": "cosine",
    "max_calcified_fraction": 0.25,
    "min_cluster_median_hu": ACUTE_BLOOD_MEDIAN_HU,
}


def patel_settings(profile: str | None = None, **overrides: Any) -> PatelSettings:
    """The Patel training settings of a profile (``full`` = the paper's PATCH set-up).

    ``full``: base 32, thick-slice 124x124x40 -> 36x36x12, SGD 1e-3, 100 epochs x 500 = 50,000 patches.
    ``small``: base 8, 116x116x36 -> 28x28x8, Adam 1e-3 annealed along a half cosine over 36 epochs x 32
    patches, whole scans in one 220x220x60 inference tile, and the CPU recipe of the module docstring
    (minutes on a CPU).
    ``tiny``: base 4, 108x108x36 -> 20x20x8, the same recipe, 3 epochs x 8 patches (seconds).

    Args:
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto).
        **overrides: settings to change, e.g. ``max_epochs=10``.
    """

    profile = resolve_profile(profile)
    if profile == "full":
        s = PatelSettings(
            "full", 32, True, (124, 124, 40), (124, 124, 40), batch_size=2, patches_per_epoch=500,
            val_patches=50, max_epochs=100, lr=1e-3, stop_patience=20,
        )  # fmt: skip
    elif profile == "small":
        s = PatelSettings(
            "small", 8, True, (116, 116, 36), (220, 220, 60), batch_size=2, patches_per_epoch=32,
            val_patches=16, max_epochs=36, lr=1e-3, stop_patience=36, **_CPU_RECIPE,
            synthetic_train=26, min_val_cases=8, snapshot_every=6,
            blood_free_calibration=6,
        )  # fmt: skip
    else:
        s = PatelSettings(
            "tiny", 4, True, (108, 108, 36), (124, 124, 44), batch_size=2, patches_per_epoch=8,
            val_patches=2, max_epochs=3, lr=1e-3, stop_patience=4, augment=True, **_CPU_RECIPE,
            synthetic_train=1, min_val_cases=2, bn_calibration_patches=4, snapshot_every=2,
            blood_free_calibration=1,
        )  # fmt: skip
    return s.with_overrides(**overrides)


def recalibrate_batch_norm(
    model: torch.nn.Module, images: Sequence[torch.Tensor], batch_size: int = 4
) -> None:
    """Recompute the batch-norm statistics of ``model`` over ``images`` ("precise BN").

    With two patches per step (Patel 2019 trains with small batches), the running averages that
    :class:`torch.nn.BatchNorm3d` keeps during training follow the last few batches, which differ a lot
    (a patch centred on blood, one on the cavity, much of it air padding): in evaluation mode the network
    then sees statistics that no training batch had, and its validation loss jumps from epoch to epoch.
    The paper is silent on this; hemolab recomputes the statistics after every epoch as the plain average
    over a fixed set of training patches, with :func:`torch.optim.swa_utils.update_bn` (which resets them,
    averages with ``momentum=None`` and restores the model's mode). Weights are not touched.

    Args:
        model: the network (on any device).
        images: input patches ``(1, x, y, z)`` (e.g. from :class:`PatelPatchDataset`).
        batch_size: patches per forward pass (larger batches give better variance estimates).

    Raises:
        HemolabError: if ``images`` is empty.
    """

    if len(images) == 0:
        raise HemolabError("recalibrate_batch_norm needs at least one image patch")
    device = next(model.parameters()).device
    batches = [torch.stack(list(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    with torch.no_grad():
        update_bn(batches, model, device=device)


def patel_meta(settings: PatelSettings, **more: Any) -> CheckpointMeta:
    """The checkpoint meta of a Patel run: how to rebuild the network, tile a scan and post-process.

    Args:
        settings: the run's settings.
        **more: further :class:`~hemolab.checkpoint.CheckpointMeta` fields, e.g. ``seed``, ``dataset``.
    """
    return CheckpointMeta.for_run(
        "patel",
        settings,
        settings.hu_window,
        input_size=settings.input_size,
        output_size=settings.output_size,
        inference_input_size=settings.inference_input_size,
        inference_output_size=settings.inference_output_size,
        min_component_ml=settings.min_component_ml,
        max_calcified_fraction=settings.max_calcified_fraction,
        min_cluster_median_hu=settings.min_cluster_median_hu,
        restrict_to_cranial_cavity=True,
        **more,
    )


def make_patel_loaders(
    dataset: Dataset | str | os.PathLike, settings: PatelSettings, *, seed: int = 0, progress: bool = False
):
    """Training and validation patch loaders for a hemolab dataset (``num_workers=0``).

    Args:
        dataset: a dataset folder or a loaded :class:`hemolab.datasets.Dataset`.
        settings: the profile's :class:`PatelSettings`.
        seed: random seed.
        progress: show a progress bar while the scans are read.

    Returns:
        ``(train_loader, val_loader)``; ``val_loader`` is ``None`` when there is no validation case.
    """
    # every training and validation case read and checked first; one error names every broken case
    ds = validate_dataset(dataset, ("train", "validation"), progress=progress)
    if not ds.train:
        raise HemolabError(f"the dataset {ds.root} has no training case")
    train_cases, val_cases = with_synthetic_cases(
        ds.train, ds.validation, settings.profile, settings.synthetic_train, settings.min_val_cases, seed
    )
    load = [
        load_patel_volume(c, settings.hu_window)
        for c in tqdm(train_cases + val_cases, desc="reading scans", disable=not progress)
    ]
    train_vols, val_vols = load[: len(train_cases)], load[len(train_cases) :]
    transform = patel_augmentation() if settings.augment else None
    sampling = {
        "fg_fraction": settings.fg_fraction,
        "hard_negative_fraction": settings.hard_negative_fraction,
    }
    train_ds = PatelPatchDataset(
        train_vols, settings.patches_per_epoch, settings.input_size, settings.output_size,
        transform=transform, seed=seed, cases=train_cases, **sampling,
    )  # fmt: skip
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=settings.batch_size, shuffle=False)
    val_loader = None
    if val_vols:
        val_ds = PatelPatchDataset(
            val_vols,
            settings.val_patches,
            settings.input_size,
            settings.output_size,
            seed=seed + 1,
            fixed=True,
            cases=val_cases,
            **sampling,
        )
        val_loader = torch.utils.data.DataLoader(val_ds, batch_size=settings.batch_size, shuffle=False)
    return train_loader, val_loader


class PreciseBatchNorm(Hook):
    """Recompute the batch-norm statistics over fixed training patches before each validation.

    The :class:`~hemolab.training.engine.Hook` form of :func:`recalibrate_batch_norm`.

    Args:
        images: input patches ``(1, x, y, z)``.
        batch_size: patches per forward pass.
    """

    def __init__(self, images: Sequence[torch.Tensor], batch_size: int = 4):
        self.images = list(images)
        self.batch_size = int(batch_size)

    def before_validation(self, trainer: Trainer) -> None:
        recalibrate_batch_norm(trainer.model, self.images, batch_size=self.batch_size)


def train_patel(
    dataset: Dataset | str | os.PathLike,
    profile: str | None = None,
    run_dir: str | os.PathLike | None = None,
    *,
    settings: PatelSettings | None = None,
    seed: int = 0,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    live_plot: bool = False,
    device=None,
    hooks: tuple[Hook, ...] = (),
    **overrides: Any,
) -> History:
    """Train the Patel 3D CNN on a hemolab dataset (Patel 2019, "Training"; docs/methods.md §2.4).

    Patches sampled equally from haemorrhage and cranial-cavity background, the weight map, weighted
    categorical cross-entropy, augmentation with probability 0.5, SGD with Nesterov momentum 0.9, via
    the shared loop :func:`hemolab.training.fit` (best weights by validation loss in ``run_dir/best.pt``).
    The same signature as :func:`hemolab.training.train_cnnds`.

    Args:
        dataset: a dataset folder or a loaded :class:`~hemolab.datasets.Dataset`.
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto).
        run_dir: where ``best.pt``, ``last.pt`` and ``history.csv`` go (default:
            ``workspace/runs/patel-<profile>``).
        settings: explicit :class:`PatelSettings` (default: :func:`patel_settings` of ``profile``).
        seed: random seed (patch sampling, augmentation, initialisation).
        resume: continue an interrupted run in ``run_dir``. overwrite: start afresh.
        progress: progress bars. live_plot: live loss curves in a notebook.
        device: ``None`` = CUDA if available.
        hooks: extra :class:`~hemolab.training.Hook` objects (e.g. a time limit, a throughput probe).
        **overrides: settings to change, e.g. ``max_epochs=10``, ``patches_per_epoch=16``.

    Returns:
        The :class:`~hemolab.training.History`; the best weights are in ``history.run_dir / "best.pt"``.
    """
    settings = (settings or patel_settings(profile)).with_overrides(**overrides)
    if run_dir is None:
        run_dir = workspace_dir("runs", f"patel-{settings.profile}")
    seed_everything(seed)
    train_loader, val_loader = make_patel_loaders(dataset, settings, seed=seed, progress=progress)
    model = Patel3DCNN(**settings.model_kwargs())
    if settings.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=settings.lr, momentum=settings.momentum, nesterov=True
        )
    elif settings.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    else:
        raise HemolabError(f"optimizer must be 'sgd' (the paper) or 'adam', got {settings.optimizer!r}")
    hooks = list(hooks)
    if settings.snapshot_epochs:
        hooks.append(Snapshots(settings.snapshot_epochs))
    if settings.bn_calibration_patches > 0:
        calibration = PatelPatchDataset(
            train_loader.dataset.volumes,
            settings.bn_calibration_patches,
            settings.input_size,
            settings.output_size,
            seed=seed + 2,
            fixed=True,
        )
        hooks.insert(0, PreciseBatchNorm([calibration[i]["image"] for i in range(len(calibration))]))
    root = getattr(dataset, "root", dataset)
    # the voxel sizes the filters are learnt at: inference resamples scans far outside them (segment_patel)
    spacings = np.array([v.spacing for v in train_loader.dataset.volumes], dtype=float)
    voxel_size_range = (tuple(spacings.min(axis=0).tolist()), tuple(spacings.max(axis=0).tolist()))
    history = fit(
        model,
        optimizer,
        WeightedCELoss(),
        train_loader,
        val_loader,
        max_epochs=settings.max_epochs,
        run_dir=run_dir,
        lr_decay=settings.lr_decay,
        stop_patience=settings.stop_patience,
        device=device,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        live_plot=live_plot,
        meta=patel_meta(settings, dataset=str(root), seed=int(seed), voxel_size_range=voxel_size_range),
        hooks=hooks,
        cpu_bf16=settings.cpu_bf16,
    )
    if settings.tune_threshold and val_loader is not None:
        tune_run(model, history.run_dir, val_loader.dataset.cases, segment_patel, settings, seed)
    return history
