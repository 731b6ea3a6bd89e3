"""Tiled whole-scan inference and small-cluster removal (Patel 2019, "Post-processing"; docs/methods.md §2.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hemolab.errors import HemolabError
from hemolab.models.patel import Patel3DCNN
from hemolab.segment import (
    aligned_stride,
    component_volumes_ml,
    remove_small_components,
    tile_grid,
    tiled_predict,
)


class CentreCrop(nn.Module):
    """An identity-like 'network': returns the centre crop of its input, like a valid-convolution net."""

    def __init__(self, margin=(44, 44, 44)):
        super().__init__()
        self.margin = margin

    def forward(self, x):
        mx, my, mz = self.margin
        return x[:, :, mx : x.shape[2] - mx, my : x.shape[3] - my, mz : x.shape[4] - mz]


class ValidConvs(nn.Module):
    """Three unpadded random convolutions (margin 3 per side): translation-equivariant, no pooling."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv3d(1, 4, 3), nn.LeakyReLU(), nn.Conv3d(4, 4, 3), nn.LeakyReLU(), nn.Conv3d(4, 2, 3)
        )

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("shape", [(50, 37, 9), (36, 36, 36), (1, 80, 5)])
@pytest.mark.parametrize("stride", [None, "paper", (7, 36, 36)])
def test_centre_crop_model_reconstructs_the_volume(shape, stride):
    rng = np.random.default_rng(0)
    vol = rng.random(shape).astype(np.float32)
    out = tiled_predict(
        CentreCrop(), vol, input_size=124, output_size=36, stride=stride, output="raw", progress=False
    )
    assert out.shape == vol.shape
    assert np.array_equal(
        out, vol
    )  # seamless: every voxel lands where it came from, no gap, no overlap error


def test_tiles_cover_the_volume_once_each_edge_to_edge():
    tiles = tile_grid((80, 40, 12), 124, 36)
    assert len(tiles) == 3 * 2 * 1
    cover = np.zeros((80, 40, 12), int)
    for t in tiles:
        cover[tuple(slice(a, b) for a, b in zip(t.output_start, t.output_stop, strict=True))] += 1
        assert all(i - o == -44 for i, o in zip(t.input_start, t.output_start, strict=True))
    assert np.all(cover == 1)


def test_valid_conv_model_tiled_equals_whole_volume():
    model = ValidConvs().eval()
    vol = np.random.default_rng(1).random((23, 17, 11)).astype(np.float32)
    tiled = tiled_predict(
        model, vol, input_size=(10, 9, 8), output_size=(4, 3, 2), progress=False, batch_size=3
    )
    padded = np.pad(vol, 3)
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(padded)[None, None]), 1)[0, 1].numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def _random_patel(base=2, thick=False):
    torch.manual_seed(0)
    m = Patel3DCNN(base_filters=base, thick_slice=thick).eval()
    for mod in m.modules():  # make BatchNorm non-trivial so the output depends on the input
        if isinstance(mod, nn.BatchNorm3d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.01, 0.05)
    return m


def test_patel_tiled_equals_whole_volume_when_aligned():
    """With the default stride (multiple of 8), tiled inference of the real network equals one big pass."""
    model = _random_patel()
    vol = np.random.default_rng(2).random((44, 12, 4)).astype(np.float32)  # 44 + 88 = 132: a valid size
    assert aligned_stride(36, model.size_multiple) == (32, 32, 32)
    tiled = tiled_predict(model, vol, input_size=124, output_size=36, progress=False)
    # one pass over the whole volume padded by the 44-voxel margin: x 44 + 88 = 132 is valid; y and z are
    # padded further to the valid sizes 108 and 92 (the extra output voxels are dropped)
    whole_input = np.pad(vol, [(44, 44), (44, 52), (44, 44)])
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(whole_input)[None, None]), 1)[0, 1].numpy()
    assert whole.shape == (44, 20, 4)
    np.testing.assert_allclose(tiled, whole[:, :12], atol=1e-5)
    # the paper's edge-to-edge tiles (stride 36 = 4 mod 8): the second tile sits on another pooling grid
    paper = tiled_predict(model, vol, input_size=124, output_size=36, stride="paper", progress=False)
    np.testing.assert_allclose(paper[:36], whole[:36, :12], atol=1e-5)  # first tile: same grid
    assert np.abs(paper[36:] - whole[36:, :12]).max() > 1e-3  # second tile: a different function


def test_thick_slice_model_tiles():
    model = _random_patel(thick=True)
    assert model.size_multiple == (8, 8, 1)
    vol = np.random.default_rng(3).random((8, 4, 20)).astype(np.float32)
    out = tiled_predict(
        model, vol, input_size=(92, 92, 40), output_size=(4, 4, 12), progress=False, batch_size=4
    )
    assert out.shape == vol.shape and np.all((out >= 0) & (out <= 1))


def test_tiled_predict_checks_output_size():
    with pytest.raises(HemolabError, match="output_size"):
        tiled_predict(CentreCrop(), np.zeros((5, 5, 5)), input_size=124, output_size=38, progress=False)
    with pytest.raises(HemolabError, match="even"):
        tile_grid((5, 5, 5), 124, 35)


# ------------------------------------------------------------------------------------- cluster removal


def test_remove_small_components_by_physical_volume():
    mask = np.zeros((30, 30, 10), bool)
    mask[2:7, 2:7, 2:6] = True  # 100 voxels
    mask[20:22, 20:22, 2:4] = True  # 8 voxels
    # 1 x 1 x 1 mm: 100 mm^3 = 0.1 mL is kept (not smaller), 8 mm^3 removed
    kept = remove_small_components(mask, (1.0, 1.0, 1.0), 0.1)
    assert kept.sum() == 100
    # the SAME voxel counts on an anisotropic grid 0.5 x 0.5 x 5 mm (1.25 mm^3 per voxel):
    # 100 voxels = 0.125 mL kept, 8 voxels = 0.01 mL removed
    assert remove_small_components(mask, (0.5, 0.5, 5.0), 0.1).sum() == 100
    # 0.45 x 0.45 x 1 mm (0.2025 mm^3): 100 voxels = 0.02 mL -> removed too; the voxel count alone would keep it
    assert remove_small_components(mask, (0.45, 0.45, 1.0), 0.1).sum() == 0
    # a coarse 2 x 2 x 5 mm grid (20 mm^3 per voxel): even the 8-voxel cluster is 0.16 mL and stays
    assert remove_small_components(mask, (2.0, 2.0, 5.0), 0.1).sum() == 108


def test_connectivity_26_joins_corner_neighbours():
    mask = np.zeros((6, 6, 6), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # touch at a corner only
    assert len(component_volumes_ml(mask, (1, 1, 1))) == 1
    assert len(component_volumes_ml(mask, (1, 1, 1), connectivity=6)) == 2
    # two single voxels of 1 mm^3 each: together 0.002 mL
    np.testing.assert_allclose(component_volumes_ml(mask, (1, 1, 1)), [0.002])
    assert remove_small_components(mask, (1, 1, 1), 0.0015).sum() == 2
    assert remove_small_components(mask, (1, 1, 1), 0.0015, connectivity=6).sum() == 0


def test_remove_small_components_matches_scipy_peer():
    from scipy import ndimage

    rng = np.random.default_rng(4)
    mask = ndimage.binary_opening(rng.random((40, 40, 20)) > 0.6)
    spacing = (0.7, 0.7, 2.5)
    out = remove_small_components(mask, spacing, 0.01)
    labels, n = ndimage.label(mask, np.ones((3, 3, 3)))
    expected = np.zeros_like(mask)
    for i in range(1, n + 1):
        comp = labels == i
        if comp.sum() * np.prod(spacing) / 1000 >= 0.01:
            expected |= comp
    assert np.array_equal(out, expected)
    with pytest.raises(HemolabError):
        remove_small_components(mask.astype(float) * 2, spacing)


# ------------------------------------------------------------------------------------- whole pipeline


@pytest.mark.slow
def test_train_patel_checkpoint_and_segment_scan(tiny_cohort, tmp_path):
    """train_patel -> best.pt -> load_checkpoint rebuilds the network -> segment_scan / segment_patel."""
    from hemolab.architectures import load_checkpoint, segment_scan
    from hemolab.datasets import load_dataset
    from hemolab.io import array_from_image
    from hemolab.segment import SegmentationResult, segment_patel

    history = train_patel_small(tiny_cohort, tmp_path / "run")
    assert history.epochs == 1 and (tmp_path / "run" / "best.pt").is_file()
    model, meta = load_checkpoint(tmp_path / "run" / "best.pt", device="cpu")
    assert isinstance(model, Patel3DCNN) and model.thick_slice and model.base_filters == 2
    assert meta.arch == "patel" and meta.output_size == (20, 20, 8) and meta.min_component_ml == 0.1
    # the CPU profiles' window (docs/methods.md §5.2); the voxel sizes the network was trained at
    assert meta.hu_window == (0.0, 100.0) and meta.restrict_to_cranial_cavity and meta.version == 2
    spacings = np.array([c.load_image().GetSpacing() for c in load_dataset(tiny_cohort).train])
    lo, hi = (np.array(v) for v in meta.voxel_size_range)
    assert np.all(lo <= spacings.min(axis=0) + 1e-6) and np.all(hi >= spacings.max(axis=0) - 1e-6)

    case = load_dataset(tiny_cohort).test[0]
    image = case.load_image()
    cavity = np.zeros(image.GetSize(), bool)  # an empty cavity: nothing may be predicted
    res = segment_patel(image, model, meta, cavity=cavity)
    assert isinstance(res, SegmentationResult)
    assert res.mask.GetSize() == image.GetSize() and res.mask.GetSpacing() == image.GetSpacing()
    assert res.volume_ml == 0.0 and not res.mask_array().any()
    prob = res.probability_array()
    assert prob.shape == tuple(image.GetSize()) and 0 <= prob.min() and prob.max() <= 1
    via_dispatch = segment_scan(image, model, meta)
    assert isinstance(via_dispatch, SegmentationResult)
    np.testing.assert_allclose(via_dispatch.probability_array(), prob, atol=1e-6)
    mask = via_dispatch.mask_array()
    assert np.isclose(via_dispatch.volume_ml, mask.sum() * np.prod(image.GetSpacing()) / 1000)
    with pytest.raises(HemolabError, match="threshold"):
        segment_patel(image, model, meta, threshold=1.5)
    with pytest.raises(HemolabError, match="SimpleITK"):
        segment_patel(array_from_image(image), model, meta)


@pytest.mark.slow
def test_tiny_patel_run_keeps_a_snapshot_and_chooses_the_epoch_on_whole_scans(tiny_cohort, tmp_path):
    from hemolab.architectures import load_checkpoint
    from hemolab.training import train_patel
    from hemolab.training.engine import Snapshots
    from hemolab.training.threshold import CANDIDATES

    history = train_patel(tiny_cohort, "tiny", tmp_path / "run", max_epochs=2, progress=False, base_filters=2,
                          patches_per_epoch=2, val_patches=2)  # fmt: skip
    # tiny keeps every 2nd epoch of the second half
    assert [p.name for p in Snapshots.paths(tmp_path / "run")] == ["epoch-002.pt"]
    _, meta = load_checkpoint(tmp_path / "run" / "best.pt", device="cpu")
    assert meta.best_epoch in (history.best_epoch, 2) and meta.threshold in CANDIDATES
    assert [r["lr"] for r in history.rows] == pytest.approx([1e-3, 5e-4])  # the CPU recipe's cosine


def train_patel_small(root, run_dir):
    from hemolab.training import train_patel

    return train_patel(
        root,
        "tiny",
        run_dir,
        max_epochs=1,
        progress=False,
        base_filters=2,
        patches_per_epoch=2,
        val_patches=2,
    )


def test_working_spacing_keeps_training_like_scans_and_clips_the_others():
    from hemolab.segment.patel import working_spacing

    trained = ((1.7, 1.7, 4.5), (1.9, 1.9, 5.0))
    assert working_spacing((1.8, 1.8, 4.6), trained) is None  # inside: the scan's own grid
    assert working_spacing((1.6, 1.9, 5.4), trained) is None  # within 10 %: no interpolation
    assert working_spacing((0.49, 0.49, 4.0), trained) == (1.7, 1.7, 4.5)  # a fine real scan
    assert working_spacing((0.49, 0.49, 4.0), None) is None  # a checkpoint that records no range


def test_segment_patel_runs_a_fine_scan_at_the_training_voxel_size(monkeypatch):
    """A scan of much finer voxels goes through the network at the trained size; the result is on its own grid."""
    import hemolab.segment.patel as seg
    from hemolab.checkpoint import CheckpointMeta
    from hemolab.io import image_from_array

    hu = np.full((80, 60, 12), -1000.0, np.float32)  # air around a 'brain' at 30 HU with a 70 HU block
    hu[4:76, 4:56] = 30.0
    hu[30:50, 20:40, 4:8] = 70.0
    image = image_from_array(hu, spacing=(0.5, 0.5, 5.0))
    seen = []

    def fake_tiled_predict(model, volume, **kw):
        seen.append(volume.shape)
        return (volume > 0.5).astype(np.float32)  # "blood" above 50 HU on the [0, 100] window

    monkeypatch.setattr(seg, "tiled_predict", fake_tiled_predict)
    model = Patel3DCNN(1, 2, base_filters=2, thick_slice=True)
    meta = CheckpointMeta(
        arch="patel", model_kwargs={}, profile="tiny", hu_window=(0.0, 100.0), input_size=(108, 108, 36),
        output_size=(20, 20, 8), voxel_size_range=((2.0, 2.0, 5.0), (2.0, 2.0, 5.0)),
    )  # fmt: skip
    everywhere = np.ones(hu.shape, bool)
    res = seg.segment_patel(image, model, meta, cavity=everywhere)
    assert seen == [(20, 15, 12)]  # 80 x 0.5 mm / 2 mm = 20 voxels, and so on
    assert res.mask.GetSize() == image.GetSize() and res.mask.GetSpacing() == image.GetSpacing()
    assert res.volume_ml == pytest.approx(20 * 20 * 4 * 0.5 * 0.5 * 5.0 / 1000, rel=0.25)  # the bright block
    native = seg.segment_patel(image, model, meta.replace(voxel_size_range=None), cavity=everywhere)
    assert seen[-1] == hu.shape  # no range recorded: the scan's own grid, as the paper
    assert native.volume_ml == pytest.approx(20 * 20 * 4 * 0.5 * 0.5 * 5.0 / 1000)


def test_train_patel_and_train_cnnds_share_one_signature():
    """The two drivers take the same arguments (the registry calls either the same way)."""
    import inspect

    from hemolab.training import train_cnnds, train_patel

    def names(f):
        return [p.name for p in inspect.signature(f).parameters.values()]

    assert names(train_patel) == [n for n in names(train_cnnds) if n != "loaders"]


def test_calcified_clusters_are_removed_and_bleeds_against_bone_kept():
    from hemolab.segment.postprocess import CALCIFIED_HU, finish_mask, remove_calcified_components

    hu = np.full((30, 30, 10), 30.0)
    mask = np.zeros(hu.shape, bool)
    mask[2:8, 2:8, 2:6] = True  # a "calcification" cluster: a bright core in a halo, 8 of 144 voxels dark
    hu[2:8, 2:8, 2:6] = 250.0
    hu[2, 2:6, 2:4] = 40.0
    mask[15:25, 15:25, 2:6] = True  # a bleed against the skull: 60 HU, one face of its rim bright
    hu[15:25, 15:25, 2:6] = 60.0
    hu[15, 15:25, 2:6] = 400.0  # 40 of 400 voxels (10 %)
    kept = remove_calcified_components(mask, hu, 0.25)
    assert not kept[2:8, 2:8, 2:6].any() and kept[15:25, 15:25, 2:6].all()
    # the share is compared with the fraction: at 5 % the bleed's bright rim is too much, at 0.95 both stay
    assert not remove_calcified_components(mask, hu, 0.05).any()
    assert remove_calcified_components(mask, hu, 0.95).sum() == mask.sum()
    assert CALCIFIED_HU > 100  # brighter than any acute blood
    # finish_mask applies it after the threshold, before the size rule; it needs the HU image
    prob = mask.astype(np.float32)
    np.testing.assert_array_equal(
        finish_mask(prob, 0.5, (1.0, 1.0, 1.0), hu=hu, max_calcified_fraction=0.25), kept
    )
    np.testing.assert_array_equal(finish_mask(prob, 0.5, (1.0, 1.0, 1.0)), mask)  # the papers: no such rule
    with pytest.raises(HemolabError, match="the scan's HU"):
        finish_mask(prob, 0.5, (1.0, 1.0, 1.0), max_calcified_fraction=0.25)
    with pytest.raises(HemolabError, match="does not match"):
        remove_calcified_components(mask, hu[:, :, :5], 0.25)
    with pytest.raises(HemolabError, match=r"\[0, 1\)"):
        remove_calcified_components(mask, hu, 1.0)


def test_clusters_that_read_like_brain_are_removed_and_bleeds_kept():
    from hemolab.segment.postprocess import ACUTE_BLOOD_MEDIAN_HU, finish_mask, remove_isodense_components

    hu = np.full((30, 30, 10), 30.0)
    mask = np.zeros(hu.shape, bool)
    mask[2:8, 2:8, 2:6] = True  # a halo of grey matter (39 HU) around a calcified core: median 39
    hu[2:8, 2:8, 2:6] = 39.0
    hu[4:6, 4:6, 3:5] = 300.0
    mask[15:25, 15:25, 2:6] = True  # a bleed (60 HU) whose partial-volume rim reads 35 HU: median 60
    hu[15:25, 15:25, 2:6] = 60.0
    hu[15, 15:25, 2:6] = 35.0
    kept = remove_isodense_components(mask, hu, ACUTE_BLOOD_MEDIAN_HU)
    assert not kept[2:8, 2:8, 2:6].any() and kept[15:25, 15:25, 2:6].all()
    assert 41 < ACUTE_BLOOD_MEDIAN_HU < 50  # above grey matter, below acute blood
    assert remove_isodense_components(mask, hu, 30.0).sum() == mask.sum()  # a lower bar keeps both
    assert not remove_isodense_components(np.zeros_like(mask), hu, 42.0).any()
    prob = mask.astype(np.float32)
    np.testing.assert_array_equal(
        finish_mask(prob, 0.5, (1.0, 1.0, 1.0), hu=hu, min_cluster_median_hu=ACUTE_BLOOD_MEDIAN_HU), kept
    )
    with pytest.raises(HemolabError, match="the scan's HU"):
        finish_mask(prob, 0.5, (1.0, 1.0, 1.0), min_cluster_median_hu=42.0)
    with pytest.raises(HemolabError, match="does not match"):
        remove_isodense_components(mask, hu[:, :, :5], 42.0)
