"""Post-processing a thresholded prediction: connected components and the removal of small clusters.

Patel et al. 2019, Methods, "Post-processing" (docs/methods.md §2.5): every cluster smaller than 0.1 mL is
removed from the thresholded probability map.
The CPU profiles add a calcification rule (docs/methods.md §5.1, item 8): a cluster most of whose voxels are
brighter than acute blood ever is (:data:`CALCIFIED_HU`) is a calcification or bone, not a bleed; and a
density rule (item 9): a cluster whose median HU is that of brain (:data:`ACUTE_BLOOD_MEDIAN_HU`) is not
acute blood.
Our choices: connected components use 26-connectivity (voxels touching at a corner belong to the same
cluster, the most conservative choice for removing clusters); the prediction is restricted to the
cranial cavity *before* small clusters are removed, so that a cluster cut by the cavity boundary is
measured by what is left of it inside.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from hemolab import metrics
from hemolab.errors import HemolabError
from hemolab.io import array_from_image
from hemolab.preprocess import resample_like
from hemolab.validation import check_mask, check_spacing


def as_mask_array(mask: np.ndarray | sitk.Image) -> np.ndarray:
    """A mask given as an ``[x, y, z]`` array or a SimpleITK image, as a bool array (e.g. a precomputed cavity)."""
    return (array_from_image(mask) if isinstance(mask, sitk.Image) else np.asarray(mask)) > 0


def probability_on_scan(probability: sitk.Image, image: sitk.Image) -> np.ndarray:
    """A probability map computed on another grid, brought onto ``image``'s grid: ``[x, y, z]`` float32 in [0, 1].

    Linear interpolation of the probability (outside its grid: 0), so that the threshold is applied on the
    scan's own grid afterwards (CNN-DS's whole-head grid; a Patel scan run at its training voxel size).
    """
    back = resample_like(probability, image, is_label=False, interpolator="linear", default_value=0.0)
    return np.clip(array_from_image(back).astype(np.float32), 0.0, 1.0)


def _structure(connectivity: int) -> np.ndarray:
    rank = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise HemolabError(
            f"connectivity must be 6, 18 or 26 (face, edge or corner neighbours), got {connectivity}"
        )
    return ndimage.generate_binary_structure(3, rank)


def component_volumes_ml(mask, spacing: Sequence[float], connectivity: int = 26) -> np.ndarray:
    """Physical volume (mL) of each connected component of a mask, largest first.

    Args:
        mask: binary mask ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        connectivity: 6, 18 or 26 neighbours (default 26).

    Returns:
        A float array of component volumes in mL (empty for an empty mask).
    """
    m = check_mask(mask)
    sp = check_spacing(spacing)
    labels, n = ndimage.label(m, structure=_structure(connectivity))
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return np.sort(counts * metrics.voxel_volume_ml(sp))[::-1]


def remove_small_components(
    mask, spacing: Sequence[float], min_volume_ml: float = 0.1, connectivity: int = 26
) -> np.ndarray:
    """Remove every connected component smaller than ``min_volume_ml`` (Patel 2019, "Post-processing").

    The size is the PHYSICAL volume, voxel count x voxel volume (mm^3) / 1000, so the same rule works on
    any grid: 0.1 mL is 100 mm^3, i.e. about 1,080 voxels of the paper's 0.43 x 0.43 x 0.5 mm but only
    80 voxels of 0.5 x 0.5 x 5 mm. A rule in voxels would mean a different volume on every scanner.

    Args:
        mask: binary mask ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        min_volume_ml: smallest component kept (paper: 0.1 mL). Components of exactly this volume stay.
        connectivity: 6, 18 or 26 neighbours (default 26: corner-touching voxels are one cluster).

    Returns:
        A boolean mask of the same shape.

    Raises:
        HemolabError: for a non-binary mask, bad spacing or a negative threshold.
    """
    m = check_mask(mask)
    sp = check_spacing(spacing)
    if not min_volume_ml >= 0:
        raise HemolabError(f"min_volume_ml must be >= 0, got {min_volume_ml}")
    labels, n = ndimage.label(m, structure=_structure(connectivity))
    if n == 0:
        return m.copy()
    volumes = np.bincount(labels.ravel(), minlength=n + 1) * metrics.voxel_volume_ml(sp)
    keep = volumes >= min_volume_ml - 1e-12
    keep[0] = False
    return keep[labels]


#: Brighter than acute blood (50-90 HU on non-contrast CT; expert masks hold nothing above ~100 HU): a voxel
#: above it is calcification or bone (docs/methods.md §5.1, item 8).
CALCIFIED_HU = 120.0


def remove_calcified_components(
    mask, hu: np.ndarray, max_fraction: float, connectivity: int = 26
) -> np.ndarray:
    """Remove every cluster of which more than ``max_fraction`` of the voxels lie above :data:`CALCIFIED_HU`.

    A network that has learnt "brighter than brain" calls a calcified pineal gland or choroid plexus (100-400
    HU, the calcification trap of notebook 00) and its partial-volume halo blood; blood itself is never that
    bright. A bleed against the skull keeps its cluster: only its one-voxel rim touches bone (and the
    cranial-cavity restriction has already removed the bone).

    Args:
        mask: binary mask ``[x, y, z]``.
        hu: the scan in HU, same shape.
        max_fraction: in [0, 1); a cluster with a larger share of voxels above :data:`CALCIFIED_HU` is removed.
        connectivity: 6, 18 or 26 neighbours (default 26, as the size rule).

    Returns:
        A boolean mask of the same shape.

    Raises:
        HemolabError: for a non-binary mask, an image of another shape or a fraction outside [0, 1).
    """
    if not 0.0 <= max_fraction < 1.0:
        raise HemolabError(f"max_fraction must lie in [0, 1), got {max_fraction}")

    def keep(labels: np.ndarray, n: int, hu: np.ndarray) -> np.ndarray:
        size = np.bincount(labels.ravel(), minlength=n + 1)
        bright = np.bincount(labels.ravel(), weights=(hu > CALCIFIED_HU).ravel(), minlength=n + 1)
        return bright <= max_fraction * size

    return _keep_clusters_by_hu(mask, hu, connectivity, keep)


#: The lowest median HU a cluster of acute blood has in the CPU recipes (docs/methods.md §5.1, item 9): grey
#: matter reads 37-41 HU, acute blood 50-90 HU, and expert masks of it have a median near 56 HU.
ACUTE_BLOOD_MEDIAN_HU = 42.0


def remove_isodense_components(
    mask, hu: np.ndarray, min_median_hu: float, connectivity: int = 26
) -> np.ndarray:
    """Remove every cluster whose median HU is below ``min_median_hu``: it reads like brain, not acute blood.

    Acute blood is hyperdense (50-90 HU). A network on a small budget learns "brighter than its
    surroundings" and calls a halo of brain around a calcification, a dense band or a partial-volume rim
    blood: clusters whose voxels are mostly grey-matter-bright (37-41 HU). A radiologist's first question,
    "is it denser than brain?", as code (docs/methods.md §5.1, item 9). A bleed keeps its cluster: its
    median is that of blood, whatever its partial-volume rim reads.

    Args:
        mask: binary mask ``[x, y, z]``.
        hu: the scan in HU, same shape.
        min_median_hu: clusters with a lower median HU are removed (e.g. :data:`ACUTE_BLOOD_MEDIAN_HU`).
        connectivity: 6, 18 or 26 neighbours (default 26, as the size rule).

    Returns:
        A boolean mask of the same shape.

    Raises:
        HemolabError: for a non-binary mask or an image of another shape.
    """

    def keep(labels: np.ndarray, n: int, hu: np.ndarray) -> np.ndarray:
        medians = np.asarray(ndimage.median(hu, labels, index=np.arange(1, n + 1)), dtype=float)
        return np.concatenate([[False], medians >= float(min_median_hu)])

    return _keep_clusters_by_hu(mask, hu, connectivity, keep)


def _keep_clusters_by_hu(mask, hu: np.ndarray, connectivity: int, keep) -> np.ndarray:
    """The clusters of ``mask`` for which ``keep(labels, n, hu)`` (one bool per label 0..n) is true.

    Raises:
        HemolabError: for a non-binary mask or an HU image of another shape.
    """
    m = check_mask(mask)
    hu = np.asarray(hu)
    if hu.shape != m.shape:
        raise HemolabError(f"the HU image of shape {hu.shape} does not match the mask's {m.shape}")
    labels, n = ndimage.label(m, structure=_structure(connectivity))
    if n == 0:
        return m.copy()
    kept = np.asarray(keep(labels, n, hu), dtype=bool)
    kept[0] = False
    return kept[labels]


def calcification_hu(image: sitk.Image, meta) -> np.ndarray | None:
    """The scan's HU array when ``meta`` asks for an HU rule (``max_calcified_fraction > 0`` or
    ``min_cluster_median_hu > 0``), else ``None``."""
    wants = (
        getattr(meta, "max_calcified_fraction", 0.0) > 0 or getattr(meta, "min_cluster_median_hu", 0.0) > 0
    )
    return array_from_image(image) if wants else None


def finish_mask(
    probability: np.ndarray,
    threshold: float,
    spacing: Sequence[float],
    *,
    cavity: np.ndarray | None = None,
    min_component_ml: float = 0.0,
    hu: np.ndarray | None = None,
    max_calcified_fraction: float = 0.0,
    min_cluster_median_hu: float = 0.0,
) -> np.ndarray:
    """Probability map to mask, the one way every pipeline does it: threshold, cavity, clusters.

    Patel 2019, "Post-processing" (docs/methods.md §2.5): threshold the probability, keep only the cranial
    cavity (when ``cavity`` is given), then remove clusters smaller than ``min_component_ml`` (0.1 mL in the
    paper; 0 removes nothing). Also used to choose a threshold on validation scans
    (:mod:`hemolab.training.threshold`), so that the choice is made on the masks inference will give.

    Args:
        probability: ``[x, y, z]`` in [0, 1].
        threshold: the probability threshold.
        spacing: voxel size in mm.
        cavity: boolean cranial-cavity mask of the same shape, or ``None``.
        min_component_ml: smallest cluster kept, in mL.
        hu: the scan in HU (same shape), needed for either HU rule.
        max_calcified_fraction: remove clusters with a larger share of voxels above :data:`CALCIFIED_HU`
            (:func:`remove_calcified_components`; 0: no such rule, as in the papers).
        min_cluster_median_hu: then remove clusters whose median HU is lower
            (:func:`remove_isodense_components`; 0: no such rule, as in the papers).

    Returns:
        Boolean mask ``[x, y, z]``.

    Raises:
        HemolabError: for a cavity of another shape, or an HU rule without the HU image.
    """
    mask = np.asarray(probability) >= threshold
    if cavity is not None:
        cavity = np.asarray(cavity)
        if cavity.shape != mask.shape:
            raise HemolabError(
                f"cavity mask of shape {cavity.shape} does not match the probability's {mask.shape}"
            )
        mask &= cavity > 0
    if (max_calcified_fraction > 0 or min_cluster_median_hu > 0) and hu is None:
        raise HemolabError(
            "the HU rules (max_calcified_fraction > 0, min_cluster_median_hu > 0) need the scan's HU (hu=...)"
        )
    if max_calcified_fraction > 0:
        mask = remove_calcified_components(mask, hu, max_calcified_fraction)
    if min_cluster_median_hu > 0:
        mask = remove_isodense_components(mask, hu, min_cluster_median_hu)
    if min_component_ml > 0:
        mask = remove_small_components(mask, spacing, min_component_ml)
    return mask


def cluster_removal_effect(
    probability: np.ndarray,
    reference,
    spacing: Sequence[float],
    *,
    hu: np.ndarray | None = None,
    cavity=None,
    threshold: float = 0.5,
    min_volume_ml: float = 0.1,
    dense_hu: float = 100.0,
) -> dict[str, float]:
    """What removing clusters < ``min_volume_ml`` does to one prediction (for notebook 04).

    Thresholds ``probability`` (restricted to ``cavity`` when given), then compares the mask before and
    after :func:`remove_small_components` with the reference: number of components, false-positive
    volume, the part of it denser than ``dense_hu`` (calcification-like: blood is 40-90 HU), and Dice.

    Args:
        probability: haemorrhage probability ``[x, y, z]``.
        reference: reference mask on the same grid.
        spacing: voxel size in mm.
        hu: the CT in HU (for the dense false positives; NaN without it).
        cavity: cranial-cavity mask (optional).
        threshold: probability threshold (paper: 0.5).
        min_volume_ml: smallest cluster kept (paper: 0.1 mL).
        dense_hu: HU above which a false positive counts as dense.

    Returns:
        A dict with ``components_before/after``, ``fp_components_before/after`` (components with no
        reference voxel), ``fp_ml_before/after``, ``fp_dense_ml_before/after``, ``dice_before/after``.
    """
    ref = check_mask(reference, "reference")
    sp = check_spacing(spacing)
    before = np.asarray(probability) >= threshold
    if cavity is not None:
        before &= np.asarray(cavity) > 0
    after = remove_small_components(before, sp, min_volume_ml)
    voxel_ml = metrics.voxel_volume_ml(sp)
    out: dict[str, float] = {}
    for name, m in (("before", before), ("after", after)):
        labels, n = ndimage.label(m, structure=_structure(26))
        hit = np.unique(labels[m & ref])
        fp = m & ~ref
        out[f"components_{name}"] = float(n)
        out[f"fp_components_{name}"] = float(n - np.count_nonzero(hit))
        out[f"fp_ml_{name}"] = float(fp.sum()) * voxel_ml
        out[f"fp_dense_ml_{name}"] = (
            float(np.count_nonzero(fp & (np.asarray(hu) > dense_hu))) * voxel_ml
            if hu is not None
            else float("nan")
        )
        out[f"dice_{name}"] = metrics.dice(m, ref)
    return out
