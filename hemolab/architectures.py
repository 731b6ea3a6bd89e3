"""The registry of the networks hemolab teaches: one entry per architecture, one way through the code.

Each :class:`Architecture` says what a name in a checkpoint's meta (``"cnnds"``, ``"patel"``) stands for:
the network class, the settings of each profile, the training driver and the whole-scan segmentation
pipeline. Everything that depends on *which* network a run or a checkpoint holds -- rebuilding it
(:func:`load_checkpoint`), segmenting a scan with it (:func:`segment_scan`), training it (:func:`train`),
the checkpoints the notebooks share (:func:`ensure_checkpoint`), the ``hemolab train --arch`` choices --
looks it up here, so a third architecture is its model file, its settings and training module, and one
entry in :data:`ARCHITECTURES` (see CONTRIBUTING in the README).

* ``cnnds`` -- Arab et al. 2020 (docs/methods.md §1): whole head at 128x128x64, deep supervision.
* ``patel`` -- Patel et al. 2019 (docs/methods.md §2): valid convolutions, patches, tiled inference.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk
import torch
from torch import nn

from hemolab.checkpoint import CheckpointMeta, read_checkpoint
from hemolab.config import ProfileSettings, get_device, resolve_profile, workspace_dir
from hemolab.datasets import ensure_cohort
from hemolab.errors import HemolabError
from hemolab.models import CNNDS, Patel3DCNN
from hemolab.segment import SegmentationResult, segment_cnnds, segment_patel
from hemolab.segment.result import MetaLike, as_meta
from hemolab.training.cnnds import cnnds_settings, train_cnnds
from hemolab.training.history import History
from hemolab.training.patel import patel_settings, train_patel
from hemolab.validation import check_head_ct


@dataclass(frozen=True)
class Architecture:
    """One network hemolab can train and apply.

    Attributes:
        name: the key in :data:`ARCHITECTURES` and in a checkpoint's ``meta.arch``.
        title: how people call it.
        paper: the paper it reproduces.
        model: the network class; ``model(**meta.model_kwargs)`` rebuilds it.
        settings: ``settings(profile, **overrides)`` -> the profile's :class:`~hemolab.config.ProfileSettings`.
        train: ``train(dataset, profile, run_dir, *, settings, seed, resume, overwrite, progress,
            live_plot, device, **overrides)`` -> :class:`~hemolab.training.History`.
        segment: ``segment(image, model, meta, *, threshold, device)`` -> :class:`~hemolab.segment.SegmentationResult`.
        notebook: the notebook that trains it (and writes the checkpoint the later notebooks use).
    """

    name: str
    title: str
    paper: str
    model: type[torch.nn.Module]
    settings: Callable[..., ProfileSettings]
    train: Callable[..., History]
    segment: Callable[..., SegmentationResult]
    notebook: str


#: Every architecture, by name.
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "cnnds", "CNN-DS", "Arab et al. 2020", CNNDS, cnnds_settings, train_cnnds, segment_cnnds,
            "03_train_cnn_ds.ipynb",
        ),
        Architecture(
            "patel", "Patel 3D CNN", "Patel et al. 2019", Patel3DCNN, patel_settings, train_patel, segment_patel,
            "04_patel_3d_cnn.ipynb",
        ),
    )
}  # fmt: skip


def get_architecture(name: str) -> Architecture:
    """The registry entry for ``name`` (case-insensitive).

    Raises:
        HemolabError: for a name that is not registered, listing those that are.
    """
    key = str(name).strip().lower()
    if key not in ARCHITECTURES:
        raise HemolabError(f"unknown network architecture {name!r}: choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[key]


def build_model(arch: str, **kwargs: Any) -> torch.nn.Module:
    """Build a network by name, e.g. ``build_model("cnnds", depth=4, base_filters=8)`` (randomly initialised).

    Raises:
        HemolabError: for an unknown ``arch`` or keyword arguments the network does not take.
    """
    entry = get_architecture(arch)
    try:
        return entry.model(**kwargs)
    except TypeError as exc:
        raise HemolabError(f"cannot build a {entry.name!r} network from {sorted(kwargs)}: {exc}") from exc


def load_checkpoint(path: str | os.PathLike, device: Any = None) -> tuple[torch.nn.Module, CheckpointMeta]:
    """Rebuild a trained network from a checkpoint, ready for inference.

    The file is read with ``torch.load(..., weights_only=True)``; the network named by its
    :class:`~hemolab.checkpoint.CheckpointMeta` is built, its weights loaded, moved to ``device`` and put in
    ``eval()`` mode.

    Args:
        path: a ``best.pt`` / ``last.pt`` written by :func:`hemolab.training.fit`.
        device: where to put the model (``None`` = :func:`hemolab.config.get_device`).

    Returns:
        ``(model, meta)``.

    Raises:
        HemolabFileError: if the file does not exist.
        HemolabError: if it is not a hemolab checkpoint, or its weights do not fit the network it names.
    """
    payload = read_checkpoint(path)
    meta = CheckpointMeta.from_dict(payload.get("meta") or {}, source=f"checkpoint {path}")
    model = build_model(meta.arch, **meta.model_kwargs)
    try:
        model.load_state_dict(payload["model_state"])
    except (RuntimeError, KeyError) as exc:
        raise HemolabError(
            f"the weights in {path} do not fit a {meta.arch!r} network built from its meta: {exc}"
        ) from exc
    dev = get_device(device) if not isinstance(device, torch.device) else device
    model.to(dev).eval()
    return model, meta


def segment_scan(
    image: sitk.Image, model: nn.Module, meta: MetaLike, *, threshold: float | None = None, device: Any = None
) -> SegmentationResult:
    """Segment the haemorrhage in one non-contrast head CT with a trained network of any architecture.

    Args:
        image: the scan in Hounsfield units (:func:`hemolab.io.read_scan`), any size and spacing.
        model: the trained network (:func:`load_checkpoint`).
        meta: its checkpoint meta: the architecture, the preprocessing, the threshold.
        threshold: overrides the checkpoint's probability threshold (the papers: 0.5).
        device: where to run the network (``None`` = where the model is).

    Returns:
        A :class:`~hemolab.segment.SegmentationResult` whose mask lies on the input scan's grid.

    Raises:
        HemolabError: for an input that is not a 3D image, not a head CT in HU
            (:func:`hemolab.validation.check_head_ct`: non-finite values, no air, no bone, a size or voxels
            that cannot hold a head), an unknown architecture or a bad threshold.
    """
    meta = as_meta(meta)
    entry = get_architecture(meta.arch)
    if isinstance(image, sitk.Image):  # refuse what cannot be a head CT before any answer is given
        check_head_ct(image, name="the scan")
    return entry.segment(image, model, meta, threshold=threshold, device=device)


def train(
    arch: str,
    dataset: Any,
    profile: str | None = None,
    run_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> History:
    """Train any registered architecture: ``train("patel", dataset, "small")`` (the driver's own arguments follow).

    Returns:
        The run's :class:`~hemolab.training.History`.
    """
    return get_architecture(arch).train(dataset, profile, run_dir, **kwargs)


def checkpoint_path(arch: str = "cnnds", profile: str | None = None) -> Path:
    """Where notebook 03 (CNN-DS) / 04 (Patel) keep their checkpoint: ``workspace/checkpoints/<arch>-<profile>/best.pt``."""
    name = get_architecture(arch).name
    return workspace_dir("checkpoints", f"{name}-{resolve_profile(profile)}") / "best.pt"


def run_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Whether the training run in ``run_dir`` finished, from its ``last.pt``.

    Returns:
        ``{"finished": bool, "epochs": int, "max_epochs": int | None, "stopped_early": bool}``; a folder
        with a ``best.pt`` but no ``last.pt`` counts as finished (e.g. a checkpoint copied on its own).
    """
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        return {"finished": True, "epochs": 0, "max_epochs": None, "stopped_early": False}
    state = read_checkpoint(last)
    history = History.from_state_dict(state.get("history") or {})
    max_epochs = (state.get("meta") or {}).get("settings", {}).get("max_epochs")
    done = history.stopped_early or (max_epochs is not None and history.epochs >= int(max_epochs))
    return {"finished": bool(done), "epochs": history.epochs, "max_epochs": max_epochs,
            "stopped_early": history.stopped_early}  # fmt: skip


def ensure_checkpoint(arch: str = "cnnds", profile: str | None = None, seed: int = 0) -> Path:
    """The checkpoint notebook 03 (CNN-DS) or 04 (Patel) writes; trained, or an interrupted run finished, first.

    * No checkpoint: a network is trained on :func:`hemolab.datasets.ensure_cohort` with the profile's
      settings (in ``full`` the epoch limit is capped at 150 so it stays under an hour on a GPU; a
      documented choice) and the time it took is printed.
    * A checkpoint from a run that was interrupted (a Binder session timing out): the run is resumed to
      its end, saying so, rather than used silently half-trained.

    Args:
        arch: a name in :data:`ARCHITECTURES`.
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto).
        seed: the seed of the cohort and of the training run.

    Returns:
        The path of ``best.pt``.
    """
    entry = get_architecture(arch)
    profile = resolve_profile(profile)
    path = checkpoint_path(entry.name, profile)
    if path.is_file():
        status = run_status(path.parent)
        if status["finished"]:
            return path
        print(
            f"the {entry.title} checkpoint at {path} comes from a run that was interrupted after "
            f"{status['epochs']} of {status['max_epochs']} epochs: resuming it to the end first ..."
        )
    else:
        print(
            f"no {entry.title} checkpoint from notebook {entry.notebook[:2]} found at {path}: training one now "
            f"({profile} profile) ..."
        )
    start = time.perf_counter()
    root = ensure_cohort(profile, seed=seed)
    overrides = {"max_epochs": 150} if profile == "full" else {}
    history = entry.train(root, profile, path.parent, seed=seed, resume=True, progress=False, **overrides)
    print(
        f"trained the {entry.title} checkpoint in {time.perf_counter() - start:.0f} s ({history.summary()})"
    )
    return path
