"""The training loop shared by CNN-DS and the Patel 3D CNN.

Implements the schedule of Arab et al. 2020, Methods, "Training" (PAPERS.md §1):

* the learning rate is halved when the validation loss has not improved for ``lr_patience`` = 10 epochs
  (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`, ``factor=0.5``);
* training stops early after ``stop_patience`` = 50 epochs without improvement of the validation loss;
* the weights of the epoch with the lowest validation loss are kept (``run_dir/best.pt``).

Engineering around it: ``run_dir/last.pt`` is written after every epoch with the optimizer, scheduler,
gradient-scaler and random-generator states and the history, so an interrupted run continues where it
stopped (``resume=True``); a per-epoch history goes to ``run_dir/history.csv``; mixed precision
(:func:`torch.autocast` + :class:`torch.amp.GradScaler`) on CUDA; ``tqdm`` progress bars; an optional
live loss plot in notebooks.

Data contract: loaders yield dicts with tensors ``"image"`` ``(B, 1, x, y, z)``, ``"label"`` and
optionally ``"weight"``; ``loss_fn(logits, batch) -> Tensor``; ``metric_fn(logits, batch) -> float``.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hemolab.errors import HemolabError, HemolabExistsError
from hemolab.training.checkpoint import (
    atomic_torch_save,
    finite_or_none,
    read_checkpoint,
    save_checkpoint,
    to_primitive,
)

HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds")


@dataclass
class History:
    """What happened in each epoch of :func:`fit`, plus how the run ended.

    Attributes:
        rows: one dict per epoch with :data:`HISTORY_COLUMNS` (``epoch`` counts from 1).
        best_epoch: the epoch with the lowest validation loss (its weights are in ``best.pt``).
        best_val_loss: that loss.
        best_val_dice: the validation Dice of that epoch.
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

    def column(self, name: str) -> list[float]:
        """One column of the history, e.g. ``history.column("val_loss")``."""
        return [row[name] for row in self.rows]

    @property
    def epochs(self) -> int:
        """Number of epochs run so far."""
        return len(self.rows)

    @property
    def train_loss(self) -> list[float]:
        return self.column("train_loss")

    @property
    def val_loss(self) -> list[float]:
        return self.column("val_loss")

    @property
    def val_dice(self) -> list[float]:
        return self.column("val_dice")

    @property
    def lr(self) -> list[float]:
        return self.column("lr")

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
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(HISTORY_COLUMNS))
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: row[k] for k in HISTORY_COLUMNS})
        os.replace(tmp, path)
        return path

    def state_dict(self) -> dict[str, Any]:
        """Primitive values only, for a ``weights_only`` checkpoint."""
        return {
            "rows": [{k: float(r[k]) for k in HISTORY_COLUMNS} for r in self.rows],
            "best_epoch": self.best_epoch,
            "best_val_loss": finite_or_none(self.best_val_loss),
            "best_val_dice": finite_or_none(self.best_val_dice),
            "stopped_early": self.stopped_early,
            "lr_reductions": list(self.lr_reductions),
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
        )

    def summary(self) -> str:
        """One line: epochs, best epoch and its validation loss / Dice, early stop, time."""
        how = "stopped early" if self.stopped_early else "ran to the epoch limit"
        return (
            f"{self.epochs} epochs ({how}); best epoch {self.best_epoch}: validation loss "
            f"{self.best_val_loss:.4f}, validation Dice {self.best_val_dice:.3f}; "
            f"learning rate lowered after epochs {self.lr_reductions or 'none'}; {self.seconds:.1f} s"
        )


class StopTraining(Exception):
    """Raise from a callback to end :func:`fit` cleanly after the current epoch (state is saved)."""


def center_crop_like(target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Crop ``target`` (B, C, x, y, z) centrally to the spatial size of ``like`` (valid-convolution outputs)."""
    if target.shape[2:] == like.shape[2:]:
        return target
    slices = [slice(None), slice(None)]
    for t, s in zip(target.shape[2:], like.shape[2:], strict=True):
        if s > t:
            raise HemolabError(
                f"cannot crop a label of size {tuple(target.shape[2:])} to {tuple(like.shape[2:])}"
            )
        start = (t - s) // 2
        slices.append(slice(start, start + s))
    return target[tuple(slices)]


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Foreground probability (B, 1, ...) from logits: sigmoid for 1 channel, softmax[:, 1] for 2."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=1)[:, 1:2]


def dice_metric(logits: torch.Tensor, batch: Mapping[str, torch.Tensor], threshold: float = 0.5) -> float:
    """Default validation metric: the hard Dice 2|A∩B|/(|A|+|B|) of the thresholded prediction (PAPERS.md §4).

    Averaged over the batch; a case where both masks are empty counts as 1.
    """
    pred = probabilities(logits) >= threshold
    ref = center_crop_like(batch["label"].to(pred.device), pred)
    ref = (ref[:, :1] > 0.5) if ref.shape[1] == 1 else (ref.argmax(1, keepdim=True) > 0)
    dims = tuple(range(1, pred.ndim))
    inter = (pred & ref).sum(dims).float()
    total = pred.sum(dims).float() + ref.sum(dims).float()
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
    return float(dice.mean())


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": to_primitive(random.getstate()),
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["key"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    out = {
        k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()
    }
    if channels_last and isinstance(out.get("image"), torch.Tensor) and out["image"].ndim == 5:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last_3d)
    return out


def _run_epoch(
    model,
    loader,
    loss_fn,
    device,
    *,
    optimizer=None,
    scaler=None,
    amp=False,
    metric_fn=None,
    bar=None,
    channels_last=False,
) -> tuple[float, float]:
    """One pass over ``loader``: trains when ``optimizer`` is given. Returns (mean loss, mean metric)."""
    train = optimizer is not None
    model.train(train)
    losses: list[float] = []
    metrics: list[float] = []
    ctx = torch.enable_grad() if train else torch.inference_mode()
    with ctx:
        for batch in loader:
            batch = _to_device(batch, device, channels_last)
            with torch.autocast(device.type, enabled=amp):
                logits = model(batch["image"])
                loss = loss_fn(logits, batch)
            if not torch.isfinite(loss):
                raise HemolabError(
                    f"the loss became {float(loss)} (not finite): lower the learning rate, or check the data "
                    "(images scaled to [0, 1], labels binary)"
                )
            if train:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            losses.append(float(loss.detach()))
            if metric_fn is not None:
                metrics.append(float(metric_fn(logits.detach().float(), batch)))
            if bar is not None:
                bar.update(1)
    if not losses:
        raise HemolabError("a data loader yielded no batch: the training or validation set is empty")
    return float(np.mean(losses)), (float(np.mean(metrics)) if metrics else math.nan)


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor],
    train_loader: Iterable,
    val_loader: Iterable | None,
    *,
    max_epochs: int,
    run_dir: str | os.PathLike,
    metric_fn: Callable[[torch.Tensor, Mapping[str, torch.Tensor]], float] | None = dice_metric,
    lr_patience: int = 10,
    lr_factor: float = 0.5,
    stop_patience: int = 50,
    device=None,
    amp: bool | None = None,
    seed: int = 0,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    live_plot: bool = False,
    meta: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[int, History], None]] = (),
    channels_last: bool = False,
    before_validation: Callable[[torch.nn.Module], None] | None = None,
) -> History:
    """Train ``model`` with the schedule of Arab 2020 (Methods, "Training"; PAPERS.md §1).

    Each epoch: one pass over ``train_loader`` (Adam step per batch in the paper), one over
    ``val_loader``; the learning rate is multiplied by ``lr_factor`` when the validation loss has not
    improved for ``lr_patience`` epochs (:class:`~torch.optim.lr_scheduler.ReduceLROnPlateau`: the
    reduction happens at the ``lr_patience + 1``-th epoch without improvement); training stops after
    ``stop_patience`` epochs without improvement. The epoch with the lowest validation loss is saved to
    ``run_dir/best.pt``; ``run_dir/last.pt`` (everything needed to resume) and ``run_dir/history.csv``
    are written after every epoch.

    Args:
        model: the network; its forward returns logits.
        optimizer: e.g. ``torch.optim.Adam(model.parameters(), lr=5e-4)``.
        loss_fn: ``loss_fn(logits, batch) -> Tensor``.
        train_loader: yields dicts with ``"image"``, ``"label"`` (and optionally ``"weight"``) tensors.
        val_loader: the same for the validation set; ``None`` monitors the training loss instead.
        max_epochs: the epoch limit (the paper: 500 iterations).
        run_dir: folder for ``best.pt``, ``last.pt`` and ``history.csv``.
        metric_fn: ``metric_fn(logits, batch) -> float`` on validation batches (default: hard Dice);
            ``None`` to skip it.
        lr_patience: epochs without improvement before the learning rate is lowered (paper: 10).
        lr_factor: the factor it is multiplied by (paper: 0.5).
        stop_patience: epochs without improvement before stopping (paper: 50).
        device: ``None`` = CUDA if available, else CPU.
        amp: mixed precision; ``None`` = on for CUDA, off on the CPU.
        seed: seeds Python, NumPy and torch at the start of a new run.
        resume: if ``run_dir/last.pt`` exists, continue that run (its history continues) instead of
            refusing to start.
        overwrite: start afresh even though ``run_dir`` holds checkpoints (they are replaced).
        progress: show a tqdm progress bar.
        live_plot: in a notebook, show the loss curves updated after every epoch.
        meta: what :func:`~hemolab.training.load_checkpoint` needs to rebuild the model (``arch``,
            ``model_kwargs``) and what inference needs (``profile``, ``grid_size``, ...); saved in
            every checkpoint together with the best epoch and its metrics.
        callbacks: functions ``cb(epoch, history)`` called after each epoch (after the checkpoints
            are written); raise :class:`StopTraining` to end the run cleanly.
        channels_last: use the channels-last 3D memory layout for the model and the images (the
            oneDNN convolutions on a CPU run about twice as fast with it; same numbers).
        before_validation: ``fn(model)`` called after each epoch's training pass and before its
            validation pass, e.g. to recompute batch-norm statistics
            (:func:`hemolab.patches.recalibrate_batch_norm`).

    Returns:
        The :class:`History` (``history.run_dir`` is ``run_dir``).

    Raises:
        HemolabExistsError: if ``run_dir`` holds checkpoints and neither ``resume`` nor ``overwrite``.
        HemolabError: for bad settings or a loss that is not finite.
    """
    from tqdm.auto import tqdm

    from hemolab.config import get_device, seed_everything

    if int(max_epochs) < 1:
        raise HemolabError(f"max_epochs must be at least 1, got {max_epochs}")
    if lr_patience < 0 or stop_patience < 1 or not 0 < lr_factor < 1:
        raise HemolabError(
            f"need lr_patience >= 0, stop_patience >= 1 and 0 < lr_factor < 1; got {lr_patience}, "
            f"{stop_patience}, {lr_factor}"
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path, csv_path = run_dir / "best.pt", run_dir / "last.pt", run_dir / "history.csv"
    existing = [p for p in (best_path, last_path) if p.exists()]
    if existing and not (resume or overwrite):
        raise HemolabExistsError(
            f"{run_dir} already holds checkpoints ({', '.join(p.name for p in existing)}): pass resume=True to "
            "continue that run, overwrite=True to start again, or choose another run_dir"
        )
    device = get_device(device) if not isinstance(device, torch.device) else device
    amp = (device.type == "cuda") if amp is None else bool(amp and device.type == "cuda")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    # optimizer state created before .to(device) would sit on the wrong device; Adam creates it lazily.
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=lr_factor, patience=lr_patience, threshold=0.0
    )  # threshold 0: "improved" means strictly lower, the same test as early stopping below
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    meta = to_primitive(dict(meta or {}), "meta")

    history = History(run_dir=run_dir)
    since_best = 0
    resumed = False
    if last_path.exists() and resume and not overwrite:
        state = read_checkpoint(last_path, device="cpu")
        try:
            model.load_state_dict(state["model_state"])
        except RuntimeError as exc:
            raise HemolabError(
                f"{last_path} holds a different network than the one given (cannot resume): {exc}; "
                "pass overwrite=True to start again or choose another run_dir"
            ) from exc
        model.to(device)
        optimizer.load_state_dict(state["optimizer_state"])
        scheduler.load_state_dict(state["scheduler_state"])
        scheduler.patience, scheduler.factor = lr_patience, lr_factor  # the settings given now apply
        if state.get("scaler_state"):
            scaler.load_state_dict(state["scaler_state"])
        history = History.from_state_dict(state["history"], run_dir=run_dir)
        since_best = int(state.get("since_best", 0))
        _set_rng_state(state["rng_state"])
        resumed = True
    else:
        seed_everything(seed)
        for stale in (best_path, last_path, csv_path):
            if stale.exists():
                stale.unlink()

    start_epoch = history.epochs + 1
    if history.stopped_early or start_epoch > max_epochs:
        if progress:
            print(f"nothing to do: the run in {run_dir} already finished ({history.summary()})")
        return history
    if resumed and progress:
        print(f"resuming the run in {run_dir} at epoch {start_epoch}")

    plot = None
    if live_plot:
        from hemolab.training.live_plot import LivePlot

        plot = LivePlot(max_epochs=max_epochs)
        plot.update(history)

    bar = tqdm(
        total=max_epochs,
        initial=history.epochs,
        desc="epochs",
        unit="epoch",
        disable=not progress,
        leave=True,
    )
    try:
        for epoch in range(start_epoch, max_epochs + 1):
            t0 = time.perf_counter()
            train_loss, _ = _run_epoch(
                model,
                train_loader,
                loss_fn,
                device,
                optimizer=optimizer,
                scaler=scaler,
                amp=amp,
                channels_last=channels_last,
            )
            if before_validation is not None:
                before_validation(model)
            if val_loader is not None:
                val_loss, val_dice = _run_epoch(
                    model, val_loader, loss_fn, device, amp=amp, metric_fn=metric_fn
                )
            else:
                val_loss, val_dice = train_loss, math.nan
            lr_used = float(optimizer.param_groups[0]["lr"])
            scheduler.step(val_loss)
            if float(optimizer.param_groups[0]["lr"]) < lr_used:
                history.lr_reductions.append(epoch)
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_dice": val_dice,
                "lr": lr_used,
                "seconds": time.perf_counter() - t0,
            }
            history.rows.append(row)
            improved = val_loss < history.best_val_loss
            if improved:
                history.best_epoch, history.best_val_loss, history.best_val_dice = epoch, val_loss, val_dice
                since_best = 0
            else:
                since_best += 1
            if since_best >= stop_patience:
                history.stopped_early = True
            best_meta = dict(
                meta,
                best_epoch=history.best_epoch,
                best_val_loss=finite_or_none(history.best_val_loss),
                best_val_dice=finite_or_none(history.best_val_dice),
                epochs_run=epoch,
            )
            if improved:
                save_checkpoint(best_path, model, best_meta, overwrite=True)
            atomic_torch_save(
                {
                    "format": "hemolab-checkpoint",
                    "version": 1,
                    "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "meta": best_meta,
                    "optimizer_state": optimizer.state_dict(),
                    "scheduler_state": to_primitive(scheduler.state_dict(), "scheduler_state"),
                    "scaler_state": scaler.state_dict() if amp else None,
                    "history": history.state_dict(),
                    "since_best": since_best,
                    "rng_state": _rng_state(),
                },
                last_path,
            )
            history.write_csv(csv_path)
            bar.update(1)
            bar.set_postfix(
                train=f"{train_loss:.3f}", val=f"{val_loss:.3f}", dice=f"{val_dice:.3f}", lr=f"{lr_used:.1e}"
            )
            if plot is not None:
                plot.update(history)
            stop = history.stopped_early
            for cb in callbacks:
                try:
                    cb(epoch, history)
                except StopTraining:
                    stop = True
            if stop:
                break
    finally:
        bar.close()
        if plot is not None:
            plot.close()
    return history


def describe_schedule(history: History, *, lr_patience: int, stop_patience: int, max_epochs: int) -> str:
    """Say in words what the learning-rate schedule and early stopping did in a run (from its numbers).

    Args:
        history: the run's :class:`History`.
        lr_patience, stop_patience, max_epochs: the settings it ran with.

    Returns:
        One or two sentences, e.g. for a notebook.
    """
    n = history.epochs
    parts = []
    if history.lr_reductions:
        epochs = ", ".join(str(e) for e in history.lr_reductions)
        parts.append(
            f"The learning rate was halved after epoch(s) {epochs}: each time the validation loss had not improved "
            f"for more than {lr_patience} epochs (dotted lines in the plot)."
        )
    elif n <= lr_patience:
        parts.append(
            f"With only {n} epochs the learning rate could not be halved (that needs more than {lr_patience} "
            "epochs without improvement); the small and full profiles run long enough to show it."
        )
    else:
        parts.append(
            f"The learning rate was never halved: the validation loss never went {lr_patience + 1} epochs without improving."
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
            f"{history.best_epoch} (its weights are kept)."
        )
    return " ".join(parts)
