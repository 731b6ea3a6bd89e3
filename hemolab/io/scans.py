"""Reading scans and labels into hemolab's one convention, and checking them.

:func:`read_scan` reads a head CT (NIfTI, NRRD, MHA or a DICOM series, :mod:`hemolab.io.dicom`) into float32
Hounsfield units, orientation :data:`~hemolab.io.arrays.CANONICAL_ORIENTATION`, on a regular voxel grid,
and :func:`load_scan` says what was corrected. Labels, the complete-file check, geometry checks and the
Decathlon ``dataset.json`` of a dataset folder are here too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hemolab.errors import HemolabError, HemolabFileError
from hemolab.io.arrays import AIR_HU, array_from_image, image_from_array, orientation_code, to_canonical
from hemolab.io.dicom import read_dicom_series
from hemolab.validation import CT_HU_RANGE, check_head_ct, check_mask, check_volume

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
    path = Path(__file__).resolve().parents[1] / "sample_data" / "ge_head_ct"
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
        image = read_dicom_series(path, series_id, z_spacing, info)
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
    return to_canonical(image, path.name)


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
