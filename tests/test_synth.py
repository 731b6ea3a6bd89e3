"""Tests of the synthetic head-CT cohort (hemolab.synth), mostly on the tiny profile."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from hemolab.errors import HemolabError, HemolabExistsError
from hemolab.synth import BLEED_TYPES, PROFILE_SPECS, CasePlan, generate_case, make_cohort, plan_cohort
from hemolab.synth.anatomy import build_head
from hemolab.synth.cohort import case_grid
from hemolab.synth.raters import majority_vote
from hemolab.synth.realism import (
    inner_table_profile,
    label_hu_stats,
    label_rim,
    realism_stats,
    skull_base_profile,
    vertex_profile,
)
from hemolab.synth.scanner import acquire


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / float(s)


@pytest.fixture(scope="module")
def tiny_cases():
    """The 8 cases of the tiny cohort (seed 0), in memory."""
    return [generate_case(p) for p in plan_cohort(None, seed=0, profile="tiny")]


def test_plan_sizes_splits_and_types():
    for profile, n, split in (("tiny", 8, (5, 1, 2)), ("small", 20, (14, 2, 4)), ("full", 55, (40, 5, 10))):
        plans = plan_cohort(None, seed=0, profile=profile)
        assert len(plans) == n
        counts = tuple(sum(p.split == s for p in plans) for s in ("train", "validation", "test"))
        assert counts == split
        assert {p.bleed_type for p in plans} <= set(BLEED_TYPES)
        n_none = sum(p.bleed_type == "none" for p in plans)
        assert 1 <= n_none <= max(1, round(0.2 * n))
        targets = [p.target_volume_ml for p in plans if p.bleed_type != "none"]
        assert min(targets) < 1.0 and max(targets) > 80.0
    assert len({p.seed for p in plan_cohort(None, 0, "full")}) == 55
    assert [p.seed for p in plan_cohort(None, 0, "tiny")] != [p.seed for p in plan_cohort(None, 1, "tiny")]


def test_every_bleed_type_in_tiny(tiny_cases):
    assert {c.plan.bleed_type for c in tiny_cases} == set(BLEED_TYPES)


def test_grids_per_profile():
    rng = np.random.default_rng(0)
    g = case_grid("tiny", rng)
    assert g.shape == (64, 64, 16) and 3.3 < g.spacing[0] < 3.8
    g = case_grid("small", rng)
    assert g.shape == (128, 128, 32) and 1.7 <= g.spacing[0] <= 1.9 and 4.5 <= g.spacing[2] <= 5.0
    for _ in range(20):
        g = case_grid("full", rng)
        assert g.shape[:2] == (512, 512) and 40 <= g.shape[2] <= 66
        assert 0.42 <= g.spacing[0] <= 0.50 and 2.4 <= g.spacing[2] <= 5.0


def test_tissue_hu_ranges():
    """Air, bone, brain and CSF land where a scanner puts them."""
    rng = np.random.default_rng(5)
    grid = case_grid("small", rng)
    head = build_head(grid, rng)
    ideal = head.image.copy()
    img = acquire(head.image, head, rng, noise_sd=4.0).astype(float)
    corners = img[:8, :8, :]
    assert abs(np.median(corners) + 1000) < 20
    bone = ideal > 600
    assert bone.any() and np.median(img[bone]) > 700 and img.max() > 1000
    # diploe between the tables is lower than cortical bone
    assert 250 < np.percentile(ideal[ideal > 250], 10) < 600
    parenchyma = (head.brain > 0.99) & (head.ventricles < 0.01) & (head.calcification == 0)
    parenchyma &= ndi.binary_erosion(ideal < 50, iterations=1)  # away from falx / bone
    assert 22 < np.median(img[parenchyma]) < 40
    vent = ndi.binary_erosion(head.ventricles > 0.99)
    csf = vent & (ideal < 30)  # the ventricles hold CSF, and in each atrium the choroid plexus (~45 HU)
    assert vent.sum() > 10 and csf.sum() > 0.5 * vent.sum() and -2 < np.median(img[csf]) < 15
    plexus = vent & (ideal >= 30) & (ideal < 100)  # soft tissue, not its calcified core
    assert plexus.sum() > 0 and 35 < np.median(ideal[plexus]) < 55
    # grey matter is denser than white matter: cortex ribbon vs deep white matter
    cortex = parenchyma & (head.depth_brain > 0.5) & (head.depth_brain < 2.0) & (head.sulcal_dist > 3.0)
    white = parenchyma & (head.depth_brain > 20.0) & (head.sulcal_dist > 4.0)
    zs = np.nonzero(head.brain.max(axis=(0, 1)) > 0.99)[
        0
    ]  # the middle third of the brain's slices: away from
    middle = np.zeros(head.brain.shape[2], bool)  # the denser skull base and vertex (release 3)
    middle[zs[0] + len(zs) // 3 : zs[0] + 2 * len(zs) // 3] = True
    white &= middle[None, None, :]
    assert cortex.sum() > 50 and white.sum() > 50
    gm, wm = np.median(img[cortex]), np.median(img[white])
    assert 30 < gm < 43 and 22 < wm < 33 and gm > wm + 3  # drawn per case: gm 37-41, wm 29-32 HU


def test_blood_hu_distribution(tiny_cases):
    """HU over the bleed masks ~ 5th pct 34, median 56, 95th pct 75 (voxels next to bone excluded).

    Pooled over two tiny cohorts (16 scans) so that one large bleed does not decide the percentiles.
    """
    values = []
    more = [generate_case(p) for p in plan_cohort(None, seed=1, profile="tiny")]
    for c in list(tiny_cases) + more:
        if c.truth.any():
            near_bone = ndi.binary_dilation(c.image > 300, iterations=1)
            values.append(c.image[c.truth & ~near_bone].astype(float))
    v = np.concatenate(values)
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    assert 28 <= p5 <= 42, p5
    assert 50 <= p50 <= 62, p50
    assert 66 <= p95 <= 82, p95


def test_no_bleed_cases_and_volumes(tiny_cases):
    none = [c for c in tiny_cases if c.plan.bleed_type == "none"]
    assert none and all(not c.truth.any() and not c.reference.any() for c in none)
    vols = [c.info["true_volume_ml"] for c in tiny_cases if c.truth.any()]
    assert all(v > 0 for v in vols)
    assert min(vols) < 1.0 and max(vols) > 80.0
    for c in tiny_cases:
        assert c.info["true_volume_ml"] == pytest.approx(c.truth.sum() * c.grid.voxel_ml, abs=1e-3)
        assert c.info["reference_volume_ml"] == pytest.approx(c.reference.sum() * c.grid.voxel_ml, abs=1e-3)


def test_raters_disagree_realistically(tiny_cases):
    dices, differ = [], 0
    for c in tiny_cases:
        assert len(c.raters) == 3
        np.testing.assert_array_equal(c.reference, majority_vote(c.raters))
        if c.truth.sum() >= 30:
            dices += [_dice(r, c.truth) for r in c.raters]
            differ += sum(int((r != c.truth).any()) for r in c.raters)
    assert differ >= 3  # raters are not copies of the truth
    assert 0.8 <= float(np.median(dices)) <= 0.98, dices


def test_calcifications_are_bright_and_not_labelled(tiny_cases):
    with_calc = [c for c in tiny_cases if c.calcification.any()]
    assert with_calc and len(with_calc) < len(tiny_cases)
    for c in with_calc:
        assert c.info["has_calcification"]
        assert c.image[c.calcification].max() > 100
        assert not (c.truth & c.calcification).any()
        assert not (c.reference & c.calcification).any()


def test_some_blood_touches_bone(tiny_cases):
    assert any(c.info["touches_bone"] for c in tiny_cases if c.plan.bleed_type in ("sdh", "edh", "iph_lobar"))


def test_generation_is_deterministic_bytes(tmp_path):
    a = make_cohort(tmp_path / "a", n_cases=3, seed=11, profile="tiny", progress=False)
    b = make_cohort(tmp_path / "b", n_cases=3, seed=11, profile="tiny", progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 10
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = make_cohort(tmp_path / "c", n_cases=3, seed=12, profile="tiny", progress=False)
    assert (c / "imagesTr").is_dir()
    img_a = sorted((a / "imagesTr").glob("*.nii.gz"))[0]
    img_c = sorted((c / "imagesTr").glob("*.nii.gz"))[0]
    assert img_a.read_bytes() != img_c.read_bytes()


def test_overwrite_rules(tmp_path):
    out = make_cohort(tmp_path / "cohort", n_cases=1, profile="tiny", progress=False)
    before = (out / "cases.csv").read_text()
    with pytest.raises(HemolabExistsError, match="overwrite"):
        make_cohort(out, n_cases=1, profile="tiny", progress=False)
    assert (out / "cases.csv").read_text() == before
    make_cohort(out, n_cases=2, profile="tiny", overwrite=True, progress=False)
    assert len((out / "cases.csv").read_text().splitlines()) == 3
    mine = tmp_path / "my_files"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    with pytest.raises(HemolabExistsError, match="not .*hemolab cohort|refusing"):
        make_cohort(mine, n_cases=1, profile="tiny", overwrite=True, progress=False)
    assert (mine / "thesis.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (make_cohort(empty, n_cases=1, profile="tiny", progress=False) / "dataset.json").is_file()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary folders left behind


@pytest.mark.parametrize("bad", [0, -3, 2.5, "4", True])
def test_bad_case_counts(tmp_path, bad):
    with pytest.raises(HemolabError, match="n_cases"):
        make_cohort(tmp_path / "x", n_cases=bad, profile="tiny", progress=False)
    assert not (tmp_path / "x").exists()


def test_bad_profile_and_seed(tmp_path):
    with pytest.raises(HemolabError, match="profile"):
        make_cohort(tmp_path / "x", profile="huge", progress=False)
    with pytest.raises(HemolabError, match="seed"):
        plan_cohort(2, seed=-1, profile="tiny")


def test_cli(tmp_path, capsys):
    from hemolab.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--cases", "2", "--seed", "3", "--quiet"]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] + meta["numTest"] == 2
    assert "wrote 2 cases" in capsys.readouterr().out
    assert main(["synth", "--out", str(out), "--cases", "2", "--quiet"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "bad"), "--cases", "0", "--quiet"]) == 2
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path / "bad"), "--profile", "huge"])


# --- labels hold blood only, on every profile ------------------------------------------------------------


def _label_cases(profile: str) -> list:
    """Cases of every bleed type on a profile: the whole tiny / small cohort, two extra-axial full cases."""
    if profile == "full":  # 512x512 takes seconds per case: the extra-axial geometry, one case each
        plans = [
            CasePlan("case_sdh", "train", "sdh", 40.0, 1234, "full"),
            CasePlan("case_edh", "train", "edh", 20.0, 4321, "full"),
        ]
    else:
        plans = [p for p in plan_cohort(None, seed=0, profile=profile) if p.bleed_type != "none"]
    return [generate_case(p) for p in plans]


@pytest.mark.parametrize(
    "profile", [p if p != "full" else pytest.param(p, marks=pytest.mark.slow) for p in PROFILE_SPECS]
)
def test_labels_hold_blood_only(profile):
    """Label HU: p95 <= 100, median 40-90 per bleed type, nothing above 150 HU inside the label (rim excepted).

    Extra-axial blood lies between the inner table and the brain; the label must not reach into bone, nor
    cover parenchyma, beyond its partial-volume rim (label voxels with a 6-neighbour outside the label).
    Real expert masks hold blood at p5/p50/p95 = 34/56/75 HU and nothing above 150 HU.
    """
    cases = _label_cases(profile)
    pooled: dict[tuple[str, str], list[np.ndarray]] = {}
    for c in cases:
        assert c.truth.any(), c.plan
        for name, lab in (("truth", c.truth), ("reference", c.reference)):
            # one rater may call a calcification blood (the trap, tested elsewhere): not blood, leave it out
            lab = lab & ~c.calcification
            img = c.image.astype(float)
            core = lab & ~label_rim(lab)
            assert not (img[core] > 150).any(), (
                profile,
                c.plan.bleed_type,
                name,
                int((img[core] > 150).sum()),
            )
            pooled.setdefault((c.plan.bleed_type, name), []).append(img[lab])
    for (bleed_type, name), values in pooled.items():
        v = np.concatenate(values)
        p50, p95 = np.percentile(v, [50, 95])
        assert p95 <= 100, (profile, bleed_type, name, p95)
        assert 40 <= p50 <= 90, (profile, bleed_type, name, p50)
    if profile != "full":
        assert {t for t, _ in pooled} == set(BLEED_TYPES) - {"none"}


def test_label_rim_and_stats():
    lab = np.zeros((7, 7, 7), bool)
    lab[1:6, 1:6, 1:6] = True
    rim = label_rim(lab)
    assert rim.sum() == 125 - 27 and not rim[3, 3, 3] and rim[1, 3, 3]
    img = np.full(lab.shape, 60.0)
    img[1, 1, 1] = 1000.0  # a bright voxel on the rim does not count as inside the label
    s = label_hu_stats(img, lab)
    assert s["n"] == 125 and s["core_above_150"] == 0 and s["p50"] == 60.0
    img[3, 3, 3] = 1000.0
    assert label_hu_stats(img, lab)["core_above_150"] == 1


def test_noise_and_parenchyma_match_real_ct():
    """Parenchyma ~26-35 HU, noise SD 1.5-3 HU with in-plane lag-1 correlation 0.5-0.7 (real head CT)."""
    rng = np.random.default_rng(3)
    grid = case_grid("small", rng)
    head = build_head(grid, rng)
    img = acquire(head.image, head, rng, noise_sd=2.5)
    s = realism_stats(img, head.brain >= 0.5, grid.spacing)
    assert s["n_voxels"] > 1000
    assert 26 <= s["parenchyma_hu"] <= 35, s
    assert 1.5 <= s["noise_sd"] <= 3.0, s
    assert 0.5 <= s["lag1_corr"] <= 0.7, s


def test_the_inner_table_band_matches_the_real_scan():
    """Real head CT is denser under the inner table, most at the back; blood-free synthetic heads are too.

    The shipped real scan, measured by the same function: back 2-4 / 4-6 / 6-9 / 9-14 mm about 58 / 46 / 39 /
    35 HU. Without the band the synthetic heads measured about 45 / 38 / 33 / 33.
    """
    from hemolab.io import array_from_image, read_scan, sample_scan_path

    real_img = read_scan(sample_scan_path())
    real = inner_table_profile(array_from_image(real_img), real_img.GetSpacing())
    backs = []
    for plan in [p for p in plan_cohort(None, seed=2, profile="small") if p.bleed_type == "none"][:3]:
        case = generate_case(plan)
        prof = inner_table_profile(case.image, case.grid.spacing)
        backs.append(prof["back"])
        assert prof["back"][0] > prof["back"][2] > 25  # denser near the table, brain beneath
    synth = np.median(np.asarray(backs), axis=0)
    assert np.all(np.abs(synth[:3] - np.asarray(real["back"][:3])) <= 8.0), (synth, real["back"])
    assert real["back"][0] > real["back"][2] + 10  # the feature is the real scan's, not the generator's


def test_inner_table_profile_refuses_a_2d_image():
    with pytest.raises(HemolabError, match="3D"):
        inner_table_profile(np.zeros((8, 8)), (1.0, 1.0))


@pytest.fixture(scope="module")
def blood_free_small_heads():
    """Three blood-free heads of a small cohort (seed 2), as (image, spacing)."""
    plans = [p for p in plan_cohort(None, seed=2, profile="small") if p.bleed_type == "none"][:3]
    return [(c.image, c.grid.spacing, _cavity(c.image, c.grid.spacing)) for c in map(generate_case, plans)]


def _cavity(image: np.ndarray, spacing) -> np.ndarray:
    from hemolab.io import array_from_image, image_from_array
    from hemolab.preprocess import cranial_cavity_mask

    return array_from_image(cranial_cavity_mask(image_from_array(image, spacing=tuple(spacing)))) > 0


@pytest.mark.parametrize(
    "profile_fn, real_min, bins, tolerance",
    [(skull_base_profile, 8.0, 3, 6.0), (vertex_profile, 10.0, 2, 7.0)],
)
def test_the_denser_skull_base_and_vertex_match_the_real_scan(
    blood_free_small_heads, profile_fn, real_min, bins, tolerance
):
    """Real head CT reads denser in its lowest slices of brain (beam hardening, partial volume with the floor)
    and its highest (the calvarium cut tangentially).

    The shipped real scan, measured by the same functions: 0-10 / 10-20 / 20-30 / 30-45 mm from the lowest
    slice of the brain about +13 / +8 / +6 / +2 HU over the middle, from the highest about +16 / +6 / +1 / -1.
    Generator release 2 (neither term) measured about +2 / +1 / +2 / +1 and +1 / -1 / -1 / -2.
    """
    from hemolab.io import array_from_image, read_scan, sample_scan_path

    real_img = read_scan(sample_scan_path())
    real_hu = array_from_image(real_img)
    real = profile_fn(real_hu, real_img.GetSpacing(), _cavity(real_hu, real_img.GetSpacing()))["rise"]
    assert real[0] > real_min and real[0] > real[1] > real[3]  # the feature is the real scan's
    synth = np.median(
        [profile_fn(image, sp, cav)["rise"] for image, sp, cav in blood_free_small_heads], axis=0
    )
    assert np.all(np.abs(synth[:bins] - np.asarray(real[:bins])) <= tolerance), (synth, real)
    assert synth[0] > synth[3] + 3.0  # denser at the end than further in


def test_skull_base_profile_refuses_bad_input():
    with pytest.raises(HemolabError, match="3D"):
        skull_base_profile(np.zeros((8, 8)), (1.0, 1.0), np.zeros((8, 8), bool))
    with pytest.raises(HemolabError, match="does not match"):
        skull_base_profile(np.zeros((8, 8, 4)), (1.0, 1.0, 1.0), cavity=np.zeros((8, 8, 3), bool))
