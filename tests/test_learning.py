"""The CPU recipe that makes the small networks learn (docs/methods.md §5.1-5.2): each piece does what it says.

Whether the recipe *learns* is measured by benchmarks/bench_learning.py over several seeds (it takes tens of
minutes); these tests check the pieces: the head crop, the synthetic cases, the Dice + BCE loss, the threshold
chosen on validation scans and stored in the checkpoint, the one post-processing step, Patel's sampling, and the
table that names each departure.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from hemolab.architectures import load_checkpoint, segment_scan
from hemolab.datasets import load_dataset
from hemolab.errors import HemolabError
from hemolab.io import array_from_image
from hemolab.losses import DiceBCELossOnBatch, SoftDiceLoss
from hemolab.preprocess import CNNDS_HU_RANGE, PATEL_HU_RANGE, cranial_cavity_mask, crop_to_box, head_box
from hemolab.segment.postprocess import finish_mask, remove_small_components
from hemolab.training import cnnds_settings, describe_recipe, patel_settings, train_cnnds
from hemolab.training.data import (
    POOL_SEEDS,
    blood_free_cases,
    make_cnnds_loaders,
    preprocess_case,
    synthetic_cases,
)
from hemolab.training.patches import HARD_NEGATIVE_HU, PatelPatchDataset, load_patel_volume
from hemolab.training.patel import patel_meta
from hemolab.training.threshold import CANDIDATES, choose_threshold


@pytest.fixture(scope="module")
def bleeding_case(tiny_cohort):
    ds = load_dataset(tiny_cohort)
    return max(ds.train, key=lambda c: float(c.info.get("true_volume_ml") or 0))


def test_head_box_holds_the_cavity_and_the_bleed_and_keeps_world_coordinates(bleeding_case):
    image, label = bleeding_case.load_image(), bleeding_case.load_label()
    box = head_box(image, margin_mm=10.0)
    assert box is not None
    index, size = box
    cav = array_from_image(cranial_cavity_mask(image)) > 0
    assert tuple(crop_to_box(image, box).GetSize()) == tuple(size)
    lab = array_from_image(label) > 0
    inside = np.zeros_like(lab)
    inside[tuple(slice(i, i + s) for i, s in zip(index, size, strict=True))] = True
    assert lab[~inside].sum() == 0 and cav[~inside].sum() == 0  # nothing of the head's inside is cut off
    assert np.prod(size) < lab.size  # and the box is smaller than the field of view
    cropped = crop_to_box(image, box)
    assert cropped.GetOrigin() == pytest.approx(image.TransformIndexToPhysicalPoint([int(i) for i in index]))
    assert crop_to_box(image, None) is image


def test_head_box_of_a_scan_without_a_skull_is_none():
    arr = np.full((20, 40, 40), -1000.0, dtype=np.float32)
    arr[:, 10:30, 10:30] = 30.0  # soft tissue, no bone: no skull ring to find
    with pytest.warns(UserWarning, match="no cranial cavity"):
        assert head_box(sitk.GetImageFromArray(arr)) is None


def test_cropped_preprocessing_keeps_the_bleed_and_puts_more_voxels_on_it(bleeding_case):
    grid = (32, 32, 16)
    _, whole = preprocess_case(bleeding_case, grid)
    _, cropped = preprocess_case(bleeding_case, grid, crop_head=True)
    assert cropped.sum() > whole.sum() > 0  # the same bleed, on smaller voxels


def test_synthetic_cases_come_from_seeds_no_cohort_uses(tiny_cohort):
    train = synthetic_cases("tiny", 3, seed=1)
    val = synthetic_cases("tiny", 2, seed=1, split="validation")
    ids = [c.case_id for c in train + val]
    assert len(set(ids)) == 5
    assert (
        POOL_SEEDS["train"] > 2026 and POOL_SEEDS["validation"] > 2026
    )  # never the course's or a benchmark's
    image, label = train[0].load_image(), train[0].load_label()
    assert image.GetSize() == label.GetSize() and array_from_image(image).min() < -500
    assert synthetic_cases("tiny", 0) == []
    with pytest.raises(HemolabError, match="split"):
        synthetic_cases("tiny", 1, split="test")
    tr, va = make_cnnds_loaders(tiny_cohort, (32, 32, 16), synthetic_train=2, min_val_cases=3, augment=False)
    n_train = len(load_dataset(tiny_cohort).train)
    assert len(tr.dataset) == n_train + 2 and len(va.dataset) == 3


def test_blood_free_calibration_heads_have_no_bleed_and_seeds_of_their_own():
    heads = blood_free_cases("tiny", 2, seed=1)
    assert len(heads) == 2 and blood_free_cases("tiny", 0) == []
    assert POOL_SEEDS["calibration"] not in (POOL_SEEDS["train"], POOL_SEEDS["validation"])
    assert all(h.plan.bleed_type == "none" and h.plan.target_volume_ml == 0.0 for h in heads)
    image, label = heads[0].load_image(), heads[0].load_label()
    assert not array_from_image(label).any() and array_from_image(image).max() > 300  # a head, skull and all
    assert {h.case_id for h in heads}.isdisjoint(c.case_id for c in synthetic_cases("tiny", 2, seed=1))
    assert [h.case_id for h in blood_free_cases("tiny", 2, seed=2)] != [h.case_id for h in heads]


def test_dice_bce_is_the_paper_dice_plus_binary_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, 4, generator=g)
    label = (torch.rand(2, 1, 8, 8, 4, generator=g) > 0.8).float()
    expected = SoftDiceLoss()(logits, label) + 0.5 * F.binary_cross_entropy_with_logits(logits, label)
    torch.testing.assert_close(DiceBCELossOnBatch(bce_weight=0.5)(logits, {"label": label}), expected)
    with pytest.raises(HemolabError):
        DiceBCELossOnBatch(bce_weight=-1)


def test_choose_threshold_keeps_blood_free_scans_within_the_budget_then_maximises_dice():
    ref = np.zeros((10, 10, 4), bool)
    ref[2:6, 2:6] = True  # 64 voxels
    prob = np.where(ref, 0.85, 0.0) + np.where(
        np.indices(ref.shape)[0] == 8, 0.75, 0.0
    )  # a false alarm at 0.75
    blood_free = np.zeros_like(ref)
    normal = np.zeros(ref.shape)
    normal[0, 0, :2] = 0.65  # two voxels of false alarm on the normal head below 0.7
    scans = [(lambda t, p=prob: p >= t, ref, 0.01), (lambda t: normal >= t, blood_free, 0.01)]
    best, table = choose_threshold(scans, max_false_ml=0.01)  # 1 voxel allowed: 0.5 and 0.6 are out
    assert list(table.index) == list(CANDIDATES)
    assert not table.loc[0.5, "eligible"] and table.loc[0.7, "eligible"]
    assert best == 0.8 and table.loc[0.8, "dice_bleeds"] == pytest.approx(1.0)
    assert choose_threshold(scans, max_false_ml=1.0)[0] == 0.8  # a larger budget: the best Dice decides
    flat = [(lambda t: ref, ref, 0.01)]
    assert choose_threshold(flat)[0] == 0.5  # every threshold equal: the paper's
    always = [
        (lambda t: ref, ref, 0.01),
        (lambda t: ~blood_free, blood_free, 0.01),
    ]  # 4 mL at every threshold
    assert choose_threshold(always)[0] == 0.5  # none in budget: the fewest false mL, then nearest 0.5
    # the budget is the mean over the normal heads: 2 voxels on one head of four is 0.005 mL each on average
    four = [scans[0], scans[1], *[(lambda t: blood_free, blood_free, 0.01)] * 3]
    table4 = choose_threshold(four, max_false_ml=0.01)[1]
    assert table4.loc[0.5, "eligible"] and table4.loc[0.5, "mean_false_ml"] == pytest.approx(0.005)
    assert table4.loc[0.5, "max_false_ml"] == pytest.approx(0.02)
    with pytest.raises(HemolabError):
        choose_threshold([])
    with pytest.raises(HemolabError):
        choose_threshold(flat, candidates=(0.0, 0.5))


def test_finish_mask_is_threshold_then_cavity_then_clusters():
    rng = np.random.default_rng(0)
    prob = rng.random((20, 20, 6)).astype(np.float32)
    cavity = np.zeros(prob.shape, bool)
    cavity[3:17, 3:17] = True
    spacing = (1.0, 1.0, 5.0)
    expected = remove_small_components((prob >= 0.7) & cavity, spacing, 0.05)
    np.testing.assert_array_equal(
        finish_mask(prob, 0.7, spacing, cavity=cavity, min_component_ml=0.05), expected
    )
    np.testing.assert_array_equal(finish_mask(prob, 0.7, spacing), prob >= 0.7)
    with pytest.raises(HemolabError, match="cavity"):
        finish_mask(prob, 0.5, spacing, cavity=cavity[:, :, :3])


@pytest.mark.slow
def test_tiny_cnnds_run_stores_a_chosen_threshold_and_segments_inside_the_head(tiny_cohort, tmp_path):
    from hemolab.training.engine import Snapshots

    history = train_cnnds(tiny_cohort, "tiny", tmp_path / "run", progress=False, max_epochs=2)
    # tiny keeps every epoch of the second half; the epoch is chosen with the threshold on whole scans
    assert [p.name for p in Snapshots.paths(history.run_dir)] == ["epoch-002.pt"]
    assert [r["lr"] for r in history.rows] == pytest.approx([5e-3, 2.5e-3])  # the CPU recipe's cosine
    model, meta = load_checkpoint(history.run_dir / "best.pt")
    assert meta.threshold in CANDIDATES and meta.best_epoch in (history.best_epoch, 2)
    assert meta.crop_head and meta.restrict_to_cranial_cavity and meta.min_component_ml == pytest.approx(0.1)
    case = load_dataset(tiny_cohort).test[0]
    image = case.load_image()
    result = segment_scan(image, model, meta, threshold=0.01)  # a low threshold: something is predicted
    cavity = array_from_image(cranial_cavity_mask(image)) > 0
    mask = result.mask_array()
    assert mask.shape == tuple(image.GetSize()) and not (mask & ~cavity).any()


def test_patel_sampling_draws_a_third_from_blood_and_hard_background(tiny_cohort):
    ds = load_dataset(tiny_cohort)
    vols = [load_patel_volume(c) for c in ds.train]
    paper = PatelPatchDataset(vols, 12, (108, 108, 36), (20, 20, 8), seed=0)
    assert [paper.is_foreground(i) for i in range(6)] == [True, False] * 3  # the paper: equal
    cpu = PatelPatchDataset(vols, 30, (108, 108, 36), (20, 20, 8), seed=0, fg_fraction=1 / 3,
                            hard_negative_fraction=1.0)  # fmt: skip
    fg = [cpu.is_foreground(i) for i in range(30)]
    assert sum(fg) == 10 and fg[:3] == [True, False, False]
    level = (HARD_NEGATIVE_HU + 200.0) / 400.0
    for i in range(30):
        if fg[i]:
            continue
        item = cpu[i]
        vol = next(v for v in vols if v.case_id == item["case_id"])
        c = tuple(int(v) for v in item["centre"])
        if vol.hard_index.size:
            assert vol.image[c] >= level and vol.cavity[c] and not vol.label[c]
    with pytest.raises(HemolabError, match="fg_fraction"):
        PatelPatchDataset(vols, 4, (108, 108, 36), (20, 20, 8), fg_fraction=0.0)


def test_describe_recipe_names_every_departure_of_a_cpu_profile_and_none_of_full():
    assert describe_recipe(cnnds_settings("full"), cnnds_settings("full")).empty
    small = describe_recipe(cnnds_settings("small"), cnnds_settings("full"))
    assert {"loss", "monitor", "crop_head", "synthetic_train", "tune_threshold", "min_component_ml"} <= set(
        small.index
    )
    assert "blood_free_calibration" in small.index
    assert small.loc["loss", "this profile"] == "dice_bce" and small.loc["loss", "full (paper)"] == "dice"
    patel = describe_recipe(patel_settings("small"), patel_settings("full"))
    assert {"hu_window", "optimizer", "fg_fraction", "hard_negative_fraction", "tune_threshold"} <= set(
        patel.index
    )
    assert all(patel["why"].str.len() > 20)


def test_patel_cpu_window_reaches_the_volumes_the_hard_background_and_the_checkpoint(tiny_cohort):
    assert patel_settings("full").hu_window == PATEL_HU_RANGE  # the paper's window
    small = patel_settings("small")
    assert small.hu_window == CNNDS_HU_RANGE
    assert patel_meta(small).hu_window == CNNDS_HU_RANGE  # inference scales as training did
    with pytest.raises(HemolabError, match="hu_window"):
        small.with_overrides(hu_window=(100, 0))
    case = load_dataset(tiny_cohort).train[0]
    hu = array_from_image(case.load_image())
    vol = load_patel_volume(case, CNNDS_HU_RANGE)
    np.testing.assert_allclose(vol.image, np.clip(hu, 0.0, 100.0) / 100.0, atol=1e-6)
    assert vol.hu_window == CNNDS_HU_RANGE
    hard = np.unravel_index(vol.hard_index, hu.shape)
    assert vol.hard_index.size and (hu[hard] >= HARD_NEGATIVE_HU).all()  # the same HU, whatever the window
    paper = load_patel_volume(case)
    np.testing.assert_array_equal(np.sort(paper.hard_index), np.sort(vol.hard_index))


class _Scan:
    """An in-memory validation case: a 20 x 20 x 6 head of 30 HU, blood (if any) in a 4 x 4 x 2 block."""

    def __init__(self, bleed: bool, x0: float):
        arr = np.full((6, 20, 20), 30.0, dtype=np.float32)  # (z, y, x)
        lab = np.zeros(arr.shape, dtype=np.uint8)
        if bleed:
            lab[2:4, 8:12, 8:12] = 1
        self.image, self.label = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(lab)
        for im in (self.image, self.label):
            im.SetSpacing((2.0, 2.0, 5.0))
            im.SetOrigin((x0, 0.0, 0.0))

    def load_image(self):
        return self.image

    def load_label(self):
        return self.label


class _Which(torch.nn.Module):
    """A stand-in network whose one weight says which checkpoint it came from."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))


def _fake_segment(labels):
    """segment(): checkpoint w=1 finds the blood at p 0.9; w=0 also calls a 4-voxel blob blood at p 0.95."""
    from types import SimpleNamespace

    def segment(image, model, meta, cavity=None):
        ref = labels[image.GetOrigin()[0]]
        prob = 0.9 * ref.astype(np.float32)
        if float(model.w.detach()) == 0.0:
            prob[0:2, 0:2, 0] = 0.95  # a false alarm on every scan that no threshold removes
        return SimpleNamespace(probability_array=lambda: prob)

    return segment


def test_tune_threshold_chooses_the_snapshot_whose_whole_scan_masks_are_best(tmp_path):
    from hemolab.checkpoint import read_checkpoint, save_checkpoint
    from hemolab.training.threshold import tune_threshold

    scans = [_Scan(True, 0.0), _Scan(True, 100.0), _Scan(False, 200.0)]
    labels = {s.image.GetOrigin()[0]: array_from_image(s.label) > 0 for s in scans}
    meta = patel_meta(patel_settings("tiny")).replace(
        restrict_to_cranial_cavity=False, min_component_ml=0.0, min_cluster_median_hu=0.0
    )  # the stand-in heads are 30 HU throughout: no density rule
    model = _Which()
    save_checkpoint(tmp_path / "best.pt", model, meta.replace(best_epoch=3))  # w = 0: the false alarm
    with torch.no_grad():
        model.w.fill_(1.0)
    save_checkpoint(tmp_path / "epoch-004.pt", model, meta.replace(best_epoch=4))  # w = 1: clean
    threshold = tune_threshold(_Which(), tmp_path / "best.pt", scans, _fake_segment(labels),
                               snapshots=[tmp_path / "epoch-004.pt"])  # fmt: skip
    payload = read_checkpoint(tmp_path / "best.pt")
    assert float(payload["model_state"]["w"]) == 1.0  # the clean snapshot was copied into best.pt
    assert payload["meta"]["best_epoch"] == 4 and payload["meta"]["threshold"] == threshold == 0.5
    # without snapshots best.pt stays and only its threshold is chosen: the blob survives every threshold,
    # so the one with the fewest false mL, nearest 0.5
    save_checkpoint(tmp_path / "b0.pt", _Which(), meta.replace(best_epoch=3))
    assert tune_threshold(_Which(), tmp_path / "b0.pt", scans, _fake_segment(labels)) == 0.5
    assert float(read_checkpoint(tmp_path / "b0.pt")["model_state"]["w"]) == 0.0


def test_tune_run_checks_the_false_alarm_budget_on_blood_free_calibration_heads(tmp_path, monkeypatch):
    """Validation scans with blood only: the threshold is free; one calibration head with a false alarm
    between p 0.6 and 0.8 makes the budget push it to 0.8 (the run's settings ask for one such head)."""
    from hemolab.checkpoint import read_checkpoint, save_checkpoint
    from hemolab.training import threshold as thr

    scans = [_Scan(True, 0.0), _Scan(True, 100.0)]
    normal = _Scan(False, 200.0)
    labels = {s.image.GetOrigin()[0]: array_from_image(s.label) > 0 for s in [*scans, normal]}

    def segment(image, model, meta, cavity=None):
        ref = labels[image.GetOrigin()[0]]
        prob = 0.9 * ref.astype(np.float32)
        if image.GetOrigin()[0] == 200.0:
            prob[0:4, 0:4, 0:2] = 0.75  # a 32-voxel false alarm (0.64 mL) on the normal head
        return __import__("types").SimpleNamespace(probability_array=lambda: prob)

    calls = []
    monkeypatch.setattr(
        thr, "blood_free_cases", lambda profile, n, seed: calls.append((profile, n, seed)) or [normal] * n
    )
    meta = patel_meta(patel_settings("tiny")).replace(
        restrict_to_cranial_cavity=False, min_component_ml=0.0, min_cluster_median_hu=0.0
    )
    for n, expected in ((0, 0.5), (1, 0.8)):
        save_checkpoint(tmp_path / "best.pt", _Which(), meta.replace(best_epoch=3), overwrite=True)
        settings = patel_settings("tiny", blood_free_calibration=n, snapshot_every=0)
        assert thr.tune_run(_Which(), tmp_path, scans, segment, settings, seed=7) == expected
        assert read_checkpoint(tmp_path / "best.pt")["meta"]["threshold"] == expected
    assert calls == [("tiny", 0, 7), ("tiny", 1, 7)]
    assert (
        patel_settings("small").blood_free_calibration > 0
        and cnnds_settings("small").blood_free_calibration > 0
    )
    assert patel_settings("full").blood_free_calibration == 0 == cnnds_settings("full").blood_free_calibration
    with pytest.raises(HemolabError, match="blood_free_calibration"):
        cnnds_settings("small", blood_free_calibration=-1)


@pytest.mark.parametrize(
    "settings_of, small_epochs, paper_decay",
    [(patel_settings, [24, 30, 36], "constant"), (cnnds_settings, [24, 30, 36], "plateau")],
)
def test_cpu_profiles_choose_the_epoch_on_whole_scans_and_full_keeps_the_paper(
    settings_of, small_epochs, paper_decay
):
    small, full = settings_of("small"), settings_of("full")
    assert small.snapshot_epochs == small_epochs and small.lr_decay == "cosine"
    assert small.stop_patience >= small.max_epochs  # the cosine schedule runs to its end
    assert full.snapshot_epochs == [] and full.lr_decay == paper_decay
    assert (
        small.max_calcified_fraction == 0.25 and full.max_calcified_fraction == 0.0
    )  # the papers have no such rule
    assert small.min_cluster_median_hu == 42.0 and full.min_cluster_median_hu == 0.0
    assert settings_of("small", tune_threshold=False).snapshot_epochs == []  # nothing would choose
    with pytest.raises(HemolabError, match="lr_decay must be one of"):
        settings_of("small", lr_decay="step")
    with pytest.raises(HemolabError, match="snapshot_every"):
        settings_of("small", snapshot_every=-1)


def test_patel_small_infers_a_whole_scan_in_one_tile():
    small = patel_settings("small")
    # a whole scan of the small cohort (128 x 128 x 32) in one tile
    assert all(o >= n for o, n in zip(small.inference_output_size, (128, 128, 32), strict=True))
