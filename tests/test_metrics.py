"""hemolab.metrics against independent implementations (MONAI, scikit-learn, SimpleITK, brute force)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from hemolab import metrics as M
from hemolab.errors import HemolabError

SPACING = (0.5, 0.7, 2.5)


def _blobs(seed: int, shape=(28, 26, 12), level=0.52):
    rng = np.random.default_rng(seed)
    a = ndi.gaussian_filter(rng.random(shape), 2) > level
    b = ndi.gaussian_filter(rng.random(shape), 2) > level
    b |= a & (rng.random(shape) > 0.4)  # some overlap
    return a, b


def _ellipsoid(shape, centre, radii_mm, spacing):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    rho = sum(((g - c * s) / r) ** 2 for g, c, r, s in zip(grids, centre, radii_mm, spacing, strict=True))
    return rho <= 1.0


def _monai(fn, pred, ref, **kw):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(
            torch.tensor(pred[None, None], dtype=torch.float32),
            torch.tensor(ref[None, None], dtype=torch.float32),
            include_background=True,
            **kw,
        )
    return float(out.reshape(-1)[0])


def _brute_force(pred, ref, spacing):
    """Directed boundary distances by all pairwise distances (scipy.spatial.distance.cdist)."""
    ea = np.argwhere(M.boundary(ref)) * np.asarray(spacing)
    eb = np.argwhere(M.boundary(pred)) * np.asarray(spacing)
    d = cdist(ea, eb)
    return d.min(axis=1), d.min(axis=0)


# ----------------------------------------------------------------------------------------- overlap
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_matches_monai(seed):
    from monai.metrics import compute_dice

    a, b = _blobs(seed)
    assert M.dice(b, a) == pytest.approx(_monai(compute_dice, b, a), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_dice_metric_class_matches(seed):
    import torch
    from monai.metrics import DiceMetric

    a, b = _blobs(seed)
    metric = DiceMetric(include_background=True, reduction="mean")
    metric(torch.tensor(b[None, None], dtype=torch.float32), torch.tensor(a[None, None], dtype=torch.float32))
    assert M.dice(b, a) == pytest.approx(float(metric.aggregate()), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 3])
def test_precision_recall_f1_match_sklearn(seed):
    from sklearn.metrics import f1_score, precision_score, recall_score

    a, b = _blobs(seed)
    y_true, y_pred = a.ravel(), b.ravel()
    r = M.evaluate(b, a, SPACING)
    assert r["precision"] == pytest.approx(precision_score(y_true, y_pred))
    assert r["recall"] == pytest.approx(recall_score(y_true, y_pred))
    assert r["f1"] == pytest.approx(f1_score(y_true, y_pred))
    assert (
        M.precision(b, a) == r["precision"] and M.recall(b, a) == r["recall"] and M.f1_score(b, a) == r["f1"]
    )


# ----------------------------------------------------------------------------------------- distances
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd_and_hd95_match_monai_with_anisotropic_spacing(seed):
    from monai.metrics import compute_hausdorff_distance

    a, b = _blobs(seed)
    hd = _monai(compute_hausdorff_distance, b, a, spacing=SPACING)
    hd95 = _monai(compute_hausdorff_distance, b, a, spacing=SPACING, percentile=95)
    assert M.hausdorff_distance(b, a, SPACING) == pytest.approx(hd, rel=1e-5)
    assert M.hausdorff_distance_95(b, a, SPACING) == pytest.approx(hd95, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 4])
def test_distances_match_brute_force(seed):
    a, b = _blobs(seed, shape=(20, 18, 8))
    d_ab, d_ba = _brute_force(b, a, SPACING)
    r = M.evaluate(b, a, SPACING)
    assert r["hd"] == pytest.approx(max(d_ab.max(), d_ba.max()))
    assert r["hd95"] == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
    assert r["mhd"] == pytest.approx(max(d_ab.mean(), d_ba.mean()))
    mine_ab, mine_ba = M.directed_boundary_distances(b, a, SPACING)
    np.testing.assert_allclose(np.sort(mine_ab), np.sort(d_ab))
    np.testing.assert_allclose(np.sort(mine_ba), np.sort(d_ba))


def test_hd95_is_not_medpys_pooled_percentile():
    """Max of the directed 95th percentiles, not the 95th percentile of both directions pooled."""
    a = np.zeros((30, 30, 10), bool)
    a[5:15, 5:15, 3:7] = True
    b = a.copy()
    b[20:23, 20:23, 3:7] = True  # an extra island: far distances only in the B -> A direction
    d_ab, d_ba = _brute_force(b, a, (1.0, 1.0, 1.0))
    pooled = np.percentile(np.concatenate([d_ab, d_ba]), 95)
    directed = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    assert directed != pytest.approx(pooled)
    assert M.hausdorff_distance_95(b, a, (1.0, 1.0, 1.0)) == pytest.approx(directed)


@pytest.mark.parametrize("seed", [0, 2])
def test_hd_matches_simpleitk(seed):
    import SimpleITK as sitk

    from hemolab.io import image_from_array

    a, b = _blobs(seed)
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(
        image_from_array(a.astype(np.uint8), spacing=SPACING),
        image_from_array(b.astype(np.uint8), spacing=SPACING),
    )
    assert M.hausdorff_distance(b, a, SPACING) == pytest.approx(f.GetHausdorffDistance(), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_contour_mean_distance_close_to_itk_signed_maurer(seed):
    """ITK's contour mean distance reads |signed Maurer distance| of the other image at the contour voxels.

    ITK's Maurer map places the other contour slightly differently (its own contour extraction), so the
    two agree closely but not to the last digit.
    """
    import SimpleITK as sitk

    from hemolab.io import array_from_image, image_from_array

    a, b = _blobs(seed)

    def directed(x, y):
        dist = sitk.SignedMaurerDistanceMap(
            image_from_array(y.astype(np.uint8), spacing=SPACING),
            insideIsPositive=False,
            squaredDistance=False,
            useImageSpacing=True,
        )
        return np.abs(array_from_image(dist))[M.boundary(x)].mean()

    itk = max(directed(a, b), directed(b, a))
    assert M.contour_mean_distance(b, a, SPACING) == pytest.approx(itk, rel=0.05)


def test_two_cubes_at_known_offset_exact_hd():
    spacing = (0.8, 0.9, 3.0)
    a = np.zeros((20, 20, 20), bool)
    a[4:12, 4:12, 4:12] = True
    for shift in (1, 3, 5):
        b = np.roll(a, shift, axis=2)
        r = M.evaluate(b, a, spacing)
        assert r["hd"] == pytest.approx(shift * spacing[2])
        assert r["dsc"] == pytest.approx((8 - shift) / 8)
        assert r["avd"] == pytest.approx(0.0)
    b = np.roll(a, 2, axis=0)
    assert M.hausdorff_distance(b, a, spacing) == pytest.approx(2 * spacing[0])


def test_sphere_vs_shifted_sphere():
    spacing = (1.0, 1.0, 1.0)
    a = _ellipsoid((40, 40, 40), (20, 20, 20), (10, 10, 10), spacing)
    b = _ellipsoid((40, 40, 40), (24, 20, 20), (10, 10, 10), spacing)
    r = M.evaluate(b, a, spacing)
    assert r["hd"] == pytest.approx(4.0, abs=0.5)
    assert 0.0 < r["hd95"] <= r["hd"]
    assert 0.0 < r["mhd"] < r["hd95"]
    assert r["cmd"] == r["mhd"]  # same number under docs/methods.md §4's single boundary convention


def test_single_far_outlier_moves_hd_not_hd95():
    spacing = (1.0, 1.0, 1.0)
    a = _ellipsoid((60, 60, 30), (20, 30, 15), (12, 12, 10), spacing)
    b = a.copy()
    b[55, 55, 28] = True
    r = M.evaluate(b, a, spacing)
    assert r["hd"] > 30
    assert r["hd95"] == pytest.approx(0.0)
    assert r["dsc"] > 0.99


@pytest.mark.parametrize("seed", [0, 5])
def test_symmetric_metrics_are_invariant_to_swapping(seed):
    a, b = _blobs(seed)
    ab, ba = M.evaluate(b, a, SPACING), M.evaluate(a, b, SPACING)
    for key in ("dsc", "f1", "hd", "hd95", "mhd", "cmd"):
        assert ab[key] == pytest.approx(ba[key]), key
    assert ab["precision"] == pytest.approx(ba["recall"])
    assert ab["volume_pred_ml"] == ba["volume_ref_ml"]


def test_evaluate_matches_single_functions():
    a, b = _blobs(7)
    r = M.evaluate(b, a, SPACING)
    assert set(r) == set(M.METRIC_NAMES)
    assert r["dsc"] == M.dice(b, a)
    assert r["hd"] == M.hausdorff_distance(b, a, SPACING)
    assert r["hd95"] == M.hausdorff_distance_95(b, a, SPACING)
    assert r["mhd"] == M.modified_hausdorff_distance(b, a, SPACING)
    assert r["cmd"] == M.contour_mean_distance(b, a, SPACING)
    assert r["avd"] == pytest.approx(M.absolute_volume_difference(b, a, SPACING))


def test_boundary_of_a_cube():
    a = np.zeros((7, 7, 7), bool)
    a[1:6, 1:6, 1:6] = True
    e = M.boundary(a)
    assert e.sum() == 5**3 - 3**3
    full = np.ones((3, 3, 3), bool)  # touches the array edge: all boundary except the centre
    assert M.boundary(full).sum() == 26


# ----------------------------------------------------------------------------------------- volumes
def test_volume_and_avd():
    m = np.zeros((10, 10, 10), bool)
    m[:4, :5, :2] = True  # 40 voxels
    assert M.volume_ml(m, (0.5, 0.5, 2.0)) == pytest.approx(40 * 0.5 / 1000)
    b = m.copy()
    b[4, :5, :2] = True  # 50 voxels
    assert M.absolute_volume_difference(b, m, (1, 1, 1)) == pytest.approx(25.0)
    assert M.absolute_volume_difference(m, b, (1, 1, 1)) == pytest.approx(20.0)  # relative to the reference


def test_abc2_on_an_ellipsoid_is_close_to_the_true_volume():
    spacing = (0.45, 0.45, 2.5)
    radii = (30.0, 20.0, 15.0)
    m = _ellipsoid((160, 120, 16), (70, 60, 8), radii, spacing)
    r = M.abc2_volume(m, spacing)
    true_ml = 4 / 3 * math.pi * np.prod(radii) / 1000
    assert r["volume_ml"] == pytest.approx(true_ml, rel=0.12)
    assert M.volume_ml(m, spacing) == pytest.approx(true_ml, rel=0.05)
    assert r["a_mm"] == pytest.approx(2 * radii[0], rel=0.05)
    assert r["b_mm"] == pytest.approx(2 * radii[1], rel=0.05)
    assert r["c_mm"] == pytest.approx(2 * radii[2], abs=2 * spacing[2])
    assert r["slice"] == 8


def test_abc2_overestimates_an_irregular_bleed():
    spacing = (0.5, 0.5, 2.5)
    m = np.zeros((120, 120, 12), bool)
    m[10:110, 10:30, 2:10] = True  # an L-shaped bleed: two arms
    m[10:30, 10:110, 2:10] = True
    r = M.abc2_volume(m, spacing)
    assert r["volume_ml"] > 1.5 * M.volume_ml(m, spacing)


def test_abc2_rotated_rectangle_diameter():
    spacing = (1.0, 1.0, 5.0)
    m = np.zeros((50, 50, 3), bool)
    m[10:40, 20:24, 1] = True  # 30 x 4 voxels on one slice
    r = M.abc2_volume(m, spacing)
    assert r["a_mm"] == pytest.approx(math.hypot(30, 4))  # the diagonal, edge to edge
    assert r["c_mm"] == 5.0
    assert r["volume_ml"] == pytest.approx(r["a_mm"] * r["b_mm"] * 5.0 / 2 / 1000)
    (p0, p1), (q0, q1) = (np.array(p) for p in r["a_line_mm"]), (np.array(q) for q in r["b_line_mm"])
    assert np.linalg.norm(p1 - p0) == pytest.approx(r["a_mm"])
    assert np.linalg.norm(q1 - q0) == pytest.approx(r["b_mm"])
    assert abs(np.dot(p1 - p0, q1 - q0)) < 1e-9  # perpendicular


def test_abc2_empty():
    r = M.abc2_volume(np.zeros((5, 5, 5), bool), (1, 1, 1))
    assert r["volume_ml"] == r["a_mm"] == r["b_mm"] == r["c_mm"] == 0.0
    assert r["slice"] is None and r["a_line_mm"] is None


# ----------------------------------------------------------------------------------------- empty masks
def _empty_case(which):
    a = np.zeros((12, 12, 6), bool)
    a[3:7, 3:7, 2:4] = True
    z = np.zeros_like(a)
    return {"both": (z, z), "ref": (a, z), "pred": (z, a)}[which]  # (prediction, reference)


def test_both_empty():
    b, a = _empty_case("both")
    r = M.evaluate(b, a, SPACING)
    assert r == {k: (1.0 if k in ("dsc", "precision", "recall", "f1") else 0.0) for k in M.METRIC_NAMES}


def test_reference_empty_prediction_not():
    b, a = _empty_case("ref")
    r = M.evaluate(b, a, SPACING)
    assert (r["dsc"], r["precision"], r["recall"], r["f1"]) == (0.0, 0.0, 0.0, 0.0)
    assert all(math.isinf(r[k]) for k in ("hd", "hd95", "mhd", "cmd", "avd"))
    assert r["volume_ref_ml"] == 0.0 and r["volume_pred_ml"] > 0


def test_prediction_empty_reference_not():
    b, a = _empty_case("pred")
    r = M.evaluate(b, a, SPACING)
    assert (r["dsc"], r["precision"], r["recall"], r["f1"]) == (0.0, 0.0, 0.0, 0.0)
    assert all(math.isinf(r[k]) for k in ("hd", "hd95", "mhd", "cmd"))
    assert r["avd"] == 100.0
    for fn in (M.hausdorff_distance, M.hausdorff_distance_95, M.modified_hausdorff_distance):
        assert math.isinf(fn(b, a, SPACING))


def test_empty_conventions_agree_with_monai_where_it_defines_them():
    from monai.metrics import compute_dice, compute_hausdorff_distance

    b, a = _empty_case("both")
    assert M.dice(b, a) == _monai(compute_dice, b, a, ignore_empty=False) == 1.0
    b, a = _empty_case("pred")
    assert M.dice(b, a) == _monai(compute_dice, b, a) == 0.0
    assert math.isinf(_monai(compute_hausdorff_distance, b, a)) and math.isinf(
        M.hausdorff_distance(b, a, SPACING)
    )


# ----------------------------------------------------------------------------------------- input checks
def test_shape_mismatch_raises():
    with pytest.raises(HemolabError, match="same shape"):
        M.evaluate(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), SPACING)


def test_non_binary_raises():
    with pytest.raises(HemolabError, match="binary"):
        M.dice(np.full((4, 4, 4), 0.7), np.zeros((4, 4, 4)))


def test_nan_raises():
    m = np.zeros((4, 4, 4))
    m[0, 0, 0] = np.nan
    with pytest.raises(HemolabError, match="NaN"):
        M.evaluate(m, np.zeros((4, 4, 4)), SPACING)


def test_bad_spacing_raises():
    with pytest.raises(HemolabError, match="spacing"):
        M.evaluate(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 0.0, 1.0))


# ----------------------------------------------------------------------------------------- summaries
def test_summarize_and_format():
    vals = [0.8, 0.9, 0.85, float("inf"), 0.75]
    s = M.summarize(vals)
    finite = np.array([0.8, 0.9, 0.85, 0.75])
    assert s["n"] == 4 and s["n_nonfinite"] == 1
    assert s["mean"] == pytest.approx(finite.mean())
    assert s["sd"] == pytest.approx(finite.std(ddof=1))
    assert s["median"] == pytest.approx(np.median(finite))
    assert M.format_mean_sd(vals) == f"{finite.mean():.2f} ± {finite.std(ddof=1):.2f}"
    assert M.format_median_iqr([1, 2, 3, 4, 5]) == "3.00 [2.00–4.00]"


# ----------------------------------------------------------------------------------------- hemolab evaluate
def _write_masks(folder, masks, spacing=SPACING):
    from hemolab.io import image_from_array, write_image

    folder.mkdir(parents=True, exist_ok=True)
    for cid, m in masks.items():
        write_image(image_from_array(m.astype(np.uint8), spacing=spacing), folder / f"{cid}.nii.gz")


def test_cli_evaluate_writes_csv_and_summary(tmp_path, capsys):
    import pandas as pd

    from hemolab.cli import main

    refs, preds = {}, {}
    for i in range(3):
        a, b = _blobs(10 + i, shape=(20, 18, 8))
        refs[f"case_{i}"], preds[f"case_{i}"] = a, b
    _write_masks(tmp_path / "ref", refs)
    _write_masks(tmp_path / "pred", preds)
    out = tmp_path / "res" / "metrics.csv"
    rc = main(
        ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out)]
    )
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table["case_id"]) == ["case_0", "case_1", "case_2"]
    for i in range(3):
        expected = M.evaluate(preds[f"case_{i}"], refs[f"case_{i}"], SPACING)
        assert table.loc[i, "dsc"] == pytest.approx(expected["dsc"])
        assert table.loc[i, "hd95"] == pytest.approx(expected["hd95"])
    text = capsys.readouterr().out
    assert "mean ± SD" in text and "median [IQR]" in text and "95% HD (mm)" in text
    assert M.format_mean_sd(table["dsc"]) in text
    # refuses to overwrite without --overwrite
    rc = main(
        ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out)]
    )
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    rc = main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred"),
            "--ref",
            str(tmp_path / "ref"),
            "--out",
            str(out),
            "--overwrite",
        ]
    )
    assert rc == 0


def test_cli_evaluate_missing_and_mismatched_cases(tmp_path, capsys):
    from hemolab.cli import main

    a, b = _blobs(20, shape=(16, 16, 6))
    _write_masks(tmp_path / "ref", {"c1": a, "c2": a})
    _write_masks(tmp_path / "pred", {"c1": b, "c3": b})
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")])
    err = capsys.readouterr().err
    assert (
        rc == 2
        and "no prediction for reference case(s) c2" in err
        and "no reference for predicted case(s) c3" in err
    )
    # same case, different grid
    _write_masks(tmp_path / "pred2", {"c1": b, "c2": b[:, :, :5]})
    rc = main(["evaluate", "--pred", str(tmp_path / "pred2"), "--ref", str(tmp_path / "ref")])
    err = capsys.readouterr().err
    assert rc == 2 and "'c2'" in err and "different voxel grids" in err
    rc = main(["evaluate", "--pred", str(tmp_path / "nope"), "--ref", str(tmp_path / "ref")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_error_analysis():
    from hemolab.evaluation import error_analysis

    spacing = (1.0, 1.0, 2.0)
    hu = np.full((30, 30, 6), 30.0)
    hu[0:2, :, :] = 1000.0  # bone along one edge
    ref = np.zeros(hu.shape, bool)
    ref[2:8, 10:15, 2:4] = True  # a bleed next to the bone
    pred = ref.copy()
    pred[2:4, 10:15, 2:4] = False  # the part next to bone is missed: 2*5*2 = 20 voxels
    pred[20:22, 20:22, 2:3] = True  # a dense false positive: 4 voxels
    hu[20:22, 20:22, 2:3] = 200.0
    pred[25, 25, 2] = True  # a false positive at brain density
    pred[2, 25, 4] = True  # a bright false positive next to the bone: partial volume, not calcification
    hu[2, 25, 4] = 250.0
    pred[8, 12, 2] = True  # a bright false positive attached to the bleed: not calcification either
    hu[8, 12, 2] = 150.0
    r = error_analysis(pred, ref, spacing, hu, near_bone_mm=3.0)
    v = 2.0 / 1000
    assert r["fn_ml"] == pytest.approx(20 * v) and r["fn_near_bone_ml"] == pytest.approx(20 * v)
    assert r["fp_ml"] == pytest.approx(7 * v) and r["fp_dense_ml"] == pytest.approx(4 * v)
    masks = error_analysis(pred, ref, spacing, hu, near_bone_mm=3.0, return_masks=True)
    assert masks["fp_dense_mask"].sum() == 4 and masks["fp_dense_mask"][20:22, 20:22, 2].all()
    assert masks["fn_near_bone_mask"].sum() == 20
    r0 = error_analysis(pred, ref, spacing)
    assert r0["fp_ml"] == r["fp_ml"] and math.isnan(r0["fp_dense_ml"])
