"""The probability threshold of a trained network, chosen on its validation scans (our choice, docs/methods.md §5.1).

Both papers threshold the network's probability at 0.5. A network trained on a small budget -- and the Patel
network, trained on patches balanced between blood and background (docs/methods.md §2.4), which learns a
prior of far more blood than a whole scan holds -- is not calibrated: 0.5 is not where its masks are best.
The CPU profiles therefore choose an operating point on the validation scans and store it in ``best.pt``;
inference reads it from the checkpoint (:class:`hemolab.checkpoint.CheckpointMeta`).

The rule is the one a screening tool uses, a false-alarm budget first and then the best performance within
it: among the thresholds at which the blood-free scans get on average at most ``max_false_ml`` (0.5 mL) of
"haemorrhage" each, the one with the best mean Dice over the validation scans *with* blood. The blood-free
scans are the validation split's own and, in the CPU profiles, synthetic normal heads added for this choice
(:func:`tune_run`). The mean false volume per normal head is what a reader of the tool meets on average;
the largest on any one head -- the budget while a split held one or two such scans -- turns a single
outlier among eight heads into a threshold that costs every bleed its Dice. (The mean Dice over
all scans, with a blood-free scan counting 1 or 0 (docs/methods.md §4), lets one speck on one normal head
outweigh every bleed, and drives the threshold to its highest candidate.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hemolab.checkpoint import CheckpointMeta, atomic_torch_save, read_checkpoint
from hemolab.errors import HemolabError
from hemolab.io import array_from_image
from hemolab.metrics import dice
from hemolab.preprocess import cranial_cavity_mask
from hemolab.segment import SegmentationResult
from hemolab.segment.postprocess import calcification_hu, finish_mask
from hemolab.training.data import blood_free_cases
from hemolab.training.engine import Snapshots
from hemolab.training.schedule import SnapshotChoice

#: The false-alarm budget: the most the blood-free validation scans may get on average, in mL.
MAX_FALSE_ML = 0.5

#: The thresholds tried: never below the paper's 0.5, which would call a voxel blood where the network itself
#: finds blood less likely than not; up to 0.99 for a network trained on balanced patches, whose probabilities
#: run high (docs/methods.md §5.2).
CANDIDATES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)


def choose_threshold(
    scans: Sequence[tuple[Callable[[float], np.ndarray], np.ndarray, float]],
    candidates: Sequence[float] = CANDIDATES,
    max_false_ml: float = MAX_FALSE_ML,
) -> tuple[float, pd.DataFrame]:
    """The best threshold within a false-alarm budget (module docstring).

    Args:
        scans: per validation scan, ``(mask_at, reference, voxel_ml)``: ``mask_at(t)`` gives the mask at
            threshold ``t`` (the whole post-processing of inference), ``reference`` the binary label,
            ``voxel_ml`` the volume of one voxel in mL.
        candidates: thresholds to try, each strictly between 0 and 1.
        max_false_ml: the most "haemorrhage" (mL) the blood-free validation scans may get on average.

    Returns:
        ``(threshold, table)``: the table has one row per candidate with ``dice_bleeds`` (mean Dice over
        the scans with blood), ``mean_false_ml`` (the mean predicted on the blood-free scans, 0 without
        any), ``max_false_ml`` (the most on any one of them) and ``eligible``.
        With no threshold in the budget, the one with the fewest false millilitres is taken; with no
        bleeding scan, the lowest in the budget; ties go to the one nearest 0.5.

    Raises:
        HemolabError: for no scans or a candidate outside (0, 1).
    """
    if not scans:
        raise HemolabError("choose_threshold needs at least one validation scan")
    if not candidates or not all(0.0 < float(t) < 1.0 for t in candidates):
        raise HemolabError(f"candidate thresholds must lie strictly between 0 and 1, got {list(candidates)}")
    rows = []
    for t in sorted(float(c) for c in candidates):
        dices, false_ml = [], []
        for mask_at, ref, voxel_ml in scans:
            mask = mask_at(t)
            if ref.any():
                dices.append(dice(mask, ref))
            else:
                false_ml.append(float(mask.sum()) * float(voxel_ml))
        rows.append({"threshold": t, "dice_bleeds": float(np.mean(dices)) if dices else 1.0,
                     "mean_false_ml": float(np.mean(false_ml)) if false_ml else 0.0,
                     "max_false_ml": max(false_ml, default=0.0)})  # fmt: skip
    table = pd.DataFrame(rows).set_index("threshold")
    table["eligible"] = table["mean_false_ml"] <= max_false_ml + 1e-9
    pool = table[table["eligible"]]
    if pool.empty:
        pool = table[table["mean_false_ml"] == table["mean_false_ml"].min()]
    best = max(pool.index, key=lambda t: (round(pool.loc[t, "dice_bleeds"], 6), -abs(t - 0.5)))
    return float(best), table


def tune_threshold(
    model: torch.nn.Module,
    best_path: str | os.PathLike,
    cases: Iterable[Any],
    segment: Callable[..., SegmentationResult],
    candidates: Sequence[float] = CANDIDATES,
    snapshots: Sequence[str | os.PathLike] = (),
) -> float:
    """Choose the threshold (and, given snapshots, the epoch) on whole validation scans; store it in ``best.pt``.

    Each scan is segmented once per checkpoint by the architecture's own inference pipeline (``segment``,
    e.g. :func:`hemolab.segment.segment_cnnds`); its probability map then goes through
    :func:`hemolab.segment.postprocess.finish_mask` (threshold, cranial cavity, cluster rule, as the
    checkpoint's meta asks) at every candidate threshold (:func:`choose_threshold`). With ``snapshots``
    (checkpoints of other epochs of the same run), the checkpoint whose masks are best at its own
    threshold -- within the false-alarm budget first, then by mean Dice on the bleeds -- is copied
    into ``best.pt`` (ties keep ``best.pt``): an epoch is then chosen as the threshold is, by what the
    masks of whole scans score, not by the loss on a few patches (docs/methods.md §5.2).

    Args:
        model: the run's network (its weights are replaced by the chosen checkpoint's).
        best_path: the run's ``best.pt``.
        cases: validation cases (``load_image()``, ``load_label()``).
        segment: ``segment(image, model, meta, cavity=...)`` -> :class:`~hemolab.segment.SegmentationResult`
            (:func:`hemolab.segment.segment_cnnds`, :func:`hemolab.segment.segment_patel`).
        candidates: thresholds to try.
        snapshots: further checkpoints of the run to choose from.

    Returns:
        The threshold stored.
    """
    best_path = Path(best_path)
    scans = [_ValidationScan(case) for case in cases]
    chosen, seen = None, set()
    for path in [best_path, *(Path(p) for p in snapshots)]:
        payload = read_checkpoint(path)
        meta = CheckpointMeta.from_dict(payload["meta"], source=str(path))
        if meta.best_epoch is not None and meta.best_epoch in seen:
            continue  # the same epoch's weights (best.pt is also a snapshot): evaluated once
        seen.add(meta.best_epoch)
        model.load_state_dict(payload["model_state"])
        threshold, table = choose_threshold([scan.masks(model, meta, segment) for scan in scans], candidates)
        score = (bool(table.loc[threshold, "eligible"]), round(float(table.loc[threshold, "dice_bleeds"]), 6))
        if chosen is None or score > chosen[0]:
            chosen = (score, payload, meta, threshold)
    _, payload, meta, threshold = chosen
    model.load_state_dict(payload["model_state"])
    payload["meta"] = meta.replace(threshold=float(threshold)).to_dict()
    atomic_torch_save(payload, best_path)  # the chosen weights, with their threshold, as the run's best.pt
    return threshold


def tune_run(
    model: torch.nn.Module,
    run_dir: str | os.PathLike,
    val_cases: Iterable[Any],
    segment: Callable[..., SegmentationResult],
    settings: SnapshotChoice,
    seed: int = 0,
) -> float:
    """:func:`tune_threshold` for a finished run of either network, as its settings ask.

    The scans it chooses on are the run's validation cases plus ``settings.blood_free_calibration``
    synthetic heads without haemorrhage (:func:`hemolab.training.data.blood_free_cases`), so that the
    false-alarm budget is checked on more than the one or two normal heads a validation split holds; the
    candidates are ``best.pt`` and the snapshots the run kept (``settings.snapshot_epochs``).

    Args:
        model: the run's network.
        run_dir: the run's folder (``best.pt``, ``snapshots/``).
        val_cases: the run's validation cases.
        segment: the architecture's inference pipeline (see :func:`tune_threshold`).
        settings: the run's settings (``profile``, ``blood_free_calibration``, ``snapshot_epochs``).
        seed: the run's seed (which calibration heads).

    Returns:
        The threshold stored in ``best.pt``.
    """
    run_dir = Path(run_dir)
    cases = [*val_cases, *blood_free_cases(settings.profile, settings.blood_free_calibration, seed)]
    snapshots = Snapshots.paths(run_dir) if settings.snapshot_epochs else ()
    return tune_threshold(model, run_dir / "best.pt", cases, segment, snapshots=snapshots)


class _ValidationScan:
    """One validation scan, read once: its image, reference and cranial cavity."""

    def __init__(self, case: Any):
        self.image = case.load_image()
        self.reference = array_from_image(case.load_label()) > 0
        self._cavity: np.ndarray | None = None
        self._hu: np.ndarray | None = None

    def cavity(self) -> np.ndarray:
        if self._cavity is None:
            self._cavity = array_from_image(cranial_cavity_mask(self.image)) > 0
        return self._cavity

    def masks(self, model: torch.nn.Module, meta: CheckpointMeta, segment: Callable[..., SegmentationResult]):
        """``(mask_at, reference, voxel_ml)`` for :func:`choose_threshold`, with ``model`` as it is now."""
        cavity = self.cavity() if (meta.restrict_to_cranial_cavity or meta.crop_head) else None
        prob = segment(self.image, model, meta, cavity=cavity).probability_array()
        cavity = cavity if meta.restrict_to_cranial_cavity else None
        spacing = self.image.GetSpacing()
        if self._hu is None:
            self._hu = calcification_hu(self.image, meta)  # None unless an HU rule is on
        hu = self._hu if (meta.max_calcified_fraction > 0 or meta.min_cluster_median_hu > 0) else None
        mask_at = partial(
            _mask_at, prob, spacing, cavity, meta.min_component_ml, hu, meta.max_calcified_fraction,
            meta.min_cluster_median_hu,
        )  # fmt: skip
        return mask_at, self.reference, float(np.prod(spacing)) / 1000.0


def _mask_at(
    prob,
    spacing,
    cavity,
    min_component_ml: float,
    hu,
    max_calcified_fraction: float,
    min_cluster_median_hu: float,
    t: float,
) -> np.ndarray:
    return finish_mask(prob, t, spacing, cavity=cavity, min_component_ml=min_component_ml, hu=hu,
                       max_calcified_fraction=max_calcified_fraction,
                       min_cluster_median_hu=min_cluster_median_hu)  # fmt: skip
