"""A synthetic adult head for non-contrast CT, in Hounsfield units.

The head is built in physical millimetres from perturbed ellipsoids so that every case differs a little
(size, shape, tilt, skull thickness, atrophy):

* air (-1000 HU) around a scalp of soft tissue (~45 HU);
* a skull of two cortical tables (1000-1500 HU) with the diploe between them (300-550 HU), thinner over
  the temporal squama, and a skull base (anterior, middle and posterior fossae, dense petrous ridges,
  sphenoid and mastoid air cells, orbits) in the lowest slices;
* a thin layer of extra-axial CSF, the cortex (grey matter ~39 HU) following the brain surface and the sulci
  (CSF ~5 HU, the zero set of a smooth random field), white matter (~30 HU), the deep grey nuclei
  (caudate, lentiform, thalamus ~37 HU), cerebellum and brainstem: parenchyma of real head CT measures
  about 30-35 HU (``benchmarks/synth_realism.py`` compares);
* two lateral ventricles (frontal horns, bodies, atria, occipital and temporal horns: the "butterfly"),
  the third and fourth ventricles, the interhemispheric fissure and the falx (~60 HU);
* the tentorium and the dural venous sinuses (superior sagittal, transverse, sigmoid; ~55 HU) against the inner
  table, and the choroid plexus glomus in each atrium (~45 HU): dense like a thin bleed on real CT, and not
  blood;
* a dense band under the inner table (dura, partial volume with bone, residual beam hardening; +12-30 HU
  fading over ~1 cm, strongest at the back of the head and the vertex) as real head CT has it;
* physiological calcifications (pineal gland, choroid plexus glomus, 120-400 HU): bright, not blood.

Coordinates: world ``[x, y, z]`` in the LPS convention of ITK (x to the patient's left, y posterior,
z superior); the head frame ``(xr, yr, zr)`` is the world frame rotated by the head's tilt, centred at the
head centre (about the level of the lateral ventricles).

This is teaching material, not an anatomical atlas: it reproduces what matters for haemorrhage
segmentation (Arab 2020 / Patel 2019 data, docs/methods.md §1-2): intensities, thin bone next to blood, CSF
next to brain, and bright non-blood structures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hemolab.synth.grid import (
    Grid,
    box_around,
    ellipsoid_rho,
    paint,
    rotation_matrix,
    slab,
    smooth_field,
    soft,
)

#: Mean HU of each tissue (per-case values are drawn around these).
TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "fat": -90.0,
    "csf": 6.0,
    "white_matter": 30.5,
    "grey_matter": 39.0,
    "deep_grey": 36.5,
    "scalp": 45.0,
    "falx": 60.0,
    "diploe": 450.0,
    "cortical_bone": 1250.0,
}


def _sigmoid(t):
    return (1.0 / (1.0 + np.exp(-np.clip(t, -60.0, 60.0)))).astype(np.float32)


@dataclass
class Head:
    """A synthetic head on a grid: the HU image and the fields the haemorrhage simulator needs.

    All arrays are float32 of ``grid.shape``. Fractions are in [0, 1] (partial-volume aware);
    ``>= 0.5`` means the voxel centre is inside.
    """

    grid: Grid
    image: np.ndarray  # HU, before haemorrhage, blur, streaks and noise
    rotation: np.ndarray  # 3x3, head frame -> world
    centre: np.ndarray  # world position of the head frame origin (mm)
    xr: np.ndarray
    yr: np.ndarray
    zr: np.ndarray
    depth_inner: np.ndarray  # mm below the inner table of the skull (> 0 inside the cranial cavity)
    depth_brain: np.ndarray  # mm below the brain surface
    floor: np.ndarray  # zr of the cranial floor under each voxel
    cavity: np.ndarray  # intracranial cavity fraction
    brain: np.ndarray  # brain fraction (parenchyma incl. ventricles, excl. extra-axial CSF)
    ventricles: np.ndarray  # ventricular CSF fraction
    sulcal_dist: np.ndarray  # mm to the nearest sulcal mid-plane (zero set of a random field)
    sulcal_depth: np.ndarray  # how deep the sulci reach below the brain surface (mm)
    calcification: np.ndarray  # physiological calcification fraction
    params: dict = field(default_factory=dict)

    @property
    def k(self) -> float:
        """Head size factor (1 = an average adult head)."""
        return float(self.params["k"])

    def to_world(self, p_head) -> np.ndarray:
        """World position (mm) of a point given in the head frame."""
        return self.rotation @ np.asarray(p_head, dtype=float) + self.centre

    def to_head(self, p_world) -> np.ndarray:
        """Head-frame position of a world point (mm)."""
        return self.rotation.T @ (np.asarray(p_world, dtype=float) - self.centre)


def _head_box(grid: Grid, R: np.ndarray, centre: np.ndarray, lo, hi) -> tuple[slice, slice, slice]:
    """Index box covering a head-frame box ``[lo, hi]`` (mm) once rotated into the world."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    world = corners @ R.T + centre
    return box_around(grid, world.min(axis=0) - 2.0, world.max(axis=0) + 2.0)


def _sphere_box(
    grid: Grid, R: np.ndarray, centre: np.ndarray, cen, radius: float
) -> tuple[slice, slice, slice]:
    """Index box around a head-frame sphere."""
    w = R @ np.asarray(cen, dtype=float) + centre
    return box_around(grid, w - radius - 2.0, w + radius + 2.0)


def sample_head_params(grid: Grid, rng: np.random.Generator) -> dict:
    """Draw the per-case shape of a head that fits in ``grid`` with an air margin.

    Args:
        grid: the acquisition grid (its field of view bounds the head size).
        rng: random generator.

    Returns:
        A dict of scalars (mm, degrees, HU) used by :func:`build_head`.
    """
    k = rng.uniform(0.93, 1.05)
    a = 73.0 * k * rng.uniform(0.96, 1.04)  # left-right semi-axis of the scalp surface
    b = 93.0 * k * rng.uniform(0.96, 1.04)  # antero-posterior
    yaw, pitch, roll = rng.uniform(-8, 8), rng.uniform(-5, 5), rng.uniform(-3, 3)
    # fit the head in the field of view with an air margin of at least ~5% each side
    fov_x, fov_y = grid.extent[0], grid.extent[1]
    ca, sa = abs(np.cos(np.radians(yaw))), abs(np.sin(np.radians(yaw)))
    half_x, half_y = a * ca + b * sa, a * sa + b * ca
    fit = min(1.0, 0.44 * fov_x / half_x, 0.44 * fov_y / half_y)
    k, a, b = k * fit, a * fit, b * fit
    c_top = 82.0 * k * rng.uniform(0.95, 1.05)
    atrophy = rng.uniform(0.0, 1.0) ** 1.5  # 0 = young, 1 = atrophic (bigger CSF spaces)
    return {
        "k": k,
        "a": a,
        "b": b,
        "c_top": c_top,
        "c_bot": 1.7 * c_top,
        "yaw": yaw,
        "pitch": pitch,
        "roll": roll,
        "shift_x": rng.uniform(-0.03, 0.03) * fov_x,
        "shift_y": rng.uniform(-0.03, 0.03) * fov_y,
        "top_margin": rng.uniform(5.0, 12.0),
        "scalp": rng.uniform(4.0, 6.5),
        "skull": rng.uniform(5.5, 8.0) * k,
        "atrophy": atrophy,
        "extra_axial": 0.8 + 2.2 * atrophy,
        "cortex": rng.uniform(2.5, 3.2),
        "vent_scale": k * (0.8 + 0.6 * atrophy) * rng.uniform(0.9, 1.1),
        "zv": 8.0 * k,
        "hu_scalp": rng.normal(45, 4),
        "hu_outer_table": rng.uniform(1150, 1500),
        "hu_inner_table": rng.uniform(1050, 1400),
        "hu_diploe": rng.uniform(330, 520),
        "hu_base": rng.uniform(800, 1000),
        "hu_csf": rng.uniform(3, 10),
        "hu_gm": rng.uniform(37, 41),
        "hu_wm": rng.uniform(29, 32),
        "hu_deep": rng.uniform(35, 38),
        "hu_falx": rng.uniform(55, 70),
        "table_band_hu": rng.uniform(12.0, 30.0),
        "table_band_mm": rng.uniform(3.5, 5.5),
        "table_band_front": rng.uniform(0.1, 0.35),
        "skull_base_hu": rng.uniform(12.0, 24.0),
        "skull_base_mm": rng.uniform(18.0, 30.0),
        "skull_base_front": rng.uniform(0.5, 0.9),
        "vertex_hu": rng.uniform(24.0, 40.0),
        "vertex_mm": rng.uniform(10.0, 16.0),
        "pineal_calcified": bool(rng.uniform() < 0.55),
        "choroid_calcified": bool(rng.uniform() < 0.4),
        "falx_calcified": bool(rng.uniform() < 0.1),
    }


def build_head(grid: Grid, rng: np.random.Generator, params: dict | None = None) -> Head:
    """Build the head image (HU, float32) and its anatomical fields on ``grid``.

    Args:
        grid: the voxel grid.
        rng: random generator (shape perturbations, textures).
        params: output of :func:`sample_head_params` (drawn from ``rng`` when ``None``).

    Returns:
        A :class:`Head`.
    """
    p = sample_head_params(grid, rng) if params is None else dict(params)
    k, h = p["k"], grid.h
    f32 = np.float32
    R = rotation_matrix(p["yaw"], p["pitch"], p["roll"])
    ax, ay, az = grid.axes()
    z_top = grid.origin[2] + grid.extent[2]
    centre = np.array(
        [
            grid.origin[0] + grid.extent[0] / 2 + p["shift_x"],
            grid.origin[1] + grid.extent[1] / 2 + p["shift_y"],
            z_top - p["top_margin"] - p["c_top"],
        ]
    )
    X = (ax - f32(centre[0]))[:, None, None]
    Y = (ay - f32(centre[1]))[None, :, None]
    Z = (az - f32(centre[2]))[None, None, :]
    Rt = R.T.astype(np.float32)
    xr = Rt[0, 0] * X + Rt[0, 1] * Y + Rt[0, 2] * Z
    yr = Rt[1, 0] * X + Rt[1, 1] * Y + Rt[1, 2] * Z
    zr = Rt[2, 0] * X + Rt[2, 1] * Y + Rt[2, 2] * Z

    # --- outer surface: perturbed ellipsoid, approximate signed distance from first order ---
    a, b = f32(p["a"]), f32(p["b"])
    c = np.where(zr > 0, f32(p["c_top"]), f32(p["c_bot"]))
    rho = np.sqrt((xr / a) ** 2 + (yr / b) ** 2 + (zr / c) ** 2)
    rho *= 1.0 + 0.02 * smooth_field(grid, rng, 60.0)
    grad = np.sqrt((xr / a**2) ** 2 + (yr / b**2) ** 2 + (zr / c**2) ** 2)
    depth = ((1.0 - rho) * rho / np.maximum(grad, f32(1e-4))).astype(
        np.float32
    )  # mm inside the scalp surface
    lateral = ((xr / a) ** 2 / np.maximum(rho, f32(1e-3)) ** 2).clip(0, 1)
    del c, grad

    # --- skull thickness field: thinner over the temporal squama ---
    temporal = lateral**3 * np.exp(-(((zr + 15 * k) / (25 * k)) ** 2))
    t_s = f32(p["scalp"])
    t_b = f32(p["skull"]) * (1.0 + 0.18 * smooth_field(grid, rng, 40.0)) * (1.0 - 0.5 * temporal)
    inner = t_s + t_b
    del temporal, lateral

    # --- cranial floor: anterior / middle / posterior fossae, sella, petrous ridges ---
    y_pet = -2.0 * k + 0.45 * np.abs(xr)  # petrous ridges: middle / posterior fossa border
    y_sph = -18.0 * k - 0.35 * np.abs(xr)  # sphenoid wings: anterior / middle fossa border
    floor = (
        -74.0 * k
        + 25.0 * k * _sigmoid((y_pet - yr) / (3.0 * k))
        + 20.0 * k * _sigmoid((y_sph - yr) / (3.0 * k))
        + 13.0 * k * np.exp(-((xr / (9.0 * k)) ** 2) - ((yr + 12.0 * k) / (10.0 * k)) ** 2)
    ).astype(np.float32)
    del y_sph
    t_base = 6.0 * k

    img = np.full(grid.shape, TISSUE_HU["air"], dtype=np.float32)
    head_in = soft(-depth, h)
    paint(img, head_in, p["hu_scalp"])
    paint(img, soft(t_s - depth, h), p["hu_outer_table"])
    diploe = p["hu_diploe"] + 90.0 * smooth_field(grid, rng, 6.0)
    paint(img, soft(t_s + 0.3 * t_b - depth, h), diploe)
    del diploe
    paint(img, soft(t_s + 0.7 * t_b - depth, h), p["hu_inner_table"])
    deep = soft(inner - depth, h)  # inside the inner table
    depth_inner = (depth - inner).astype(np.float32)
    above_floor = soft(floor - zr, h)
    # skull base plate below the floor, then face / neck soft tissue beneath it
    below_plate = soft(zr - (floor - t_base), h)
    base_hu = p["hu_base"] + 220.0 * smooth_field(grid, rng, 5.0)
    # petrous ridges: very dense bone along the middle/posterior fossa border (beam-hardening source)
    base_hu += 650.0 * np.exp(-(((yr - y_pet) / (5.0 * k)) ** 2)) * _sigmoid((np.abs(xr) - 18.0 * k) / 3.0)
    paint(img, deep * (1.0 - above_floor) * (1.0 - below_plate), base_hu)
    del base_hu
    paint(img, deep * below_plate * (1.0 - above_floor), p["hu_scalp"])
    del below_plate
    _paint_face(img, grid, rng, R, centre, xr, yr, zr, deep * (1.0 - above_floor), p)
    cavity = (deep * above_floor).astype(np.float32)
    del deep, above_floor
    paint(img, cavity, p["hu_csf"])

    # --- brain: below a thin extra-axial CSF layer ---
    t_e = f32(p["extra_axial"])
    depth_brain = np.minimum(depth_inner - t_e, zr - (floor + t_e)).astype(np.float32)
    brain = soft(-depth_brain, h) * cavity
    wm = p["hu_wm"] + 1.2 * smooth_field(grid, rng, 10.0)
    paint(img, brain, wm)
    del wm
    # sulci: zero set of a smooth random field; distance in mm ~ |n| / |grad n|
    sulcal_dist = _sulcal_distance(grid, rng, xr, yr, zr, cavity, p)
    sulcal_depth = ((11.0 + 6.0 * p["atrophy"]) * (1.0 + 0.3 * smooth_field(grid, rng, 25.0))).astype(
        np.float32
    )
    t_ctx = f32(p["cortex"])
    w_s = f32(0.8 + 1.6 * p["atrophy"])
    gm = np.maximum(
        soft(depth_brain - t_ctx, h),
        soft(sulcal_dist - (w_s / 2 + t_ctx), h) * soft(depth_brain - (sulcal_depth + t_ctx), h),
    )
    gm_hu = p["hu_gm"] + 1.2 * smooth_field(grid, rng, 8.0)
    paint(img, gm * brain, gm_hu)
    del gm
    sulci = soft(sulcal_dist - w_s / 2, h) * soft(depth_brain - sulcal_depth, h) * brain
    paint(img, sulci, p["hu_csf"])
    del sulci

    # cerebellum (posterior fossa) and brainstem
    pf = _sigmoid((yr - y_pet) / 2.0) * soft(zr + 40.0 * k, h)
    cereb_texture = smooth_field(grid, rng, 3.0)
    paint(img, 0.6 * pf * brain * soft(np.abs(cereb_texture) * 1.5 - 0.4, 1.0), p["hu_csf"] + 8.0)
    del cereb_texture
    del pf
    bx = _sphere_box(grid, R, centre, (0, 5 * k, -55 * k), 40 * k)
    stem = soft(
        (ellipsoid_rho(xr[bx], yr[bx], zr[bx], (0, 5 * k, -55 * k), (12 * k, 12 * k, 40 * k)) - 1) * 12 * k, h
    )
    paint(img, stem * brain[bx], p["hu_wm"] + 3.0, where=bx)
    del stem

    # deep grey nuclei
    vs, zv = p["vent_scale"], p["zv"]
    bx = _head_box(grid, R, centre, (-35 * k, -30 * k, zv - 30 * k), (35 * k, 28 * k, zv + 12 * k))
    bxr, byr, bzr = xr[bx], yr[bx], zr[bx]
    deep_gm = np.zeros(bxr.shape, np.float32)
    for s in (-1.0, 1.0):
        for cen, semi, ang in (
            ((s * 15 * k, -16 * k, zv - 2 * k), (4.5 * k, 7 * k, 7 * k), 0.0),  # caudate head
            ((s * 22 * k, -4 * k, zv - 14 * k), (5.5 * k, 12 * k, 9 * k), s * 10.0),  # lentiform
            ((s * 10 * k, 10 * k, zv - 14 * k), (7 * k, 10 * k, 8 * k), 0.0),  # thalamus
        ):
            r = ellipsoid_rho(bxr, byr, bzr, cen, semi, ang)
            np.maximum(deep_gm, soft((r - 1.0) * semi[0], h), out=deep_gm)
    paint(img, deep_gm * brain[bx], p["hu_deep"], where=bx)
    del deep_gm, gm_hu

    # ventricles (union of ellipsoids, perturbed)
    m = max(k, vs)
    bx = _head_box(grid, R, centre, (-45 * m, -42 * m, -72 * k), (45 * m, 42 * m, zv + 15 * m))
    vent_rho = _ventricle_rho(xr[bx], yr[bx], zr[bx], k, vs, zv)
    vent_rho *= 1.0 + 0.05 * smooth_field(grid, rng, 20.0)[bx]
    ventricles = np.zeros(grid.shape, np.float32)
    ventricles[bx] = soft((vent_rho - 1.0) * 4.5 * vs, h) * cavity[bx]
    del vent_rho
    paint(img, ventricles, p["hu_csf"])

    # interhemispheric fissure and falx
    zone = np.maximum.reduce(
        [soft((zv + 12 * k) - zr, h), soft(yr + 40 * k, h), soft(36 * k - yr, h)]
    ) * soft(-40 * k - zr, h)
    zone = zone * brain * (1.0 - ventricles)
    paint(img, slab(xr, 2.0 + 3.0 * p["atrophy"], h) * zone, p["hu_csf"])
    paint(img, slab(xr, 1.2, h) * zone, p["hu_falx"])
    del zone

    # dura and dural venous sinuses: dense (flowing blood, ~55 HU) against the inner table -- on real head
    # CT they look like a thin bleed, and a network that never saw them calls them one (they are not blood)
    sinus_hu = p["hu_falx"] - 5.0
    behind = _sigmoid((yr - y_pet) / 2.0)  # posterior fossa side of the petrous ridges
    tent = -40.0 * k - zr  # signed distance to the tentorium's level (the posterior fossa's roof)
    near_table = soft(depth_inner - 6.0 * k, h)  # within ~6 mm of the inner table
    paint(img, slab(tent, 1.2, h) * behind * cavity, sinus_hu)  # tentorium cerebelli
    paint(img, slab(tent, 7.0 * k, h) * near_table * behind * cavity, sinus_hu)  # transverse sinuses
    # sigmoid sinuses: from the transverse sinus down the lateral wall of the posterior fossa
    lateral_pf = behind * _sigmoid((np.abs(xr) - 28.0 * k) / 3.0) * soft(zr + 40.0 * k, h)
    paint(img, lateral_pf * near_table * cavity, sinus_hu)
    del lateral_pf
    paint(img, slab(xr, 7.0 * k, h) * near_table * soft((zv - 10.0 * k) - zr, h) * cavity, sinus_hu)  # SSS
    # a denser skull base: on real head CT the brain of the lowest slices -- the posterior fossa between the
    # petrous bones above all -- reads 5-18 HU denser than the same tissue higher up (beam hardening by the
    # dense skull base; partial volume with the floor in thick slices): on the shipped real scan the median
    # intracranial HU climbs from ~29 to ~47 over the lowest 3-4 cm (realism.skull_base_profile). Not blood;
    # without it, networks called the cerebellum next to the petrous ridges and the transverse sinuses a bleed.
    # Beam hardening acts on the axial slice that holds the dense bone, so the rise follows the slice's
    # height above the lowest slice of the cavity, strongest behind the petrous ridges.
    pf_weight = p["skull_base_front"] + (1.0 - p["skull_base_front"]) * _sigmoid((yr - y_pet) / (6.0 * k))
    pf_weight *= np.clip(1.0 + 0.3 * smooth_field(grid, rng, 15.0), 0.6, 1.4)
    in_slice = np.nonzero((cavity > 0.5).any(axis=(0, 1)))[0]
    z_low = float(Z.ravel()[in_slice[0]]) if in_slice.size else 0.0
    rise = np.exp(-np.maximum(Z - f32(z_low), 0.0) / f32(p["skull_base_mm"]))
    img += f32(p["skull_base_hu"]) * pf_weight * rise * cavity
    # the same at the vertex, over a shorter distance: the highest slices cut the calvarium tangentially and
    # mix it into the little brain they hold (the shipped real scan: +16 HU over the top 1 cm of brain)
    z_high = float(Z.ravel()[in_slice[-1]]) if in_slice.size else 0.0
    rise = np.exp(-np.maximum(f32(z_high) - Z, 0.0) / f32(p["vertex_mm"]))
    pf_weight = np.clip(1.0 + 0.3 * smooth_field(grid, rng, 15.0), 0.6, 1.4)
    img += f32(p["vertex_hu"]) * pf_weight * rise * cavity
    del pf_weight, rise
    del behind, tent, near_table, y_pet
    # a dense band under the inner table (dura, the cortex's partial volume with bone in thick slices,
    # residual beam hardening): on the real head CT shipped with hemolab the intracranial voxels 2-4 mm from
    # the skull at the back of the head are ~15-20 HU denser than in a head without it, fading over ~1 cm
    # (realism.inner_table_profile, benchmarks/synth_realism.py); weaker at the front, strong at the vertex.
    # Not blood (a bleed painted later replaces it): without it, networks called it a thin subdural.
    back = np.maximum(_sigmoid(yr / (12.0 * k)), _sigmoid((zr - 45.0 * k) / (8.0 * k)))
    weight = p["table_band_front"] + (1.0 - p["table_band_front"]) * back
    del back
    weight *= np.clip(1.0 + 0.3 * smooth_field(grid, rng, 20.0), 0.6, 1.4)
    band = np.exp(-np.maximum(depth_inner, 0.0) / f32(p["table_band_mm"]))
    img += f32(p["table_band_hu"]) * weight * band * cavity
    del weight, band
    # choroid plexus glomus in each atrium: soft tissue (~45 HU) in the CSF, often with a calcified core below
    for side in (-1.0, 1.0):
        cen = (side * 17 * p["vent_scale"], 20 * k, p["zv"] - 4 * k)
        bx = _sphere_box(grid, R, centre, cen, 8 * k + h)
        r = ellipsoid_rho(xr[bx], yr[bx], zr[bx], cen, (3.5 * k, 6.0 * k, 3.5 * k))
        paint(img, soft((r - 1.0) * 3.5 * k, h) * ventricles[bx], p["hu_falx"] - 15.0, where=bx)

    # physiological calcifications (snapped to voxel centres so they exist at every resolution)
    calc = np.zeros(grid.shape, np.float32)
    spots = []
    if p["pineal_calcified"]:
        spots.append(((0.0, 18 * k, zv - 16 * k), rng.uniform(1.8, 3.5)))
    if p["choroid_calcified"]:
        for s in (-1.0, 1.0):
            spots.append(((s * 17 * vs, 20 * k, zv - 4 * k), rng.uniform(1.8, 3.2)))
    if p["falx_calcified"]:
        spots.append(((0.0, rng.uniform(-40, 40) * k, zv + 30 * k), rng.uniform(1.5, 2.5)))
    calc_hu = []
    for cen, radius in spots:
        world = R @ np.asarray(cen) + centre
        idx = np.round((world - np.asarray(grid.origin)) / np.asarray(grid.spacing))
        idx = np.clip(idx, 0, np.asarray(grid.shape) - 1)
        snapped = R.T @ (np.asarray(grid.origin) + idx * np.asarray(grid.spacing) - centre)
        radius = max(radius, 0.6 * h)
        bx = _sphere_box(grid, R, centre, snapped, radius + h)
        r = ellipsoid_rho(xr[bx], yr[bx], zr[bx], snapped, (radius, radius, radius))
        frac = soft((r - 1.0) * radius, h) * cavity[bx]
        hu = rng.uniform(180, 400)
        calc_hu.append(hu)
        paint(img, frac, hu, where=bx)
        np.maximum(calc[bx], frac, out=calc[bx])
    p["calcification_hu"] = calc_hu

    return Head(
        grid=grid,
        image=img,
        rotation=R,
        centre=centre,
        xr=xr,
        yr=yr,
        zr=zr,
        depth_inner=depth_inner,
        depth_brain=depth_brain,
        floor=floor,
        cavity=cavity,
        brain=brain.astype(np.float32),
        ventricles=ventricles,
        sulcal_dist=sulcal_dist,
        sulcal_depth=sulcal_depth,
        calcification=calc,
        params=p,
    )


def _sulcal_distance(grid: Grid, rng, xr, yr, zr, cavity, p: dict, corr: float = 8.0) -> np.ndarray:
    """Distance (mm) to the nearest sulcal mid-plane.

    Sulci are the zero set of a smooth random field defined on directions from the head centre (so they
    run radially inwards from the brain surface, as real sulci do): the field is sampled at the
    projection of each voxel on a sphere of radius ``R0``; its gradient there sets the mm scale.
    """
    from scipy import ndimage as ndi

    r0 = 70.0 * p["k"]
    step = corr / 2.0
    n = int(np.ceil(2 * (r0 + 2 * step) / step)) + 1
    lattice = ndi.gaussian_filter(rng.standard_normal((n, n, n)).astype(np.float32), 1.0, mode="wrap")
    lattice /= max(float(lattice.std()), 1e-6)
    out = np.full(grid.shape, 1e3, dtype=np.float32)
    inside = cavity > 0
    # bend the radial sulci: displace the points by a smooth random vector field before projecting
    px, py, pz = (c[inside] + np.float32(4.0) * smooth_field(grid, rng, 18.0)[inside] for c in (xr, yr, zr))
    radius = np.sqrt(px**2 + py**2 + pz**2) + np.float32(1e-3)
    scale = np.float32(r0) / radius
    lo = -(r0 + 2 * step)
    coords = np.stack([(c * scale - lo) / step for c in (px, py, pz)])
    vals = ndi.map_coordinates(lattice, coords, order=1, mode="nearest", output=np.float32)
    # |n| / |grad n|: unit-variance field smoothed with sigma = 1 lattice step; angular -> mm at this radius
    out[inside] = np.abs(vals) * np.float32(step / np.sqrt(1.5)) * (radius / np.float32(r0))
    return out


def _ventricle_rho(xr, yr, zr, k: float, vs: float, zv: float) -> np.ndarray:
    """Union (minimum of normalised radii) of the ellipsoids making the ventricular system."""
    parts = []
    for s in (-1.0, 1.0):
        parts += [
            ((s * 6.5 * vs, -2 * k, zv), (4.0 * vs, 20 * k, 5.5 * vs), -s * 10.0),  # body
            ((s * 8.5 * vs, -22 * k, zv - 3 * k), (4.5 * vs, 9 * k, 7 * vs), s * 25.0),  # frontal horn
            ((s * 16 * vs, 20 * k, zv - 4 * k), (5.5 * vs, 12 * k, 7.5 * vs), -s * 25.0),  # atrium/occipital
            ((s * 28 * k, 0 * k, zv - 32 * k), (2.2 * vs, 11 * k, 3 * vs), -s * 12.0),  # temporal horn
        ]
    parts += [
        ((0.0, 2 * k, zv - 16 * k), (1.6 * vs, 10 * k, 7 * k), 0.0),  # third ventricle
        ((0.0, 27 * k, -58 * k), (5 * k, 3.5 * k, 7 * k), 0.0),  # fourth ventricle
    ]
    out = None
    for cen, semi, ang in parts:
        r = ellipsoid_rho(xr, yr, zr, cen, semi, ang)
        out = r if out is None else np.minimum(out, r, out=out)
    return out


def _paint_face(img, grid, rng, R, centre, xr, yr, zr, below_floor, p) -> None:
    """Orbits, sphenoid and ethmoid sinuses and mastoid air cells under the skull base."""
    k, h = p["k"], grid.h
    air_cells = smooth_field(grid, rng, 4.0)
    parts = [
        ((0.0, -16 * k, -58 * k), (13 * k, 10 * k, 9 * k), -0.6, -950.0),  # sphenoid sinus
        ((0.0, -0.80 * p["b"], -48 * k), (9 * k, 16 * k, 12 * k), -0.2, -950.0),  # ethmoid cells
        ((-46 * k, 14 * k, -64 * k), (9 * k, 11 * k, 10 * k), 0.0, -950.0),  # mastoid air cells
        ((46 * k, 14 * k, -64 * k), (9 * k, 11 * k, 10 * k), 0.0, -950.0),
    ]
    for s in (-1.0, 1.0):  # orbital fat, then the globe
        parts.append(
            ((s * 31 * k, -0.80 * p["b"], -46 * k), (17 * k, 20 * k, 15 * k), None, TISSUE_HU["fat"])
        )
        parts.append(
            ((s * 32 * k, -0.80 * p["b"] - 6 * k, -46 * k), (11.5 * k, 11.5 * k, 11.5 * k), None, 12.0)
        )
    for cen, semi, air_level, hu in parts:
        bx = _sphere_box(grid, R, centre, cen, max(semi))
        r = ellipsoid_rho(xr[bx], yr[bx], zr[bx], cen, semi)
        frac = soft((r - 1.0) * min(semi), h) * below_floor[bx]
        if air_level is not None:
            frac *= soft(air_level - air_cells[bx], 0.3)
        paint(img, frac, hu, where=bx)
