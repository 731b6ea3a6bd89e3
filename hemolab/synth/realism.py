"""How real does a (synthetic) head CT look? Parenchyma HU, noise level and noise texture, label HU.

The same measurement runs on a real scan and on a synthetic one, so the generator can be matched to real
head CT (``benchmarks/synth_realism.py`` prints both):

* **parenchyma**: brain tissue inside the skull, 15-50 HU (grey and white matter, no CSF, blood or bone),
  eroded in-plane away from other tissue; its median HU.
* **noise**: the parenchyma minus a local in-plane mean (a Gaussian of ``detrend_voxels`` voxels, computed
  on the parenchyma only, so edges do not leak in); the noise SD is the robust SD (1.4826 x MAD) of that
  residual and the *lag-1 correlation* the mean correlation of the residual between in-plane neighbours
  (x and y). White noise has a lag-1 correlation near 0 (a little below, from the detrending); a
  reconstruction kernel correlates neighbouring voxels (real head CT: about 0.5-0.7).
* **inner table**: the median HU of the intracranial voxels at 2-4, 4-6, 6-9 and 9-14 mm from the skull, at
  the back and at the front of the head (:func:`inner_table_profile`). Real head CT is denser near the inner
  table than the brain beneath (dura, the cortex's partial volume with bone in thick slices, residual beam
  hardening), most at the back: a band a network that never saw it calls a thin subdural bleed.
* **skull base and vertex**: how much denser than the middle of the brain the brain of the lowest and of the
  highest few centimetres of slices is (:func:`skull_base_profile`, :func:`vertex_profile`). Real head CT
  reads denser there (beam hardening by the dense skull base, partial volume with the floor; the calvarium
  cut tangentially at the top): a network that never saw it calls the cerebellum or the vertex a bleed.
* **label HU**: percentiles of the HU under a label, and the share of label voxels above 150 HU (bone or
  calcification: not blood) outside the label's partial-volume *rim* (label voxels with a 6-neighbour
  outside the label).

Acute blood on real CT is 50-80 HU; expert masks of acute haemorrhage (Arab 2020; Patel 2019) hold
values near 5th percentile 34, median 56, 95th percentile 75 HU, nothing above 150 HU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from hemolab.errors import HemolabError

_INPLANE_CROSS = np.array(
    [[[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0], [0, 1, 0], [0, 0, 0]]],
    dtype=bool,
).transpose(1, 2, 0)  # 4-connected in the x-y plane, nothing across slices


def parenchyma_mask(
    image_hu: np.ndarray,
    spacing: Sequence[float],
    brain_mask: np.ndarray | None = None,
    erode_mm: float = 2.0,
) -> np.ndarray:
    """Homogeneous brain parenchyma: 15-50 HU voxels inside the skull, eroded in-plane by ``erode_mm``.

    Without ``brain_mask`` the intracranial space is found slice by slice: bone (> 300 HU) is filled in
    2D and the bone itself removed, so slices where the skull is not a closed ring (skull base) yield
    nothing.

    Args:
        image_hu: the scan, HU, indexed ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        brain_mask: a brain (or intracranial) mask of the same shape, or ``None`` to find one.
        erode_mm: in-plane erosion away from CSF, bone and other tissue (mm).

    Returns:
        Boolean mask of ``image_hu.shape``.

    Raises:
        HemolabError: if the image is not 3D or the mask's shape differs.
    """
    img = np.asarray(image_hu)
    if img.ndim != 3:
        raise HemolabError(f"expected a 3D image indexed [x, y, z], got shape {img.shape}")
    if brain_mask is None:
        bone = img > 300.0
        filled = np.zeros_like(bone)
        for z in range(img.shape[2]):
            if bone[:, :, z].any():
                filled[:, :, z] = ndi.binary_fill_holes(bone[:, :, z])
        brain = filled & ~ndi.binary_dilation(bone, _INPLANE_CROSS, iterations=2)
    else:
        brain = np.asarray(brain_mask).astype(bool)
        if brain.shape != img.shape:
            raise HemolabError(f"brain mask shape {brain.shape} differs from the image's {img.shape}")
    tissue = brain & (img > 15.0) & (img < 50.0)
    # smooth away the noise before deciding what is tissue, so that noisy voxels do not punch holes
    smooth = ndi.gaussian_filter(img.astype(np.float32), (1.0, 1.0, 0.0))
    tissue &= (smooth > 18.0) & (smooth < 45.0)
    n_erode = max(1, int(round(erode_mm / float(min(spacing[0], spacing[1])))))
    return ndi.binary_erosion(tissue, _INPLANE_CROSS, iterations=n_erode)


def realism_stats(
    image_hu: np.ndarray,
    brain_mask: np.ndarray | None,
    spacing: Sequence[float],
    *,
    detrend_voxels: float = 3.0,
) -> dict:
    """Parenchyma median HU, noise SD and in-plane lag-1 noise correlation of a head CT.

    Args:
        image_hu: the scan in HU, indexed ``[x, y, z]`` (int or float).
        brain_mask: brain or intracranial mask (same shape), or ``None`` to find the intracranial space
            from the skull (see :func:`parenchyma_mask`).
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        detrend_voxels: in-plane Gaussian sigma (voxels) of the local mean removed before measuring noise.

    Returns:
        ``{"parenchyma_hu": median HU, "noise_sd": HU, "lag1_corr": mean of x and y, "n_voxels": voxels
        measured}`` (NaN values when fewer than 200 parenchyma voxels were found).

    Raises:
        HemolabError: if the image is not 3D or the mask's shape differs.
    """
    img = np.asarray(image_hu, dtype=np.float32)
    region = parenchyma_mask(img, spacing, brain_mask)
    n = int(region.sum())
    if n < 200:
        return {
            "parenchyma_hu": float("nan"),
            "noise_sd": float("nan"),
            "lag1_corr": float("nan"),
            "n_voxels": n,
        }
    # local mean of the parenchyma only (normalised convolution), in-plane
    w = region.astype(np.float32)
    sig = (detrend_voxels, detrend_voxels, 0.0)
    num = ndi.gaussian_filter(img * w, sig)
    den = ndi.gaussian_filter(w, sig)
    resid = np.where(region, img - num / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    vals = resid[region]
    sd = float(1.4826 * np.median(np.abs(vals - np.median(vals))))
    corrs = []
    for axis in (0, 1):
        a = np.moveaxis(resid, axis, 0)
        m = np.moveaxis(region, axis, 0)
        both = m[:-1] & m[1:]
        x, y = a[:-1][both], a[1:][both]
        keep = (np.abs(x) < 4 * sd) & (np.abs(y) < 4 * sd)  # robust to the odd outlier (vessel, edge)
        x, y = x[keep], y[keep]
        corrs.append(float(np.corrcoef(x, y)[0, 1]) if x.size > 10 else float("nan"))
    return {
        "parenchyma_hu": float(np.median(img[region])),
        "noise_sd": sd,
        "lag1_corr": float(np.mean(corrs)),
        "n_voxels": n,
    }


#: Distance bins (mm from the skull) of :func:`inner_table_profile`.
INNER_TABLE_BINS_MM: tuple[tuple[float, float], ...] = ((2.0, 4.0), (4.0, 6.0), (6.0, 9.0), (9.0, 14.0))


def inner_table_profile(image_hu: np.ndarray, spacing: Sequence[float]) -> dict:
    """Median HU inside the skull by distance from it, at the back and at the front of the head.

    The intracranial space is found slice by slice as in :func:`parenchyma_mask` (bone > 300 HU filled in
    2D, bone removed); distances to bone are Euclidean in mm (3D). "Back" and "front" are the two halves
    of the intracranial space along the image's second axis (posterior is the larger index in the LPS
    arrays hemolab reads; the head's orientation is not otherwise detected).

    Args:
        image_hu: the scan in HU, indexed ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.

    Returns:
        ``{"back": [median HU per bin], "front": [...], "bins_mm": INNER_TABLE_BINS_MM}``; NaN for a bin with
        fewer than 20 voxels.

    Raises:
        HemolabError: if the image is not 3D.
    """
    img, bone, cavity = _intracranial_space(image_hu)
    out: dict = {"bins_mm": INNER_TABLE_BINS_MM}
    if not cavity.any():
        nan = float("nan")
        return {**out, "back": [nan] * len(INNER_TABLE_BINS_MM), "front": [nan] * len(INNER_TABLE_BINS_MM)}
    dist = ndi.distance_transform_edt(~bone, sampling=[float(s) for s in spacing])
    y_mid = float(np.nonzero(cavity)[1].mean())
    back = (np.arange(img.shape[1]) > y_mid)[None, :, None]
    for name, half in (("back", back), ("front", ~back)):
        medians = []
        for lo, hi in INNER_TABLE_BINS_MM:
            v = img[cavity & half & (dist > lo) & (dist <= hi)]
            medians.append(float(np.median(v)) if v.size >= 20 else float("nan"))
        out[name] = medians
    return out


def _intracranial_space(image_hu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, bone, intracranial space)``: bone > 300 HU filled in 2D slice by slice, bone removed."""
    img = np.asarray(image_hu, dtype=np.float32)
    if img.ndim != 3:
        raise HemolabError(f"expected a 3D image indexed [x, y, z], got shape {img.shape}")
    bone = img > 300.0
    cavity = np.zeros_like(bone)
    for z in range(img.shape[2]):
        if bone[:, :, z].any():
            cavity[:, :, z] = ndi.binary_fill_holes(bone[:, :, z])
    cavity &= ~bone
    return img, bone, cavity


#: Heights (mm) above the lowest axial slice of the brain at which :func:`skull_base_profile` measures.
SKULL_BASE_BINS_MM: tuple[tuple[float, float], ...] = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 45.0))
#: The heights (mm) whose median is the reference: the middle of the brain, far from the skull base.
SKULL_BASE_REFERENCE_MM: tuple[float, float] = (60.0, 100.0)


def skull_base_profile(image_hu: np.ndarray, spacing: Sequence[float], cavity: np.ndarray) -> dict:
    """How much denser the brain of the lowest axial slices is than the middle of the brain, in HU.

    On real head CT the posterior fossa and the lowest slices of the temporal lobes read denser than the
    same tissue higher up: the dense skull base hardens the beam, and thick slices mix brain with the floor.
    A network trained on heads without this calls the cerebellum a bleed. The brain-range voxels (15-90 HU:
    no CSF, bone or calcification) of the cranial cavity are pooled by their slice's height above the lowest
    axial slice that holds at least 20 cm2 of cavity (the image's third axis runs from the feet to the head,
    as in the LPS arrays hemolab reads). The skull is open at the base, so a 2D fill of the bone does not
    find the cavity there: pass :func:`hemolab.preprocess.cranial_cavity_mask` (closing and erosion).

    Args:
        image_hu: the scan in HU, indexed ``[x, y, z]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        cavity: the cranial cavity, same shape (e.g. ``array_from_image(cranial_cavity_mask(image))``).

    Returns:
        ``{"rise": [median HU per bin minus the reference median], "reference_hu": float,
        "bins_mm": SKULL_BASE_BINS_MM}``; NaN where a bin or the reference has fewer than 20 voxels.

    Raises:
        HemolabError: if the image is not 3D or the cavity does not match it.
    """
    img = np.asarray(image_hu, dtype=np.float32)
    if img.ndim != 3:
        raise HemolabError(f"expected a 3D image indexed [x, y, z], got shape {img.shape}")
    cavity = np.asarray(cavity).astype(bool)
    if cavity.shape != img.shape:
        raise HemolabError(f"cavity of shape {cavity.shape} does not match the image's {img.shape}")
    sx, sy, sz = (float(s) for s in spacing)
    nan = float("nan")
    area_cm2 = cavity.sum(axis=(0, 1)) * sx * sy / 100.0
    slices = np.nonzero(area_cm2 >= 20.0)[0]
    out: dict = {"bins_mm": SKULL_BASE_BINS_MM, "rise": [nan] * len(SKULL_BASE_BINS_MM), "reference_hu": nan}
    if slices.size == 0:
        return out
    height = (np.arange(img.shape[2]) - slices[0]) * sz
    brain = cavity & (img > 15.0) & (img < 90.0)

    def median_between(lo: float, hi: float) -> float:
        zs = np.nonzero((height >= lo) & (height < hi) & (area_cm2 >= 20.0))[0]
        v = img[:, :, zs][brain[:, :, zs]]
        return float(np.median(v)) if v.size >= 20 else nan

    out["reference_hu"] = median_between(*SKULL_BASE_REFERENCE_MM)
    out["rise"] = [median_between(lo, hi) - out["reference_hu"] for lo, hi in SKULL_BASE_BINS_MM]
    return out


def vertex_profile(image_hu: np.ndarray, spacing: Sequence[float], cavity: np.ndarray) -> dict:
    """:func:`skull_base_profile` from the top: distances below the highest axial slice of the brain.

    The highest slices cut the calvarium tangentially, and thick slices mix it into the little brain they
    hold: on real head CT the top centimetre of brain reads denser than the middle, where networks trained
    without it called blood.

    Returns:
        As :func:`skull_base_profile`, the bins counted down from the top.

    Raises:
        HemolabError: if the image is not 3D or the cavity does not match it.
    """
    img = np.asarray(image_hu)
    if img.ndim != 3:
        raise HemolabError(f"expected a 3D image indexed [x, y, z], got shape {img.shape}")
    return skull_base_profile(img[:, :, ::-1], spacing, np.asarray(cavity)[:, :, ::-1])


def label_rim(label: np.ndarray) -> np.ndarray:
    """Partial-volume rim of a label: its voxels with at least one 6-neighbour outside it.

    ``label & ~rim`` is the label eroded once with 6-connectivity (the image border counts as outside).
    """
    lab = np.asarray(label).astype(bool)
    core = ndi.binary_erosion(lab, ndi.generate_binary_structure(3, 1), border_value=0)
    return lab & ~core


def label_hu_stats(image_hu: np.ndarray, label: np.ndarray) -> dict:
    """HU under a label: percentiles, and how much of it is not blood.

    Args:
        image_hu: the scan in HU, indexed ``[x, y, z]``.
        label: the haemorrhage mask, same shape.

    Returns:
        ``{"n": voxels, "p5", "p50", "p95": HU percentiles, "above_150": share of label voxels > 150 HU,
        "core_above_150": number of voxels > 150 HU outside the rim (:func:`label_rim`), "below_45": share
        < 45 HU}``; percentiles are NaN for an empty label.
    """
    lab = np.asarray(label).astype(bool)
    img = np.asarray(image_hu, dtype=np.float32)
    v = img[lab]
    if v.size == 0:
        nan = float("nan")
        return {
            "n": 0,
            "p5": nan,
            "p50": nan,
            "p95": nan,
            "above_150": nan,
            "core_above_150": 0,
            "below_45": nan,
        }
    p5, p50, p95 = (float(x) for x in np.percentile(v, [5, 50, 95]))
    core = lab & ~label_rim(lab)
    return {
        "n": int(v.size),
        "p5": p5,
        "p50": p50,
        "p95": p95,
        "above_150": float((v > 150).mean()),
        "core_above_150": int((img[core] > 150).sum()),
        "below_45": float((v < 45).mean()),
    }


__all__ = [
    "INNER_TABLE_BINS_MM",
    "SKULL_BASE_BINS_MM",
    "SKULL_BASE_REFERENCE_MM",
    "inner_table_profile",
    "skull_base_profile",
    "vertex_profile",
    "label_hu_stats",
    "label_rim",
    "parenchyma_mask",
    "realism_stats",
]
