"""Segment the test cases of a dataset and compare them with their references; where predictions go wrong.

* :func:`evaluate_cases` -- the per-case table;
* :func:`error_analysis` -- the false positives and negatives of one prediction, by kind (the failure
  modes of Arab 2020, Fig. 2; docs/methods.md §1.8);
* :func:`describe_volume_estimates` -- words for how ABC/2 and the planimetric volume compared with the
  true volumes in a run (notebook 06), computed from its numbers.

One naming scheme for per-case tables everywhere (metrics, this module, ``hemolab demo``, the ablation,
the notebooks): :data:`CASE_COLUMNS` = ``case_id``, the :data:`hemolab.metrics.OVERLAP_NAMES`
(``dsc``, ``precision``, ``recall``, ``volume_pred_ml``, ``volume_ref_ml``) and ``seconds``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from hemolab import metrics
from hemolab.architectures import segment_scan
from hemolab.checkpoint import CheckpointMeta
from hemolab.datasets import Case
from hemolab.io import array_from_image
from hemolab.segment import SegmentationResult
from hemolab.validation import check_mask, check_same_shape, check_spacing, check_volume

#: The columns of :func:`evaluate_cases`' table.
CASE_COLUMNS: tuple[str, ...] = ("case_id", *metrics.OVERLAP_NAMES, "seconds")


def evaluate_cases(
    cases: Iterable[Case],
    model: torch.nn.Module,
    meta: CheckpointMeta | Mapping[str, Any],
    *,
    threshold: float | None = None,
    device: Any = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, SegmentationResult]]:
    """Segment cases of a hemolab dataset and compare each with its reference label.

    Args:
        cases: :class:`hemolab.datasets.Case` objects (e.g. ``dataset.test``).
        model, meta: from :func:`hemolab.architectures.load_checkpoint`.
        threshold: overrides the checkpoint's threshold.
        device: where to run the network.
        progress: show a progress bar.

    Returns:
        ``(table, results)``: a :class:`pandas.DataFrame` with :data:`CASE_COLUMNS`, one row per case, and a
        dict case_id -> :class:`~hemolab.segment.SegmentationResult`.
    """
    rows, results = [], {}
    for case in tqdm(list(cases), desc="segmenting", unit="case", disable=not progress, leave=False):
        image = case.load_image()
        res = segment_scan(image, model, meta, threshold=threshold, device=device)
        ref = array_from_image(case.load_label()) > 0
        rows.append(
            {
                "case_id": case.case_id,
                **metrics.overlap(res.mask_array(), ref, image.GetSpacing()),
                "seconds": res.seconds,
            }
        )
        results[case.case_id] = res
    return pd.DataFrame(rows, columns=list(CASE_COLUMNS)), results


def error_analysis(
    prediction,
    reference,
    spacing: Sequence[float],
    image=None,
    *,
    dense_hu: float = 100.0,
    bone_hu: float = 300.0,
    near_bone_mm: float = 5.0,
    return_masks: bool = False,
) -> dict:
    """Where a prediction goes wrong: the volumes of its false positives and false negatives, by kind.

    The failure modes Arab 2020 shows in Fig. 2 (docs/methods.md §1.8): a calcification labelled as blood (a
    false positive denser than blood, which is 40-90 HU) and blood next to bone missed (a false negative
    close to the skull).

    Args:
        prediction: binary mask ``B``.
        reference: binary mask ``A``.
        spacing: voxel size in mm.
        image: the CT in HU on the same grid (needed for the ``*_dense_*`` and ``*_near_bone_*`` values).
        dense_hu: ``fp_dense_ml`` counts the false-positive blobs (26-connected) that are calcification-
            like: detached from the reference, with a voxel brighter than ``dense_hu``, and no voxel within
            ``near_bone_mm`` of bone (pineal and choroid plexus calcifications lie deep inside the head;
            bright voxels next to the skull or a bleed are partial volume).
        bone_hu: voxels at least this bright are bone.
        near_bone_mm: a false-negative voxel at most this far from bone is "near bone".
        return_masks: also return the boolean masks ``fp_dense_mask`` and ``fn_near_bone_mask`` (with an
            ``image``), e.g. to find the slice to show.

    Returns:
        ``dict(fp_ml, fn_ml, fp_dense_ml, fn_near_bone_ml)`` (the last two NaN without ``image``), plus the
        masks when asked for.
    """
    b = check_mask(prediction, "prediction")
    a = check_mask(reference, "reference")
    check_same_shape(a, b, ("reference", "prediction"))
    sp = check_spacing(spacing)
    voxel_ml = metrics.voxel_volume_ml(sp)
    fp, fn = b & ~a, a & ~b
    out = {"fp_ml": float(fp.sum()) * voxel_ml, "fn_ml": float(fn.sum()) * voxel_ml}
    if image is None:
        return out | {"fp_dense_ml": float("nan"), "fn_near_bone_ml": float("nan")}
    hu = check_volume(image, "image")
    check_same_shape(a, hu, ("reference", "image"))
    bone = hu >= bone_hu
    dist_bone = ndi.distance_transform_edt(~bone, sampling=sp) if bone.any() else np.full(hu.shape, np.inf)
    near_bone = dist_bone <= near_bone_mm
    # calcification-like: a false-positive blob detached from the reference, denser than blood, away from bone
    full = np.ones((3, 3, 3), bool)
    lab, n = ndi.label(fp, structure=full)
    dense_mask = np.zeros_like(fp)
    if n:
        touches_ref = ndi.binary_dilation(a, structure=full)
        idx = np.arange(1, n + 1)
        detached = ~ndi.maximum(touches_ref, lab, idx).astype(bool)
        bright = ndi.maximum(hu, lab, idx) > dense_hu
        away = ~ndi.maximum(near_bone, lab, idx).astype(bool)
        dense_mask = np.isin(lab, idx[detached & bright & away])
    out["fp_dense_ml"] = float(np.count_nonzero(dense_mask)) * voxel_ml
    out["fn_near_bone_ml"] = float(np.count_nonzero(fn & near_bone)) * voxel_ml
    if return_masks:
        out |= {"fp_dense_mask": dense_mask, "fn_near_bone_mask": fn & near_bone}
    return out


def describe_volume_estimates(volumes: pd.DataFrame, *, tolerance: float = 0.10) -> str:
    """What a run says about ABC/2 and the planimetric volume against the truth, generated from its numbers.

    Args:
        volumes: one row per bleed with columns ``bleed_type``, ``true_ml``, ``abc2_ml`` and
            ``planimetric_ml`` (notebook 06, section 3).
        tolerance: a median ratio within ``1 ± tolerance`` of the truth is called "close to the truth".

    Returns:
        A paragraph of Markdown: how many bleeds ABC/2 over- and underestimated, the per-type medians
        sorted from the largest overestimate, and the planimetric volume's median ratio.
    """
    if len(volumes) == 0:
        return "No case has a bleed: there is nothing to compare."
    v = volumes.assign(
        abc2_ratio=volumes["abc2_ml"] / volumes["true_ml"],
        plan_ratio=volumes["planimetric_ml"] / volumes["true_ml"],
    )
    n = len(v)
    n_over = int((v["abc2_ratio"] > 1 + tolerance).sum())
    n_under = int((v["abc2_ratio"] < 1 - tolerance).sum())
    by_type = v.groupby("bleed_type").agg(n=("abc2_ratio", "size"), ratio=("abc2_ratio", "median"))
    by_type = by_type.sort_values("ratio", ascending=False)

    def word(r: float) -> str:
        if r > 1 + tolerance:
            return "over"
        return "under" if r < 1 - tolerance else "close"

    groups = {key: [f"{t} ({row.ratio:.2f}, n = {int(row.n)})" for t, row in by_type.iterrows() if word(row.ratio) == key]
              for key in ("over", "close", "under")}  # fmt: skip
    parts = [
        f"- **ABC/2** over {n} bleed{'s' if n != 1 else ''}: median ABC/2 / true "
        f"{v['abc2_ratio'].median():.2f}; it overestimated {n_over}, underestimated {n_under} and came within "
        f"{tolerance:.0%} of the truth on {n - n_over - n_under}."
    ]
    labels = {
        "over": "overestimated (median ratio)",
        "close": f"within {tolerance:.0%} of the truth",
        "under": "underestimated",
    }
    for key, items in groups.items():
        if items:
            parts.append(f"  - per type, {labels[key]}: {', '.join(items)}.")
    if len(by_type) > 1:
        parts.append(
            f"  - the largest median overestimate here: {by_type.index[0]}; the smallest: {by_type.index[-1]}."
        )
    if (by_type["n"] < 3).any():
        parts.append(
            "  - types with fewer than 3 bleeds give a median of one or two values: read them as examples."
        )
    parts.append(
        f"- **Planimetric** (voxel count of the reference): median / true {v['plan_ratio'].median():.2f} "
        f"(range {v['plan_ratio'].min():.2f}–{v['plan_ratio'].max():.2f}); it assumes no shape; its error "
        "comes from where the reference's boundary was drawn."
    )
    return "\n".join(parts)
