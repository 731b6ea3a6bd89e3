"""The cranial cavity of a head CT, from the CT alone: everything inside the skull that is not bone.

Patel 2019 ("Pre-processing"; docs/methods.md §2) restricts both the training samples and the predictions to the
cranial cavity -- "all intracranial soft tissue and CSF" -- which they segmented with multi-atlas
registration (about 6 minutes per scan). hemolab uses a fast threshold-and-morphology stand-in that needs
no atlas (a few seconds per scan):

1. **Skull.** Voxels above ``bone_hu`` (300 HU: cortical bone is 700-2000 HU, blood and brain stay below 100).
2. **Seal it.** A morphological closing (``close_mm``) bridges the sutures, the thin temporal squama and
   the partial-volume gaps of thick slices.
3. **Inside, per axial slice.** In each axial slice the closed skull is a ring; filling its holes gives
   the inside of the head at that level. Doing this per slice (and not in 3D) is what copes with the open
   skull base: the foramen magnum and the other foramina connect the cavity with the neck in 3D, but at
   the level of the cerebrum and the posterior fossa each axial slice shows a closed ring.
4. **Soft tissue and CSF.** Inside the ring, the voxels above ``tissue_hu`` (-20 HU: CSF is 0-15 HU, fat
   -100 HU and air -1000 HU are left out).
5. **One piece.** An erosion by ``erode_mm`` cuts thin bridges (the optic canals, the spinal canal below
   the foramen magnum, noise), the largest connected piece is kept and grown back to its extent; holes
   (calcified pineal or choroid plexus above 300 HU) are filled.

Steps 1-5 run on a grid of about ``work_mm`` mm voxels (block averages of the CT, bone taken wherever any
voxel of a block is bone, so that thin bone is never lost), and the result is refined on the original grid
(bone voxels removed, holes filled per slice). The axial slices are assumed to run along the third array
axis ``z`` (true after :func:`hemolab.io.read_scan`'s canonical orientation).

Limitations (say so in the notebooks): it is not an atlas method. Slices cut through the skull base where the
bone ring is open (orbits, petrous bones) may lose parts of the cavity; a craniectomy (missing bone) opens
the ring; bone-window reconstructions or metal streaks confuse the bone threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from hemolab.errors import HemolabError
from hemolab.io import array_from_image, image_from_array
from hemolab.validation import check_hu

#: Where the cavity ends at the skull on the original grid: a voxel half bone (~1000-1400 HU) and half
#: CSF/brain reads about 500-700 HU, so a voxel below this value is mostly intracranial.
EDGE_HU = 600.0


def _slice_structure(axis: int) -> np.ndarray:
    """3x3 connectivity within the planes normal to ``axis`` only (hole filling plane by plane in one call)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    index = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = ndi.generate_binary_structure(2, 1)
    return structure


def _dilate(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Dilation by a ball of ``radius_mm`` (Euclidean, anisotropic voxels) via a distance transform."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def _erode(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Erosion by a ball of ``radius_mm``; outside the volume counts as foreground (no border erosion)."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    padded = np.pad(mask, 1, mode="edge")
    return (ndi.distance_transform_edt(padded, sampling=spacing) > radius_mm)[1:-1, 1:-1, 1:-1]


def _close(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    pad = [(int(np.ceil(radius_mm / s)) + 1,) * 2 for s in spacing]
    padded = np.pad(mask, pad)
    closed = _erode(_dilate(padded, radius_mm, spacing), radius_mm, spacing)
    return closed[tuple(slice(p[0], p[0] + n) for p, n in zip(pad, mask.shape, strict=True))]


def fill_holes_per_slice(mask: np.ndarray, axis: int = 2) -> np.ndarray:
    """Fill the holes of a binary ``[x, y, z]`` mask in every slice normal to ``axis`` independently.

    ``axis=2`` (default): axial slices; 1: coronal; 0: sagittal.
    """
    return ndi.binary_fill_holes(mask, structure=_slice_structure(axis))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask.copy() if n == 1 else mask
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def _block_factors(spacing: np.ndarray, work_mm: float) -> tuple[int, int, int]:
    return tuple(max(1, int(np.floor(work_mm / s + 1e-6))) for s in spacing)  # type: ignore[return-value]


def _block_reduce(arr: np.ndarray, factors: tuple[int, int, int], fill: float, how: str) -> np.ndarray:
    pads = [(0, (-n) % f) for n, f in zip(arr.shape, factors, strict=True)]
    if any(p[1] for p in pads):
        arr = np.pad(arr, pads, constant_values=fill)
    nx, ny, nz = (n // f for n, f in zip(arr.shape, factors, strict=True))
    fx, fy, fz = factors
    blocks = arr.reshape(nx, fx, ny, fy, nz, fz)
    if how == "mean":
        return blocks.mean(axis=(1, 3, 5), dtype=np.float32)
    return blocks.max(axis=(1, 3, 5))


def _block_expand(arr: np.ndarray, factors: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    out = arr
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, f, axis=axis)
    return out[: shape[0], : shape[1], : shape[2]]


def cranial_cavity_array(
    hu: np.ndarray,
    spacing,
    *,
    bone_hu: float = 300.0,
    tissue_hu: float = -20.0,
    close_mm: float = 6.0,
    erode_mm: float = 4.0,
    bridge_mm: float = 8.0,
    work_mm: float = 1.5,
    edge_hu: float = EDGE_HU,
) -> np.ndarray:
    """The cranial cavity of a CT given as a NumPy array (see :func:`cranial_cavity_mask`).

    Args:
        hu: the CT ``[x, y, z]`` in HU, axial slices along z.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        bone_hu: skull threshold in HU.
        tissue_hu: lowest HU of intracranial soft tissue and CSF.
        close_mm: radius (mm) of the closing that seals the skull.
        erode_mm: radius (mm) of the erosion that separates the cavity from what touches it through foramina.
        bridge_mm: a slice whose skull ring is open is filled where the slices within this distance (mm)
            above and below it are inside the skull.
        work_mm: voxel size (mm) the morphology runs at; the result is refined on the original grid.

    Returns:
        Boolean array ``[x, y, z]``.
    """
    hu = check_hu(hu, "image")
    sp = np.asarray([float(s) for s in spacing], dtype=float)
    factors = _block_factors(sp, work_mm)
    work_sp = sp * np.asarray(factors)
    air = float(min(hu.min(), -1000.0))
    bone = _block_reduce(hu > bone_hu, factors, False, "max")
    hu_w = _block_reduce(hu, factors, air, "mean")

    skull = _close(bone, close_mm, work_sp)
    # inside the skull in an axial, a coronal or a sagittal slice: where the axial ring is open (orbits,
    # skull base), the coronal and sagittal rings are usually closed, and the other way round
    inside = fill_holes_per_slice(skull, 2) | fill_holes_per_slice(skull, 1) | fill_holes_per_slice(skull, 0)
    # a slice whose ring stays open (orbits, skull base) is bridged from the slices above and below it
    k = max(1, int(round(bridge_mm / work_sp[2])))
    padded = np.pad(
        inside, ((0, 0), (0, 0), (k, k)), mode="edge"
    )  # the first and last slices stay as they are
    bridged = ndi.binary_closing(padded, structure=np.ones((1, 1, 2 * k + 1), dtype=bool))[:, :, k:-k]
    inside = (inside | bridged) & ~skull
    seed = inside & (hu_w > tissue_hu)
    core = _largest_component(_erode(seed, erode_mm, work_sp))
    if not core.any():
        core = _largest_component(seed)
    if not core.any():
        return np.zeros(hu.shape, dtype=bool)
    # grow back: one erosion radius plus a voxel, but only into the seed, and keep what touches the core
    grown = _dilate(core, erode_mm + float(work_sp.max()), work_sp) & seed
    labels, _ = ndi.label(grown)
    keep = np.unique(labels[core & grown])
    cavity_w = np.isin(labels, keep[keep > 0])
    cavity_w = ndi.binary_fill_holes(fill_holes_per_slice(cavity_w))

    # refine on the original grid: the coarse mask (grown by one work voxel) cut at the bone and tissue
    near = _block_expand(_dilate(cavity_w, float(work_sp[:2].max()), work_sp), factors, hu.shape)
    coarse = _block_expand(cavity_w, factors, hu.shape) & (hu < edge_hu)
    fine = near & (hu > tissue_hu) & ((hu < edge_hu) | coarse)
    # fill holes (calcifications, noise) but never with air or fat: a sinus enclosed by the mask stays out
    fine = fill_holes_per_slice(fine) & ((hu > tissue_hu) | fine)
    return _largest_component(fine)


def cranial_cavity_mask(
    image: sitk.Image,
    *,
    bone_hu: float = 300.0,
    tissue_hu: float = -20.0,
    close_mm: float = 6.0,
    erode_mm: float = 4.0,
    work_mm: float = 1.5,
) -> sitk.Image:
    """The cranial cavity (intracranial soft tissue and CSF) of a head CT, from the CT alone.

    Patel 2019, "Pre-processing" (docs/methods.md §2) restricts training samples and predictions to this region;
    they used multi-atlas registration, hemolab a fast skull-threshold-and-morphology stand-in (module
    docstring). Seconds per scan.

    Args:
        image: a head CT in HU (SimpleITK image, axial slices along the third axis).
        bone_hu: skull threshold in HU (default 300).
        tissue_hu: lowest HU counted as soft tissue or CSF (default -20).
        close_mm: radius in mm of the closing that seals gaps in the skull.
        erode_mm: radius in mm of the erosion that cuts the cavity from tissue touching it through foramina.
        work_mm: voxel size in mm for the morphology (a coarser grid is faster).

    Returns:
        uint8 image (0/1) with the geometry of ``image``.

    Raises:
        HemolabError: for a non-image, a non-3D image, or intensities that are not Hounsfield units;
            a scan with no closed skull at all gives an empty mask (and a warning).
    """
    if not isinstance(image, sitk.Image):
        raise HemolabError(
            f"image must be a SimpleITK image (the cavity needs the voxel size in mm), got {type(image).__name__}: "
            "read a scan with hemolab.io.read_scan or wrap an array with hemolab.io.image_from_array(arr, spacing=...)"
        )
    if image.GetDimension() != 3:
        raise HemolabError(f"image must be 3D, got a {image.GetDimension()}D image")

    cavity = cranial_cavity_array(
        array_from_image(image),
        image.GetSpacing(),
        bone_hu=bone_hu,
        tissue_hu=tissue_hu,
        close_mm=close_mm,
        erode_mm=erode_mm,
        work_mm=work_mm,
    )
    if not cavity.any():
        import warnings

        warnings.warn(
            f"no cranial cavity found: no closed ring of bone (> {bone_hu:g} HU) in any axial slice. Is this a "
            "head CT in HU with axial slices along the third axis?",
            stacklevel=2,
        )
    return image_from_array(cavity.astype(np.uint8), reference=image)


def head_box(
    image: sitk.Image, margin_mm: float = 10.0, cavity: np.ndarray | sitk.Image | None = None
) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """The voxel box around the cranial cavity, grown by ``margin_mm`` on every side (skull included).

    Resampling a whole field of view (head, air, head rest) to a small grid spends most voxels on air; the
    ``small`` CNN-DS profile crops to this box first so that more of its 64x64x32 voxels land on the brain
    (our choice, docs/methods.md §5.1; the paper resamples the whole scan).

    Args:
        image: a head CT in HU (SimpleITK image, axial slices along the third axis).
        margin_mm: grown by this much on every side (10 mm holds the skull, and blood against it).
        cavity: a precomputed cavity mask (array ``[x, y, z]`` or image); ``None`` computes it.

    Returns:
        ``(index, size)`` of the box in voxels, clipped to the image; ``None`` (with a warning) when no
        cranial cavity is found.
    """
    if cavity is None:
        cavity = cranial_cavity_mask(image)
    cav = array_from_image(cavity) if isinstance(cavity, sitk.Image) else np.asarray(cavity)
    if cav.shape != tuple(image.GetSize()):
        raise HemolabError(
            f"cavity mask of shape {cav.shape} does not match the image's {tuple(image.GetSize())}"
        )
    if not cav.any():
        return None
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    grow = np.ceil(float(margin_mm) / spacing).astype(int)
    lo, hi = [], []
    for axis in range(3):
        along = np.flatnonzero(cav.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(max(0, int(along[0]) - int(grow[axis])))
        hi.append(min(cav.shape[axis], int(along[-1]) + 1 + int(grow[axis])))
    return tuple(lo), tuple(h - lo_ for lo_, h in zip(lo, hi, strict=True))  # type: ignore[return-value]


def crop_to_box(image: sitk.Image, box: tuple[Sequence[int], Sequence[int]] | None) -> sitk.Image:
    """The part of ``image`` inside ``box`` (from :func:`head_box`); world coordinates are kept.

    ``None`` returns ``image`` itself, so that ``crop_to_box(img, head_box(img))`` is the whole scan when no
    cavity is found.
    """
    if box is None:
        return image
    index, size = box
    return sitk.RegionOfInterest(image, [int(s) for s in size], [int(i) for i in index])
