"""The voxel grid of a synthetic scan, smooth random fields on it, and anti-aliased shapes.

Everything in :mod:`hemolab.synth` is built in physical millimetres: a shape is a signed distance
(negative inside) and a voxel gets the *fraction* of it that the shape covers, so that the same
anatomy looks the same on a 64x64x16 grid and on a native 512x512x60 one (only sharper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid: ``shape`` and ``spacing`` ``(sx, sy, sz)`` in mm, indexed ``[x, y, z]``.

    The world position of voxel ``(i, j, k)`` is ``origin + (i, j, k) * spacing`` (identity direction).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def n_voxels(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape))

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL (mm^3 / 1000)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def extent(self) -> tuple[float, float, float]:
        """Distance in mm between the first and the last voxel centre along each axis."""
        return tuple((n - 1) * s for n, s in zip(self.shape, self.spacing, strict=True))  # type: ignore[return-value]

    @property
    def h(self) -> float:
        """The anti-aliasing ramp width in mm: the in-plane voxel size."""
        return float(max(self.spacing[0], self.spacing[1]))

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm, float32) of the voxel centres along x, y and z."""
        return tuple(
            (o + s * np.arange(n)).astype(np.float32)
            for o, s, n in zip(self.origin, self.spacing, self.shape, strict=True)
        )  # type: ignore[return-value]


def smooth_field(grid: Grid, rng: np.random.Generator, corr_mm: float) -> np.ndarray:
    """A smooth Gaussian random field with unit standard deviation on ``grid``.

    White noise on a coarse lattice (spacing ``corr_mm / 2``), smoothed with a Gaussian of one lattice
    step and interpolated (linearly) onto the grid. Fast even for a 512x512x66 grid.

    Args:
        grid: the voxel grid.
        rng: random generator (the only source of randomness).
        corr_mm: correlation length in mm (the size of the blobs).

    Returns:
        float32 array of ``grid.shape``.
    """
    step = corr_mm / 2.0
    coarse_shape = tuple(max(4, int(np.ceil(e / step)) + 1) for e in grid.extent)
    noise = rng.standard_normal(coarse_shape).astype(np.float32)
    noise = ndi.gaussian_filter(noise, 1.0, mode="wrap")
    noise /= max(float(noise.std()), 1e-6)
    # separable linear interpolation onto the grid, corner to corner (z, then y, then x: cheapest first)
    out = noise
    for axis in (2, 1, 0):
        n_in, n_out = coarse_shape[axis], grid.shape[axis]
        pos = np.linspace(0.0, n_in - 1.0, n_out) if n_out > 1 else np.zeros(1)
        i0 = np.minimum(np.floor(pos).astype(np.intp), n_in - 2)
        w1 = (pos - i0).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = n_out
        w1 = w1.reshape(shape)
        lo, hi = np.take(out, i0, axis=axis), np.take(out, i0 + 1, axis=axis)
        hi -= lo
        hi *= w1
        lo += hi
        out = lo
    return np.ascontiguousarray(out, dtype=np.float32)


def soft(d: np.ndarray | float, h: float) -> np.ndarray:
    """Fraction of a voxel (ramp width ``h`` mm) inside a shape whose signed distance is ``d`` (mm, < 0 inside).

    Exact for a half-space seen through a box of width ``h``; 0.5 on the boundary, so
    ``soft(d, h) >= 0.5`` is the voxel-centre-inside test.
    """
    out = np.asarray(d, dtype=np.float32) * np.float32(-1.0 / h)
    out += np.float32(0.5)
    np.maximum(out, 0.0, out=out)
    np.minimum(out, 1.0, out=out)
    return out


def slab(dist: np.ndarray, width: float, h: float) -> np.ndarray:
    """Fraction of a voxel (box of width ``h``) covered by a slab ``|dist| < width / 2`` (thin sheets, e.g. the falx)."""
    a = np.abs(dist)
    hi = np.minimum(width / 2.0, a + h / 2.0)
    lo = np.maximum(-width / 2.0, a - h / 2.0)
    return np.clip((hi - lo) / h, 0.0, 1.0).astype(np.float32)


def paint(image: np.ndarray, frac: np.ndarray, value, where: tuple | None = None) -> None:
    """In place: ``image = (1 - frac) * image + frac * value`` (optionally inside a box ``where``)."""
    if where is not None:
        sub = image[where]
        sub += frac * (np.asarray(value, dtype=np.float32) - sub)
    else:
        image += frac * (np.asarray(value, dtype=np.float32) - image)


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """A 3x3 rotation (about z, then x, then y) for a slightly tilted head."""
    cz, sz = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    cx, sx = np.cos(np.radians(pitch_deg)), np.sin(np.radians(pitch_deg))
    cy, sy = np.cos(np.radians(roll_deg)), np.sin(np.radians(roll_deg))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def ellipsoid_rho(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre, semi, angle_deg: float = 0.0
) -> np.ndarray:
    """Normalised radius of an ellipsoid (< 1 inside), optionally rotated in the axial plane."""
    dx, dy, dz = x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])
    if angle_deg:
        c, s = np.float32(np.cos(np.radians(angle_deg))), np.float32(np.sin(np.radians(angle_deg)))
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return np.sqrt((dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2)


def box_around(grid: Grid, lo_mm, hi_mm) -> tuple[slice, slice, slice]:
    """Index box (slices) of the voxels whose centres lie within world ``[lo_mm, hi_mm]`` (clipped to the grid)."""
    out = []
    for o, s, n, lo, hi in zip(grid.origin, grid.spacing, grid.shape, lo_mm, hi_mm, strict=True):
        i0 = int(np.clip(np.floor((lo - o) / s), 0, n - 1))
        i1 = int(np.clip(np.ceil((hi - o) / s) + 1, i0 + 1, n))
        out.append(slice(i0, i1))
    return tuple(out)  # type: ignore[return-value]
