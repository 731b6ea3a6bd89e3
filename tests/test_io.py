"""hemolab.io: reading scans and labels into one convention, and the real tilted GE head CT."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from hemolab.cli import main
from hemolab.errors import HemolabError, HemolabFileError
from hemolab.io import (
    AIR_HU,
    array_from_image,
    check_same_geometry,
    image_from_array,
    load_scan,
    orientation_code,
    read_label,
    read_scan,
    sample_scan_path,
    write_image,
)


def _phantom(shape=(24, 20, 12)) -> np.ndarray:
    """A tiny head-like CT: air, a bony shell (1000 HU), brain (30 HU) and one bright marker voxel."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    arr = np.full(shape, -1000.0, np.float32)
    arr[r < 0.9] = 1000.0
    arr[r < 0.75] = 30.0
    arr[5, 6, 7] = 2000.0  # marker: one voxel whose physical position we follow
    return arr


@pytest.fixture(scope="module")
def ge_scan():
    image, info = load_scan(sample_scan_path())
    return image, info, array_from_image(image)


@pytest.fixture(scope="module")
def ge_slices():
    """The original DICOM slices (pydicom, independent of hemolab's reader), sorted along the table."""
    slices = [pydicom.dcmread(p) for p in sorted(sample_scan_path().glob("*.dcm"))]
    return sorted(slices, key=lambda d: float(d.ImagePositionPatient[2]))


# --------------------------------------------------------------------------------- files and conventions


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_read_scan_formats_give_float32_lps(tmp_path, suffix):
    # a RAS-like stored orientation (x and y flipped), as NIfTI files from other tools often have
    direction = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    image = image_from_array(_phantom(), spacing=(0.5, 0.6, 3.0), origin=(10, 20, -5), direction=direction)
    path = write_image(image, tmp_path / f"scan{suffix}")
    marker = image.TransformIndexToPhysicalPoint((5, 6, 7))
    out = read_scan(path)
    assert out.GetPixelID() == sitk.sitkFloat32 and out.GetDimension() == 3
    assert orientation_code(out) == "LPS"
    np.testing.assert_allclose(out.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    arr = array_from_image(out)
    idx = np.unravel_index(np.argmax(arr), arr.shape)
    # the marker voxel is at the same physical point after re-orientation (x and y axes reversed)
    np.testing.assert_allclose(
        out.TransformIndexToPhysicalPoint(tuple(int(i) for i in idx)), marker, atol=1e-3
    )
    assert idx == (24 - 1 - 5, 20 - 1 - 6, 7)
    np.testing.assert_allclose(out.GetSpacing(), (0.5, 0.6, 3.0))


def test_read_scan_sets_outside_fov_to_air_and_says_so(tmp_path):
    arr = _phantom()
    arr[0, 0, :] = -3024.0  # what many scanners write outside the reconstruction circle
    path = write_image(image_from_array(arr, spacing=(1, 1, 1)), tmp_path / "fov.nii.gz")
    image, info = load_scan(path)
    assert array_from_image(image).min() == AIR_HU
    assert any("field of view" in c for c in info["corrections"])
    assert info["orientation"] == "LPS" and info["size"] == arr.shape


def test_read_scan_errors(tmp_path):
    with pytest.raises(HemolabFileError, match="does not exist"):
        read_scan(tmp_path / "missing.nii.gz")
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    with pytest.raises(HemolabError, match="not an image"):
        read_scan(text)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(HemolabFileError, match="no DICOM series"):
        read_scan(empty)


def test_read_scan_refuses_2d_and_4d(tmp_path):
    two_d = sitk.GetImageFromArray(np.full((16, 16), 30, np.int16))
    sitk.WriteImage(two_d, str(tmp_path / "slice.nii.gz"))
    with pytest.raises(HemolabError, match="2D"):
        read_scan(tmp_path / "slice.nii.gz")
    four_d = sitk.JoinSeries([image_from_array(_phantom()), image_from_array(_phantom())])
    sitk.WriteImage(four_d, str(tmp_path / "series.nii.gz"))
    with pytest.raises(HemolabError, match="4D"):
        read_scan(tmp_path / "series.nii.gz")


def test_read_scan_refuses_non_ct_and_nan(tmp_path):
    normalised = (_phantom() + 1000) / 3000  # already scaled to [0, 1]: not HU
    write_image(image_from_array(normalised, spacing=(1, 1, 1)), tmp_path / "norm.nii.gz")
    with pytest.raises(HemolabError, match="Hounsfield"):
        read_scan(tmp_path / "norm.nii.gz")
    nan = _phantom()
    nan[3, 3, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan.transpose(2, 1, 0)), str(tmp_path / "nan.mha"))
    with pytest.raises(HemolabError, match="NaN"):
        read_scan(tmp_path / "nan.mha")


def test_read_label_and_geometry_checks(tmp_path):
    scan = image_from_array(_phantom(), spacing=(0.5, 0.5, 3.0))
    mask = np.zeros(_phantom().shape, np.uint8)
    mask[8:12, 8:12, 4:6] = 1
    path = write_image(image_from_array(mask, reference=scan), tmp_path / "label.nii.gz")
    label = read_label(path, like=scan)
    assert label.GetPixelID() == sitk.sitkUInt8 and array_from_image(label).sum() == mask.sum()

    other = image_from_array(_phantom(), spacing=(0.5, 0.5, 5.0))
    with pytest.raises(HemolabError, match=r"spacing .* resample"):
        read_label(path, like=other)
    shifted = image_from_array(_phantom(), spacing=(0.5, 0.5, 3.0), origin=(0, 0, 12))
    with pytest.raises(HemolabError, match="origin"):
        read_label(path, like=shifted)
    smaller = image_from_array(_phantom((24, 20, 10)), spacing=(0.5, 0.5, 3.0))
    with pytest.raises(HemolabError, match="size"):
        check_same_geometry(smaller, label)

    mask[0, 0, 0] = 2
    write_image(image_from_array(mask, reference=scan), tmp_path / "multi.nii.gz")
    with pytest.raises(HemolabError, match="binary"):
        read_label(tmp_path / "multi.nii.gz")
    with pytest.raises(HemolabFileError):
        read_label(tmp_path / "nope.nii.gz")


# --------------------------------------------------------------------------------- the real GE head CT


def test_sample_scan_ships_with_its_licence():
    folder = sample_scan_path()
    assert len(list(folder.glob("*.dcm"))) == 28
    assert "BSD 2-Clause" in (folder / "LICENSE").read_text()
    assert "dcm_qa_ct" in (folder / "README.md").read_text()


def test_ge_scan_regular_grid_and_reported_corrections(ge_scan):
    image, info, arr = ge_scan
    assert orientation_code(image) == "LPS" and image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel())
    assert info["resampled"] and info["format"] == "dicom" and info["n_slices"] == 28
    assert info["gantry_tilt_deg"] == pytest.approx(18.5, abs=0.05)
    lo, hi = info["slice_spacing_range_mm"]
    assert lo == pytest.approx(1.08, abs=0.01) and hi == pytest.approx(6.99, abs=0.02)
    text = " ".join(info["corrections"])
    assert "gantry tilt 18.5" in text and "uneven slice spacing" in text and "PixelPaddingValue" in text
    assert image.GetSpacing()[0] == pytest.approx(0.48828, abs=1e-4)
    assert image.GetSpacing()[2] == pytest.approx(4.0, abs=0.01)  # the median distance between slices


def test_ge_scan_extent_matches_the_slice_positions(ge_scan, ge_slices):
    """The grid spans the tilted slab given by the first and last slices' real positions (each end slice
    standing for half the gap to its neighbour, as every slice does) and nothing more."""
    image, _, _ = ge_scan
    iop = np.array(ge_slices[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.array([d.ImagePositionPatient for d in ge_slices], float)
    w = ipp @ normal
    # first-to-last slice distance along the normal: 144 mm, not 27 x 4 mm or any other even guess
    assert w[-1] - w[0] == pytest.approx(144.1, abs=0.1)
    rows_mm = (int(ge_slices[0].Rows) - 1) * float(ge_slices[0].PixelSpacing[0])
    bottom = ipp[0] - (w[1] - w[0]) / 2 * normal
    top = ipp[-1] + (w[-1] - w[-2]) / 2 * normal
    z_low = min(bottom[2], bottom[2] + rows_mm * iop[5])  # the tilted slab dips backwards
    z_high = max(top[2], top[2] + rows_mm * iop[5])
    sz, nz = image.GetSpacing()[2], image.GetSize()[2]
    assert image.GetOrigin()[2] == pytest.approx(z_low, abs=1e-3)
    assert z_low + (nz - 1) * sz <= z_high + 1e-3 < z_low + nz * sz


def _sample_at(image: sitk.Image, arr: np.ndarray, points: np.ndarray) -> np.ndarray:
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    index = np.linalg.solve(matrix, (points - np.array(image.GetOrigin())).T)
    return ndimage.map_coordinates(arr, index, order=1, cval=AIR_HU)


def _slice_round_trip(image: sitk.Image, arr: np.ndarray, d, rng) -> float:
    """Correlation between a DICOM slice and the volume sampled at that slice's real pixel positions."""
    pixels = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
    rows, cols = np.nonzero(pixels > -500)  # the head
    pick = rng.choice(rows.size, 2000, replace=False)
    rows, cols = rows[pick], cols[pick]
    iop = np.array(d.ImageOrientationPatient, float)
    points = (
        np.array(d.ImagePositionPatient, float)
        + np.outer(cols * float(d.PixelSpacing[1]), iop[:3])
        + np.outer(rows * float(d.PixelSpacing[0]), iop[3:])
    )
    return float(np.corrcoef(_sample_at(image, arr, points), pixels[rows, cols])[0, 1])


def test_ge_tilt_corrected_slices_land_at_their_true_positions(ge_scan, ge_slices):
    """Each original slice, sampled back from the regular volume at its real pixel positions, is reproduced.

    This is what "tilt corrected" means: the skull outline is where each slice saw it. SimpleITK's series
    reader alone (even spacing assumed, shear ignored) fails the same check (r < 0.3 mid-head).
    """
    image, _, arr = ge_scan
    rng = np.random.default_rng(0)
    for k in (1, 8, 13, 14, 20, 26):  # inside the stack (either side of the 4 mm -> 7 mm change)
        assert _slice_round_trip(image, arr, ge_slices[k], rng) > 0.95, f"slice {k}"
    for k in (0, 27):  # end slices: half the 4 mm grid step lies beyond them (air), so lower but far from 0
        assert _slice_round_trip(image, arr, ge_slices[k], rng) > 0.75, f"slice {k}"

    files = [str(p) for p in sorted(sample_scan_path().glob("*.dcm"))]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        naive = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(True)
    naive_arr = np.maximum(array_from_image(naive), AIR_HU)
    assert np.mean([_slice_round_trip(naive, naive_arr, ge_slices[k], rng) for k in (13, 20)]) < 0.3


def test_ge_scan_hounsfield_values(ge_scan):
    _, _, arr = ge_scan
    air = arr[(arr > -1010) & (arr < -900)]  # inside the field of view, outside the head
    assert -1010 < np.median(air) < -980
    for z in (25, 30, 35):  # supratentorial slices: the brain peak of the histogram
        soft = arr[:, :, z][(arr[:, :, z] > 0) & (arr[:, :, z] < 80)]
        counts, edges = np.histogram(soft, bins=80, range=(0, 80))
        assert 20 <= edges[counts.argmax()] <= 45
    # bone: every ray from the centre of a supratentorial slice crosses a closed skull ring (> 300 HU),
    # dense cortical bone (> 700 HU) on nearly all of them (the thin temporal squama is the exception)
    plane = arr[:, :, 30]
    cx, cy = (np.mean(np.nonzero(plane > -300)[i]) for i in (0, 1))
    radii = np.arange(0, 150 / 0.4883)
    peaks = np.array(
        [
            ndimage.map_coordinates(plane, [cx + radii * np.cos(t), cy + radii * np.sin(t)], order=1).max()
            for t in np.linspace(0, 2 * np.pi, 72, endpoint=False)
        ]
    )
    assert peaks.min() > 300 and np.mean(peaks > 700) > 0.9 and np.median(peaks) > 1000


def test_dicom_folder_with_two_series_and_single_file(tmp_path):
    """Several series: the largest is read; equal sizes are refused with the list; one .dcm file reads its series."""
    src = sorted(sample_scan_path().glob("*.dcm"))
    big, small = tmp_path / "mixed", tmp_path / "tie"
    for folder, files, n_extra in ((big, src[:6], 3), (small, src[:6], 6)):
        folder.mkdir()
        for p in files:
            (folder / p.name).write_bytes(p.read_bytes())
        for p in src[6 : 6 + n_extra]:  # a second series: same pixels, another SeriesInstanceUID
            d = pydicom.dcmread(p)
            d.SeriesInstanceUID = "1.2.3.4.5.6.7"
            d.SOPInstanceUID = pydicom.uid.generate_uid()
            d.save_as(folder / f"b_{p.name}")
    _, info = load_scan(big)
    assert info["n_slices"] == 6 and "read the largest" in " ".join(info["corrections"])
    with pytest.raises(HemolabError, match="several series of the same size"):
        load_scan(small)
    _, info = load_scan(small, series_id="1.2.3.4.5.6.7")
    assert info["n_slices"] == 6
    _, info = load_scan(big / "b_08.dcm")  # one file: its own series
    assert info["series_id"] == "1.2.3.4.5.6.7"


def test_dicom_duplicate_positions_are_refused(tmp_path):
    src = sorted(sample_scan_path().glob("*.dcm"))[:4]
    for p in src:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    d = pydicom.dcmread(src[1])
    d.SOPInstanceUID = pydicom.uid.generate_uid()
    d.InstanceNumber = 99
    d.save_as(tmp_path / "dup.dcm")
    with pytest.raises(HemolabError, match="share a position"):
        read_scan(tmp_path)


def test_info_command_prints_the_corrections(capsys):
    assert main(["info", "--sample"]) == 0
    out = capsys.readouterr().out
    assert "LPS" in out and "gantry tilt:  18.5" in out and "uneven slice spacing" in out
    assert main(["info"]) == 2  # neither SCAN nor --sample


def _write_series(folder, z_positions, iop=(1, 0, 0, 0, 1, 0)):
    """Re-use GE slices' pixels at new, untilted positions (a plain axial series)."""
    folder.mkdir()
    src = sorted(sample_scan_path().glob("*.dcm"))
    uid = pydicom.uid.generate_uid()
    for k, z in enumerate(z_positions):
        d = pydicom.dcmread(src[10 + k])
        d.ImageOrientationPatient = list(iop)
        d.ImagePositionPatient = [-125.0, -125.0, float(z)]
        d.SeriesInstanceUID, d.SOPInstanceUID = uid, pydicom.uid.generate_uid()
        d.save_as(folder / f"{k:02d}.dcm")


def test_plain_dicom_series_is_read_as_stored(tmp_path):
    _write_series(tmp_path / "plain", [10.0, 15.0, 20.0, 25.0, 30.0])
    image, info = load_scan(tmp_path / "plain")
    assert not info["resampled"] and info["gantry_tilt_deg"] == 0.0
    assert image.GetSize() == (512, 512, 5) and image.GetSpacing()[2] == pytest.approx(5.0)
    assert image.GetOrigin() == pytest.approx((-125.0, -125.0, 10.0))
    assert [c for c in info["corrections"] if "PixelPadding" not in c] == []


def test_uneven_untilted_series_is_resampled_to_its_true_extent(tmp_path):
    z = [0.0, 5.0, 10.0, 12.0, 20.0]  # gaps 5, 5, 2, 8 mm: median 5
    _write_series(tmp_path / "uneven", z)
    image, info = load_scan(tmp_path / "uneven")
    assert info["resampled"] and info["gantry_tilt_deg"] == 0.0
    assert any("uneven slice spacing 2.00-8.00 mm" in c for c in info["corrections"])
    assert not any("gantry tilt" in c for c in info["corrections"])
    sz, nz = image.GetSpacing()[2], image.GetSize()[2]
    assert sz == pytest.approx(5.0)
    # the grid covers first-to-last slice (20 mm) plus half a gap beyond each end slice (2.5 + 4 mm)
    assert image.GetOrigin()[2] == pytest.approx(-2.5)
    assert (nz - 1) * sz <= 20 + 2.5 + 4.0 < nz * sz
    arr = array_from_image(image)
    src = sorted(sample_scan_path().glob("*.dcm"))
    at_12, at_20 = (
        np.maximum(pydicom.dcmread(src[10 + k]).pixel_array.T.astype(np.float32), AIR_HU) for k in (3, 4)
    )
    k = 4  # the grid plane at z = -2.5 + 4 * 5 = 17.5 mm: 5.5/8 of the way from the slice at 12 to the one at 20
    assert image.TransformIndexToPhysicalPoint((0, 0, k))[2] == pytest.approx(17.5)
    expected = (1 - 5.5 / 8) * at_12 + 5.5 / 8 * at_20
    np.testing.assert_allclose(arr[:, :, k], expected, atol=0.05)
