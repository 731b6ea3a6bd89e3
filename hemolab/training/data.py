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
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hemolab.datasets import load_dataset
from hemolab.errors import HemolabError
from hemolab.preprocess import prepare_cnnds, prepare_label


def preprocess_case(case, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One case of a hemolab dataset on the CNN-DS grid: ``(image in [0, 1], binary label)``, ``[x, y, z]``."""
    arr = np.asarray(prepare_cnnds(case.load_image(), tuple(size)), dtype=np.float32)
    label = np.asarray(prepare_label(case.load_label(), size=tuple(size)), dtype=bool)
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
        augment: randomly mirror each item left-right (along x) with probability 0.5 when it is drawn
            (our choice; the paper does not describe augmentation). Uses torch's global generator, so
            it is seeded by :func:`hemolab.config.seed_everything`.
        progress: show a progress bar while preprocessing.
    """

    def __init__(
        self, cases: Sequence[Any], size: Sequence[int], *, augment: bool = False, progress: bool = False
    ):
        if not cases:
            raise HemolabError("no cases given: the dataset split is empty")
        self.size = tuple(int(s) for s in size)
        self.augment = augment
        self.case_ids = [c.case_id for c in cases]
        images, labels = [], []
        for case in tqdm(cases, desc="preprocessing", unit="case", disable=not progress, leave=False):
            img, lab = preprocess_case(case, self.size)
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
    augment: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """Training and validation DataLoaders for CNN-DS from a hemolab dataset.

    Args:
        dataset: a dataset folder (``hemolab synth`` / data scripts) or a loaded
            :class:`hemolab.datasets.Dataset`.
        size: the grid ``(x, y, z)``.
        batch_size: cases per step (the paper: 1).
        augment: left-right mirroring of training cases.
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
    train_ds = CachedCNNDSDataset(dataset.train, size, augment=augment, progress=progress)
    val_ds = CachedCNNDSDataset(dataset.validation, size, augment=False, progress=progress)
    gen = torch.Generator().manual_seed(int(seed))
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=_collate, generator=gen)
    val = DataLoader(val_ds, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    return train, val
