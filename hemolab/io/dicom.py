"""Reading a DICOM series: slices sorted by their real positions; uneven or tilted stacks resampled.

A head CT series with a gantry tilt (the slices' positions move off the slice normal) or uneven slice
spacing is resampled from the slices' real ``ImagePositionPatient`` onto a regular, axis-aligned grid
rather than silently mis-scaled; every correction is reported (``hemolab info SCAN`` prints them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from hemolab.errors import HemolabError, HemolabFileError
from hemolab.io.arrays import AIR_HU, image_from_array, to_canonical


def read_dicom_series(path: Path, series_id: str | None, z_spacing: float | None, info: dict) -> sitk.Image:
    files = _series_files(path, series_id, info)
    if len(files) == 1:  # a multi-frame (enhanced) file, or a single slice (refused by to_canonical)
        return to_canonical(sitk.ReadImage(files[0]), Path(files[0]).name)
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
        return to_canonical(image, path.name)
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
    return to_canonical(image, path.name)


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
