"""A hemolab dataset folder as torch DataLoaders for CNN-DS, preprocessed once and kept in memory.

Every case goes through :func:`hemolab.preprocess.prepare_cnnds` (the same function inference uses, so
training and inference never diverge): linear resampling of the whole head to the profile's grid
(128x128x64 in the paper), HU clipped to [0, 100] and divided by 100 (Arab 2020, Methods,
"Preprocessing"). The label is resampled with nearest-neighbour interpolation onto the same grid. The
arrays are cached in memory: 55 cases at 128x128x64 take about 0.5 GB, the small profile a few MB.

Batches are dicts ``{"image": (B, 1, x, y, z) float32, "label": (B, 1, x, y, z) float32, "case_id": [...]}``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hemolab.datasets import load_dataset
from hemolab.errors import HemolabError
from hemolab.io import image_from_array
from hemolab.preprocess import crop_to_box, head_box, prepare_cnnds, prepare_label
from hemolab.synth import generate_case, plan_cohort


def preprocess_case(case, size: Sequence[int], crop_head: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One case of a hemolab dataset on the CNN-DS grid: ``(image in [0, 1], binary label)``, ``[x, y, z]``.

    With ``crop_head`` the scan and its label are first cropped to the box around the cranial cavity
    (:func:`hemolab.preprocess.head_box`), as :func:`hemolab.segment.segment_cnnds` does at inference.
    """
    image, label_img = case.load_image(), case.load_label()
    box = head_box(image) if crop_head else None
    arr = np.asarray(prepare_cnnds(crop_to_box(image, box), tuple(size)), dtype=np.float32)
    label = np.asarray(prepare_label(crop_to_box(label_img, box), size=tuple(size)), dtype=bool)
    if arr.shape != tuple(size) or label.shape != tuple(size):
        raise HemolabError(
            f"preprocessing case {case.case_id} gave shapes {arr.shape} / {label.shape}, expected {tuple(size)}"
        )
    return arr, label.astype(np.float32)


class CachedCNNDSDataset(Dataset):
    """Cases of a hemolab dataset, preprocessed for CNN-DS once and held in memory.

    Args:
        cases: :class:`hemolab.datasets.Case` objects (e.g. ``dataset.train``).
        size: the grid ``(x, y, z)``, e.g. :func:`hemolab.preprocess.cnnds_grid`.
        crop_head: crop each scan to the box around its cranial cavity first (:func:`preprocess_case`).
        augment: randomly mirror each item left-right (along x) with probability 0.5 when it is drawn
            (our choice; the paper does not describe augmentation). Uses torch's global generator, so
            it is seeded by :func:`hemolab.config.seed_everything`.
        progress: show a progress bar while preprocessing.
    """

    def __init__(
        self,
        cases: Sequence[Any],
        size: Sequence[int],
        *,
        crop_head: bool = False,
        augment: bool = False,
        progress: bool = False,
    ):
        if not cases:
            raise HemolabError("no cases given: the dataset split is empty")
        self.size = tuple(int(s) for s in size)
        self.augment = augment
        self.cases = list(cases)
        self.case_ids = [c.case_id for c in cases]
        images, labels = [], []
        for case in tqdm(cases, desc="preprocessing", unit="case", disable=not progress, leave=False):
            img, lab = preprocess_case(case, self.size, crop_head)
            images.append(torch.from_numpy(img)[None])
            labels.append(torch.from_numpy(lab)[None])
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, label = self.images[i], self.labels[i]
        if self.augment and bool(torch.rand(()) < 0.5):
            image, label = image.flip(1), label.flip(1)  # dim 1 of (C, x, y, z) = x = left-right
        return {"image": image, "label": label, "case_id": self.case_ids[i]}


#: Cohort seeds of the synthetic cases added to a training run (:func:`synthetic_cases`): far from the
#: course's cohort (seed 0) and from the cohorts the benchmarks evaluate on, so a run never sees them.
POOL_SEEDS: dict[str, int] = {"train": 10_000, "validation": 20_000, "calibration": 30_000}


class SyntheticCase:
    """One generated case held in memory, with the ``case_id`` / ``load_image`` / ``load_label`` of a dataset case."""

    def __init__(self, plan):
        self.plan = plan
        self.case_id = f"pool-{plan.profile}-{plan.seed}"
        self._case = None

    def _generate(self):
        if self._case is None:
            self._case = generate_case(self.plan)
        return self._case

    def load_image(self):
        c = self._generate()
        return image_from_array(c.image, spacing=c.grid.spacing, origin=c.grid.origin)

    def load_label(self):
        c = self._generate()
        img = image_from_array(c.reference.astype(np.uint8), spacing=c.grid.spacing, origin=c.grid.origin)
        self._case = None  # preprocessed once; the full-resolution arrays are not kept
        return img


def synthetic_cases(profile: str, n_cases: int, seed: int = 0, split: str = "train") -> list[SyntheticCase]:
    """``n_cases`` synthetic cases of ``profile`` generated in memory (about 0.3 s each in ``small``).

    Synthetic data is free: where a dataset is small (the ``small`` cohort has 14 training and 2 validation
    scans), the CPU profiles add cases like these to its training split, and to its validation split up to
    a minimum, so that the network sees more heads and the best epoch is chosen on more than two scans.
    They come from the cohort seed ``POOL_SEEDS[split] + seed``, never the course's or a benchmark's cohort.

    Args:
        profile: the cohort profile (grid, voxel size) of the cases.
        n_cases: how many.
        seed: the training run's seed.
        split: ``"train"`` or ``"validation"`` (each has its own seeds).

    Returns:
        Cases to pass with a dataset's own to :class:`CachedCNNDSDataset`.
    """
    if n_cases <= 0:
        return []
    if split not in POOL_SEEDS:
        raise HemolabError(f"split must be one of {', '.join(POOL_SEEDS)}, got {split!r}")
    return [SyntheticCase(p) for p in plan_cohort(int(n_cases), POOL_SEEDS[split] + int(seed), profile)]


def blood_free_cases(profile: str, n_cases: int, seed: int = 0) -> list[SyntheticCase]:
    """``n_cases`` synthetic heads without haemorrhage, for the false-alarm budget of the threshold choice.

    The threshold of a CPU profile is the best one at which the blood-free validation scans get on average
    at most 0.5 mL (:mod:`hemolab.training.threshold`). A cohort's validation split holds one or two
    blood-free scans (about 15% of a cohort), too few for that budget to hold on heads the network never
    saw: a threshold that keeps one normal head clean can still call millilitres of blood on the next. Normal
    heads are free to generate, so the CPU profiles add these (cohort seed ``POOL_SEEDS["calibration"] +
    seed``: every head differs in shape, tissue, noise and calcifications; none has a bleed). They are
    used only to choose the threshold and the epoch, never for training or for the validation loss.

    Args:
        profile: the cohort profile (grid, voxel size) of the heads.
        n_cases: how many (0: none).
        seed: the training run's seed.

    Returns:
        Cases (``case_id`` / ``load_image`` / ``load_label``) whose labels are empty.
    """
    if n_cases <= 0:
        return []
    plans = plan_cohort(int(n_cases), POOL_SEEDS["calibration"] + int(seed), profile)
    return [SyntheticCase(replace(p, bleed_type="none", target_volume_ml=0.0)) for p in plans]


def with_synthetic_cases(
    train: Sequence[Any],
    validation: Sequence[Any],
    profile: str,
    synthetic_train: int,
    min_val_cases: int,
    seed: int,
) -> tuple[list[Any], list[Any]]:
    """A dataset's training and validation cases with the synthetic ones a run adds (:func:`synthetic_cases`).

    ``synthetic_train`` cases join the training split; the validation split is filled up to
    ``min_val_cases``. Both drivers (CNN-DS and Patel) build their splits with this.
    """
    n_val = max(0, int(min_val_cases) - len(validation))
    return (
        list(train) + synthetic_cases(profile, synthetic_train, seed, "train"),
        list(validation) + synthetic_cases(profile, n_val, seed, "validation"),
    )


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.stack([it["label"] for it in items]),
        "case_id": [it["case_id"] for it in items],
    }


def make_cnnds_loaders(
    dataset,
    size: Sequence[int],
    *,
    batch_size: int = 1,
    crop_head: bool = False,
    augment: bool = True,
    synthetic_train: int = 0,
    min_val_cases: int = 0,
    synthetic_profile: str = "small",
    seed: int = 0,
    progress: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """Training and validation DataLoaders for CNN-DS from a hemolab dataset.

    Args:
        dataset: a dataset folder (``hemolab synth`` / data scripts) or a loaded
            :class:`hemolab.datasets.Dataset`.
        size: the grid ``(x, y, z)``.
        batch_size: cases per step (the paper: 1).
        crop_head: crop each scan to the box around its cranial cavity before resampling.
        augment: left-right mirroring of training cases.
        synthetic_train: synthetic cases added to the training split (:func:`synthetic_cases`).
        min_val_cases: synthetic cases are added to the validation split up to this many cases.
        synthetic_profile: the cohort profile of the synthetic cases.
        seed: seeds the shuffling order of the training loader.
        progress: show progress bars while preprocessing.

    Returns:
        ``(train_loader, val_loader)``; the training loader shuffles, the validation loader does not.

    Raises:
        HemolabError: if the dataset has no training or no validation cases.
    """
    if isinstance(dataset, str | os.PathLike):
        dataset = load_dataset(dataset)
    if not dataset.train:
        raise HemolabError(f"dataset {dataset.root} has no training cases")
    if not dataset.validation:
        raise HemolabError(
            f"dataset {dataset.root} has no validation cases: list held-out case ids under 'validation' in dataset.json"
        )
    train_cases, val_cases = with_synthetic_cases(
        dataset.train, dataset.validation, synthetic_profile, synthetic_train, min_val_cases, seed
    )
    train_ds = CachedCNNDSDataset(train_cases, size, crop_head=crop_head, augment=augment, progress=progress)
    val_ds = CachedCNNDSDataset(val_cases, size, crop_head=crop_head, augment=False, progress=progress)
    gen = torch.Generator().manual_seed(int(seed))
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=_collate, generator=gen)
    val = DataLoader(val_ds, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    return train, val
