"""The learning-rate schedule and early-stopping settings of the shared training loop (:mod:`hemolab.training.engine`).

Arab 2020, Methods, "Training" (docs/methods.md §1.5): the learning rate is halved after ``lr_patience``
epochs without improvement and training stops after ``stop_patience``. Patel 2019 keeps the rate constant
(docs/methods.md §2.4); the CPU recipe of the Patel network anneals it along a half cosine (§5.2).
:class:`Schedule` holds the settings, :func:`make_scheduler` builds the matching
:mod:`torch.optim.lr_scheduler` object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hemolab.errors import HemolabError

MONITORS: tuple[str, ...] = ("val_loss", "val_dice")
#: How the learning rate changes over a run: halved on a plateau (Arab 2020), kept constant (Patel 2019),
#: or annealed along a half cosine to zero at ``max_epochs`` (a CPU profile's choice, docs/methods.md §5.2).
LR_DECAYS: tuple[str, ...] = ("plateau", "constant", "cosine")


def check_lr_decay(value: str) -> str:
    """``value`` if it is one of :data:`LR_DECAYS`.

    Raises:
        HemolabError: naming the schedules there are.
    """
    if value not in LR_DECAYS:
        raise HemolabError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, got {value!r}")
    return value


class SnapshotChoice:
    """What the training settings of both networks share about choosing the kept epoch (a mixin).

    A subclass is a frozen dataclass with the fields ``profile``, ``max_epochs``, ``tune_threshold``,
    ``lr_decay``, ``snapshot_every`` and ``blood_free_calibration``. With ``snapshot_every > 0`` (and the threshold tuned), the weights of every
    ``snapshot_every``-th epoch of the second half of the run are kept besides the best epoch, and
    :func:`hemolab.training.threshold.tune_threshold` keeps the one best at its own threshold on the
    whole validation scans (docs/methods.md §5.1-5.2).
    """

    profile: str
    max_epochs: int
    tune_threshold: bool
    lr_decay: str
    snapshot_every: int
    blood_free_calibration: int

    @property
    def snapshot_epochs(self) -> list[int]:
        """The epochs whose weights are kept as candidates (every ``snapshot_every``-th of the second half)."""
        if self.snapshot_every <= 0 or not self.tune_threshold:
            return []
        return [
            e
            for e in range(1, self.max_epochs + 1)
            if e > self.max_epochs / 2 and e % self.snapshot_every == 0
        ]

    @staticmethod
    def check_schedule_overrides(clean: dict) -> dict:
        """``clean`` with its ``lr_decay`` checked and ``snapshot_every`` / ``blood_free_calibration`` >= 0.

        Raises:
            HemolabError: for an unknown schedule or a negative ``snapshot_every`` or ``blood_free_calibration``.
        """
        if "lr_decay" in clean:
            clean["lr_decay"] = check_lr_decay(clean["lr_decay"])
        if int(clean.get("snapshot_every", 0)) < 0:
            raise HemolabError(
                f"snapshot_every must be 0 (none) or a positive epoch step, got {clean['snapshot_every']}"
            )
        if int(clean.get("blood_free_calibration", 0)) < 0:
            raise HemolabError(
                f"blood_free_calibration must be a number of scans >= 0, got {clean['blood_free_calibration']}"
            )
        return clean


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule and early stopping (Arab 2020, "Training": halving on a plateau).

    Attributes:
        max_epochs: the epoch limit. lr_patience: epochs without improvement before the learning rate
        is multiplied by ``lr_factor``. stop_patience: epochs without improvement before stopping.
        monitor: ``"val_loss"`` (the paper) or ``"val_dice"``.
        lr_decay: ``"plateau"`` (Arab 2020: ``lr_patience`` / ``lr_factor`` apply), ``"constant"``
            (Patel 2019) or ``"cosine"`` (from the optimiser's rate down to zero at ``max_epochs``).
    """

    max_epochs: int
    lr_patience: int = 10
    lr_factor: float = 0.5
    stop_patience: int = 50
    monitor: str = "val_loss"
    lr_decay: str = "plateau"

    def __post_init__(self) -> None:
        if int(self.max_epochs) < 1:
            raise HemolabError(f"max_epochs must be at least 1, got {self.max_epochs}")
        if self.lr_patience < 0 or self.stop_patience < 1 or not 0 < self.lr_factor < 1:
            raise HemolabError(
                f"need lr_patience >= 0, stop_patience >= 1 and 0 < lr_factor < 1; got {self.lr_patience}, "
                f"{self.stop_patience}, {self.lr_factor}"
            )
        if self.monitor not in MONITORS:
            raise HemolabError(f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        check_lr_decay(self.lr_decay)

    @property
    def scheduler_patience(self) -> int:
        """The ``patience`` of :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` that halves the rate AFTER
        ``lr_patience`` epochs without improvement, as Keras' ``ReduceLROnPlateau`` (the paper's code) and
        the early stopping here count: PyTorch's lowers it after ``patience + 1``."""
        return max(0, int(self.lr_patience) - 1)

    @property
    def mode(self) -> str:
        """``"min"`` for a loss, ``"max"`` for a Dice."""
        return "min" if self.monitor == "val_loss" else "max"


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule):
    """The :mod:`torch.optim.lr_scheduler` object of ``schedule.lr_decay``."""
    if schedule.lr_decay == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=schedule.mode,
            factor=schedule.lr_factor,
            patience=schedule.scheduler_patience,
            threshold=0.0,
        )  # threshold 0: "improved" means strictly better, the same test as early stopping
    if schedule.lr_decay == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=schedule.max_epochs, eta_min=0.0)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
