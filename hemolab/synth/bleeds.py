"""Intracranial haemorrhages of the clinical types, drawn into a synthetic head.

Each generator returns a :class:`Bleed`: the blood *fraction* per voxel (so the truth mask is
``fraction >= 0.5``, the voxel centre inside) and the blood's HU, plus a perihaematomal oedema fraction
for intraparenchymal bleeds. Shapes follow the radiology of acute haemorrhage:

``iph_deep``
    intraparenchymal, in the basal ganglia / thalamus (hypertensive); irregular margins (a perturbed union of
    blobs), heterogeneous density, a hypodense oedema rim (~17 HU); sometimes extends into the ventricles.
``iph_lobar``
    intraparenchymal near the cortex; about half of them reach the inner table of the skull (blood right
    against bone: the false negative of Arab 2020, Fig. 2).
``ivh``
    intraventricular: blood layering in the dependent (posterior, the patient lies supine) part of the
    ventricles, with a fluid level along the scanner's y axis.
``sdh``
    subdural: a crescent along the inner table, concave towards the brain, spanning a wide arc.
``edh``
    epidural: a biconvex lens against the skull, compact and thick.

Both extra-axial collections take the space between the inner table and the brain (never bone) and push
the brain in (mass effect: the brain beneath is compressed, see :func:`_push_brain`).
``sah``
    subarachnoid: thin blood filling the sulci and the extra-axial CSF over a region of the convexity.

Acute blood is 50-80 HU; together with partial volume at the margins and scanner noise the HU over the
bleed masks of a cohort land near 5th percentile 34, median 56, 95th percentile 75 HU (expert masks on real
CT, Arab 2020). The label holds blood only: voxels into which bone or a calcification spills through
partial volume and the scanner's blur (:func:`bright_spill`) are painted with blood but not labelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from hemolab.errors import HemolabError
from hemolab.synth.anatomy import Head
from hemolab.synth.grid import Grid, box_around, paint, smooth_field, soft
from hemolab.synth.scanner import PSF_SIGMA_VOXELS

#: Bleed types, in the order the cohort cycles through them (``"none"`` = a scan without haemorrhage).
BLEED_TYPES: tuple[str, ...] = ("none", "iph_deep", "iph_lobar", "ivh", "sdh", "edh", "sah")

#: Target-volume range (mL) per bleed type; the cohort spreads its cases over these (log scale).
VOLUME_RANGE_ML: dict[str, tuple[float, float]] = {
    "iph_deep": (0.3, 100.0),
    "iph_lobar": (0.3, 90.0),
    "ivh": (2.0, 30.0),
    "sdh": (8.0, 120.0),
    "edh": (6.0, 80.0),
    "sah": (1.0, 15.0),
    "none": (0.0, 0.0),
}

#: HU that bone or calcification may add to a voxel (partial volume, blur) before it stops being labelled blood.
BRIGHT_SPILL_HU = 30.0


@dataclass
class Bleed:
    """A haemorrhage: blood fraction and HU per voxel (full-grid float32 arrays) and an oedema fraction."""

    bleed_type: str
    fraction: np.ndarray
    hu: np.ndarray
    oedema: np.ndarray | None = None
    oedema_hu: float = 17.0
    details: dict | None = None

    @property
    def mask(self) -> np.ndarray:
        """The ground truth: voxels whose centre lies in the blood (before partial-volume blur)."""
        return self.fraction >= 0.5


def _level_for_count(values: np.ndarray, n_target: int, *, empty: float, above_kth: float) -> float:
    """The level that ``n_target`` of ``values`` lie below: how a bleed's shape is scaled to its target volume.

    Args:
        values: per-voxel levels (the smaller, the earlier a voxel joins the bleed).
        n_target: voxels wanted.
        empty: the level when there are no values.
        above_kth: how far above the ``n_target``-th smallest value the level is put.

    Returns:
        ``empty`` for no values; just above the largest when there are fewer than ``n_target``; else just
        above the ``n_target``-th smallest.
    """
    if values.size == 0:
        return empty
    if values.size <= n_target:
        return float(values.max()) + 1e-3
    return float(np.partition(values, n_target - 1)[n_target - 1]) + above_kth


def _sub_grid(grid: Grid, box) -> Grid:
    start = [s.start for s in box]
    return Grid(
        shape=tuple(s.stop - s.start for s in box),
        spacing=grid.spacing,
        origin=tuple(o + i * sp for o, i, sp in zip(grid.origin, start, grid.spacing, strict=True)),
    )


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _blood_hu(grid: Grid, rng: np.random.Generator, base: float, amp: float, corr: float = 6.0) -> np.ndarray:
    """Heterogeneous acute blood: a base density with smooth internal variation (clot, serum)."""
    return (base + amp * smooth_field(grid, rng, corr)).astype(np.float32)


def _blob_union(
    head: Head,
    rng: np.random.Generator,
    centre_head,
    target_ml: float,
    allowed: np.ndarray,
    counted: np.ndarray | None = None,
):
    """An irregular blob (union of perturbed ellipsoids) of about ``target_ml`` around a head-frame point.

    The volume is counted over the voxels where ``counted`` (default ``allowed``) is true: those a label
    can hold.

    Returns ``(box, f, tau, r)``: the index box, the implicit function ``f`` (< tau inside) in the box, the
    threshold chosen to hit the target volume, and the mm scale of ``f``.
    """
    grid = head.grid
    r = float((3.0 * target_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0))  # radius of a sphere of that volume
    reach = 1.9 * r + 12.0
    cw = head.to_world(centre_head)
    box = box_around(grid, cw - reach, cw + reach)
    sub = _sub_grid(grid, box)
    xr, yr, zr = head.xr[box], head.yr[box], head.zr[box]
    f = None
    n_blobs = int(rng.integers(2, 6))
    for i in range(n_blobs):
        if i == 0:
            cen, rad = np.asarray(centre_head, float), r
        else:
            d = rng.standard_normal(3)
            cen = np.asarray(centre_head, float) + 0.6 * r * d / np.linalg.norm(d)
            rad = r * rng.uniform(0.4, 0.75)
        semi = rad * rng.uniform(0.7, 1.3, size=3)
        M = _random_rotation(rng).astype(np.float32)
        dx, dy, dz = xr - np.float32(cen[0]), yr - np.float32(cen[1]), zr - np.float32(cen[2])
        u = (M[0, 0] * dx + M[1, 0] * dy + M[2, 0] * dz) / semi[0]
        v = (M[0, 1] * dx + M[1, 1] * dy + M[2, 1] * dz) / semi[1]
        w = (M[0, 2] * dx + M[1, 2] * dy + M[2, 2] * dz) / semi[2]
        rho = np.sqrt(u * u + v * v + w * w) * np.float32(semi.mean() / r)
        f = rho if f is None else np.minimum(f, rho)
    f *= 1.0 + 0.18 * smooth_field(sub, rng, max(4.0, 0.6 * r))
    ok = allowed[box] >= 0.5
    if counted is not None:
        ok &= counted[box]
    n_target = max(1, int(round(target_ml / grid.voxel_ml)))
    tau = float(np.clip(_level_for_count(f[ok], n_target, empty=1.0, above_kth=1e-6), 0.55, 1.6))
    return box, f, tau, r


def _cap_profile(
    head: Head, u_head: np.ndarray, theta0_deg: float, t_max: float, rng, power: float = 1.0
) -> np.ndarray:
    """Thickness (mm) of an extra-axial collection centred on direction ``u_head``: t_max * (1 - (a/theta0)^2)^power.

    ``power`` 1 gives a crescent thinning towards its edges (subdural), 0.5 an elliptical, biconvex lens
    (epidural). The thickness is <= 0 outside the collection (angle ``a`` from ``u_head`` above ``theta0``).
    """
    c0 = np.array([0.0, 0.0, head.params["zv"]], dtype=np.float32)
    dx, dy, dz = head.xr - c0[0], head.yr - c0[1], head.zr - c0[2]
    norm = np.sqrt(dx * dx + dy * dy + dz * dz) + np.float32(1e-3)
    cosang = (dx * u_head[0] + dy * u_head[1] + dz * u_head[2]) / norm
    ang = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))
    prof = 1.0 - (ang / np.float32(theta0_deg)) ** 2
    if power != 1.0:
        prof = np.where(prof > 0, np.maximum(prof, np.float32(0.0)) ** np.float32(power), prof)
    prof *= 1.0 + 0.12 * smooth_field(head.grid, rng, 25.0)
    return (np.float32(t_max) * prof).astype(np.float32)


def _direction(rng, lateral: bool = True, z_range=(-0.1, 0.6)) -> np.ndarray:
    """A unit head-frame direction over the convexity (mostly lateral)."""
    side = rng.choice([-1.0, 1.0])
    az = np.radians(rng.uniform(-65, 65)) if lateral else np.radians(rng.uniform(-180, 180))
    el = np.arcsin(rng.uniform(*z_range))
    u = np.array([side * np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
    return (u / np.linalg.norm(u)).astype(np.float32)


def _surface_distance(head: Head, u: np.ndarray) -> float:
    """Distance (mm) from the ventricle-level centre to the inner table along head-frame direction ``u``."""
    p = head.params
    c0 = np.array([0.0, 0.0, p["zv"]])
    a, b = p["a"], p["b"]
    t = np.linspace(0, 200, 801)
    pts = c0[None, :] + t[:, None] * u[None, :]
    c = np.where(pts[:, 2] > 0, p["c_top"], p["c_bot"])
    rho = np.sqrt((pts[:, 0] / a) ** 2 + (pts[:, 1] / b) ** 2 + (pts[:, 2] / c) ** 2)
    t_out = float(t[np.argmax(rho >= 1.0)])
    return t_out - p["scalp"] - p["skull"]


def _iph(head: Head, rng, target_ml: float, deep: bool) -> Bleed:
    grid, p, k = head.grid, head.params, head.k
    allowed = head.brain if deep else head.cavity
    details: dict = {}
    if deep:
        s = rng.choice([-1.0, 1.0])
        site = rng.choice(["putamen", "thalamus"], p=[0.65, 0.35])
        cen = (
            np.array([s * 22 * k, -4 * k, p["zv"] - 14 * k])
            if site == "putamen"
            else np.array([s * 10 * k, 10 * k, p["zv"] - 14 * k])
        )
        cen = cen + rng.normal(0, 2.0, 3)
        details["site"] = str(site)
    else:
        u = _direction(rng, lateral=bool(rng.uniform() < 0.7), z_range=(-0.05, 0.75))
        r_eq = (3.0 * target_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
        touching = bool(rng.uniform() < 0.5)
        inset = 0.6 * r_eq if touching else r_eq + p["extra_axial"] + rng.uniform(4.0, 12.0)
        cen = np.array([0.0, 0.0, p["zv"]]) + max(_surface_distance(head, u) - inset, 5.0) * u
        details["touches_inner_table"] = touching
    # the label leaves out the bright partial-volume rim against the inner table: count only what it holds
    box, f, tau, r = _blob_union(head, rng, cen, target_ml, allowed, counted=head.depth_inner > grid.h)
    sub = _sub_grid(grid, box)
    h = grid.h
    dist = (f - np.float32(tau)) * np.float32(r)
    frac_box = soft(dist, h) * allowed[box]
    base = rng.uniform(60.0, 65.0)
    hu_box = _blood_hu(sub, rng, base, 10.0)
    if rng.uniform() < 0.25:  # "swirl sign": hypodense unclotted blood inside the clot
        swirl = smooth_field(sub, rng, 5.0)
        hu_box -= 12.0 * soft(-(swirl + 1.2), 0.5)
    rim = rng.uniform(1.5, 3.0) + 0.25 * r * rng.uniform(0.3, 1.0)
    oed_box = (
        soft(dist - np.float32(rim), h) * (1.0 - frac_box) * head.brain[box] * (1.0 - head.ventricles[box])
    )
    fraction = np.zeros(grid.shape, np.float32)
    hu = np.zeros(grid.shape, np.float32)
    oedema = np.zeros(grid.shape, np.float32)
    fraction[box], hu[box], oedema[box] = frac_box, hu_box, oed_box
    if deep and target_ml >= 5.0 and rng.uniform() < 0.3:  # ventricular extension
        ivh = _ivh(head, rng, fill=rng.uniform(0.1, 0.3))
        np.maximum(fraction, ivh.fraction, out=fraction)
        hu = np.where(ivh.fraction > 0, np.maximum(hu, ivh.hu), hu)
        details["ventricular_extension"] = True
    return Bleed("iph_deep" if deep else "iph_lobar", fraction, hu, oedema, rng.uniform(15.0, 20.0), details)


def _ivh(head: Head, rng, fill: float | None = None) -> Bleed:
    grid = head.grid
    fill = rng.uniform(0.2, 0.75) if fill is None else fill
    vent = head.ventricles
    inside = vent >= 0.5
    _, ay, _ = grid.axes()
    y_world = np.broadcast_to(ay[None, :, None], grid.shape)
    if inside.sum() == 0:
        level = float(ay.max()) + 1.0
    else:
        level = float(np.quantile(y_world[inside], 1.0 - fill))  # the patient lies supine: blood sinks to +y
    fraction = (vent * soft(level - y_world, grid.h)).astype(np.float32)
    hu = _blood_hu(grid, rng, rng.uniform(57.0, 63.0), 8.0)
    return Bleed("ivh", fraction, hu, None, 17.0, {"fill_fraction": float(fill)})


def _push_brain(head: Head, thick: np.ndarray, t_max: float) -> dict:
    """Mass effect of an extra-axial collection: push the cavity's contents away from the inner table, in place.

    The collection occupies the layer ``0 < depth_inner < thick`` next to the inner table; what was there
    (extra-axial CSF, cortex) is pushed inwards along the radial direction and the brain beneath is
    compressed: the old depths ``[h, D]`` below the inner table are mapped onto the new depths
    ``[thick, D]`` (``h``: a voxel; ``D = min(3 t_max + 15, 60)`` mm, beyond which nothing moves).
    ``head.image``, ``head.brain``, ``head.ventricles`` and ``head.calcification`` are resampled (linear
    interpolation); bone, and voxels whose source would lie outside the cavity, are left as they are.

    Args:
        head: the head (modified in place).
        thick: thickness of the collection (mm) per voxel, <= 0 outside it.
        t_max: its largest thickness (mm).

    Returns:
        ``{"mass_effect_depth_mm": D, "max_shift_mm": largest displacement}``.
    """
    grid, h = head.grid, head.grid.h
    depth_limit = float(min(3.0 * t_max + 15.0, 60.0))
    region = (
        (thick > 0) & (head.cavity >= 0.999) & (head.depth_inner > 0.5 * h) & (head.depth_inner < depth_limit)
    )
    idx = np.nonzero(region)
    if idx[0].size == 0:
        return {"mass_effect_depth_mm": depth_limit, "max_shift_mm": 0.0}
    d = head.depth_inner[idx]
    t = np.minimum(thick[idx], np.float32(depth_limit - h - 1.0))
    f32 = np.float32
    # new depth d -> old depth: h under the collection, then linear from (t, h) to (D, D)
    old = np.where(d <= t, f32(h), f32(h) + (d - t) * (f32(depth_limit - h) / (f32(depth_limit) - t)))
    shift = np.clip(d - old, f32(0.0), None)  # mm, outwards (towards the inner table)
    c0 = np.array([0.0, 0.0, head.params["zv"]], dtype=np.float32)
    ux, uy, uz = head.xr[idx] - c0[0], head.yr[idx] - c0[1], head.zr[idx] - c0[2]
    norm = np.sqrt(ux * ux + uy * uy + uz * uz) + f32(1e-3)
    R = head.rotation.astype(np.float32)
    coords = []
    for axis in range(3):
        world = (R[axis, 0] * ux + R[axis, 1] * uy + R[axis, 2] * uz) / norm
        coords.append(idx[axis].astype(np.float32) + shift * world / f32(grid.spacing[axis]))
    coords = np.stack(coords)
    src_cavity = ndi.map_coordinates(head.cavity, coords, order=1, mode="nearest", output=np.float32)
    ok = src_cavity >= 0.999
    coords = coords[:, ok]
    idx = tuple(i[ok] for i in idx)
    for name in ("image", "brain", "ventricles", "calcification"):
        arr = getattr(head, name)
        if name != "image" and not arr.any():
            continue
        arr[idx] = ndi.map_coordinates(arr, coords, order=1, mode="nearest", output=np.float32)
    return {"mass_effect_depth_mm": depth_limit, "max_shift_mm": float(shift.max())}


def _extra_axial(head: Head, rng, target_ml: float, kind: str) -> Bleed:
    """Subdural crescent or epidural lens between the inner table and the brain, displacing the brain.

    The blood fills the layer ``0 < depth_inner < thick`` of the cranial cavity (never bone): its outer
    surface is the inner table, its inner surface pushes the brain in (:func:`_push_brain`). A subdural
    haematoma spreads thinly over a wide arc (crescent, 30-85 degrees); an epidural one is a lens about
    three times as wide as it is thick. The thickness is set so that the voxels a label can hold (those
    more than a voxel below the inner table, away from the bright partial-volume rim of bone) add up to
    the target volume.
    """
    grid, h = head.grid, head.grid.h
    vol_mm3 = target_ml * 1000.0
    if kind == "sdh":
        u = _direction(rng, lateral=True, z_range=(0.0, 0.5))
        r_in = max(_surface_distance(head, u), 30.0)
        t_guess = float(np.clip(rng.uniform(5.0, 8.0) * (target_ml / 20.0) ** (1.0 / 3.0), 4.0, 25.0))
        area = vol_mm3 / (0.5 * t_guess)  # crescent: mean thickness t_max / 2
        cos0 = float(np.clip(1.0 - area / (2.0 * np.pi * r_in**2), -1.0, 1.0))
        theta0 = float(np.clip(np.degrees(np.arccos(cos0)), 30.0, 85.0))
        power = 1.0
    else:
        u = _direction(rng, lateral=True, z_range=(-0.15, 0.45))
        r_in = max(_surface_distance(head, u), 30.0)
        # a lens about 3x as wide as thick: volume ~ (2/3) pi rho^2 t with t = 0.6 rho (rho: half-width)
        rho = (vol_mm3 / (0.4 * np.pi)) ** (1.0 / 3.0) * rng.uniform(0.95, 1.2)
        theta0 = float(np.clip(np.degrees(rho / r_in), 12.0, 45.0))
        power = 0.5  # elliptical profile: biconvex
    prof = _cap_profile(
        head, u, theta0, 1.0, rng=np.random.default_rng(int(rng.integers(2**31))), power=power
    )
    # a voxel more than h below the inner table is labelled when soft(d - t * prof, h) * cavity >= 0.5,
    # i.e. when t >= (d + h (0.5 / cavity - 0.5)) / prof: the thickness is the target-th smallest of these
    cand = (prof > 0.02) & (head.depth_inner > h) & (head.cavity >= 0.5) & (head.depth_inner < 40.0)
    d, c, pr = head.depth_inner[cand], head.cavity[cand], prof[cand]
    t_needed = (d + np.float32(h) * (np.float32(0.5) / c - np.float32(0.5))) / pr
    n_target = max(1, int(round(target_ml / grid.voxel_ml)))
    t_max = float(np.clip(_level_for_count(t_needed, n_target, empty=38.0, above_kth=1e-3), 1.0, 38.0))
    thick = (prof * np.float32(t_max)).astype(np.float32)
    fraction = (soft(head.depth_inner - thick, h) * head.cavity).astype(np.float32)
    t_used = t_max
    details = {"theta0_deg": float(theta0), "t_max_mm": float(t_used)}
    details.update(_push_brain(head, thick, t_used))
    base = rng.uniform(61.0, 67.0) if kind == "edh" else rng.uniform(59.0, 65.0)
    hu = _blood_hu(grid, rng, base, 9.0, corr=8.0)
    if kind == "edh" and rng.uniform() < 0.3:
        hu -= 14.0 * soft(-(smooth_field(grid, rng, 6.0) + 1.0), 0.5)
    return Bleed(kind, fraction, hu, None, 17.0, details)


def _sah(head: Head, rng, target_ml: float) -> Bleed:
    grid, h, p = head.grid, head.grid.h, head.params
    u = _direction(rng, lateral=bool(rng.uniform() < 0.7), z_range=(-0.2, 0.7))
    w = max(0.8 + 1.6 * p["atrophy"] + 0.8, 1.2 * h)  # blood fills (and widens) the sulci
    sulcal = soft(head.sulcal_dist - w / 2, h) * soft(head.depth_brain - head.sulcal_depth, h)
    extra_axial = head.cavity * (1.0 - head.brain)
    zone = np.maximum(sulcal * head.brain, extra_axial) * (1.0 - head.ventricles)
    theta0 = 30.0
    for _ in range(3):
        thick = _cap_profile(head, u, theta0, 1.0, rng=np.random.default_rng(int(rng.integers(2**31))))
        fraction = (zone * np.clip(thick * 4.0, 0.0, 1.0)).astype(np.float32)
        vol = float((fraction >= 0.5).sum()) * grid.voxel_ml
        if vol <= 0:
            theta0 = min(90.0, theta0 * 1.6)
            continue
        theta0 = float(np.clip(theta0 * (target_ml / vol) ** 0.5, 12.0, 90.0))
    hu = _blood_hu(grid, rng, rng.uniform(60.0, 66.0), 7.0)
    return Bleed("sah", fraction, hu, None, 17.0, {"theta0_deg": float(theta0)})


def bright_spill(
    ideal: np.ndarray, fraction: np.ndarray, sigma_voxels: float = PSF_SIGMA_VOXELS
) -> np.ndarray:
    """Voxels a rater cannot call blood: where bone or calcification raise the HU by >= :data:`BRIGHT_SPILL_HU`.

    A voxel at the inner table holds blood *and* bone (partial volume), and the scanner's blur spreads
    1000+ HU of bone into its neighbour: on the image it is a bright rim, not blood, and experts leave it
    out of their masks (expert masks on real CT hold nothing above 150 HU). The spill is the excess of the
    ideal image (before the haemorrhage) over 100 HU, blurred with the scanner's point-spread function.

    Args:
        ideal: the head image (HU) before the haemorrhage is painted in (bone, calcifications).
        fraction: blood fraction; only a box around it is examined.
        sigma_voxels: sigma of the scanner's blur (voxels), as in :func:`hemolab.synth.scanner.acquire`.

    Returns:
        Boolean mask (full grid) of the voxels near the bleed where bright structures spill in.
    """
    out = np.zeros(ideal.shape, bool)
    nz = np.argwhere(fraction > 0)
    if nz.size == 0:
        return out
    m = int(np.ceil(3.0 * sigma_voxels)) + 1
    box = tuple(
        slice(max(0, int(a) - m), min(n, int(b) + m + 1))
        for a, b, n in zip(nz.min(axis=0), nz.max(axis=0), ideal.shape, strict=True)
    )
    excess = np.maximum(ideal[box] - np.float32(100.0), np.float32(0.0))
    spill = ndi.gaussian_filter(excess, sigma_voxels, truncate=3.0, mode="nearest")
    out[box] = spill >= BRIGHT_SPILL_HU
    return out


def make_bleed(head: Head, bleed_type: str, target_ml: float, rng: np.random.Generator) -> Bleed:
    """Draw a haemorrhage of ``bleed_type`` (one of :data:`BLEED_TYPES`) of about ``target_ml`` into a head.

    Args:
        head: the synthetic head (from :func:`hemolab.synth.anatomy.build_head`).
        bleed_type: ``"none"``, ``"iph_deep"``, ``"iph_lobar"``, ``"ivh"``, ``"sdh"``, ``"edh"`` or ``"sah"``.
        target_ml: the volume to aim for (IVH ignores it: its size follows the ventricles).
        rng: random generator.

    Returns:
        A :class:`Bleed` (an all-zero fraction for ``"none"``).

    Raises:
        HemolabError: for an unknown bleed type.
    """
    if bleed_type not in BLEED_TYPES:
        raise HemolabError(f"unknown bleed type {bleed_type!r}: choose one of {', '.join(BLEED_TYPES)}")
    if bleed_type == "none":
        zeros = np.zeros(head.grid.shape, np.float32)
        return Bleed("none", zeros, zeros, None, 17.0, {})
    if bleed_type in ("iph_deep", "iph_lobar"):
        return _iph(head, rng, target_ml, deep=bleed_type == "iph_deep")
    if bleed_type == "ivh":
        return _ivh(head, rng)
    if bleed_type in ("sdh", "edh"):
        return _extra_axial(head, rng, target_ml, bleed_type)
    return _sah(head, rng, target_ml)


def apply_bleed(image: np.ndarray, bleed: Bleed) -> None:
    """Paint the oedema rim and then the blood into a head image (in place, HU)."""
    if bleed.oedema is not None:
        paint(image, bleed.oedema, bleed.oedema_hu)
    paint(image, bleed.fraction, bleed.hu)
