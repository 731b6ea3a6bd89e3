"""The record of a training run: one row per epoch, the best epoch, how the run ended.

:class:`History` is what :func:`hemolab.training.fit` returns and what ``run_dir/history.csv`` and every
checkpoint keep; :func:`describe_schedule` says in words what the learning-rate halving and early stopping
of Arab 2020 ("Training"; docs/methods.md §1.5) did in a run.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hemolab.atomic import atomic_write
from hemolab.checkpoint import finite_or_none

HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds")


@dataclass
class History:
    """What happened in each epoch of :func:`fit`, plus how the run ended.

    Attributes:
        rows: one dict per epoch with :data:`HISTORY_COLUMNS` (``epoch`` counts from 1).
        best_epoch: the epoch with the best monitored value (its weights are in ``best.pt``): the lowest
            validation loss (the paper), or the highest validation Dice (``monitor="val_dice"``).
        best_val_loss: the validation loss of that epoch.
        best_val_dice: the validation Dice of that epoch.
        monitor: ``"val_loss"`` or ``"val_dice"``: what chose the best epoch and drove the schedule.
        stopped_early: whether early stopping ended the run.
        lr_reductions: the epochs after which the learning rate was lowered.
        run_dir: where the checkpoints and ``history.csv`` are.
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float = math.inf
    best_val_dice: float = math.nan
    stopped_early: bool = False
    lr_reductions: list[int] = field(default_factory=list)
    run_dir: Path | None = None
    monitor: str = "val_loss"

    def column(self, name: str) -> list[float]:
        """One column of the history, e.g. ``history.column("val_loss")``."""
        return [row[name] for row in self.rows]

    @property
    def epochs(self) -> int:
        """Number of epochs run so far."""
        return len(self.rows)

    #: One list per column, e.g. ``history.val_loss`` (the same as ``history.column("val_loss")``).
    train_loss = property(lambda self: self.column("train_loss"))
    val_loss = property(lambda self: self.column("val_loss"))
    val_dice = property(lambda self: self.column("val_dice"))
    lr = property(lambda self: self.column("lr"))

    @property
    def seconds(self) -> float:
        """Total training time over all epochs (including those of an earlier, resumed run)."""
        return float(sum(self.column("seconds")))

    def to_frame(self):
        """The history as a :class:`pandas.DataFrame` (one row per epoch)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(HISTORY_COLUMNS))

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write the history to a CSV file (atomically)."""

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(HISTORY_COLUMNS))
                writer.writeheader()
                for row in self.rows:
                    writer.writerow({k: row[k] for k in HISTORY_COLUMNS})

        return atomic_write(path, write)

    def state_dict(self) -> dict[str, Any]:
        """Primitive values only, for a ``weights_only`` checkpoint."""
        return {
            "rows": [{k: float(r[k]) for k in HISTORY_COLUMNS} for r in self.rows],
            "best_epoch": self.best_epoch,
            "best_val_loss": finite_or_none(self.best_val_loss),
            "best_val_dice": finite_or_none(self.best_val_dice),
            "stopped_early": self.stopped_early,
            "lr_reductions": list(self.lr_reductions),
            "monitor": self.monitor,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], run_dir: Path | None = None) -> History:
        rows = [dict(r) for r in state.get("rows", [])]
        for r in rows:
            r["epoch"] = int(r["epoch"])
        best = state.get("best_val_loss")
        dice = state.get("best_val_dice")
        return cls(
            rows=rows,
            best_epoch=state.get("best_epoch"),
            best_val_loss=math.inf if best is None else float(best),
            best_val_dice=math.nan if dice is None else float(dice),
            stopped_early=bool(state.get("stopped_early", False)),
            lr_reductions=[int(e) for e in state.get("lr_reductions", [])],
            run_dir=run_dir,
            monitor=str(state.get("monitor", "val_loss")),
        )

    def summary(self) -> str:
        """One line: epochs, best epoch and its validation loss / Dice, early stop, time."""
        how = "stopped early" if self.stopped_early else "ran to the epoch limit"
        lrs = self.lr
        if self.lr_reductions:
            schedule = f"learning rate lowered after epochs {self.lr_reductions}"
        elif lrs and lrs[-1] < lrs[0]:  # a schedule that lowers it every epoch (cosine)
            schedule = f"learning rate {lrs[0]:.2g} -> {lrs[-1]:.2g}"
        else:
            schedule = "learning rate never lowered"
        return (
            f"{self.epochs} epochs ({how}); best epoch {self.best_epoch}: validation loss "
            f"{self.best_val_loss:.4f}, validation Dice {self.best_val_dice:.3f}; {schedule}; {self.seconds:.1f} s"
        )


def describe_schedule(
    history: History,
    *,
    lr_patience: int,
    stop_patience: int,
    max_epochs: int,
    lr_decay: str = "plateau",
    kept_epoch: int | None = None,
) -> str:
    """Say in words what the learning-rate schedule and early stopping did in a run (from its numbers).

    Args:
        history: the run's :class:`History`.
        lr_patience, stop_patience, max_epochs, lr_decay: the settings it ran with
            (:class:`hemolab.training.engine.Schedule`).
        kept_epoch: the epoch whose weights ``best.pt`` finally holds, when it was chosen after training
            (:func:`hemolab.training.threshold.tune_threshold` with snapshots); ``None``: the best epoch.

    Returns:
        A few sentences, e.g. for a notebook.
    """
    n = history.epochs
    what = "validation loss" if history.monitor == "val_loss" else "validation Dice"
    parts = []
    lrs = history.lr
    if lr_decay == "cosine" and lrs:
        parts.append(
            f"The learning rate fell along a half cosine from {lrs[0]:.2g} to {lrs[-1]:.2g} by epoch {n} (a CPU "
            "profile's choice; Arab 2020 halves it on a plateau), so no halving is marked."
        )
    elif lr_decay == "constant" and lrs:
        parts.append(f"The learning rate stayed at {lrs[0]:.2g} (Patel 2019).")
    elif history.lr_reductions:
        epochs = ", ".join(str(e) for e in history.lr_reductions)
        parts.append(
            f"The learning rate was halved after epoch(s) {epochs}: each time the {what} had not improved "
            f"for {lr_patience} epochs (dotted lines in the plot)."
        )
    elif n <= lr_patience:
        parts.append(
            f"With only {n} epochs the learning rate could not be halved (that needs {lr_patience} "
            "epochs without improvement); the small and full profiles run long enough to show it."
        )
    else:
        parts.append(
            f"The learning rate was never halved: the {what} never went {lr_patience} epochs without improving."
        )
    if history.stopped_early:
        parts.append(
            f"Training stopped early at epoch {n}, {stop_patience} epochs after the best epoch {history.best_epoch}; "
            "the weights of the best epoch are kept."
        )
    elif n < stop_patience:
        parts.append(
            f"Early stopping needs {stop_patience} epochs without improvement, more than the {n} epochs run "
            f"(limit {max_epochs}), so training ran to its limit; the best epoch was {history.best_epoch}."
        )
    else:
        parts.append(
            f"Training ran to its limit of {max_epochs} epochs without stopping early; the best epoch was "
            f"{history.best_epoch} (its weights went to best.pt)."
        )
    if kept_epoch is not None and kept_epoch != history.best_epoch:
        parts.append(
            f"After training, the weights of epoch {kept_epoch} replaced them: among the best epoch and the late "
            "epochs kept as snapshots, its masks of the whole validation scans were best at its own threshold."
        )
    return " ".join(parts)
