"""The training loop shared by CNN-DS and the Patel 3D CNN: a small trainer with hooks, and :func:`fit`.

Implements the schedule of Arab et al. 2020, Methods, "Training" (docs/methods.md §1.5):

* the learning rate is halved when the monitored validation value has not improved for ``lr_patience``
  = 10 epochs (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`, ``factor=0.5``);
* training stops early after ``stop_patience`` = 50 epochs without improvement;
* the weights of the best epoch are kept (``run_dir/best.pt``).

The paper monitors the validation loss; ``monitor="val_dice"`` monitors the validation Dice instead (a
profile's choice, e.g. when the loss on a few validation scans is dominated by the background).

:class:`Trainer` is the loop cut into its steps -- :meth:`~Trainer.start` (a new run, or resume one),
:meth:`~Trainer.train_epoch`, :meth:`~Trainer.validate`, :meth:`~Trainer.end_epoch` (schedule, best
epoch, checkpoints, history) -- and :class:`Hook` objects are called between them (e.g. Patel's
batch-norm recalibration before each validation). :func:`fit` is the one call the notebooks make.

Engineering around it: ``run_dir/last.pt`` is written after every epoch with the optimizer, scheduler,
gradient-scaler and random-generator states and the history, so an interrupted run continues where it
stopped (``resume=True``); a per-epoch history goes to ``run_dir/history.csv``; mixed precision
(:func:`torch.autocast` + :class:`torch.amp.GradScaler`) on CUDA, bfloat16 autocast on a CPU that runs it
natively when asked; ``tqdm`` progress bars; an optional live loss plot in notebooks.

Data contract: loaders yield dicts with tensors ``"image"`` ``(B, 1, x, y, z)``, ``"label"`` and
optionally ``"weight"``; ``loss_fn(logits, batch) -> Tensor``; ``metric_fn(logits, batch) -> float``.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hemolab import metrics
from hemolab.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointMeta,
    atomic_torch_save,
    finite_or_none,
    read_checkpoint,
    save_checkpoint,
    to_primitive,
)
from hemolab.config import get_device, seed_everything
from hemolab.errors import HemolabError, HemolabExistsError
from hemolab.models.inference import center_crop, foreground_probability
from hemolab.training.history import History
from hemolab.training.live_plot import LivePlot
from hemolab.training.schedule import Schedule, make_scheduler

LossFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
MetricFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], float]


class StopTraining(Exception):
    """Raise from a callback to end :func:`fit` cleanly after the current epoch (state is saved)."""


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


def dice_metric(logits: torch.Tensor, batch: Mapping[str, torch.Tensor], threshold: float = 0.5) -> float:
    """Default validation metric: the hard Dice (:func:`hemolab.metrics.dice`) of the thresholded prediction.

    The label is cropped to the output's size (valid-convolution networks); averaged over the batch; a
    case where both masks are empty counts as 1 (docs/methods.md §4).
    """
    pred = (foreground_probability(logits) >= threshold)[:, 0].cpu().numpy()
    label = batch["label"]
    label = label[:, 0] if label.ndim == logits.ndim else label
    ref = center_crop(label.detach().cpu(), pred.shape[-3:]).numpy() > 0.5
    return float(np.mean([metrics.dice(p, r) for p, r in zip(pred, ref, strict=True)]))


class Hook:
    """Something to do at fixed points of every epoch; override what you need.

    ``before_validation`` runs after the epoch's training pass, ``after_epoch`` after its checkpoints
    are written; raise :class:`StopTraining` from ``after_epoch`` to end the run cleanly.
    """

    def before_validation(self, trainer: Trainer) -> None:
        """Called with the trainer after the training pass of each epoch."""

    def after_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Called after each epoch's checkpoints and history are written."""


class Snapshots(Hook):
    """Keep the weights of chosen epochs as checkpoints ``run_dir/snapshots/epoch-NNN.pt``.

    Each snapshot's meta names its own epoch as ``best_epoch`` (with that epoch's validation values), so
    it can be evaluated and, if chosen, used like ``best.pt`` (:func:`hemolab.training.threshold.tune_threshold`).

    Args:
        epochs: the epochs to keep.
    """

    def __init__(self, epochs: Iterable[int]):
        self.epochs = {int(e) for e in epochs}

    @staticmethod
    def folder(run_dir: str | os.PathLike) -> Path:
        """Where a run's snapshots go."""
        return Path(run_dir) / "snapshots"

    @classmethod
    def paths(cls, run_dir: str | os.PathLike) -> list[Path]:
        """The snapshots a run holds, in epoch order."""
        return sorted(cls.folder(run_dir).glob("epoch-*.pt"))

    def after_epoch(self, trainer: Trainer, epoch: int) -> None:
        if epoch not in self.epochs:
            return
        row = trainer.history.rows[-1]
        meta = trainer._meta(epoch)
        values = {"best_epoch": epoch, "best_val_loss": finite_or_none(row["val_loss"]),
                  "best_val_dice": finite_or_none(row["val_dice"])}  # fmt: skip
        meta = meta.replace(**values) if isinstance(meta, CheckpointMeta) else {**meta, **values}
        save_checkpoint(
            self.folder(trainer.run_dir) / f"epoch-{epoch:03d}.pt", trainer.model, meta, overwrite=True
        )


class _CallbackHook(Hook):
    def __init__(self, fn: Callable[[int, History], None]):
        self.fn = fn

    def after_epoch(self, trainer: Trainer, epoch: int) -> None:
        self.fn(epoch, trainer.history)


class Trainer:
    """The training loop of :func:`fit`, one step per method (see the module docstring).

    Args:
        model, optimizer, loss_fn, metric_fn: as for :func:`fit`.
        schedule: the :class:`Schedule`.
        run_dir: folder for ``best.pt``, ``last.pt`` and ``history.csv``.
        device: a torch device. amp: mixed precision on CUDA. cpu_bf16: bfloat16 autocast on the CPU.
        channels_last: the channels-last 3D memory layout for model and images.
        meta: the checkpoint meta written with every checkpoint.
        hooks: :class:`Hook` objects.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        *,
        schedule: Schedule,
        run_dir: Path,
        metric_fn: MetricFn | None = dice_metric,
        device: torch.device,
        amp: bool = False,
        cpu_bf16: bool = False,
        channels_last: bool = False,
        meta: CheckpointMeta | Mapping[str, Any] | None = None,
        hooks: Sequence[Hook] = (),
    ):
        self.model, self.optimizer, self.loss_fn, self.metric_fn = model, optimizer, loss_fn, metric_fn
        self.schedule, self.run_dir, self.device = schedule, Path(run_dir), device
        self.amp = bool(amp and device.type == "cuda")
        self.cpu_bf16 = bool(cpu_bf16 and device.type == "cpu")
        self.channels_last = channels_last
        self.meta = meta
        self.hooks = list(hooks)
        self.best_path = self.run_dir / "best.pt"
        self.last_path = self.run_dir / "last.pt"
        self.csv_path = self.run_dir / "history.csv"
        self.history = History(run_dir=self.run_dir, monitor=schedule.monitor)
        self.since_best = 0
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last_3d)
        self.scheduler = make_scheduler(optimizer, schedule)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)

    # ------------------------------------------------------------------------------------- start
    def start(self, *, seed: int, resume: bool, overwrite: bool) -> bool:
        """Begin a new run (seeded, stale files removed) or continue the one in ``run_dir``; whether it resumed.

        Raises:
            HemolabExistsError: if ``run_dir`` holds checkpoints and neither ``resume`` nor ``overwrite``.
            HemolabError: if ``last.pt`` holds a different network.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        existing = [p for p in (self.best_path, self.last_path) if p.exists()]
        if existing and not (resume or overwrite):
            raise HemolabExistsError(
                f"{self.run_dir} already holds checkpoints ({', '.join(p.name for p in existing)}): pass "
                "resume=True to continue that run, overwrite=True to start again, or choose another run_dir"
            )
        if self.last_path.exists() and resume and not overwrite:
            self._load_last()
            return True
        seed_everything(seed)
        for stale in (self.best_path, self.last_path, self.csv_path, *Snapshots.paths(self.run_dir)):
            if stale.exists():
                stale.unlink()
        return False

    def _load_last(self) -> None:
        state = read_checkpoint(self.last_path, device="cpu")
        try:
            self.model.load_state_dict(state["model_state"])
        except RuntimeError as exc:
            raise HemolabError(
                f"{self.last_path} holds a different network than the one given (cannot resume): {exc}; "
                "pass overwrite=True to start again or choose another run_dir"
            ) from exc
        self.model.to(self.device)
        started = state.get("lr_decay", "plateau")  # runs saved before lr_decay existed halved on plateaus
        if started != self.schedule.lr_decay:
            raise HemolabError(
                f"{self.last_path} is a run with lr_decay={started!r}, not {self.schedule.lr_decay!r} (cannot "
                "resume it with another schedule): pass overwrite=True to start again or choose another run_dir"
            )
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scheduler.load_state_dict(state["scheduler_state"])
        if self.schedule.lr_decay == "plateau":  # the settings given now apply
            self.scheduler.patience, self.scheduler.factor = (
                self.schedule.scheduler_patience,
                self.schedule.lr_factor,
            )
        if state.get("scaler_state"):
            self.scaler.load_state_dict(state["scaler_state"])
        self.history = History.from_state_dict(state["history"], run_dir=self.run_dir)
        self.since_best = int(state.get("since_best", 0))
        _set_rng_state(state["rng_state"])

    # ----------------------------------------------------------------------------------- epochs
    def _autocast(self):
        if self.amp:
            return torch.autocast("cuda")
        if self.cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _step(self, batch: Mapping[str, Any], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        batch = _to_device(batch, self.device, self.channels_last and train)
        with self._autocast():
            logits = self.model(batch["image"])
            loss = self.loss_fn(logits, batch)
        if not torch.isfinite(loss):
            raise HemolabError(
                f"the loss became {float(loss)} (not finite): lower the learning rate, or check the data "
                "(images scaled to [0, 1], labels binary)"
            )
        if train:
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.detach(), logits.detach()

    def train_epoch(self, loader: Iterable) -> float:
        """One pass over the training data, one optimiser step per batch; the mean loss."""
        self.model.train()
        losses = [float(self._step(batch, train=True)[0]) for batch in loader]
        if not losses:
            raise HemolabError("the training loader yielded no batch: the training set is empty")
        return float(np.mean(losses))

    def validate(self, loader: Iterable) -> tuple[float, float]:
        """The mean loss and mean ``metric_fn`` over the validation data (network in eval mode)."""
        self.model.eval()
        losses, values = [], []
        with torch.inference_mode():
            for batch in loader:
                loss, logits = self._step(batch, train=False)
                losses.append(float(loss))
                if self.metric_fn is not None:
                    values.append(float(self.metric_fn(logits.float(), batch)))
        if not losses:
            raise HemolabError("the validation loader yielded no batch: the validation set is empty")
        return float(np.mean(losses)), (float(np.mean(values)) if values else math.nan)

    def _improved(self, val_loss: float, val_dice: float) -> bool:
        h = self.history
        if self.schedule.monitor == "val_loss":
            return val_loss < h.best_val_loss
        return h.best_epoch is None or (math.isfinite(val_dice) and not val_dice <= h.best_val_dice)

    def end_epoch(
        self, epoch: int, train_loss: float, val_loss: float, val_dice: float, seconds: float
    ) -> bool:
        """Schedule, history, best epoch and checkpoints after an epoch; whether early stopping says stop."""
        h = self.history
        lr_used = float(self.optimizer.param_groups[0]["lr"])
        if self.schedule.lr_decay == "plateau":
            self.scheduler.step(val_loss if self.schedule.monitor == "val_loss" else val_dice)
            if float(self.optimizer.param_groups[0]["lr"]) < lr_used:
                h.lr_reductions.append(epoch)
        else:
            self.scheduler.step()
        h.rows.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
             "lr": lr_used, "seconds": seconds}
        )  # fmt: skip
        improved = self._improved(val_loss, val_dice)
        if improved:
            h.best_epoch, h.best_val_loss, h.best_val_dice = epoch, val_loss, val_dice
            self.since_best = 0
        else:
            self.since_best += 1
        h.stopped_early = self.since_best >= self.schedule.stop_patience
        meta = self._meta(epoch)
        if improved:
            save_checkpoint(self.best_path, self.model, meta, overwrite=True)
        self._save_last(meta)
        h.write_csv(self.csv_path)
        return h.stopped_early

    def _meta(self, epoch: int) -> CheckpointMeta | dict[str, Any]:
        h = self.history
        progress = {
            "best_epoch": h.best_epoch,
            "best_val_loss": finite_or_none(h.best_val_loss),
            "best_val_dice": finite_or_none(h.best_val_dice),
            "epochs_run": epoch,
        }
        if isinstance(self.meta, CheckpointMeta):
            return self.meta.replace(**progress)
        return {**dict(self.meta or {}), **progress}

    def _save_last(self, meta: CheckpointMeta | Mapping[str, Any]) -> None:
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "meta": meta.to_dict() if isinstance(meta, CheckpointMeta) else to_primitive(meta, "meta"),
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler_state": to_primitive(self.scheduler.state_dict(), "scheduler_state"),
                "lr_decay": self.schedule.lr_decay,
                "scaler_state": self.scaler.state_dict() if self.amp else None,
                "history": self.history.state_dict(),
                "since_best": self.since_best,
                "rng_state": _rng_state(),
            },
            self.last_path,
        )

    # -------------------------------------------------------------------------------------- run
    def run(self, train_loader: Iterable, val_loader: Iterable | None, *, progress: bool = True,
            live_plot: bool = False, resumed: bool = False) -> History:  # fmt: skip
        """Epochs from where the history ends to the limit or an early stop; the :class:`History`."""
        h, limit = self.history, self.schedule.max_epochs
        start_epoch = h.epochs + 1
        if h.stopped_early or start_epoch > limit:
            if progress:
                print(f"nothing to do: the run in {self.run_dir} already finished ({h.summary()})")
            return h
        if resumed and progress:
            print(f"resuming the run in {self.run_dir} at epoch {start_epoch}")
        plot = None
        if live_plot:
            plot = LivePlot(max_epochs=limit)
            plot.update(h)
        bar = tqdm(
            total=limit, initial=h.epochs, desc="epochs", unit="epoch", disable=not progress, leave=True
        )
        try:
            for epoch in range(start_epoch, limit + 1):
                t0 = time.perf_counter()
                train_loss = self.train_epoch(train_loader)
                for hook in self.hooks:
                    hook.before_validation(self)
                if val_loader is not None:
                    val_loss, val_dice = self.validate(val_loader)
                else:
                    val_loss, val_dice = train_loss, math.nan
                stop = self.end_epoch(epoch, train_loss, val_loss, val_dice, time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}", dice=f"{val_dice:.3f}",
                                lr=f"{h.rows[-1]['lr']:.1e}")  # fmt: skip
                if plot is not None:
                    plot.update(h)
                for hook in self.hooks:
                    try:
                        hook.after_epoch(self, epoch)
                    except StopTraining:
                        stop = True
                if stop:
                    break
        finally:
            bar.close()
            if plot is not None:
                plot.close()
        return h


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    train_loader: Iterable,
    val_loader: Iterable | None,
    *,
    max_epochs: int,
    run_dir: str | os.PathLike,
    metric_fn: MetricFn | None = dice_metric,
    lr_patience: int = 10,
    lr_factor: float = 0.5,
    stop_patience: int = 50,
    monitor: str = "val_loss",
    lr_decay: str = "plateau",
    device=None,
    amp: bool | None = None,
    cpu_bf16: bool = False,
    seed: int = 0,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    live_plot: bool = False,
    meta: CheckpointMeta | Mapping[str, Any] | None = None,
    hooks: Sequence[Hook] = (),
    callbacks: Sequence[Callable[[int, History], None]] = (),
    channels_last: bool = False,
) -> History:
    """Train ``model`` with the schedule of Arab 2020 (Methods, "Training"; docs/methods.md §1.5).

    Each epoch: one pass over ``train_loader`` (an optimiser step per batch), one over ``val_loader``;
    the learning rate is multiplied by ``lr_factor`` when the monitored value has not improved for
    ``lr_patience`` epochs (counted as Keras counts them, the paper's framework: the rate used from the
    next epoch on is lowered at the ``lr_patience``-th epoch without improvement; see
    :attr:`Schedule.scheduler_patience`); training stops after ``stop_patience``
    epochs without improvement. The best epoch is saved to ``run_dir/best.pt``; ``run_dir/last.pt``
    (everything needed to resume) and ``run_dir/history.csv`` are written after every epoch.

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
        monitor: ``"val_loss"`` (the paper) or ``"val_dice"`` (the validation metric, higher is better).
        lr_decay: ``"plateau"`` (the paper: ``lr_patience``, ``lr_factor``), ``"constant"`` or
            ``"cosine"`` (annealed to zero at ``max_epochs``); see :class:`Schedule`.
        device: ``None`` = CUDA if available, else CPU.
        amp: mixed precision; ``None`` = on for CUDA, off on the CPU.
        cpu_bf16: bfloat16 autocast when training on a CPU (about 2.5x faster per step where the CPU
            runs bfloat16 natively; ``benchmarks/README.md``).
        seed: seeds Python, NumPy and torch at the start of a new run.
        resume: if ``run_dir/last.pt`` exists, continue that run instead of refusing to start.
        overwrite: start afresh even though ``run_dir`` holds checkpoints (they are replaced).
        progress: show a tqdm progress bar.
        live_plot: in a notebook, show the loss curves updated after every epoch.
        meta: the :class:`~hemolab.checkpoint.CheckpointMeta` saved in every checkpoint (with the best
            epoch and its metrics filled in).
        hooks: :class:`Hook` objects called before each validation and after each epoch.
        callbacks: functions ``cb(epoch, history)`` called after each epoch; raise :class:`StopTraining`
            to end the run cleanly.
        channels_last: use the channels-last 3D memory layout for the model and the training images.

    Returns:
        The :class:`History` (``history.run_dir`` is ``run_dir``).

    Raises:
        HemolabExistsError: if ``run_dir`` holds checkpoints and neither ``resume`` nor ``overwrite``.
        HemolabError: for bad settings or a loss that is not finite.
    """
    schedule = Schedule(int(max_epochs), lr_patience, lr_factor, stop_patience, monitor, lr_decay)
    device = get_device(device) if not isinstance(device, torch.device) else device
    amp = (device.type == "cuda") if amp is None else bool(amp)
    trainer = Trainer(
        model, optimizer, loss_fn, schedule=schedule, run_dir=Path(run_dir), metric_fn=metric_fn,
        device=device, amp=amp, cpu_bf16=cpu_bf16, channels_last=channels_last, meta=meta,
        hooks=[*hooks, *(_CallbackHook(cb) for cb in callbacks)],
    )  # fmt: skip
    resumed = trainer.start(seed=seed, resume=resume, overwrite=overwrite)
    return trainer.run(train_loader, val_loader, progress=progress, live_plot=live_plot, resumed=resumed)
