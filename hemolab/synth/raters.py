"""Three simulated expert raters and their majority vote (Arab 2020, Methods: reference = majority of 3 raters).

Real raters outline the same bleed differently. Each simulated rater starts from the true blood fraction
and makes the errors people make:

* **boundary shift**: where exactly the edge of a bleed lies is a judgement on a blurred image; each rater
  has a personal bias (draws a little large or small) that also varies across the bleed. Sub-voxel
  differences come from thresholding the partial-volume blood fraction at a rater-specific level; shifts
  larger than a voxel (on fine grids: a voxel or two) from a signed in-plane distance map.
* **missed thin blood**: thin subarachnoid blood is sometimes left out in part of the bleed.
* **calcification called blood**: in a scan with a calcified pineal / choroid plexus, one rater sometimes
  includes it (the false positive of Arab 2020, Fig. 2).
* **first/last slice**: a rater sometimes skips the top or bottom slice of a bleed.

The reference label is the voxel-wise majority (at least 2 of 3).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from hemolab.synth.grid import Grid, smooth_field


def _signed_distance_inplane(mask: np.ndarray, box) -> np.ndarray:
    """Signed in-plane distance (in voxels) to the mask boundary inside ``box``: > 0 outside, < 0 inside.

    Raters draw slice by slice, so distances are measured within each axial slice.
    """
    sub = mask[box]
    sampling = (1.0, 1.0, 1e6)
    outside = ndi.distance_transform_edt(~sub, sampling=sampling).astype(np.float32)
    inside = ndi.distance_transform_edt(sub, sampling=sampling).astype(np.float32)
    return outside - inside


def simulate_raters(
    fraction: np.ndarray,
    grid: Grid,
    rng: np.random.Generator,
    *,
    bleed_type: str,
    calcification: np.ndarray | None = None,
    n_raters: int = 3,
    exclude: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Simulate ``n_raters`` expert delineations of a bleed.

    Args:
        fraction: true blood fraction per voxel (the truth mask is ``fraction >= 0.5``).
        grid: the voxel grid (spacing matters: shifts are in mm).
        rng: random generator.
        bleed_type: the bleed's type (thin ``"sah"`` blood is missed more often).
        calcification: calcification fraction (a rater may include it as blood).
        n_raters: how many raters.
        exclude: voxels no rater calls blood however large they draw (the bright partial-volume rim of bone:
            raters stop at the bone); a calcification can still be included by the rater who mistakes it.

    Returns:
        A list of boolean masks, one per rater.
    """
    truth = fraction >= 0.5
    calc_mask = calcification >= 0.5 if calcification is not None else None
    calc_rater = -1
    if calc_mask is not None and calc_mask.any() and rng.uniform() < 0.5:
        calc_rater = int(rng.integers(n_raters))  # at most one rater, so the majority never includes it
    box, sub_grid = None, None
    if truth.any():
        idx = np.argwhere(truth)
        lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
        margin = (4, 4, 1)
        box = tuple(
            slice(max(0, int(a) - m), min(n, int(b) + m))
            for a, b, n, m in zip(lo, hi, truth.shape, margin, strict=True)
        )
        sub_grid = Grid(tuple(s.stop - s.start for s in box), grid.spacing, grid.origin)
        sd = _signed_distance_inplane(truth, box)
        frac_box = fraction[box]
    raters = []
    for i in range(n_raters):
        mask = np.zeros(truth.shape, bool)
        if box is not None:
            # sub-voxel: where the partial-volume fraction is called blood (a rater-specific, varying level)
            level = np.clip(0.5 + rng.normal(0.0, 0.07) + 0.15 * smooth_field(sub_grid, rng, 20.0), 0.2, 0.8)
            # a voxel or two: a personal tendency to draw large or small, varying smoothly over the bleed
            shift = rng.normal(0.0, 0.4) + 0.65 * smooth_field(sub_grid, rng, 15.0)
            mask[box] = np.where(np.abs(shift) >= 1.0, sd < shift, frac_box > level)
        if truth.any() and bleed_type == "sah" and rng.uniform() < 0.5:
            # misses part of the thin subarachnoid blood: everything beyond a random plane
            idx = np.argwhere(mask)
            if len(idx):
                c = idx.mean(axis=0) * np.asarray(grid.spacing)
                nrm = rng.standard_normal(3)
                nrm /= np.linalg.norm(nrm)
                pos = (idx * np.asarray(grid.spacing) - c) @ nrm
                cut = pos > np.quantile(pos, rng.uniform(0.55, 0.85))
                mask[tuple(idx[cut].T)] = False
        if truth.any() and rng.uniform() < 0.15:
            zs = np.flatnonzero(mask.any(axis=(0, 1)))
            if len(zs) >= 4:
                mask[:, :, zs[0] if rng.uniform() < 0.5 else zs[-1]] = False
        if exclude is not None:
            mask &= ~exclude
        if i == calc_rater:
            mask = mask | calc_mask
        raters.append(mask)
    return raters


def majority_vote(masks: list[np.ndarray]) -> np.ndarray:
    """Voxel-wise majority of binary masks (strictly more than half of them)."""
    stack = np.stack([np.asarray(m, bool) for m in masks])
    return stack.sum(axis=0) * 2 > len(masks)
