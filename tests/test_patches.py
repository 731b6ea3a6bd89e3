"""Patel training pieces (Patel 2019, "Training"; docs/methods.md §2.4): weight map, weighted CE, patches, overfitting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hemolab.errors import HemolabError
from hemolab.losses import WeightedCELoss, weighted_cross_entropy
from hemolab.models.inference import center_crop
from hemolab.training.patches import (
    PatelPatchDataset,
    PatelVolume,
    extract_patch,
    patch_weight_map,
    patel_augmentation,
    sample_patch,
)
from hemolab.training.patel import patel_settings

# ------------------------------------------------------------------------------------------ weight map


def test_weight_map_balanced_case():
    label = np.zeros((10, 10, 10), bool)
    label[2:5, 2:5, 2:5] = True  # 27 foreground voxels
    w = patch_weight_map(label, rng=0)
    assert w.dtype == np.float32 and set(np.unique(w)) == {0.0, 1.0}
    assert np.all(w[label] == 1)  # every foreground voxel counts
    assert w[~label].sum() == 27  # and as many background voxels
    assert w.sum() == 54


def test_weight_map_more_than_half_foreground_all_ones():
    label = np.zeros((4, 4, 4), bool)
    label.reshape(-1)[:33] = True  # 33 > 32 = half
    assert np.all(patch_weight_map(label, rng=0) == 1)
    label.reshape(-1)[32] = False  # exactly half: balanced map (32 + 32 = every voxel)
    w = patch_weight_map(label, rng=0)
    assert w.sum() == 64


def test_weight_map_all_background_all_ones():
    assert np.all(patch_weight_map(np.zeros((5, 6, 7)), rng=1) == 1)


def test_weight_map_deterministic_under_seed():
    label = np.zeros((12, 12, 12), bool)
    label[3:6, 3:9, 4:7] = True
    a, b = patch_weight_map(label, rng=7), patch_weight_map(label, rng=7)
    c = patch_weight_map(label, rng=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(patch_weight_map(label, g1), patch_weight_map(label, g2))


# ------------------------------------------------------------------------------------------------ loss


def test_weighted_cross_entropy_matches_torch_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 4, 5, 6, generator=g)
    target = (torch.rand(2, 1, 4, 5, 6, generator=g) > 0.7).float()
    weight = (torch.rand(2, 1, 4, 5, 6, generator=g) > 0.5).float()
    ce = F.cross_entropy(logits, target[:, 0].long(), reduction="none")
    w = weight[:, 0]
    expected = sum((ce[b] * w[b]).sum() / w[b].sum() for b in range(2)) / 2  # each patch its own mean
    got = weighted_cross_entropy(logits, target, weight)
    assert torch.allclose(got, expected, atol=1e-6)
    # all weights 1 -> the plain mean cross-entropy
    ones = torch.ones_like(weight)
    assert torch.allclose(
        weighted_cross_entropy(logits, target, ones), F.cross_entropy(logits, target[:, 0].long())
    )
    # voxels with weight 0 do not matter at all
    changed = logits.clone()
    changed[weight.expand_as(logits) == 0] = 100.0
    assert torch.allclose(weighted_cross_entropy(changed, target, weight), expected, atol=1e-6)
    # and the engine adapter reads batch["weight"]
    assert torch.allclose(WeightedCELoss()(logits, {"label": target, "weight": weight}), expected, atol=1e-6)


def test_weighted_cross_entropy_gives_each_patch_an_equal_say():
    """A background patch with all weights 1 does not drown a blood patch with a few weighted voxels."""
    logits = torch.zeros(2, 2, 10, 10, 10)
    logits[1, 1] = 5.0  # the background patch is predicted as blood everywhere: CE = log(1 + e^5)
    target = torch.zeros(2, 10, 10, 10)
    target[0, :2, :2, :2] = 1
    weight = torch.ones(2, 10, 10, 10)
    weight[0] = 0
    weight[0, :2, :2, :2] = 1  # 8 blood voxels (CE = log 2)
    weight[0, 5, 5, :8] = 1  # and 8 background voxels (CE = log 2)
    got = weighted_cross_entropy(logits, target, weight)
    expected = (math.log(2) + math.log1p(math.exp(5))) / 2
    assert math.isclose(float(got), expected, rel_tol=1e-5)
    # patches without any weight are left out of the mean
    weight[1] = 0
    assert math.isclose(float(weighted_cross_entropy(logits, target, weight)), math.log(2), rel_tol=1e-5)
    assert float(weighted_cross_entropy(logits, target, torch.zeros_like(weight))) == 0.0


def test_weighted_cross_entropy_gradient_only_through_weighted_voxels():
    logits = torch.randn(1, 2, 3, 3, 3, requires_grad=True)
    target = torch.zeros(1, 3, 3, 3)
    weight = torch.zeros(1, 3, 3, 3)
    weight[0, 1, 1, 1] = 1
    weighted_cross_entropy(logits, target, weight).backward()
    nz = logits.grad.abs().sum(1)[0] > 0
    assert nz.sum() == 1 and nz[1, 1, 1]


def test_weighted_cross_entropy_shape_errors():
    with pytest.raises(HemolabError, match="output size"):
        weighted_cross_entropy(
            torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 1, 5, 5, 5), torch.ones(1, 1, 5, 5, 5)
        )
    with pytest.raises(HemolabError, match="C>=2"):
        weighted_cross_entropy(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 4, 4, 4), torch.ones(1, 4, 4, 4))


# --------------------------------------------------------------------------------------------- patches


def test_extract_patch_pads_with_air_and_aligns_input_output():
    vol = np.arange(10 * 12 * 8, dtype=np.float32).reshape(10, 12, 8) + 1
    p = extract_patch(vol, (0, 0, 0), 6)
    assert p.shape == (6, 6, 6)
    assert np.all(p[:3] == 0) and np.all(p[:, :3] == 0)  # before the volume: padding (air = 0)
    assert np.array_equal(p[3:, 3:, 3:], vol[:3, :3, :3])
    # an input patch and an output patch cut around the same centre: the output is the input's centre crop
    big, small = extract_patch(vol, (5, 6, 4), 8), extract_patch(vol, (5, 6, 4), 4)
    assert np.array_equal(center_crop(big, (4, 4, 4)), small)
    # 124 -> 36 offset is 44 voxels (as in the network)
    inp, out = extract_patch(vol, (5, 6, 4), 124), extract_patch(vol, (5, 6, 4), 36)
    assert np.array_equal(inp[44:80, 44:80, 44:80], out)


def _toy_volume(seed=0, shape=(40, 40, 12)):
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    cavity = np.zeros(shape, bool)
    cavity[5:35, 5:35, 1:11] = True
    img[cavity] = 0.6 + 0.02 * rng.standard_normal(cavity.sum()).astype(np.float32)
    label = np.zeros(shape, bool)
    c = rng.integers(12, 28, size=2)
    label[c[0] - 4 : c[0] + 4, c[1] - 3 : c[1] + 3, 4:8] = True
    img[label] = 0.8
    return PatelVolume(f"toy{seed}", img, label, cavity, (1.0, 1.0, 3.0))


def test_sampling_equal_foreground_and_background():
    vols = [_toy_volume(0), _toy_volume(1)]
    ds = PatelPatchDataset(vols, 40, (92, 92, 30), (4, 4, 2), seed=0, fixed=True)
    centres_fg = []
    for i in range(40):
        item = ds[i]
        vol = vols[int(item["case_id"][-1])]
        c = tuple(item["centre"].tolist())
        centres_fg.append(bool(vol.label[c]))
        if not vol.label[c]:
            assert vol.cavity[c]  # background centres lie in the cranial cavity
        assert item["image"].shape == (1, 92, 92, 30)
        assert item["label"].shape == item["weight"].shape == (1, 4, 4, 2)
    assert centres_fg == [i % 2 == 0 for i in range(40)]
    # fixed (validation) samples repeat; the label under a foreground centre is foreground
    assert torch.equal(ds[3]["image"], ds[3]["image"])
    ds2 = PatelPatchDataset(vols, 40, (92, 92, 30), (4, 4, 2), seed=0, fixed=True)
    assert torch.equal(ds[5]["weight"], ds2[5]["weight"]) and torch.equal(ds[5]["image"], ds2[5]["image"])


def test_augmentation_is_axial_and_reproducible():
    t = patel_augmentation()
    img = np.zeros((1, 21, 21, 5), np.float32)
    img[0, 3:18, 10, :] = 1.0  # a bar along x in every slice
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(40):
        t.set_random_state(seed=int(rng.integers(2**31)))
        out = np.asarray(t({"image": img.copy(), "label": img.copy()})["image"])
        # rotation in the axial plane keeps every z slice identical (no mixing along z)
        assert np.allclose(out[..., 0], out[..., 3], atol=1e-5)
        kinds.add("same" if np.allclose(out, img) else "changed")
    assert kinds == {"same", "changed"}
    t.set_random_state(seed=5)
    a = np.asarray(t({"image": img.copy(), "label": img.copy()})["image"])
    t.set_random_state(seed=5)
    b = np.asarray(t({"image": img.copy(), "label": img.copy()})["image"])
    assert np.array_equal(a, b)


def test_sample_patch_with_augmentation_keeps_binary_label():
    vol = _toy_volume(2)
    s = sample_patch(vol, True, (92, 92, 30), (4, 4, 2), np.random.default_rng(0), patel_augmentation())
    assert set(np.unique(s["label"])) <= {0.0, 1.0}
    assert s["image"].min() >= 0 and s["image"].max() <= 1.0 + 1e-6


def test_profile_settings_fit_the_network():
    for p in ("tiny", "small", "full"):
        s = patel_settings(p)
        assert s.output_size == tuple(n - 88 for n in s.input_size[:2]) + (s.input_size[2] - 28,)
    full = patel_settings("full")
    assert full.patches_per_epoch * full.max_epochs == 50_000  # the paper's 50,000 training patches
    assert (full.lr, full.momentum, full.base_filters, full.input_size) == (1e-3, 0.9, 32, (124, 124, 40))
    with pytest.raises(HemolabError, match="Nearest valid"):
        patel_settings("tiny", input_size=(96, 96, 36))


def test_tiny_patel_overfits_small_patch_set():
    """A tiny network drives the weighted loss well down on 4 fixed patches within seconds."""
    from hemolab.models.patel import Patel3DCNN

    torch.manual_seed(0)
    vols = [_toy_volume(0), _toy_volume(1)]
    ds = PatelPatchDataset(vols, 4, (92, 92, 30), (4, 4, 2), seed=0, fixed=True)
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ("image", "label", "weight")}
    model = Patel3DCNN(base_filters=2, thick_slice=True, dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loss_fn = WeightedCELoss()
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(model(batch["image"]), batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses
    assert min(losses[-5:]) < 0.2


def test_recalibrate_batch_norm_sets_population_statistics_and_keeps_weights():
    """Precise BN: the first BatchNorm's running mean/var become the statistics of its input over all patches."""
    from hemolab.models.patel import Patel3DCNN
    from hemolab.training.patel import recalibrate_batch_norm

    torch.manual_seed(0)
    model = Patel3DCNN(base_filters=2, thick_slice=True, dropout=0.0)
    model.eval()
    images = [torch.rand(1, 92, 92, 32) for _ in range(4)]
    before = {
        k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    recalibrate_batch_norm(model, images, batch_size=4)
    assert not model.training, "the model's mode is restored"
    conv, bn = model.encoders[0][0], model.encoders[0][1]
    with torch.no_grad():
        feat = conv(torch.stack(images))
    mean = feat.mean(dim=(0, 2, 3, 4))
    var = feat.var(dim=(0, 2, 3, 4), unbiased=True)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k} changed"
    with pytest.raises(HemolabError, match="at least one"):
        recalibrate_batch_norm(model, [])


def test_weight_map_fn_is_a_hook_for_the_exercises():
    """A custom weight map replaces the paper's in sample_patch and the patch dataset; its shape is checked."""
    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).random((40, 40, 20)).astype(np.float32)
    label = np.zeros((40, 40, 20), bool)
    label[18:22, 18:22, 8:12] = True
    vol = PatelVolume("c", image, label, np.ones_like(label), (1.0, 1.0, 1.0))

    def all_ones(lab, _rng):
        return np.ones_like(lab, dtype=np.float32)

    s = sample_patch(vol, True, (20, 20, 12), (8, 8, 4), rng, weight_map_fn=all_ones)
    assert s["weight"].shape == (1, 8, 8, 4) and (s["weight"] == 1).all()
    ds = PatelPatchDataset([vol], 2, (20, 20, 12), (8, 8, 4), weight_map_fn=all_ones, fixed=True)
    assert (ds[0]["weight"] == 1).all()
    with pytest.raises(HemolabError, match="weight_map_fn returned shape"):
        sample_patch(vol, True, (20, 20, 12), (8, 8, 4), rng, weight_map_fn=lambda lab, r: np.ones(3))
