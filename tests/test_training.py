"""The training engine (hemolab.training): learning, schedule, checkpoints, resuming, refusing to overwrite."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hemolab.architectures import build_model, ensure_checkpoint, load_checkpoint
from hemolab.checkpoint import CheckpointMeta, read_checkpoint, save_checkpoint
from hemolab.errors import HemolabError, HemolabExistsError, HemolabFileError
from hemolab.training import (
    History,
    Hook,
    StopTraining,
    cnnds_settings,
    dice_metric,
    fit,
)


# --------------------------------------------------------------------------------------------- helpers
class TinyNet(torch.nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv3d(1, width, 3, padding=1),
            torch.nn.LeakyReLU(0.01),
            torch.nn.Conv3d(width, 1, 3, padding=1),
        )

    def forward(self, x):
        return self.net(x)


def soft_dice_loss(logits, batch):
    p = torch.sigmoid(logits)
    g = batch["label"]
    return 1 - (2 * (p * g).sum() + 1e-5) / (p.sum() + g.sum() + 1e-5)


def one_case(seed: int = 0, size=(16, 16, 8)):
    """A bright blob on a darker, noisy background, like a bleed on a CNN-DS input in [0, 1]."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s) for s in size], indexing="ij")
    label = ((x - 8) ** 2 + (y - 7) ** 2 + 4 * (z - 4) ** 2 < 30).astype(np.float32)
    image = 0.35 + 0.3 * label + 0.03 * rng.standard_normal(size).astype(np.float32)
    return {"image": torch.from_numpy(image)[None, None], "label": torch.from_numpy(label)[None, None]}


class ConstantLoss:
    """A loss whose validation value is a scripted sequence (forces the LR schedule and early stop)."""

    def __init__(self, val_values):
        self.val_values = list(val_values)
        self.i = 0

    def __call__(self, logits, batch):
        loss = (logits * 0).sum() + 1.0  # keeps a gradient path
        if not torch.is_grad_enabled():  # validation pass
            v = self.val_values[min(self.i, len(self.val_values) - 1)]
            self.i += 1
            return loss * 0 + v
        return loss


def _fit(model, loss, data, run_dir, **kw):
    opt = torch.optim.Adam(model.parameters(), lr=kw.pop("lr", 1e-2))
    kw.setdefault("max_epochs", 5)
    kw.setdefault("progress", False)
    repeat = kw.pop("repeat", 1)
    return fit(model, opt, loss, [data] * repeat, [data], run_dir=run_dir, device="cpu", **kw)


# ----------------------------------------------------------------------------------------------- tests
def test_tiny_model_overfits_one_case(tmp_path):
    data = one_case()
    torch.manual_seed(0)
    history = _fit(TinyNet(), soft_dice_loss, data, tmp_path / "run", max_epochs=8, lr=5e-2, repeat=8)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.best_val_dice > 0.9, history.summary()
    frame = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(frame.columns) == ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]
    assert len(frame) == 8 and frame["epoch"].tolist() == list(range(1, 9))


def test_lr_halves_after_patience_and_early_stop(tmp_path):
    # epoch 1 is the best; never improves afterwards
    loss = ConstantLoss([1.0] + [2.0] * 100)
    history = _fit(
        TinyNet(), loss, one_case(), tmp_path / "run", max_epochs=100, lr_patience=3, stop_patience=8
    )
    lrs = history.lr
    # Keras' counting (the paper's code): lowered after the 3rd epoch without improvement -> used from epoch 5
    assert lrs[:4] == [pytest.approx(1e-2)] * 4
    assert lrs[4] == pytest.approx(5e-3)
    assert history.lr_reductions[0] == 4
    assert history.stopped_early and history.epochs == 9  # 1 best + 8 without improvement
    assert history.best_epoch == 1


def test_no_early_stop_while_improving(tmp_path):
    loss = ConstantLoss([1.0 / (i + 1) for i in range(20)])
    history = _fit(
        TinyNet(), loss, one_case(), tmp_path / "run", max_epochs=12, lr_patience=1, stop_patience=2
    )
    assert not history.stopped_early and history.epochs == 12 and history.best_epoch == 12
    assert history.lr_reductions == []


def test_constant_and_cosine_lr_decay(tmp_path):
    # never improves: "plateau" would halve the rate; "constant" keeps it, "cosine" anneals it to ~0
    loss = ConstantLoss([1.0] + [2.0] * 100)
    const = _fit(
        TinyNet(), loss, one_case(), tmp_path / "c", max_epochs=6, lr_patience=1, lr_decay="constant"
    )
    assert const.lr == [pytest.approx(1e-2)] * 6 and const.lr_reductions == []
    cos = _fit(TinyNet(), ConstantLoss([1.0]), one_case(), tmp_path / "k", max_epochs=4, lr_decay="cosine")
    expected = [1e-2 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert cos.lr == pytest.approx(expected) and cos.lr_reductions == []


def test_cosine_decay_resumes_where_it_stopped(tmp_path):
    def interrupt(epoch, history):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(TinyNet(), soft_dice_loss, one_case(), tmp_path / "r", max_epochs=5, lr_decay="cosine",
             callbacks=[interrupt])  # fmt: skip
    with pytest.raises(HemolabError, match="lr_decay='cosine', not 'plateau'"):
        _fit(TinyNet(), soft_dice_loss, one_case(), tmp_path / "r", max_epochs=5)  # another schedule
    resumed = _fit(TinyNet(), soft_dice_loss, one_case(), tmp_path / "r", max_epochs=5, lr_decay="cosine")
    assert resumed.lr == pytest.approx([1e-2 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)])


def test_unknown_lr_decay_is_refused(tmp_path):
    with pytest.raises(HemolabError, match="lr_decay must be one of plateau, constant, cosine"):
        _fit(TinyNet(), soft_dice_loss, one_case(), tmp_path / "x", lr_decay="step")


def test_resume_continues_history(tmp_path):
    run = tmp_path / "run"

    def interrupt(epoch, history):
        if epoch == 3:
            raise KeyboardInterrupt  # like a user pressing stop

    torch.manual_seed(0)
    model = TinyNet()
    with pytest.raises(KeyboardInterrupt):
        _fit(model, soft_dice_loss, one_case(), run, max_epochs=6, callbacks=[interrupt])
    assert len(pd.read_csv(run / "history.csv")) == 3
    # a fresh model and optimizer, as after a kernel restart
    history = _fit(TinyNet(), soft_dice_loss, one_case(), run, max_epochs=6)
    assert [r["epoch"] for r in history.rows] == [1, 2, 3, 4, 5, 6]
    assert len(pd.read_csv(run / "history.csv")) == 6
    # and it matches an uninterrupted run with the same seed (the state was restored, not restarted)
    torch.manual_seed(0)
    straight = _fit(TinyNet(), soft_dice_loss, one_case(), tmp_path / "straight", max_epochs=6)
    np.testing.assert_allclose(history.train_loss, straight.train_loss, rtol=1e-4)
    # a finished run has nothing left to do
    again = _fit(TinyNet(), soft_dice_loss, one_case(), run, max_epochs=6)
    assert again.epochs == 6


def test_stop_training_callback_and_weights_only(tmp_path):
    def stop(epoch, history):
        if epoch == 2:
            raise StopTraining

    history = _fit(
        TinyNet(),
        soft_dice_loss,
        one_case(),
        tmp_path / "run",
        max_epochs=10,
        callbacks=[stop],
        meta={"arch": "toy", "model_kwargs": {"width": 4}, "grid_size": (16, 16, 8)},
    )
    assert history.epochs == 2
    for name in ("best.pt", "last.pt"):
        payload = torch.load(tmp_path / "run" / name, map_location="cpu", weights_only=True)
        assert payload["meta"]["arch"] == "toy" and payload["meta"]["grid_size"] == [16, 16, 8]
        assert payload["meta"]["best_epoch"] == history.best_epoch
    restored = History.from_state_dict(read_checkpoint(tmp_path / "run" / "last.pt")["history"])
    assert restored.rows == history.rows


def test_refuses_to_overwrite_run(tmp_path):
    run = tmp_path / "run"
    _fit(TinyNet(), soft_dice_loss, one_case(), run, max_epochs=1)
    with pytest.raises(HemolabExistsError, match="resume=True"):
        _fit(TinyNet(), soft_dice_loss, one_case(), run, max_epochs=2, resume=False)
    history = _fit(TinyNet(), soft_dice_loss, one_case(), run, max_epochs=2, resume=False, overwrite=True)
    assert history.epochs == 2 and len(pd.read_csv(run / "history.csv")) == 2


def test_save_checkpoint_refuses_and_is_atomic(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, TinyNet(), {"arch": "toy"})
    with pytest.raises(HemolabExistsError):
        save_checkpoint(path, TinyNet(), {"arch": "toy"})
    save_checkpoint(path, TinyNet(), {"arch": "toy", "shape": (1, 2)}, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left behind
    with pytest.raises(HemolabError, match="weights_only"):
        save_checkpoint(tmp_path / "bad.pt", TinyNet(), {"arch": object()})


def test_bad_arguments_give_clear_errors(tmp_path):
    with pytest.raises(HemolabError, match="max_epochs"):
        _fit(TinyNet(), soft_dice_loss, one_case(), tmp_path / "r", max_epochs=0)
    with pytest.raises(HemolabFileError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(HemolabError, match="not a readable hemolab checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "nometa.pt", TinyNet(), {})
    with pytest.raises(HemolabError, match="arch"):
        load_checkpoint(tmp_path / "nometa.pt")


def test_dice_metric_matches_monai():
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.standard_normal((2, 1, 8, 8, 4)).astype(np.float32))
    label = torch.from_numpy((rng.random((2, 1, 8, 8, 4)) > 0.6).astype(np.float32))
    ours = dice_metric(logits, {"label": label})
    ref = DiceMetric(include_background=True, reduction="mean")((logits > 0).float(), label).mean().item()
    assert ours == pytest.approx(ref, abs=1e-6)
    # both empty -> 1 by convention
    assert dice_metric(torch.full((1, 1, 4, 4, 4), -5.0), {"label": torch.zeros(1, 1, 4, 4, 4)}) == 1.0


def test_profile_settings():
    tiny, small, full = (cnnds_settings(p) for p in ("tiny", "small", "full"))
    assert full.grid_size == (128, 128, 64) and full.base_filters == 16 and full.depth == 5
    assert (full.lr, full.dropout, full.batch_size, full.lr_patience, full.stop_patience) == (
        5e-4,
        0.3,
        1,
        10,
        50,
    )
    assert len(full.grid_depths) * len(full.grid_lrs) * len(full.grid_dropouts) == 60
    assert small.grid_size == (64, 64, 32) and tiny.grid_size == (32, 32, 16)
    assert tiny.max_epochs <= 5 and tiny.base_filters == 4
    assert cnnds_settings("tiny", max_epochs=7).max_epochs == 7
    with pytest.raises(HemolabError, match="unknown CNN-DS settings"):
        cnnds_settings("tiny", epochz=3)
    assert math.isclose(full.lr_factor, 0.5)


# ------------------------------------------------------------------- tests that need the CNN-DS network
def test_checkpoint_round_trip_cnnds(tmp_path):
    kwargs = {
        "in_channels": 1,
        "out_channels": 1,
        "base_filters": 4,
        "depth": 3,
        "dropout": 0.3,
        "deep_supervision": True,
    }
    model = build_model("cnnds", **kwargs).eval()
    meta = CheckpointMeta(
        arch="cnnds", model_kwargs=kwargs, profile="tiny", hu_window=(0, 100), grid_size=(32, 32, 16)
    )
    path = save_checkpoint(tmp_path / "best.pt", model, meta)
    loaded, meta = load_checkpoint(path, device="cpu")
    assert (
        meta.arch == "cnnds" and meta.version == 2 and meta.grid_size == (32, 32, 16) and not loaded.training
    )
    assert (
        meta.max_calcified_fraction == 0.0
    )  # the paper: no calcification rule (a meta without the field too)
    x = torch.rand(1, 1, 32, 32, 16)
    with torch.inference_mode():
        np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    torch.load(path, weights_only=True)
    assert meta.min_cluster_median_hu == 0.0  # nor a density rule
    save_checkpoint(
        tmp_path / "rule.pt", model, meta.replace(max_calcified_fraction=0.25, min_cluster_median_hu=42.0)
    )
    ruled = load_checkpoint(tmp_path / "rule.pt", device="cpu")[1]
    assert ruled.max_calcified_fraction == 0.25 and ruled.min_cluster_median_hu == 42.0
    # wrong arch in the meta: a clear error
    save_checkpoint(tmp_path / "wrong.pt", model, meta.replace(arch="unet9000"))
    with pytest.raises(HemolabError, match="unknown network architecture 'unet9000'"):
        load_checkpoint(tmp_path / "wrong.pt")
    # a version-1 meta (hemolab 0.1, a plain dict) is still read, with the paper's window
    save_checkpoint(
        tmp_path / "v1.pt", model, {"arch": "cnnds", "model_kwargs": kwargs, "grid_size": [32, 32, 16]}
    )
    _, old = load_checkpoint(tmp_path / "v1.pt", device="cpu")
    assert old.hu_window == (0.0, 100.0) and old.threshold == 0.5 and old.version == 2
    save_checkpoint(tmp_path / "future.pt", model, {**meta.to_dict(), "version": 99})
    with pytest.raises(HemolabError, match="newer hemolab"):
        load_checkpoint(tmp_path / "future.pt")


# ------------------------------------------------------------------- on the tiny synthetic cohort
def test_ensure_checkpoint_trains_once(tiny_cohort, capsys):
    path = ensure_checkpoint("cnnds", "tiny")
    assert path.is_file() and path.name == "best.pt" and path.parent.name == "cnnds-tiny"
    assert "no CNN-DS checkpoint from notebook 03 found" in capsys.readouterr().out
    model, meta = load_checkpoint(path, device="cpu")
    assert meta.arch == "cnnds" and meta.grid_size == cnnds_settings("tiny").grid_size
    assert ensure_checkpoint("cnnds", "tiny") == path  # found now: no training
    assert "training" not in capsys.readouterr().out
    with pytest.raises(HemolabError, match="unknown network architecture"):
        ensure_checkpoint("unet", "tiny")


def test_ensure_checkpoint_finishes_an_interrupted_run_and_says_so(tiny_cohort, capsys):
    """A best.pt from a run killed mid-way (a Binder session timing out) is not used silently."""
    from hemolab.architectures import checkpoint_path, run_status
    from hemolab.training import train_cnnds

    path = checkpoint_path("cnnds", "tiny")
    settings = cnnds_settings("tiny")

    def interrupt(epoch, history):
        if epoch == 1:
            raise StopTraining

    train_cnnds(tiny_cohort, "tiny", path.parent, progress=False, overwrite=True, resume=False)
    assert run_status(path.parent)["finished"]
    # the same run killed after its first epoch (the loop CNN-DS training uses, stopped by a callback)
    from hemolab.losses import DiceLossOnBatch
    from hemolab.training.cnnds import cnnds_meta, make_loaders_for

    model = build_model("cnnds", **settings.model_kwargs())
    fit(
        model, torch.optim.Adam(model.parameters()), DiceLossOnBatch(), *make_loaders_for(tiny_cohort, settings),
        max_epochs=settings.max_epochs, run_dir=path.parent, overwrite=True, progress=False,
        callbacks=[interrupt], meta=cnnds_meta(settings), lr_decay=settings.lr_decay,
    )  # fmt: skip
    status = run_status(path.parent)
    assert not status["finished"] and status["epochs"] == 1 and status["max_epochs"] == settings.max_epochs
    capsys.readouterr()
    assert ensure_checkpoint("cnnds", "tiny") == path
    out = capsys.readouterr().out
    assert "interrupted after 1 of 3 epochs: resuming it" in out
    assert run_status(path.parent)["finished"]


def test_grid_search_corner(tiny_cohort, tmp_path):
    from hemolab.experiments import grid_search

    frame = grid_search(tiny_cohort, "tiny", max_epochs=1, run_root=tmp_path, progress=False)
    assert len(frame) == 2 and set(frame["depth"]) == {2, 3}
    assert frame["val_dice"].is_monotonic_decreasing
    assert all((tmp_path / p).joinpath("best.pt").is_file() for p in frame["run_dir"])


def test_hook_runs_between_training_and_validation(tmp_path):
    """The hook sees the model after each epoch's training pass, before its validation pass."""
    order: list[str] = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TinyNet()

        def forward(self, x):
            order.append("train" if self.training else "eval")
            return self.net(x)

    class Record(Hook):
        def before_validation(self, trainer):
            assert isinstance(trainer.model, Recorder) and trainer.model.training
            order.append("hook")

        def after_epoch(self, trainer, epoch):
            order.append(f"end {epoch}")

    _fit(Recorder(), soft_dice_loss, one_case(), tmp_path / "run", max_epochs=2, hooks=[Record()])
    assert order == ["train", "hook", "eval", "end 1", "train", "hook", "eval", "end 2"]


def test_monitor_val_dice_keeps_the_epoch_with_the_best_dice(tmp_path):
    """monitor="val_dice": the best epoch is the one with the highest validation Dice, not the lowest loss."""
    model = TinyNet()
    history = _fit(model, soft_dice_loss, one_case(), tmp_path / "run", max_epochs=4, monitor="val_dice")
    dices = history.val_dice
    assert history.monitor == "val_dice" and history.best_val_dice == max(dices)
    assert history.best_epoch == 1 + dices.index(max(dices))
    with pytest.raises(HemolabError, match="monitor"):
        _fit(TinyNet(), soft_dice_loss, one_case(), tmp_path / "bad", max_epochs=1, monitor="accuracy")


def test_snapshots_keep_chosen_epochs_and_a_fresh_run_removes_them(tmp_path):
    from hemolab.training.engine import Snapshots

    run = tmp_path / "run"
    loss = ConstantLoss([3.0, 2.0, 1.0, 4.0])
    _fit(TinyNet(), loss, one_case(), run, max_epochs=4, hooks=[Snapshots([2, 4])])
    paths = Snapshots.paths(run)
    assert [p.name for p in paths] == ["epoch-002.pt", "epoch-004.pt"]
    metas = [read_checkpoint(p)["meta"] for p in paths]
    assert [m["best_epoch"] for m in metas] == [2, 4]  # each names its own epoch and its values
    assert [m["best_val_loss"] for m in metas] == [pytest.approx(2.0), pytest.approx(4.0)]
    _fit(TinyNet(), soft_dice_loss, one_case(), run, max_epochs=1, overwrite=True)
    assert Snapshots.paths(run) == []  # stale snapshots of the old run are gone


def test_describe_schedule_says_what_each_schedule_did():
    from hemolab.training import History, describe_schedule

    def run(lrs, best, reductions=(), stopped=False):
        rows = [{"epoch": i + 1, "train_loss": -0.5, "val_loss": -0.5, "val_dice": 0.5, "lr": lr, "seconds": 1.0}
                for i, lr in enumerate(lrs)]  # fmt: skip
        return History(rows=rows, best_epoch=best, lr_reductions=list(reductions), stopped_early=stopped,
                       monitor="val_dice")  # fmt: skip

    halved = describe_schedule(
        run([1e-3] * 4 + [5e-4] * 4, 6, [4]), lr_patience=3, stop_patience=10, max_epochs=8
    )
    assert (
        "halved after epoch(s) 4" in halved and "validation Dice" in halved and "best epoch was 6" in halved
    )
    cosine = describe_schedule(run([5e-3, 4e-3, 1e-3, 1e-5], 3), lr_patience=3, stop_patience=4, max_epochs=4,
                               lr_decay="cosine", kept_epoch=4)  # fmt: skip
    assert "half cosine from 0.005 to 1e-05 by epoch 4" in cosine and "halved after" not in cosine
    assert "learning rate 0.005 -> 1e-05" in run([5e-3, 4e-3, 1e-3, 1e-5], 3).summary()
    assert "lowered after epochs [4]" in run([1e-3] * 4 + [5e-4] * 4, 6, [4]).summary()
    assert "never lowered" in run([1e-3] * 3, 2).summary()
    assert "weights of epoch 4 replaced them" in cosine
    assert "replaced" not in describe_schedule(run([1e-3] * 3, 3), lr_patience=3, stop_patience=3, max_epochs=3,
                                               lr_decay="constant", kept_epoch=3)  # fmt: skip
    assert "stayed at 0.001" in describe_schedule(run([1e-3] * 3, 2), lr_patience=1, stop_patience=9, max_epochs=3,
                                                  lr_decay="constant")  # fmt: skip
