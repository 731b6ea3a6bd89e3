"""Segmentation metrics and haemorrhage volumes, one convention each (docs/methods.md §4).

Both papers judge a segmentation ``B`` (the prediction) against a reference ``A`` (the majority of the
raters, or one observer). Arab 2020 reports Dice, precision, recall and F1 (Results, Table 3); Patel 2019
adds four boundary distances and the absolute volume difference (Methods, "Evaluation metrics";
Tables 2-4). The literature computes several of these in subtly different ways, so hemolab fixes one
convention per metric and follows it everywhere:

=====================  ====================================================================================
metric                 formula (``A`` = reference, ``B`` = prediction, ``|X|`` = number of voxels)
=====================  ====================================================================================
``dsc``                ``2|A∩B| / (|A| + |B|)``
``precision``          ``|A∩B| / |B|``
``recall``             ``|A∩B| / |A|``
``f1``                 harmonic mean of precision and recall (equal to the DSC for binary masks)
``hd``                 ``max(max_{a∈∂A} d(a, ∂B), max_{b∈∂B} d(b, ∂A))``
``hd95``               ``max(P95_{a∈∂A} d(a, ∂B), P95_{b∈∂B} d(b, ∂A))`` -- the two *directed* 95th
                       percentiles (MONAI's and grand-challenge's convention, not MedPy's pooled one)
``mhd``                ``max(mean_{a∈∂A} d(a, ∂B), mean_{b∈∂B} d(b, ∂A))`` (Dubuisson & Jain 1994)
``cmd``                contour mean distance: the larger of the two directed means of the distances from
                       one contour to the other contour (ITK's ``ContourMeanDistanceImageFilter``)
``avd``                ``|V_B - V_A| / V_A x 100`` (per cent)
``volume_*_ml``        ``voxels x sx*sy*sz / 1000`` (mL)
=====================  ====================================================================================

``∂X`` is the boundary of ``X``: ``X`` minus its erosion by the 6-connected cross (voxels on the edge of
the array count as boundary, as in MONAI). ``d`` is the Euclidean distance in mm between voxel centres,
using the (anisotropic) spacing, computed with :func:`scipy.ndimage.distance_transform_edt`.

Note that with this single boundary convention the modified HD and the contour mean distance are the
*same number*: both are the larger of the two directed mean boundary-to-boundary distances. They are
kept as two names because Patel 2019 reports both (MHD 0.17 mm, CMD 0.49 mm on its test set): the tools
they used evidently took different point sets (e.g. a modified HD over all voxels of ``A`` and ``B``,
where overlapping voxels contribute zero, gives a smaller value). hemolab follows docs/methods.md §4; the
notebook 06 discusses the difference.

Empty masks (a scan without blood, or a method that finds none) are common, so every metric is defined
for them (tested in ``tests/test_metrics.py``):

==================  ================  =======================  =======================
metric              both empty        ``A`` empty, ``B`` not   ``B`` empty, ``A`` not
==================  ================  =======================  =======================
dsc, f1             1.0               0.0                      0.0
precision           1.0               0.0                      0.0
recall              1.0               0.0                      0.0
hd, hd95, mhd, cmd  0.0               inf                      inf
avd (%)             0.0               inf                      100.0
==================  ================  =======================  =======================

Two empty masks agree perfectly (as MONAI's ``compute_dice(..., ignore_empty=False)`` gives 1.0). A ratio
that is 0/0 because only one mask is empty counts as a failure (0.0: scikit-learn's ``zero_division=0``).
A distance to a mask without a boundary is infinite, as in MONAI's ``compute_hausdorff_distance``
(MONAI returns NaN when both masks are empty; hemolab returns 0.0: nothing to be far from). Summaries
(:func:`summarize`) average the finite values and report how many were not finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

from hemolab.validation import check_mask, check_same_shape, check_spacing

__all__ = [
    "METRIC_NAMES",
    "OVERLAP_NAMES",
    "abc2_volume",
    "absolute_volume_difference",
    "boundary",
    "contour_mean_distance",
    "dice",
    "directed_boundary_distances",
    "evaluate",
    "f1_score",
    "format_mean_sd",
    "format_median_iqr",
    "hausdorff_distance",
    "hausdorff_distance_95",
    "modified_hausdorff_distance",
    "overlap",
    "precision",
    "recall",
    "summarize",
    "summary_table",
    "volume_ml",
    "voxel_volume_ml",
]

#: The keys of :func:`evaluate`'s result, in the order tables show them.
METRIC_NAMES: tuple[str, ...] = (
    "dsc",
    "precision",
    "recall",
    "f1",
    "hd",
    "hd95",
    "mhd",
    "cmd",
    "avd",
    "volume_pred_ml",
    "volume_ref_ml",
)

#: The keys of :func:`overlap`: the quick per-case columns (no boundary distances) that evaluation tables,
#: ``hemolab demo``, the ablation and the notebooks share.
OVERLAP_NAMES: tuple[str, ...] = ("dsc", "precision", "recall", "volume_pred_ml", "volume_ref_ml")

#: The 6-connected cross (face neighbours) that defines a boundary voxel.
CROSS_3D = ndi.generate_binary_structure(3, 1)


# ----------------------------------------------------------------------------------------- input checks
def _pair(prediction, reference) -> tuple[np.ndarray, np.ndarray]:
    """Check two masks and return them as booleans ``(B, A)``."""
    b = check_mask(prediction, "prediction")
    a = check_mask(reference, "reference")
    check_same_shape(a, b, ("reference", "prediction"))
    return b, a


# ----------------------------------------------------------------------------------------- overlap
def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den > 0:
        return float(num) / float(den)
    return 1.0 if both_empty else 0.0


def dice(prediction, reference) -> float:
    """Dice similarity coefficient ``DSC = 2|A∩B| / (|A| + |B|)`` (docs/methods.md §4).

    Args:
        prediction: binary mask ``B``, indexed ``[x, y, z]``.
        reference: binary mask ``A`` of the same shape.

    Returns:
        The DSC in [0, 1]; 1.0 when both masks are empty.

    Raises:
        HemolabError: for masks that are not binary, not 3D, contain NaN, or differ in shape.
    """
    b, a = _pair(prediction, reference)
    na, nb = int(a.sum()), int(b.sum())
    return _ratio(2 * int(np.logical_and(a, b).sum()), na + nb, na == nb == 0)


def precision(prediction, reference) -> float:
    """Precision (positive predictive value) ``|A∩B| / |B|`` (docs/methods.md §4).

    Returns 1.0 when both masks are empty and 0.0 when only the prediction is empty.
    """
    b, a = _pair(prediction, reference)
    na, nb = int(a.sum()), int(b.sum())
    return _ratio(int(np.logical_and(a, b).sum()), nb, na == nb == 0)


def recall(prediction, reference) -> float:
    """Recall (sensitivity) ``|A∩B| / |A|`` (docs/methods.md §4).

    Returns 1.0 when both masks are empty and 0.0 when only the reference is empty.
    """
    b, a = _pair(prediction, reference)
    na, nb = int(a.sum()), int(b.sum())
    return _ratio(int(np.logical_and(a, b).sum()), na, na == nb == 0)


def f1_score(prediction, reference) -> float:
    """F1 = ``2 P R / (P + R)``, the harmonic mean of precision ``P`` and recall ``R`` (Arab 2020, Table 3).

    For binary masks this equals the DSC, which is how it is computed (so it is also defined when
    ``P + R = 0``: then it is 0.0). 1.0 when both masks are empty.
    """
    return dice(prediction, reference)


# ----------------------------------------------------------------------------------------- volumes
def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """The volume of one voxel in millilitres: ``sx*sy*sz / 1000`` (1 mL = 1000 mm^3; docs/methods.md §4).

    Raises:
        HemolabError: for a spacing that is not three positive numbers.
    """
    return float(np.prod(check_spacing(spacing))) / 1000.0


def volume_ml(mask, spacing: Sequence[float]) -> float:
    """Volume of a mask in millilitres: ``voxels x sx*sy*sz / 1000`` (Arab 2020, Methods; docs/methods.md §4).

    Args:
        mask: binary mask indexed ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.

    Returns:
        The volume in mL (1 mL = 1000 mm^3).
    """
    return float(check_mask(mask, "mask").sum()) * voxel_volume_ml(spacing)


def absolute_volume_difference(prediction, reference, spacing: Sequence[float]) -> float:
    """Absolute volume difference ``AVD = |V_B - V_A| / V_A x 100`` in per cent (Patel 2019; docs/methods.md §4).

    Returns 0.0 when both masks are empty, ``inf`` when only the reference is empty.
    """
    b, a = _pair(prediction, reference)
    sp = check_spacing(spacing)
    return _avd(volume_ml(b, sp), volume_ml(a, sp))


def _avd(v_b: float, v_a: float) -> float:
    if v_a > 0:
        return abs(v_b - v_a) / v_a * 100.0
    return 0.0 if v_b == 0 else float("inf")


# ----------------------------------------------------------------------------------------- distances
def boundary(mask) -> np.ndarray:
    """The boundary voxels ``∂X = X minus erosion(X, 6-connected cross)`` (docs/methods.md §4).

    Voxels on the edge of the array count as boundary (the outside is background), as in MONAI's
    ``get_mask_edges``.
    """
    m = check_mask(mask, "mask")
    return m & ~ndi.binary_erosion(m, structure=CROSS_3D, border_value=0)


def directed_boundary_distances(
    prediction, reference, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from every boundary voxel of one mask to the nearest boundary voxel of the other.

    Args:
        prediction: binary mask ``B``.
        reference: binary mask ``A``.
        spacing: voxel size ``(sx, sy, sz)`` in mm (anisotropic spacing is respected).

    Returns:
        ``(d_AB, d_BA)``: for each voxel of ``∂A`` its distance to ``∂B``, and for each voxel of ``∂B``
        its distance to ``∂A`` (1D float arrays, in the order of ``np.nonzero``). When the other mask is
        empty the distances are ``inf``; an empty mask gives an empty array.
    """
    b, a = _pair(prediction, reference)
    sp = check_spacing(spacing)
    union = a | b
    if not union.any():
        return np.zeros(0), np.zeros(0)
    # Crop to the union's bounding box plus one voxel: exact (every boundary voxel lies inside it) and
    # much faster on a 512 x 512 x 60 scan.
    lo = np.maximum(np.argwhere(union).min(axis=0) - 1, 0)
    hi = np.minimum(np.argwhere(union).max(axis=0) + 2, union.shape)
    box = tuple(slice(int(s), int(e)) for s, e in zip(lo, hi, strict=True))
    ea, eb = boundary(a[box]), boundary(b[box])
    # a crop never creates boundary: a voxel on the crop's edge that is not on the array's edge is
    # background (the box has a one-voxel margin), so ∂X is the same as on the full array.
    if not eb.any():
        d_ab = np.full(int(ea.sum()), np.inf)
    else:
        d_ab = ndi.distance_transform_edt(~eb, sampling=sp)[ea]
    if not ea.any():
        d_ba = np.full(int(eb.sum()), np.inf)
    else:
        d_ba = ndi.distance_transform_edt(~ea, sampling=sp)[eb]
    return np.asarray(d_ab, dtype=np.float64), np.asarray(d_ba, dtype=np.float64)


def _symmetric(prediction, reference, spacing, reduce) -> float:
    d_ab, d_ba = directed_boundary_distances(prediction, reference, spacing)
    if d_ab.size == 0 and d_ba.size == 0:
        return 0.0  # both empty
    if d_ab.size == 0 or d_ba.size == 0:
        return float("inf")  # one empty
    return float(max(reduce(d_ab), reduce(d_ba)))


def hausdorff_distance(prediction, reference, spacing: Sequence[float]) -> float:
    """Hausdorff distance ``HD = max(max_{a∈∂A} d(a, ∂B), max_{b∈∂B} d(b, ∂A))`` in mm (docs/methods.md §4).

    The largest distance from a boundary voxel of either mask to the other mask's boundary: one stray
    voxel far away sets it.

    Returns:
        HD in mm; 0.0 when both masks are empty, ``inf`` when one is.
    """
    return _symmetric(prediction, reference, spacing, np.max)


def hausdorff_distance_95(prediction, reference, spacing: Sequence[float]) -> float:
    """95% Hausdorff distance ``max(P95(d(∂A, ∂B)), P95(d(∂B, ∂A)))`` in mm (docs/methods.md §4).

    The maximum of the two *directed* 95th percentiles (linear interpolation, as ``numpy.percentile``
    and MONAI's ``compute_hausdorff_distance(..., percentile=95)``), which ignores the farthest 5% of
    each boundary, e.g. a single stray voxel.

    Returns:
        HD95 in mm; 0.0 when both masks are empty, ``inf`` when one is.
    """
    return _symmetric(prediction, reference, spacing, lambda d: np.percentile(d, 95))


def modified_hausdorff_distance(prediction, reference, spacing: Sequence[float]) -> float:
    """Modified HD (Dubuisson & Jain 1994) ``max(mean d(∂A, ∂B), mean d(∂B, ∂A))`` in mm (docs/methods.md §4).

    Returns:
        MHD in mm; 0.0 when both masks are empty, ``inf`` when one is.
    """
    return _symmetric(prediction, reference, spacing, np.mean)


def contour_mean_distance(prediction, reference, spacing: Sequence[float]) -> float:
    """Contour mean distance (ITK) ``max(mean_{a∈∂A} d(a, ∂B), mean_{b∈∂B} d(b, ∂A))`` in mm (docs/methods.md §4).

    ITK's ``ContourMeanDistanceImageFilter`` averages, over the contour voxels of one image, the
    absolute signed distance to the other image's contour, in both directions, and keeps the larger
    mean. With hemolab's single boundary convention ``∂X`` this is the same number as
    :func:`modified_hausdorff_distance` (see the module docstring).

    Returns:
        CMD in mm; 0.0 when both masks are empty, ``inf`` when one is.
    """
    return _symmetric(prediction, reference, spacing, np.mean)


# ----------------------------------------------------------------------------------------- all at once
def evaluate(prediction, reference, spacing: Sequence[float]) -> dict[str, float]:
    """Every metric of docs/methods.md §4 for one prediction against one reference.

    Args:
        prediction: binary mask ``B`` indexed ``[x, y, z]`` (bool or 0/1).
        reference: binary mask ``A`` on the same grid.
        spacing: voxel size ``(sx, sy, sz)`` in mm.

    Returns:
        A dict with keys :data:`METRIC_NAMES`: ``dsc, precision, recall, f1`` (fractions), ``hd, hd95,
        mhd, cmd`` (mm), ``avd`` (%), ``volume_pred_ml, volume_ref_ml`` (mL). Empty masks give the values
        in the module docstring's table.

    Raises:
        HemolabError: for non-binary masks, NaN, different shapes or an invalid spacing.
    """
    b, a = _pair(prediction, reference)
    sp = check_spacing(spacing)
    na, nb = int(a.sum()), int(b.sum())
    inter = int(np.logical_and(a, b).sum())
    both_empty = na == nb == 0
    d_ab, d_ba = directed_boundary_distances(b, a, sp)
    if both_empty:
        hd = hd95 = mhd = 0.0
    elif na == 0 or nb == 0:
        hd = hd95 = mhd = float("inf")
    else:
        hd = float(max(d_ab.max(), d_ba.max()))
        hd95 = float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
        mhd = float(max(d_ab.mean(), d_ba.mean()))
    voxel_ml = voxel_volume_ml(sp)
    v_a, v_b = na * voxel_ml, nb * voxel_ml
    dsc = _ratio(2 * inter, na + nb, both_empty)
    return {
        "dsc": dsc,
        "precision": _ratio(inter, nb, both_empty),
        "recall": _ratio(inter, na, both_empty),
        "f1": dsc,
        "hd": hd,
        "hd95": hd95,
        "mhd": mhd,
        "cmd": mhd,
        "avd": _avd(v_b, v_a),
        "volume_pred_ml": v_b,
        "volume_ref_ml": v_a,
    }


def overlap(prediction, reference, spacing: Sequence[float]) -> dict[str, float]:
    """The overlap metrics and volumes of :func:`evaluate` without the (slower) boundary distances.

    Returns:
        A dict with keys :data:`OVERLAP_NAMES`, the same values :func:`evaluate` gives for them.
    """
    b, a = _pair(prediction, reference)
    voxel_ml = voxel_volume_ml(spacing)
    na, nb = int(a.sum()), int(b.sum())
    inter = int(np.logical_and(a, b).sum())
    both_empty = na == nb == 0
    return {
        "dsc": _ratio(2 * inter, na + nb, both_empty),
        "precision": _ratio(inter, nb, both_empty),
        "recall": _ratio(inter, na, both_empty),
        "volume_pred_ml": nb * voxel_ml,
        "volume_ref_ml": na * voxel_ml,
    }


# ----------------------------------------------------------------------------------------- ABC/2
def _corner_points(ij: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """The four corners (mm) of each in-plane voxel square: lengths measured edge to edge."""
    offsets = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    pts = (ij[:, None, :].astype(np.float64) + offsets[None]).reshape(-1, 2)
    return pts * np.array([sx, sy])


def abc2_volume(mask, spacing: Sequence[float]) -> dict:
    """The bedside ABC/2 volume estimate, measured automatically on a mask (docs/methods.md §4).

    * The axial slice (constant ``z``) with the largest bleed area is chosen.
    * ``A`` = the longest diameter of the bleed on that slice: the largest distance between two points
      of the region (found among the vertices of its convex hull), measured edge to edge like calipers on
      the screen (voxel corners, in mm with the in-plane spacing).
    * ``B`` = the longest diameter perpendicular to ``A`` on that slice: the region's extent along the
      in-plane direction perpendicular to ``A``.
    * ``C`` = number of slices containing bleed x slice thickness ``sz``.
    * volume = ``A·B·C / 2`` (mm^3, reported in mL).

    ABC/2 is exact for an ellipsoid up to ``π/6 ≈ 0.52 ≈ 1/2`` and overestimates irregular bleeds.

    Args:
        mask: binary mask indexed ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.

    Returns:
        ``dict(volume_ml, a_mm, b_mm, c_mm, slice, a_line_mm, b_line_mm)``: ``slice`` is the ``z`` index
        used; ``a_line_mm`` / ``b_line_mm`` are the end points ``((x0, y0), (x1, y1))`` of the two
        diameters in mm from the centre of voxel (0, 0) (``b_line_mm`` drawn through the middle of A), for
        drawing. For an empty mask ``slice`` and the lines are ``None`` and the lengths and volume 0.0.
    """
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist, squareform

    m = check_mask(mask, "mask")
    sx, sy, sz = check_spacing(spacing)
    if not m.any():
        return {
            "volume_ml": 0.0,
            "a_mm": 0.0,
            "b_mm": 0.0,
            "c_mm": 0.0,
            "slice": None,
            "a_line_mm": None,
            "b_line_mm": None,
        }
    areas = m.sum(axis=(0, 1))
    k = int(np.argmax(areas))
    pts = _corner_points(np.argwhere(m[:, :, k]), sx, sy)
    hull = pts[ConvexHull(pts).vertices]  # corners of voxel squares: never degenerate
    dist = squareform(pdist(hull))
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    a_mm = float(dist[i, j])
    u = (hull[j] - hull[i]) / a_mm
    v = np.array([-u[1], u[0]])
    proj = pts @ v
    b_mm = float(proj.max() - proj.min())
    c_mm = float(np.count_nonzero(areas)) * sz
    mid = (hull[i] + hull[j]) / 2.0
    # B drawn along the perpendicular through A's midpoint, spanning the region's extent along v
    b_line = (mid + (proj.min() - mid @ v) * v, mid + (proj.max() - mid @ v) * v)
    return {
        "volume_ml": a_mm * b_mm * c_mm / 2.0 / 1000.0,
        "a_mm": a_mm,
        "b_mm": b_mm,
        "c_mm": c_mm,
        "slice": k,
        "a_line_mm": (tuple(map(float, hull[i])), tuple(map(float, hull[j]))),
        "b_line_mm": (tuple(map(float, b_line[0])), tuple(map(float, b_line[1]))),
    }


# ----------------------------------------------------------------------------------------- summaries
def summarize(values: Iterable[float]) -> dict[str, float]:
    """Mean ± SD and median [IQR] of a metric over cases, as the papers report them.

    Arab 2020 reports mean ± SD; Patel 2019 reports median [25th-75th percentile] for non-normal metrics.
    Non-finite values (``inf`` from an empty mask, NaN) are left out and counted in ``n_nonfinite``.

    Returns:
        ``dict(n, n_nonfinite, mean, sd, median, q1, q3)``; ``sd`` uses ``ddof=1`` (NaN for one value).
    """
    arr = np.asarray(list(values), dtype=np.float64)
    fin = arr[np.isfinite(arr)]
    out = {"n": int(fin.size), "n_nonfinite": int(arr.size - fin.size)}
    if fin.size == 0:
        return out | {k: float("nan") for k in ("mean", "sd", "median", "q1", "q3")}
    q1, med, q3 = np.percentile(fin, [25, 50, 75])
    return out | {
        "mean": float(fin.mean()),
        "sd": float(fin.std(ddof=1)) if fin.size > 1 else float("nan"),
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
    }


def _fmt(x: float, digits: int) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.{digits}f}"


def format_mean_sd(values: Iterable[float], digits: int = 2) -> str:
    """``"0.84 ± 0.06"`` (Arab 2020's style) over the finite values."""
    s = summarize(values)
    return f"{_fmt(s['mean'], digits)} ± {_fmt(s['sd'], digits)}"


def format_median_iqr(values: Iterable[float], digits: int = 2) -> str:
    """``"0.91 [0.87–0.94]"`` (Patel 2019's style) over the finite values."""
    s = summarize(values)
    return f"{_fmt(s['median'], digits)} [{_fmt(s['q1'], digits)}–{_fmt(s['q3'], digits)}]"


#: How each metric is labelled in a summary table (name, unit).
METRIC_LABELS: dict[str, str] = {
    "dsc": "DSC",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "hd": "HD (mm)",
    "hd95": "95% HD (mm)",
    "mhd": "MHD (mm)",
    "cmd": "CMD (mm)",
    "avd": "AVD (%)",
    "volume_pred_ml": "volume, prediction (mL)",
    "volume_ref_ml": "volume, reference (mL)",
}


def summary_table(per_case, metrics: Sequence[str] = METRIC_NAMES, digits: int = 2):
    """One row per metric: ``n``, ``mean ± SD`` (Arab 2020) and ``median [IQR]`` (Patel 2019).

    Args:
        per_case: a pandas DataFrame with one row per case and a column per metric.
        metrics: which columns to summarise.
        digits: decimals shown.

    Returns:
        A DataFrame indexed by the metric's label with columns ``n, not finite, mean ± SD, median [IQR]``.
    """
    import pandas as pd

    rows = {}
    for m in metrics:
        if m not in per_case:
            continue
        vals = per_case[m].to_numpy(dtype=np.float64)
        s = summarize(vals)
        rows[METRIC_LABELS.get(m, m)] = {
            "n": s["n"],
            "not finite": s["n_nonfinite"],
            "mean ± SD": format_mean_sd(vals, digits),
            "median [IQR]": format_median_iqr(vals, digits),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
