"""The code notebooks 03 and 04 write out ("shown-code" cells) still equals the library it explains.

Each cell tagged ``shown-code`` defines a few functions from scratch, as a student would read them. These tests
take the cells from the notebook JSON, run them, and compare the functions with hemolab's own on random input, so
the shown code cannot drift from the library without a test failing:

* notebook 03: the paper's soft Dice loss (``hemolab.losses.SoftDiceLoss``) and one training step (the library's
  ``Trainer.train_epoch`` on a one-batch loader, same seed: same loss, same weights afterwards);
* notebook 04: the weight map (``patch_weight_map``, same generator), the weighted cross-entropy
  (``weighted_cross_entropy``) and the tile loop (``tiled_predict``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from hemolab.losses import DiceLossOnBatch, SoftDiceLoss, weighted_cross_entropy
from hemolab.models import CNNDS
from hemolab.models.patel import Patel3DCNN, patel_output_size
from hemolab.segment import default_stride, tiled_predict
from hemolab.training import cnnds_settings
from hemolab.training.engine import Schedule, Trainer
from hemolab.training.patches import PatelPatchDataset, PatelVolume, patch_weight_map, sample_patch

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TAG = "shown-code"


def shown_code(notebook: str) -> dict:
    """The namespace after running every ``shown-code`` cell of ``notebook``, in order."""
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and TAG in c.metadata.get("tags", [])]
    assert cells, f"{notebook} has no cell tagged {TAG!r}"
    namespace: dict = {}
    for cell in cells:
        exec(compile(cell.source, f"{notebook}:{cell.get('id')}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def nb03() -> dict:
    return shown_code("03_train_cnn_ds.ipynb")


@pytest.fixture(scope="module")
def nb04() -> dict:
    return shown_code("04_patel_3d_cnn.ipynb")


# ------------------------------------------------------------------------------------------------ notebook 03
def _blob(shape, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((1, 1, *shape), generator=gen) > 0.9).float()


@pytest.mark.parametrize("kind", ["random", "empty", "full"])
def test_03_soft_dice_loss_equals_library(nb03, kind):
    shape = (12, 10, 8)
    target = {"random": _blob(shape), "empty": torch.zeros(1, 1, *shape), "full": torch.ones(1, 1, *shape)}[
        kind
    ]
    for seed in range(3):
        logits = 3 * torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(
            nb03["paper_soft_dice_loss"](logits, target), SoftDiceLoss()(logits, target)
        )


def test_03_soft_dice_loss_scale(nb03):
    """The loss-scale lesson: nothing predicted is about -0.5, perfect is -1."""
    target = torch.zeros(1, 1, 16, 16, 8)
    target[..., 6:10, 6:10, 3:5] = 1  # a small bleed: the background Dice of "nothing" is about 1
    loss = nb03["paper_soft_dice_loss"]
    assert float(loss(torch.full_like(target, -20.0), target)) == pytest.approx(-0.5, abs=0.01)
    assert float(loss((2 * target - 1) * 20.0, target)) == pytest.approx(-1.0, abs=1e-6)


def test_03_training_step_equals_library_trainer(nb03, tmp_path):
    settings = cnnds_settings("tiny")
    gen = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(1, 1, *settings.grid_size, generator=gen),
        "label": _blob(settings.grid_size),
    }
    torch.manual_seed(0)
    mine = CNNDS(**settings.model_kwargs())
    theirs = copy.deepcopy(mine)
    start = copy.deepcopy(mine.state_dict())
    torch.manual_seed(1)
    my_loss = nb03["paper_training_step"](mine, torch.optim.Adam(mine.parameters(), lr=settings.lr), batch)
    trainer = Trainer(theirs, torch.optim.Adam(theirs.parameters(), lr=settings.lr), DiceLossOnBatch(),
                      schedule=Schedule(max_epochs=1), run_dir=tmp_path, device=torch.device("cpu"))  # fmt: skip
    torch.manual_seed(1)
    library_loss = trainer.train_epoch([batch])
    assert my_loss == pytest.approx(library_loss, rel=1e-6, abs=1e-7)
    changed = 0
    for name, w in mine.state_dict().items():
        torch.testing.assert_close(w, theirs.state_dict()[name])
        changed += int(not torch.equal(w, start[name]))
    assert changed > 0, "the step changed no weight"


# ------------------------------------------------------------------------------------------------ notebook 04
@pytest.mark.parametrize("n_fg", [0, 1, 37, 250, 251, 400])
def test_04_weight_map_equals_library(nb04, n_fg):
    """Same generator, same weights: no foreground, a little, exactly half, more than half."""
    label = np.zeros((10, 10, 5), dtype=np.float32)
    label.reshape(-1)[np.random.default_rng(5).permutation(label.size)[:n_fg]] = 1
    for seed in range(3):
        mine = nb04["paper_weight_map"](label, np.random.default_rng(seed))
        theirs = patch_weight_map(label, np.random.default_rng(seed))
        np.testing.assert_array_equal(mine, theirs)
        assert mine.dtype == theirs.dtype


def _volume(seed=0) -> PatelVolume:
    rng = np.random.default_rng(seed)
    image = rng.random((40, 36, 20)).astype(np.float32)
    label = np.zeros(image.shape, dtype=bool)
    label[15:22, 14:20, 8:12] = True
    cavity = np.zeros(image.shape, dtype=bool)
    cavity[5:35, 5:31, 2:18] = True
    return PatelVolume("synthetic", image, label, cavity, (1.0, 1.0, 5.0))


def test_04_weight_map_through_the_hooks(nb04):
    """The exercise hooks: sample_patch / PatelPatchDataset with weight_map_fn=the shown map give the library's patches."""
    vol, mine_fn = _volume(), nb04["paper_weight_map"]
    for fg in (True, False):
        a = sample_patch(vol, fg, (24, 24, 12), (8, 8, 4), np.random.default_rng(3), weight_map_fn=mine_fn)
        b = sample_patch(vol, fg, (24, 24, 12), (8, 8, 4), np.random.default_rng(3))
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    ds_a = PatelPatchDataset([vol], 4, (24, 24, 12), (8, 8, 4), weight_map_fn=mine_fn, seed=1, fixed=True)
    ds_b = PatelPatchDataset([vol], 4, (24, 24, 12), (8, 8, 4), seed=1, fixed=True)
    for i in range(4):
        torch.testing.assert_close(ds_a[i]["weight"], ds_b[i]["weight"])


def test_04_weighted_cross_entropy_equals_library(nb04):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 6, 5, 4, generator=gen)
    target = (torch.rand(3, 1, 6, 5, 4, generator=gen) > 0.7).float()
    weight = (torch.rand(3, 1, 6, 5, 4, generator=gen) > 0.5).float()
    weight[2] = 0  # a patch without weight is left out of the mean
    mine = nb04["paper_weighted_cross_entropy"]
    torch.testing.assert_close(mine(logits, target, weight), weighted_cross_entropy(logits, target, weight))
    # (B, x, y, z) inputs too, and all-ones weights (the map of a patch without blood)
    ones = torch.ones_like(target[:, 0])
    torch.testing.assert_close(
        mine(logits, target[:, 0], ones), weighted_cross_entropy(logits, target[:, 0], ones)
    )


@pytest.mark.parametrize("stride", [None, "paper"])
def test_04_tile_loop_equals_library(nb04, stride):
    torch.manual_seed(0)
    model = Patel3DCNN(base_filters=2, thick_slice=True, dropout=0.0).eval()
    ins = (100, 100, 30)
    outs = patel_output_size(ins, thick_slice=True)  # (12, 12, 2)
    step = outs if stride == "paper" else default_stride(model, outs)  # (8, 8, 2): the pooling grid
    volume = np.random.default_rng(0).random((20, 14, 3)).astype(np.float32)  # 2 x 2 x 2 tiles
    mine = nb04["paper_tiled_predict"](model, volume, ins, outs, step)
    theirs = tiled_predict(model, volume, input_size=ins, output_size=outs, stride=step, progress=False)
    assert mine.shape == volume.shape
    np.testing.assert_allclose(mine, theirs, atol=1e-6)
