"""What the CT scanner adds to the ideal head: partial-volume blur, beam-hardening streaks and noise.

* **Partial volume** (slice thickness, finite resolution): a Gaussian blur with sigma of half a voxel along
  each axis (in mm: half the spacing), applied to the ideal HU image.
* **Beam hardening** near the skull base: dark bands between the dense petrous ridges (the "Hounsfield
  bar") and a few thin streaks radiating from them, fading over the lowest ~3 cm of the scan.
* **Quantum noise**: Gaussian, SD 2-3 HU per voxel, correlated in-plane as a reconstruction kernel makes it:
  white noise filtered with a Gaussian of :data:`NOISE_KERNEL_VOXELS` voxels in x and y (none across slices),
  then rescaled to the target SD. Measured the same way on the real head CT shipped with hemolab
  (:func:`hemolab.synth.realism.realism_stats`), both have a lag-1 in-plane neighbour correlation near 0.6.
  The noise is defined per voxel of the acquisition grid, so every profile has the same noise texture.
* Finally the values are rounded to integers and clipped to [-1024, 3071] as a scanner stores them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from hemolab.synth.anatomy import Head

HU_MIN, HU_MAX = -1024, 3071
#: In-plane sigma (voxels) of the Gaussian that correlates the noise (lag-1 correlation exp(-1 / (4 sigma^2))).
NOISE_KERNEL_VOXELS = 0.85
#: Sigma (voxels) of the partial-volume blur of the ideal image (the scanner's point-spread function).
PSF_SIGMA_VOXELS = 0.5


def beam_hardening(head: Head, rng: np.random.Generator) -> np.ndarray:
    """Streak artefact field (HU, float32) near the skull base, zero elsewhere."""
    grid, k = head.grid, head.k
    ax, ay, az = grid.axes()
    y_pet = -2.0 * k + 0.45 * 34.0 * k
    z_pet = -62.0 * k
    ends = [head.to_world((s * 34.0 * k, y_pet, z_pet)) for s in (-1.0, 1.0)]
    X, Y = ax[:, None], ay[None, :]
    streak = np.zeros((grid.shape[0], grid.shape[1]), np.float32)

    def line_dist(p, angle):
        return np.abs(-(X - p[0]) * np.sin(angle) + (Y - p[1]) * np.cos(angle))

    (x0, y0), (x1, y1) = ends[0][:2], ends[1][:2]
    bar_angle = np.arctan2(y1 - y0, x1 - x0)
    mid = ((x0 + x1) / 2, (y0 + y1) / 2)
    bar = np.exp(-0.5 * (line_dist(mid, bar_angle) / rng.uniform(3.0, 6.0)) ** 2)
    bar *= np.exp(-0.5 * (np.hypot(X - mid[0], Y - mid[1]) / (40.0 * k)) ** 2)
    streak -= rng.uniform(15.0, 35.0) * bar
    for p in ends:
        for _ in range(int(rng.integers(3, 7))):
            ang = rng.uniform(0, np.pi)
            amp = rng.uniform(6.0, 18.0) * rng.choice([-1.0, 1.0])
            fall = np.exp(-np.hypot(X - p[0], Y - p[1]) / (45.0 * k))
            streak += amp * np.exp(-0.5 * (line_dist(p, ang) / rng.uniform(1.0, 2.5)) ** 2) * fall
    z_weight = np.exp(-0.5 * ((az - ends[0][2]) / (12.0 * k)) ** 2).astype(np.float32)
    return (streak[:, :, None] * z_weight[None, None, :]).astype(np.float32)


def acquire(image: np.ndarray, head: Head, rng: np.random.Generator, noise_sd: float) -> np.ndarray:
    """Turn an ideal HU image into what a scanner writes: blur, streaks inside the head, noise, int16.

    Args:
        image: ideal HU image (float32), head plus haemorrhage.
        head: the head (for the skull base geometry and the head outline).
        rng: random generator.
        noise_sd: noise standard deviation in HU.

    Returns:
        The image as int16 HU.
    """
    blurred = ndi.gaussian_filter(image, PSF_SIGMA_VOXELS, truncate=3.0)
    inside = blurred > -500.0
    blurred += beam_hardening(head, rng) * inside
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise = ndi.gaussian_filter(noise, (NOISE_KERNEL_VOXELS, NOISE_KERNEL_VOXELS, 0.0), truncate=3.0)
    noise *= np.float32(noise_sd / max(float(noise.std()), 1e-6))
    blurred += noise
    return np.rint(np.clip(blurred, HU_MIN, HU_MAX)).astype(np.int16)
