"""The hyper-parameter grid search of Arab 2020 (Methods, "Training"; docs/methods.md §1.5).

The paper chose depth, learning rate and dropout on the validation set from depth {3, 4, 5, 6},
learning rate {1e-2, 5e-3, 1e-3, 5e-4, 1e-4} and dropout {0.3, 0.4, 0.5}: 60 trainings, which only the
``full`` profile on a GPU attempts. ``tiny`` and ``small`` try a small corner of it (2 configurations).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hemolab.config import workspace_dir
from hemolab.training.cnnds import cnnds_settings, make_loaders_for, train_cnnds


def grid_search(
    dataset,
    profile: str | None = None,
    *,
    depths: Sequence[int] | None = None,
    lrs: Sequence[float] | None = None,
    dropouts: Sequence[float] | None = None,
    max_epochs: int | None = None,
    run_root: str | os.PathLike | None = None,
    seed: int = 0,
    resume: bool = True,
    progress: bool = True,
    device=None,
):
    """Train CNN-DS for every (depth, learning rate, dropout) and rank them by validation Dice.

    Args:
        dataset: a dataset folder or a loaded Dataset (its ``validation`` split decides).
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto). The profile's settings give the
            other hyper-parameters and the default grid (the paper's full grid in ``full``).
        depths, lrs, dropouts: the values to try (default: the profile's ``grid_*`` settings).
        max_epochs: epoch limit per configuration (default: the profile's).
        run_root: folder for one run folder per configuration (default ``workspace/runs/grid-<profile>``).
        seed: the same seed for every configuration (same initial conditions where shapes allow).
        resume: reuse finished runs in ``run_root`` (a grid search can be continued).
        progress: print a line per configuration.
        device: ``None`` = CUDA if available, else CPU.

    Returns:
        A :class:`pandas.DataFrame` with one row per configuration (depth, lr, dropout, best_epoch,
        val_dice, val_loss, epochs, seconds, run_dir), best validation Dice first.
    """
    base = cnnds_settings(profile, max_epochs=max_epochs)
    depths = tuple(depths or base.grid_depths)
    lrs = tuple(lrs or base.grid_lrs)
    dropouts = tuple(dropouts or base.grid_dropouts)
    run_root = Path(run_root) if run_root is not None else workspace_dir("runs", f"grid-{base.profile}")
    loaders = make_loaders_for(dataset, base, seed=seed)  # preprocessing done once for all configurations
    configs = list(itertools.product(depths, lrs, dropouts))
    rows = []
    for i, (depth, lr, dropout) in enumerate(configs, 1):
        settings = base.with_overrides(depth=int(depth), lr=float(lr), dropout=float(dropout))
        run_dir = run_root / f"depth{depth}-lr{lr:g}-dropout{dropout:g}"
        start = time.perf_counter()
        history = train_cnnds(
            dataset,
            settings=settings,
            run_dir=run_dir,
            seed=seed,
            resume=resume,
            overwrite=not resume,
            progress=False,
            device=device,
            loaders=loaders,
        )
        rows.append(
            {
                "depth": depth,
                "lr": lr,
                "dropout": dropout,
                "best_epoch": history.best_epoch,
                "val_dice": history.best_val_dice,
                "val_loss": history.best_val_loss,
                "epochs": history.epochs,
                "seconds": round(time.perf_counter() - start, 1),
                "run_dir": str(run_dir),
            }
        )
        if progress:
            print(
                f"[{i}/{len(configs)}] depth {depth}, lr {lr:g}, dropout {dropout:g}: "
                f"validation Dice {history.best_val_dice:.3f} (epoch {history.best_epoch})"
            )
    frame = pd.DataFrame(rows)
    return frame.sort_values(["val_dice", "val_loss"], ascending=[False, True], ignore_index=True)
