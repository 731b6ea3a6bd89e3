"""Intensity preprocessing of a CT in Hounsfield units (HU), one function per method.

* CNN-DS (Arab 2020, Methods, "Preprocessing"): HU < 0 -> 0, HU > 100 -> 100 (:func:`clip_cnnds`);
  hemolab then divides by 100 so the network sees [0, 1] (:func:`hemolab.preprocess.prepare_cnnds`).
* Patel 3D CNN (Patel 2019, "Pre-processing"): HU clipped to [-200, 200] and scaled to [0, 1]
  (:func:`normalise_patel`).
* The slice-based 2D U-Net baseline of Arab 2020 (Table 3; docs/methods.md §1): a 30-130 HU window, a z-score
  (:func:`window_zscore`), curvature-driven denoising (:func:`curvature_denoise`) and morphological closing of
  the training labels (:func:`close_label`).

Why windows at all: blood (50-90 HU), grey and white matter (20-45 HU) and CSF (0-15 HU) live in a
100 HU slice of the CT's 3000 HU range. Clipping spends the network's input range on that slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from hemolab.errors import HemolabError
from hemolab.io import array_from_image, image_from_array
from hemolab.validation import check_hu, check_mask, check_volume

#: CNN-DS intensity range in HU (Arab 2020, Methods).
CNNDS_HU_RANGE: tuple[float, float] = (0.0, 100.0)
#: Patel 3D CNN intensity range in HU (Patel 2019, "Pre-processing").
PATEL_HU_RANGE: tuple[float, float] = (-200.0, 200.0)
#: The value of air after either network's scaling to [0, 1] (anything below the HU window maps to 0):
#: what patches and tiles are padded with beyond the scan.
PAD_VALUE: float = 0.0
#: Window of the slice-based 2D U-Net baseline (docs/methods.md §1, "Baselines").
SLICE_UNET_WINDOW: tuple[float, float] = (30.0, 130.0)


def clip_cnnds(arr) -> np.ndarray:
    """CNN-DS intensity clipping: HU below 0 become 0, above 100 become 100 (Arab 2020, Methods).

    Args:
        arr: a CT volume ``[x, y, z]`` in HU.

    Returns:
        float32 array in [0, 100] HU (not yet divided by 100; :func:`prepare_cnnds` does that).

    Raises:
        HemolabError: if ``arr`` is not a 3D volume in Hounsfield units (e.g. already normalised).
    """
    hu = check_hu(arr, "image")
    lo, hi = CNNDS_HU_RANGE
    return np.clip(hu, lo, hi).astype(np.float32, copy=False)


def scale_window(arr, window: Sequence[float]) -> np.ndarray:
    """Clip HU to ``window = (low, high)`` and scale linearly to [0, 1]: what both networks are fed.

    CNN-DS: [0, 100] HU (Arab 2020, Methods, "Preprocessing"; hemolab divides by 100 after the paper's
    clipping); Patel: [-200, 200] HU (Patel 2019, "Pre-processing"). A checkpoint stores its window
    (:class:`hemolab.checkpoint.CheckpointMeta`) and inference uses it.

    Args:
        arr: a CT volume ``[x, y, z]`` in HU.
        window: ``(low, high)`` in HU, ``low < high``.

    Returns:
        float32 array in [0, 1].

    Raises:
        HemolabError: if ``arr`` is not a 3D volume in HU, or for a bad window.
    """
    lo, hi = (float(w) for w in window)
    if not lo < hi:
        raise HemolabError(f"window must be (low, high) with low < high in HU, got {tuple(window)}")
    hu = check_hu(arr, "image")
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def normalise_patel(arr) -> np.ndarray:
    """Patel 3D CNN normalisation: HU clipped to [-200, 200] and scaled linearly to [0, 1] (Patel 2019).

    -200 HU (and everything below: air, fat) maps to 0, 0 HU (water) to 0.5, 200 HU and above (bone) to 1.

    Args:
        arr: a CT volume ``[x, y, z]`` in HU.

    Returns:
        float32 array in [0, 1].

    Raises:
        HemolabError: if ``arr`` is not a 3D volume in Hounsfield units.
    """
    return scale_window(arr, PATEL_HU_RANGE)


def window_zscore(arr, window: Sequence[float] = SLICE_UNET_WINDOW, mask=None) -> np.ndarray:
    """The slice-based 2D U-Net baseline's intensity step: clip to a HU window, then z-score.

    docs/methods.md §1, "Baselines": window 30-130 HU, z-score. The mean and standard deviation are taken over
    ``mask`` when given (e.g. the cranial cavity: the statistics of the brain, not of the air around the
    head), else over the whole clipped volume.

    Args:
        arr: a CT volume ``[x, y, z]`` in HU.
        window: ``(low, high)`` in HU.
        mask: optional binary ``[x, y, z]`` mask choosing the voxels the statistics come from.

    Returns:
        float32 array with mean 0 and standard deviation 1 over the chosen voxels.

    Raises:
        HemolabError: for a non-HU volume, a bad window, a mask of another shape, or a constant region.
    """
    hu = check_hu(arr, "image")
    lo, hi = (float(w) for w in window)
    if not hi > lo:
        raise HemolabError(f"window must be (low, high) with low < high in HU, got {tuple(window)}")
    clipped = np.clip(hu, lo, hi)
    if mask is None:
        values = clipped
    else:
        m = check_mask(mask, "mask", require_nonempty=True)
        if m.shape != clipped.shape:
            raise HemolabError(f"mask shape {m.shape} does not match the image shape {clipped.shape}")
        values = clipped[m]
    mean, std = float(values.mean()), float(values.std())
    if std < 1e-6:
        raise HemolabError(
            f"the image is constant ({mean:.1f} HU) inside the window {lo:g}-{hi:g} HU over the chosen voxels: "
            "nothing to normalise (is this a head CT, and is the mask on the brain?)"
        )
    return ((clipped - mean) / std).astype(np.float32)


def curvature_denoise(
    image: sitk.Image,
    iterations: int = 5,
    time_step: float = 0.0625,
    method: str = "flow",
    conductance: float = 3.0,
) -> sitk.Image:
    """Curvature-driven denoising (the slice-based 2D U-Net baseline, docs/methods.md §1), with SimpleITK.

    ``method="flow"`` is ITK's CurvatureFlow (level sets move with their curvature: noise, which is
    highly curved, is smoothed away fast, while the large, gently curved edge of a bleed hardly moves);
    ``"anisotropic"`` is CurvatureAnisotropicDiffusion (smoothing that stops at strong edges).
    Both keep HU units.

    Args:
        image: a CT as a SimpleITK image (HU).
        iterations: number of time steps.
        time_step: step size; 0.0625 is stable in 3D (ITK recommends <= 1 / 2^(dimension + 1)).
        method: ``"flow"`` or ``"anisotropic"``.
        conductance: edge sensitivity of the anisotropic diffusion (lower keeps more edges).

    Returns:
        The denoised image, float32, same geometry.

    Raises:
        HemolabError: for a non-image input or an unknown method.
    """
    if not isinstance(image, sitk.Image):
        raise HemolabError(
            f"image must be a SimpleITK image, got {type(image).__name__}: use hemolab.io.image_from_array"
        )
    img = sitk.Cast(image, sitk.sitkFloat32)
    if int(iterations) < 1 or not time_step > 0:
        raise HemolabError(f"iterations must be >= 1 and time_step > 0, got {iterations}, {time_step}")
    if method == "flow":
        return sitk.CurvatureFlow(img, timeStep=float(time_step), numberOfIterations=int(iterations))
    if method == "anisotropic":
        return sitk.CurvatureAnisotropicDiffusion(
            img,
            timeStep=float(time_step),
            conductanceParameter=float(conductance),
            numberOfIterations=int(iterations),
        )
    raise HemolabError(f"unknown method {method!r}: choose 'flow' or 'anisotropic'")


def close_label(mask, radius: int | Sequence[int] = 1):
    """Morphological closing of a binary label (dilate, then erode): fills small gaps and notches.

    The slice-based 2D U-Net baseline closed its training labels (docs/methods.md §1, "Baselines"), smoothing
    the raters' jagged outlines. A ball of ``radius`` voxels, with SimpleITK's BinaryMorphologicalClosing
    (``SafeBorder`` on, so that a label touching the edge of the volume is not eaten).

    Args:
        mask: a binary label as a SimpleITK image or a NumPy array ``[x, y, z]``.
        radius: the structuring element's radius in voxels, one number or ``(rx, ry, rz)`` (use
            ``(1, 1, 0)`` to close within axial slices only).

    Returns:
        The closed label, of the same kind as ``mask`` (uint8 image, or bool array).

    Raises:
        HemolabError: for a non-binary mask or a negative radius.
    """
    rad = [int(radius)] * 3 if np.isscalar(radius) else [int(r) for r in radius]  # type: ignore[arg-type]
    if len(rad) != 3 or min(rad) < 0:
        raise HemolabError(f"radius must be a non-negative integer or three of them, got {radius!r}")
    if isinstance(mask, sitk.Image):
        check_mask(array_from_image(mask), "mask")
        closed = sitk.BinaryMorphologicalClosing(sitk.Cast(mask, sitk.sitkUInt8), rad, sitk.sitkBall, 1, True)
        return closed

    arr = check_mask(check_volume(mask, "mask"), "mask")
    closed = sitk.BinaryMorphologicalClosing(
        image_from_array(arr.astype(np.uint8)), rad, sitk.sitkBall, 1, True
    )
    return array_from_image(closed).astype(bool)
