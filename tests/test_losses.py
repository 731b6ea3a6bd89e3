"""The paper's soft Dice loss (Arab 2020, docs/methods.md §1) against hand computation and MONAI's DiceLoss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemolab.errors import HemolabError
from hemolab.losses import SoftDiceLoss, soft_dice_per_label


def _paper_formula(p1: np.ndarray, g1: np.ndarray, eps: float) -> float:
    """loss = -(1/|L|) sum_l 2 sum_i g_l p_l / sum_i (g_l + p_l), L = {0, 1}, written out in NumPy."""
    terms = []
    for p, g in ((1 - p1, 1 - g1), (p1, g1)):
        terms.append((2 * np.sum(g * p) + eps) / (np.sum(g + p) + eps))
    return -float(np.mean(terms))


def test_equals_the_formula_on_hand_made_tensors():
    # 4 voxels: probabilities 0.9, 0.2, 0.6, 0.1 of haemorrhage; reference 1, 0, 1, 0
    p1 = np.array([0.9, 0.2, 0.6, 0.1])
    g1 = np.array([1.0, 0.0, 1.0, 0.0])
    # by hand: label 1: 2*(0.9+0.6) / (2 + 1.8) = 3/3.8; label 0: 2*(0.8+0.9) / (2 + 2.2) = 3.4/4.2
    by_hand = -0.5 * (3.0 / 3.8 + 3.4 / 4.2)
    assert _paper_formula(p1, g1, 0.0) == pytest.approx(by_hand)
    logits = torch.logit(torch.tensor(p1, dtype=torch.float64)).float().reshape(1, 1, 2, 2, 1)
    target = torch.tensor(g1).float().reshape(1, 1, 2, 2, 1)
    assert float(SoftDiceLoss(eps=0.0)(logits, target)) == pytest.approx(by_hand, abs=1e-6)
    assert float(SoftDiceLoss(eps=0.0, offset=True)(logits, target)) == pytest.approx(1 + by_hand, abs=1e-6)
    assert float(SoftDiceLoss(eps=0.0, include_background=False)(logits, target)) == pytest.approx(
        -3.0 / 3.8, abs=1e-6
    )


def test_range_perfect_and_worst():
    target = torch.zeros(1, 1, 4, 4, 2)
    target[..., :2, :] = 1
    perfect = (target * 2 - 1) * 50  # logits: +50 inside, -50 outside
    assert float(SoftDiceLoss()(perfect, target)) == pytest.approx(-1.0, abs=1e-5)
    assert float(SoftDiceLoss()(-perfect, target)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("batch", [True, False])
def test_random_tensors_equal_formula(batch):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 1, 6, 5, 4))
    g = (rng.random((3, 1, 6, 5, 4)) > 0.6).astype(float)
    p = 1 / (1 + np.exp(-z))
    eps = 1e-5
    if batch:
        expected = _paper_formula(p, g, eps)
    else:
        expected = float(np.mean([_paper_formula(p[b], g[b], eps) for b in range(3)]))
    got = SoftDiceLoss(eps=eps, batch=batch)(torch.tensor(z).float(), torch.tensor(g).float())
    assert float(got) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1.0])
def test_matches_monai_dice_loss(batch, eps):
    """paper loss = MONAI DiceLoss - 1 over both labels; foreground only = MONAI's sigmoid DiceLoss."""
    from monai.losses import DiceLoss

    torch.manual_seed(0)
    z = torch.randn(2, 1, 8, 8, 4) * 2
    t = (torch.rand(2, 1, 8, 8, 4) > 0.7).float()
    # two labels: softmax over [0, z] is [1 - sigmoid(z), sigmoid(z)]
    two = torch.cat([torch.zeros_like(z), z], dim=1)
    monai_both = DiceLoss(
        softmax=True, to_onehot_y=True, include_background=True, batch=batch, smooth_nr=eps, smooth_dr=eps
    )(two, t)
    ours = SoftDiceLoss(eps=eps, batch=batch)(z, t)
    torch.testing.assert_close(ours, monai_both - 1.0, rtol=1e-5, atol=1e-6)
    # the same with the network giving two channels itself
    torch.testing.assert_close(
        SoftDiceLoss(eps=eps, batch=batch)(two, t), monai_both - 1.0, rtol=1e-5, atol=1e-6
    )
    monai_fg = DiceLoss(sigmoid=True, batch=batch, smooth_nr=eps, smooth_dr=eps)(z, t)
    ours_fg = SoftDiceLoss(eps=eps, batch=batch, include_background=False, offset=True)(z, t)
    torch.testing.assert_close(ours_fg, monai_fg, rtol=1e-5, atol=1e-6)


def test_gradients_finite_on_an_empty_label():
    z = torch.randn(1, 1, 8, 8, 4, requires_grad=True)
    empty = torch.zeros(1, 1, 8, 8, 4)
    loss = SoftDiceLoss()(z, empty)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # gradient pushes the foreground probability down where there is no blood
    assert (z.grad > 0).all()
    # with eps, "nothing there, nothing found" counts as Dice 1 for the haemorrhage label
    dice = soft_dice_per_label(torch.full((1, 1, 4, 4, 2), -30.0), torch.zeros(1, 1, 4, 4, 2))
    assert dice.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_bad_targets():
    z = torch.randn(1, 1, 4, 4, 2)
    with pytest.raises(HemolabError, match="does not fit"):
        SoftDiceLoss()(z, torch.zeros(1, 1, 4, 4, 3))
    with pytest.raises(HemolabError, match=r"\[0, 1\]"):
        SoftDiceLoss()(z, torch.full((1, 1, 4, 4, 2), 2.0))
    with pytest.raises(HemolabError):
        SoftDiceLoss(eps=-1)


def _sphere_in_noise(shape=(32, 32, 16), radius=6.0, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    centre = np.array([17.0, 14.0, 8.0]).reshape(3, 1, 1, 1)
    scale = np.array([1.0, 1.0, 2.0]).reshape(3, 1, 1, 1)  # slices twice as thick as the in-plane voxels
    label = (
        np.sqrt((((grid - centre) / scale * np.array([1, 1, 2]).reshape(3, 1, 1, 1)) ** 2).sum(0)) <= radius
    )
    image = 0.35 + 0.05 * rng.normal(size=shape) + 0.3 * label  # blood brighter than brain, in noise
    return (
        torch.tensor(image, dtype=torch.float32)[None, None],
        torch.tensor(label, dtype=torch.float32)[None, None],
    )


@pytest.fixture
def one_thread():
    """Tiny networks run faster on one thread, and much faster when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_cnnds_overfits_one_case(one_thread):
    """The loss is trainable: CNN-DS (depth 3, base 4) learns one 32x32x16 sphere-in-noise case."""
    from hemolab.models import CNNDS

    torch.manual_seed(0)
    image, label = _sphere_in_noise()
    assert 100 < label.sum() < 5000
    net = CNNDS(1, 1, base_filters=4, depth=3, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    loss_fn = SoftDiceLoss()
    first = None
    for _step in range(150):
        opt.zero_grad()
        loss = loss_fn(net(image), label)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
        if float(loss.detach()) < -0.95:
            break
    net.eval()
    with torch.no_grad():
        pred = torch.sigmoid(net(image)) >= 0.5
    hard = 2 * float((pred & (label > 0)).sum()) / float(pred.sum() + label.sum())
    assert float(loss.detach()) < -0.9 < -0.5 < first
    assert hard > 0.9
