"""Patel 2019's observer study, and the what-if tools behind notebook 07's interactive part.

Patel 2019, Methods, "Observer variability" (docs/methods.md §2.6): the evaluation metrics (DSC, HD, ...)
for inter-observer, intra-observer and method-vs-observer pairs (:func:`observer_metrics`), compared with a
paired test chosen by Shapiro-Wilk (:func:`paired_test`, :func:`observer_tests`). Plus pure functions that
perturb a mask like a reader would (:func:`perturb_mask`, :func:`simulated_reader`) and summarise the
agreement (:func:`agreement_summary`, :func:`perturbation_table`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy import stats

from hemolab.agreement.kappa import check_raters, cohen_kappa
from hemolab.agreement.volumes import volume_disagreement
from hemolab.errors import HemolabError
from hemolab.metrics import METRIC_NAMES, dice, evaluate, volume_ml
from hemolab.validation import check_mask, check_spacing


def paired_test(a, b, alpha: float = 0.05) -> dict:
    """Paired test chosen by normality, as Patel 2019 (Methods, "Observer variability").

    Shapiro-Wilk on the paired differences ``a - b``: if it does not reject normality (``p >= alpha``) a
    paired t-test (:func:`scipy.stats.ttest_rel`), otherwise the Wilcoxon signed-rank test
    (:func:`scipy.stats.wilcoxon`).

    Args:
        a: one measurement per case (e.g. the method-vs-observer DSC).
        b: the paired measurement of the same cases (e.g. the inter-observer DSC).
        alpha: the Shapiro-Wilk level.

    Returns:
        ``dict(test, statistic, pvalue, normal_p)``; ``test`` is "paired t-test", "Wilcoxon signed-rank"
        or "identical" (all differences 0: no test, ``pvalue`` 1.0).

    Raises:
        HemolabError: for fewer than 3 finite pairs (Shapiro-Wilk needs 3).
    """
    xa, xb = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if xa.shape != xb.shape:
        raise HemolabError(f"a and b must be paired (same length), got {xa.size} and {xb.size}")
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    if xa.size < 3:
        raise HemolabError(f"a paired test needs at least 3 finite pairs, got {xa.size}")
    d = xa - xb
    if np.all(d == 0):
        return {"test": "identical", "statistic": float("nan"), "pvalue": 1.0, "normal_p": float("nan")}
    normal_p = float(stats.shapiro(d).pvalue) if np.ptp(d) > 0 else 0.0
    if normal_p >= alpha:
        res = stats.ttest_rel(xa, xb)
        test = "paired t-test"
    else:
        res = stats.wilcoxon(xa, xb)
        test = "Wilcoxon signed-rank"
    return {
        "test": test,
        "statistic": float(res.statistic),
        "pvalue": float(res.pvalue),
        "normal_p": normal_p,
    }


def observer_metrics(
    observer1: Sequence,
    observer2: Sequence,
    method: Sequence,
    spacings: Sequence[Sequence[float]],
    *,
    observer2_repeat: Sequence | None = None,
    case_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Patel 2019's observer study (Table 2): every metric for every comparison, per case.

    Comparisons (reference first): "inter-observer" (observer 1 vs observer 2), "intra-observer"
    (observer 2's first vs second reading, when ``observer2_repeat`` is given), "method vs observer 1",
    "method vs observer 2" (the observer is the reference).

    Returns:
        A long table: ``case, comparison`` and the metrics of :func:`hemolab.metrics.evaluate`.
    """
    n = check_raters({"observer1": observer1, "observer2": observer2, "method": method})
    if len(spacings) != n:
        raise HemolabError(f"need one spacing per case ({n}), got {len(spacings)}")
    case_ids = case_ids if case_ids is not None else [str(i) for i in range(n)]
    rows = []
    for k in range(n):
        sp = check_spacing(spacings[k])
        pairs = [("inter-observer", observer2[k], observer1[k])]
        if observer2_repeat is not None:
            pairs.append(("intra-observer", observer2_repeat[k], observer2[k]))
        pairs += [
            ("method vs observer 1", method[k], observer1[k]),
            ("method vs observer 2", method[k], observer2[k]),
        ]
        for name, pred, ref in pairs:
            rows.append({"case": case_ids[k], "comparison": name} | evaluate(pred, ref, sp))
    return pd.DataFrame(rows)


def observer_tests(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("dsc", "hd", "hd95", "mhd", "cmd", "avd"),
    baseline: str = "inter-observer",
) -> pd.DataFrame:
    """Paired tests of each "method vs observer k" against the inter-observer values (Patel 2019, Table 2).

    A statistic that cannot be computed is reported as such, never a crash: when fewer than 3 cases have
    a finite value on both sides (e.g. the method raised a false alarm on blood-free scans, so its
    Hausdorff distances there are infinite), the row says ``test = "not computable"`` with the reason and
    NaN statistic and p-value.

    Returns:
        One row per (comparison, metric): ``comparison, metric, test, statistic, pvalue, normal_p,
        n_pairs`` (the finite pairs used) and ``note`` (why a test could not be done; empty otherwise).
    """
    rows = []
    base = table[table["comparison"] == baseline].set_index("case")
    for comp in [c for c in table["comparison"].unique() if c.startswith("method")]:
        other = table[table["comparison"] == comp].set_index("case").loc[base.index]
        for m in metrics:
            if m not in METRIC_NAMES:
                raise HemolabError(f"unknown metric {m!r}: choose from {METRIC_NAMES}")
            a, b = np.asarray(other[m], dtype=np.float64), np.asarray(base[m], dtype=np.float64)
            n_pairs = int(np.count_nonzero(np.isfinite(a) & np.isfinite(b)))
            row = {"comparison": comp, "metric": m}
            if n_pairs < 3:
                row |= {"test": "not computable", "statistic": np.nan, "pvalue": np.nan, "normal_p": np.nan,
                        "note": f"only {n_pairs} of {a.size} cases have a finite {m} on both sides (3 needed)"}  # fmt: skip
            else:
                row |= paired_test(a, b) | {"note": ""}
            rows.append(row | {"n_pairs": n_pairs})
    columns = ["comparison", "metric", "test", "statistic", "pvalue", "normal_p", "n_pairs", "note"]
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------------------- what-if
def perturb_mask(mask, k: int = 0, *, drop_component: int | None = None, inplane: bool = True) -> np.ndarray:
    """Move a rater's boundary by ``k`` voxels and optionally leave out one component.

    Args:
        mask: binary mask indexed ``[x, y, z]``.
        k: ``> 0`` dilates by ``k`` voxels (draws larger), ``< 0`` erodes by ``|k|`` (draws smaller),
            using the cross (face neighbours).
        drop_component: remove one connected component (26-connected), counted by size: 0 = the largest,
            1 = the second largest, -1 = the smallest. Applied before the boundary moves. An index
            beyond the number of components changes nothing.
        inplane: move the boundary only within each axial slice (as a rater draws slice by slice);
            ``False`` also moves it across slices.

    Returns:
        The new boolean mask (the input is not changed).
    """
    m = check_mask(mask, "mask").copy()
    k = int(k)
    if drop_component is not None and m.any():
        lab, n = ndi.label(m, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(lab.ravel())[1:]
        order = np.argsort(-sizes, kind="stable") + 1  # labels from largest to smallest
        idx = int(drop_component)
        if -n <= idx < n:
            m[lab == order[idx]] = False
    if k == 0:
        return m
    structure = ndi.generate_binary_structure(3, 1)
    if inplane:
        structure[:, :, 0] = False
        structure[:, :, 2] = False
    if k > 0:
        return ndi.binary_dilation(m, structure=structure, iterations=k)
    return ndi.binary_erosion(m, structure=structure, iterations=-k, border_value=0)


def agreement_summary(masks: Mapping[str, np.ndarray], spacing: Sequence[float], focus: str) -> pd.DataFrame:
    """How one rater agrees with every other on one case: kappa, DSC and volume disagreement.

    Args:
        masks: ``{rater name: mask}`` for one case, all on the same grid.
        spacing: voxel size in mm.
        focus: the rater to compare with the others.

    Returns:
        One row per other rater (index): ``kappa, dsc, volume_ml`` (the focus rater's),
        ``volume_other_ml`` and ``disagreement`` (signed ``(V_focus - V_other)/mean``, the paper's
        measure for a single image).
    """
    if focus not in masks:
        raise HemolabError(f"focus {focus!r} is not one of the raters {list(masks)}")
    sp = check_spacing(spacing)
    v_focus = volume_ml(masks[focus], sp)
    rows = {}
    for name, other in masks.items():
        if name == focus:
            continue
        v_other = volume_ml(other, sp)
        rows[name] = {
            "kappa": cohen_kappa(masks[focus], other),
            "dsc": dice(masks[focus], other),
            "volume_ml": v_focus,
            "volume_other_ml": v_other,
            "disagreement": volume_disagreement([v_focus], [v_other]),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def perturbation_table(
    masks: Mapping[str, np.ndarray],
    spacing: Sequence[float],
    focus: str,
    ks: Sequence[int] = (-2, -1, 0, 1, 2),
    *,
    drop_component: int | None = None,
    inplane: bool = True,
) -> pd.DataFrame:
    """:func:`agreement_summary` after moving ``focus``'s boundary by each ``k`` in ``ks``.

    Returns:
        A long table: ``k, other`` and the columns of :func:`agreement_summary`.
    """
    frames = []
    for k in ks:
        changed = dict(masks)
        changed[focus] = perturb_mask(masks[focus], k, drop_component=drop_component, inplane=inplane)
        df = agreement_summary(changed, spacing, focus)
        df.insert(0, "other", df.index)
        df.insert(0, "k", int(k))
        frames.append(df.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


def simulated_reader(reference, seed: int = 0, *, shifts: Sequence[int] = (-1, 1)) -> np.ndarray:
    """A rater-like stand-in for a method: the reference with its boundary moved by one voxel.

    Used by notebooks 06 and 07 in the ``tiny`` profile, where a network trained in seconds is useless:
    it draws one shift from ``shifts`` with ``numpy.random.default_rng(seed)`` and applies
    :func:`perturb_mask` (in-plane). It is **not** a segmentation method: it has seen the reference.

    Args:
        reference: the reference mask of one case.
        seed: the random seed (use the case's index or seed so each case differs).
        shifts: the boundary shifts (voxels) to choose from.

    Returns:
        The perturbed mask.
    """
    k = int(np.random.default_rng(seed).choice(np.asarray(shifts, dtype=int)))
    return perturb_mask(reference, k)
