"""Reading and writing scans (SimpleITK), and the array convention of hemolab.

hemolab arrays are indexed ``[x, y, z]``; SimpleITK's ``GetArrayFromImage`` gives ``[z, y, x]``.
:func:`array_from_image` and :func:`image_from_array` are the only places that cross between the two.

:func:`read_scan` reads a head CT (NIfTI, NRRD, MHA or a DICOM series) into ONE convention: float32
Hounsfield units, orientation :data:`CANONICAL_ORIENTATION` ("LPS": array axis x points to the patient's
left, y to posterior, z to superior), on a regular voxel grid. A DICOM series with a gantry tilt or uneven
slice spacing is resampled from the slices' real positions rather than silently mis-scaled, and
:func:`load_scan` says what was corrected (``hemolab info SCAN`` prints it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from hemolab.atomic import atomic_write
from hemolab.errors import HemolabError, HemolabExistsError, HemolabFileError
from hemolab.validation import CT_HU_RANGE, check_head_ct, check_mask, check_spacing, check_volume


def array_from_image(image: sitk.Image) -> np.ndarray:
    """The voxels of a SimpleITK image as a NumPy array indexed ``[x, y, z]`` (a copy)."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def image_from_array(
    array,
    reference: sitk.Image | None = None,
    *,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
) -> sitk.Image:
    """A SimpleITK image from a NumPy array indexed ``[x, y, z]``.

    Args:
        array: the 3D volume.
        reference: copy spacing, origin and direction from this image (its size must match).
        spacing: voxel size ``(sx, sy, sz)`` in mm, when there is no reference.
        origin: physical position of voxel (0, 0, 0) in mm.
        direction: 9 numbers, the direction cosine matrix (row-major).

    Returns:
        The image.
    """
    arr = check_volume(array, "array")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    if reference is not None:
        if tuple(reference.GetSize()) != tuple(arr.shape):
            raise HemolabError(
                f"array shape {arr.shape} does not match the reference image size {reference.GetSize()}"
            )
        image.CopyInformation(reference)
    if spacing is not None:
        image.SetSpacing(check_spacing(spacing))
    if origin is not None:
        image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    return image


def write_image(image: sitk.Image, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write an image (NIfTI, NRRD, MHA: chosen by the extension), atomically.

    Args:
        image: the image to write.
        path: the file to write, e.g. ``case.nii.gz``.
        overwrite: replace an existing file. Without it an existing file is never touched.

    Returns:
        The path written.

    Raises:
        HemolabExistsError: if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise HemolabExistsError(f"{path} exists: pass overwrite=True (--overwrite) to replace it")
    compress = path.name.endswith((".nii.gz", ".nrrd", ".mha"))
    atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=compress))
    return path


# ----------------------------------------------------------------------------------------------------------
# Reading scans and labels
# ----------------------------------------------------------------------------------------------------------

#: hemolab's one orientation: array axis x runs to the patient's Left, y to Posterior, z to Superior
#: (DICOM's LPS, SimpleITK's default physical frame). ``image[x, y, :]`` is a column from feet to head.
CANONICAL_ORIENTATION = "LPS"
#: What a voxel without data becomes: outside the scanner's field of view, or outside a tilted stack.
AIR_HU = -1024.0
_NIFTI_LIKE = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

log = logging.getLogger("hemolab.io")


def decathlon_manifest(
    *,
    name: str,
    description: str,
    reference: str,
    licence: str,
    release: str,
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    validation_ids: Sequence[str] = (),
) -> dict:
    """The ``dataset.json`` of a dataset folder in the Medical Segmentation Decathlon layout.

    Images and labels are ``imagesTr/``, ``labelsTr/`` (training and validation cases) and ``imagesTs/``,
    ``labelsTs/`` (test cases), one ``<case_id>.nii.gz`` each; ``validation`` lists the training cases held
    out for validation (hemolab's addition). :func:`hemolab.datasets.load_dataset` reads it back.

    Args:
        name, description, reference, licence, release: what the dataset is and where it comes from.
        train_ids: the cases in ``imagesTr`` (validation cases included).
        test_ids: the cases in ``imagesTs``.
        validation_ids: the training cases used for validation.

    Returns:
        The manifest, ready for :func:`json.dump`.
    """

    def entries(ids: Sequence[str], split: str) -> list[dict[str, str]]:
        return [{"image": f"./images{split}/{c}.nii.gz", "label": f"./labels{split}/{c}.nii.gz"} for c in ids]

    return {
        "name": name,
        "description": description,
        "reference": reference,
        "licence": licence,
        "release": release,
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "haemorrhage"},
        "numTraining": len(train_ids),
        "numTest": len(test_ids),
        "training": entries(train_ids, "Tr"),
        "validation": list(validation_ids),
        "test": entries(test_ids, "Ts"),
    }


def sample_scan_path() -> Path:
    """The real head CT shipped with hemolab: a folder of 28 DICOM slices (GE HiSpeed Dual, BSD-2 licence).

    The series is deliberately awkward: an 18.5° gantry tilt and slice spacing from 1.08 to 6.99 mm
    (see the folder's README.md). :func:`read_scan` corrects both.

    Raises:
        HemolabFileError: if the folder is missing (a broken installation).
    """
    path = Path(__file__).resolve().parent / "sample_data" / "ge_head_ct"
    if not path.is_dir() or not any(path.glob("*.dcm")):
        raise HemolabFileError(f"the sample scan is missing from {path}: reinstall hemolab")
    return path


def read_scan(
    path: str | os.PathLike, *, series_id: str | None = None, z_spacing: float | None = None
) -> sitk.Image:
    """Read a head CT as float32 Hounsfield units, in hemolab's orientation, on a regular voxel grid.

    Same as :func:`load_scan` without the report of what was done (that goes to the ``hemolab.io`` log).
    """
    return load_scan(path, series_id=series_id, z_spacing=z_spacing)[0]


def load_scan(
    path: str | os.PathLike, *, series_id: str | None = None, z_spacing: float | None = None
) -> tuple[sitk.Image, dict]:
    """Read a head CT and say what was done to it.

    Accepts a NIfTI (``.nii``/``.nii.gz``), NRRD or MHA/MHD file, or a DICOM series: a folder, or one
    ``.dcm`` file of the series. The image comes back

    * as float32 HU (the DICOM rescale slope/intercept applied by GDCM);
    * re-oriented to :data:`CANONICAL_ORIENTATION` (``sitk.DICOMOrient``): arrays from
      :func:`array_from_image` are ``[x, y, z]`` = [right->left, anterior->posterior, feet->head];
    * on a regular grid. A DICOM series whose slices are unevenly spaced or sheared by a gantry tilt
      (slice positions not along the slice normal) is resampled slice by slice, from each slice's real
      ``ImagePositionPatient``, onto an axis-aligned grid (identity direction) with linear interpolation
      (``z_spacing``: default the median distance between slices). A plain series reader would assume
      even spacing and no shear and silently mis-scale such a scan.
    * Voxels outside the scanner's field of view (DICOM ``PixelPaddingValue``, or values below -1100 HU
      such as -2000/-3024) become air, :data:`AIR_HU`.

    Args:
        path: the file or DICOM folder.
        series_id: the DICOM ``SeriesInstanceUID`` to read when a folder holds several series.
        z_spacing: slice spacing (mm) of the regular grid when a DICOM series has to be resampled.

    Returns:
        ``(image, info)``: ``info`` holds ``source``, ``format``, ``size``, ``spacing``, ``orientation``,
        ``hu_range``, ``gantry_tilt_deg``, ``slice_spacing_range_mm`` (DICOM), ``resampled`` and
        ``corrections`` (a list of sentences, empty when the scan was read as stored).

    Raises:
        HemolabFileError: missing path, a folder without DICOM files, or a NIfTI file that ends before its last
            voxel (a truncated download: ITK would read the missing voxels as 0).
        HemolabError: not an image, not 3D, several equally large DICOM series, duplicate slice positions,
            NaN values, or intensities that are not a head CT in Hounsfield units (no air, no bone; see
            :func:`hemolab.validation.check_head_ct`, whose size limits are left to the callers that segment
            or train).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise HemolabFileError(
            f"{path} does not exist: give a NIfTI/NRRD/MHA file or a folder of DICOM files"
        )
    info: dict = {"source": str(path), "corrections": [], "resampled": False, "gantry_tilt_deg": 0.0}
    if path.is_dir() or path.suffix.lower() == ".dcm":
        image = _read_dicom(path, series_id, z_spacing, info)
    else:
        image = _read_file(path, info)
    arr = array_from_image(image)
    check_volume(arr, f"the scan {path.name}")
    low = arr < CT_HU_RANGE[0]
    if low.any():  # scanners write -2000/-3024 outside the reconstructed circle
        info["corrections"].append(
            f"{int(low.sum())} voxels below {CT_HU_RANGE[0]:g} HU (outside the scanner's field of view) set to "
            f"air ({AIR_HU:g} HU)"
        )
        arr[low] = AIR_HU
        image = image_from_array(arr, reference=image)
    # the one check of a scan's content (finite, HU, air, bone); the size limits of a head are checked where a
    # scan is segmented or trained on (hemolab segment/train, segment_scan, validate_dataset)
    check_head_ct(arr, image.GetSpacing(), name=f"the scan {path.name}", source=path, geometry=False)
    info.update(
        size=tuple(image.GetSize()),
        spacing=tuple(round(s, 4) for s in image.GetSpacing()),
        origin=tuple(round(o, 3) for o in image.GetOrigin()),
        orientation=orientation_code(image),
        hu_range=(float(arr.min()), float(arr.max())),
    )
    for line in info["corrections"]:
        log.info("%s: %s", path.name, line)
    return image, info


def orientation_code(image: sitk.Image) -> str:
    """Three letters naming where each array axis points (``"LPS"`` after :func:`read_scan`)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def _read_file(path: Path, info: dict) -> sitk.Image:
    name = path.name.lower()
    info["format"] = next(
        (ext.lstrip(".") for ext in _NIFTI_LIKE if name.endswith(ext)), path.suffix.lstrip(".")
    )
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        if compressed or name.endswith(".nii"):  # a NIfTI cut short before the end of its header
            check_file_complete(path)
        raise HemolabError(
            f"{path} is not an image SimpleITK can read ({str(exc).strip().splitlines()[-1][:200]}): "
            "give a NIfTI (.nii/.nii.gz), NRRD, MHA/MHD file or a folder of DICOM files; a truncated file "
            "(an interrupted download or copy) also ends here: fetch it again"
        ) from None
    check_file_complete(path)
    return _canonical(image, path.name)


def check_file_complete(path: str | os.PathLike) -> None:
    """Raise unless a NIfTI file (``.nii``/``.nii.gz``) holds all its voxels, each one finite.

    ITK reads a NIfTI file that was cut short (an interrupted download) with the missing voxels as 0, and
    NaN voxels as 0 too, so a broken scan would look like a head with water in it. This reads the voxels
    once more with nibabel, which checks the gzip stream and the data length against the header. Other
    formats are left to ITK, which refuses truncated NRRD and MHA files itself.

    Args:
        path: the file.

    Raises:
        HemolabFileError: the file ends before its last voxel, or its gzip stream is damaged.
        HemolabError: it holds NaN or infinite values.
    """
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # noqa: BLE001 - EOFError, zlib.error, OSError, nibabel's own errors
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise HemolabFileError(
            f"{path} cannot be read completely ({reason}): the file is truncated or damaged, e.g. by an "
            "interrupted download or copy. Fetch or export it again"
        ) from None
    if data.dtype.kind in "fc":
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if n_bad:
            raise HemolabError(
                f"{path} contains {n_bad} NaN or infinite voxel values (of {data.size}): hemolab cannot tell what "
                "tissue they are. Fill them (e.g. with -1024 HU outside the head) or re-export the scan"
            )


def _canonical(image: sitk.Image, name: str) -> sitk.Image:
    """3D, scalar, float32 and oriented :data:`CANONICAL_ORIENTATION`."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise HemolabError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour?): a CT has one"
        )
    dim = image.GetDimension()
    if dim != 3 or min(image.GetSize()) < 2:
        raise HemolabError(
            f"{name} is {dim}D with size {image.GetSize()}: hemolab needs one 3D volume"
            + (
                " (a single slice is not a head CT; read the whole series folder)"
                if dim == 2 or min(image.GetSize()) < 2
                else ""
            )
            + (
                ": a 4D image holds several volumes (time points/channels); extract one, e.g. image[:, :, :, 0]"
                if dim == 4
                else ""
            )
        )
    image = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), CANONICAL_ORIENTATION)
    return image


def read_label(path: str | os.PathLike, like: sitk.Image | None = None) -> sitk.Image:
    """Read a binary label (0 = background, 1 = haemorrhage) as uint8, oriented like :func:`read_scan`.

    Args:
        path: a NIfTI/NRRD/MHA file.
        like: the scan the label belongs to; its geometry (size, spacing, origin, direction) must match.

    Raises:
        HemolabFileError: missing file.
        HemolabError: not an image, not 3D, values other than 0/1, or a geometry that differs from ``like``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise HemolabFileError(f"label file {path} does not exist")
    image = _read_file(path, {})
    arr = check_mask(array_from_image(image), f"the label {path.name}")
    label = image_from_array(arr.astype(np.uint8), reference=image)
    if like is not None:
        check_same_geometry(like, label, ("scan", f"label {path.name}"))
    return label


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def check_same_geometry(a: sitk.Image, b: sitk.Image, names: tuple[str, str] = ("image", "label")) -> None:
    """Raise a :class:`HemolabError` saying how two images' voxel grids differ (none when they match).

    Tolerances: spacing 1e-4 relative; origin 1% of the smallest voxel side (at least 0.01 mm); direction
    cosines 1e-4.
    """
    diffs = []
    if a.GetSize() != b.GetSize():
        diffs.append(f"size {a.GetSize()} vs {b.GetSize()}")
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if sa.shape != sb.shape or not np.allclose(sa, sb, rtol=1e-4, atol=1e-6):
        diffs.append(f"spacing {_fmt(sa)} vs {_fmt(sb)} mm")
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=max(0.01, 0.01 * float(sa.min()))):
        diffs.append(f"origin {_fmt(a.GetOrigin())} vs {_fmt(b.GetOrigin())} mm")
    if len(a.GetDirection()) == len(b.GetDirection()) and not np.allclose(
        a.GetDirection(), b.GetDirection(), atol=1e-4
    ):
        diffs.append(
            f"orientation {orientation_code(a)} {_fmt(a.GetDirection())} vs {orientation_code(b)} {_fmt(b.GetDirection())}"
        )
    if diffs:
        raise HemolabError(
            f"{names[0]} and {names[1]} are on different voxel grids: "
            + "; ".join(diffs)
            + f"; resample the {names[1]} onto the {names[0]} (hemolab.preprocess.resample_like(..., is_label=True)) "
            "or check that they belong together"
        )


# ----------------------------------------------------------------------------------------------------------
# DICOM series: sort slices by their real positions; resample uneven or tilted stacks onto a regular grid
# ----------------------------------------------------------------------------------------------------------


def _read_dicom(path: Path, series_id: str | None, z_spacing: float | None, info: dict) -> sitk.Image:
    files = _series_files(path, series_id, info)
    if len(files) == 1:  # a multi-frame (enhanced) file, or a single slice (refused by _canonical)
        return _canonical(sitk.ReadImage(files[0]), Path(files[0]).name)
    metas = [_slice_meta(f) for f in files]
    if metas[0]["modality"] not in (None, "CT"):
        raise HemolabError(f"{path} is a {metas[0]['modality']} series, not CT: hemolab reads head CT")
    iop = np.array([m["iop"] for m in metas])
    if not np.allclose(iop, iop[0], atol=1e-4):
        raise HemolabError(
            f"the slices of {path} do not share one orientation (ImageOrientationPatient differs): a localizer or "
            "a second series is mixed in; move it out or pass series_id=..."
        )
    spacings = np.array([m["pixel_spacing"] for m in metas])
    if not np.allclose(spacings, spacings[0], rtol=1e-4):
        raise HemolabError(f"the slices of {path} have different pixel spacings: they are not one volume")
    row, col = iop[0, :3], iop[0, 3:]
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    ipp = np.array([m["ipp"] for m in metas])
    w = ipp @ normal
    order = np.argsort(w)
    ipp, w, files, metas = ipp[order], w[order], [files[i] for i in order], [metas[i] for i in order]
    gaps = np.diff(w)
    if gaps.min() < 1e-3:
        raise HemolabError(
            f"{int(np.sum(gaps < 1e-3)) + 1} slices of {path} share a position: the series holds several "
            "acquisitions (time points, echoes or reconstructions); split them into separate folders"
        )
    slices = [_slice_pixels(f, m) for f, m in zip(files, metas, strict=True)]
    stack = np.stack([pixels for pixels, _, _ in slices])
    n_pad = sum(n for _, n, _ in slices)
    if n_pad:
        info["corrections"].append(
            f"DICOM PixelPaddingValue {slices[0][2]:g} (outside the field of view) set to air ({AIR_HU:g} HU) "
            f"in {n_pad} voxels"
        )
    dr, dc = (float(s) for s in spacings[0])  # DICOM PixelSpacing: between rows, between columns
    shift = (ipp - ipp[0]) - np.outer(w - w[0], normal)  # in-plane drift of the slice origins = shear
    dz = ipp[-1] - ipp[0]
    tilt = float(np.degrees(np.arccos(np.clip(abs(dz @ normal) / np.linalg.norm(dz), 0.0, 1.0))))
    info.update(
        format="dicom",
        n_slices=len(files),
        gantry_tilt_deg=round(tilt, 2),
        slice_spacing_range_mm=(round(float(gaps.min()), 3), round(float(gaps.max()), 3)),
    )
    if metas[0]["tilt_tag"] is not None:
        info["gantry_tilt_tag_deg"] = metas[0]["tilt_tag"]
    uneven = gaps.max() - gaps.min() > max(0.01, 0.01 * gaps.mean())
    sheared = np.abs(shift).max() > 0.1 * min(dr, dc)
    if not uneven and not sheared:
        direction = np.column_stack([row, col, normal]).ravel()
        image = image_from_array(
            stack.transpose(2, 1, 0), spacing=(dc, dr, float(gaps.mean())), origin=ipp[0], direction=direction
        )
        return _canonical(image, path.name)
    out_z = float(z_spacing) if z_spacing else float(np.median(gaps))
    image, outside = _resample_stack(stack, ipp, row, col, normal, dr, dc, out_z)
    info["resampled"] = True
    if sheared:
        info["corrections"].append(
            f"gantry tilt {tilt:.1f}° (the slices are sheared: their positions move off the slice normal): each "
            "slice placed at its real ImagePositionPatient and the stack resampled onto an axis-aligned grid"
        )
    if uneven:
        info["corrections"].append(
            f"uneven slice spacing {gaps.min():.2f}-{gaps.max():.2f} mm: linear interpolation between neighbouring "
            f"slices onto a regular {out_z:.2f} mm grid"
        )
    info["corrections"].append(
        f"{100 * outside:.1f}% of the regular grid lies outside the acquired slab and was filled with air ({AIR_HU:g} HU)"
    )
    return _canonical(image, path.name)


def _series_files(path: Path, series_id: str | None, info: dict) -> list[str]:
    folder = path if path.is_dir() else path.parent
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise HemolabFileError(
            f"no DICOM series found in {folder}: give a folder of .dcm files, or a NIfTI/NRRD/MHA file"
        )
    if path.is_file() and series_id is None:
        series_id = _slice_meta(str(path))["series_uid"]
    series = {sid: list(reader.GetGDCMSeriesFileNames(str(folder), sid)) for sid in ids}
    listing = ", ".join(f"{sid} ({len(f)} files)" for sid, f in series.items())
    if series_id is not None:
        if series_id not in series:
            raise HemolabError(f"series {series_id} is not in {folder}; it holds: {listing}")
        info["series_id"] = series_id
        return series[series_id]
    counts = sorted((len(f) for f in series.values()), reverse=True)
    if len(counts) > 1 and counts[0] == counts[1]:
        raise HemolabError(
            f"{folder} holds several series of the same size: {listing}. Choose one: series_id=..."
        )
    chosen = max(series, key=lambda s: len(series[s]))
    info["series_id"] = chosen
    if len(series) > 1:
        info["corrections"].append(
            f"the folder holds {len(series)} series ({listing}); read the largest, {chosen}"
        )
    return series[chosen]


def _numbers(text: str | None) -> list[float] | None:
    return None if text is None or not text.strip() else [float(v) for v in text.strip().split("\\")]


def _slice_meta(filename: str) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(filename)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise HemolabError(f"{filename} is not a readable DICOM file") from None

    def get(tag):
        return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else None

    meta = {
        "ipp": _numbers(get("0020|0032")),
        "iop": _numbers(get("0020|0037")),
        "pixel_spacing": _numbers(get("0028|0030")) or list(reader.GetSpacing()[1::-1]),
        "modality": get("0008|0060"),
        "series_uid": get("0020|000e"),
        "padding": _numbers(get("0028|0120")),
        "slope": _numbers(get("0028|1053")),
        "intercept": _numbers(get("0028|1052")),
        "tilt_tag": (_numbers(get("0018|1120")) or [None])[0],
    }
    if meta["ipp"] is None or meta["iop"] is None:
        raise HemolabError(
            f"{filename} has no ImagePositionPatient/ImageOrientationPatient: its slices cannot be placed in "
            "space; convert the series with dcm2niix and read the NIfTI"
        )
    return meta


def _slice_pixels(filename: str, meta: dict) -> tuple[np.ndarray, int, float | None]:
    """One slice as float32 HU ``[row, column]`` (GDCM applies the rescale) with padding set to air.

    Returns:
        The pixels, the number of padding pixels replaced and the padding value in HU (or None).
    """
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(filename, sitk.sitkFloat32))[0]
    if meta["padding"] is None:
        return pixels, 0, None
    pad = meta["padding"][0] * (meta["slope"] or [1.0])[0] + (meta["intercept"] or [0.0])[0]
    is_pad = pixels == pad
    pixels[is_pad] = AIR_HU
    return pixels, int(is_pad.sum()), pad


def _resample_stack(stack, ipp, row, col, normal, dr, dc, z_spacing) -> tuple[sitk.Image, float]:
    """Resample slices at arbitrary parallel positions onto an axis-aligned regular grid (LPS, identity).

    A voxel at point p lies between slices k and k+1 along the slice normal; its value is the linear blend
    of the two slices, each sampled (bilinearly) where p projects onto that slice. This is exact for any
    mix of uneven spacing and shear (gantry tilt), unlike one 3D interpolation on a sheared grid. The first
    and last slices stand for the slab up to half the distance to their neighbour beyond them, as every
    slice does between its neighbours (nearest-slice values there).

    Returns:
        The image and the fraction of its voxels outside the acquired slab (filled with air).
    """
    k_count, n_rows, n_cols = stack.shape
    w_k = ipp @ normal
    margin = (w_k[1] - w_k[0]) / 2.0, (w_k[-1] - w_k[-2]) / 2.0
    ends = np.stack([ipp[0] - margin[0] * normal, ipp[-1] + margin[1] * normal])
    a, b = np.meshgrid([0.0, (n_cols - 1) * dc], [0.0, (n_rows - 1) * dr])
    corners = ends[:, None, :] + a.reshape(-1, 1) * row + b.reshape(-1, 1) * col
    low, high = corners.reshape(-1, 3).min(0), corners.reshape(-1, 3).max(0)
    spacing = np.array([min(dr, dc), min(dr, dc), z_spacing])
    size = np.floor((high - low) / spacing + 1e-6).astype(int) + 1
    gx, gy = np.meshgrid(
        low[0] + spacing[0] * np.arange(size[0]), low[1] + spacing[1] * np.arange(size[1]), indexing="ij"
    )
    # every coordinate is affine in (x, y, z): project the plane once, add z per output slice
    along = {name: gx * axis[0] + gy * axis[1] for name, axis in (("row", row), ("col", col), ("n", normal))}
    row_k, col_k = ipp @ row, ipp @ col  # each slice's position in the slice frame
    out = np.full(tuple(size), AIR_HU, np.float32)
    n_outside = 0
    for iz in range(size[2]):
        z = low[2] + spacing[2] * iz
        w = along["n"] + z * normal[2]
        inside = (w >= w_k[0] - margin[0] - 1e-3) & (w <= w_k[-1] + margin[1] + 1e-3)
        n_outside += int(inside.size - inside.sum())
        if not inside.any():
            continue
        s = np.interp(w[inside], w_k, np.arange(k_count))  # clamped to the end slices in the margins
        k0 = np.clip(np.floor(s), 0, k_count - 2).astype(int)
        on_row = along["row"][inside] + z * row[2]
        on_col = along["col"][inside] + z * col[2]
        values = np.zeros(s.shape, np.float32)
        for k in np.unique(k0):
            sel = k0 == k
            t = s[sel] - k
            for kk, weight in ((k, 1.0 - t), (k + 1, t)):  # bilinear in each of the two slices around p
                coords = np.stack([(on_col[sel] - col_k[kk]) / dr, (on_row[sel] - row_k[kk]) / dc])
                values[sel] += weight * ndimage.map_coordinates(
                    stack[kk], coords, order=1, mode="constant", cval=AIR_HU
                )
        plane = out[:, :, iz]
        plane[inside] = values
    image = image_from_array(out, spacing=tuple(spacing), origin=low, direction=np.eye(3).ravel())
    return image, n_outside / out.size
