"""Reading and writing scans (SimpleITK), and the array convention of hemolab.

hemolab arrays are indexed ``[x, y, z]``; SimpleITK's ``GetArrayFromImage`` gives ``[z, y, x]``.
:func:`array_from_image` and :func:`image_from_array` are the only places that cross between the two.

:func:`read_scan` reads a head CT (NIfTI, NRRD, MHA or a DICOM series) into ONE convention: float32
Hounsfield units, orientation :data:`CANONICAL_ORIENTATION` ("LPS": array axis x points to the patient's
left, y to posterior, z to superior), on a regular voxel grid. A DICOM series with a gantry tilt or uneven
slice spacing is resampled from the slices' real positions rather than silently mis-scaled, and
:func:`load_scan` says what was corrected (``hemolab info SCAN`` prints it).

Modules: :mod:`~hemolab.io.arrays` (the conventions, writing), :mod:`~hemolab.io.dicom` (DICOM series),
:mod:`~hemolab.io.scans` (reading scans and labels, checks, dataset manifests).
"""

from hemolab.io.arrays import (
    AIR_HU,
    CANONICAL_ORIENTATION,
    array_from_image,
    image_from_array,
    orientation_code,
    write_image,
)
from hemolab.io.scans import (
    check_file_complete,
    check_same_geometry,
    decathlon_manifest,
    load_scan,
    read_label,
    read_scan,
    sample_scan_path,
)

__all__ = [
    "AIR_HU",
    "CANONICAL_ORIENTATION",
    "array_from_image",
    "check_file_complete",
    "check_same_geometry",
    "decathlon_manifest",
    "image_from_array",
    "load_scan",
    "orientation_code",
    "read_label",
    "read_scan",
    "sample_scan_path",
    "write_image",
]
