"""Describe a head CT as hemolab reads it: size, voxel spacing, orientation, HU range, and any correction.

SCAN is a NIfTI/NRRD/MHA file or a DICOM folder, read with ``hemolab.io.load_scan``: float32 Hounsfield
units, LPS orientation, a regular grid. A DICOM series with a gantry tilt or uneven slice spacing is
resampled from the slices' real positions; this command says so, and by how much. ``hemolab info --sample``
describes the real GE head CT shipped with hemolab (18.5° tilt, slices 1.08-6.99 mm apart).
"""

from __future__ import annotations

import argparse
import json

HELP = "describe a scan as hemolab reads it: size, spacing, orientation, HU range, tilt/spacing corrections"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scan",
        metavar="SCAN",
        nargs="?",
        default=None,
        help="the CT: a NIfTI/NRRD/MHA file or a DICOM folder",
    )
    parser.add_argument(
        "--sample", action="store_true", help="describe the real GE head CT shipped with hemolab"
    )
    parser.add_argument(
        "--series",
        default=None,
        metavar="UID",
        help="SeriesInstanceUID to read when a DICOM folder holds several",
    )
    parser.add_argument("--json", action="store_true", help="print the description as JSON (for scripts)")


def format_info(info: dict) -> str:
    """The human-readable description printed by ``hemolab info``."""
    size, spacing = info["size"], info["spacing"]
    extent = tuple(round(n * s, 1) for n, s in zip(size, spacing, strict=True))
    lines = [
        f"source:       {info['source']} ({info.get('format', '?')})",
        f"size:         {size[0]} x {size[1]} x {size[2]} voxels [x, y, z]",
        f"spacing:      {spacing[0]:.3f} x {spacing[1]:.3f} x {spacing[2]:.3f} mm",
        f"extent:       {extent[0]} x {extent[1]} x {extent[2]} mm",
        f"orientation:  {info['orientation']} (x -> patient left, y -> posterior, z -> superior)",
        f"HU range:     {info['hu_range'][0]:.0f} to {info['hu_range'][1]:.0f}",
    ]
    if info.get("format") == "dicom":
        lo, hi = info["slice_spacing_range_mm"]
        lines.append(
            f"DICOM:        {info['n_slices']} slices, {lo:.2f}-{hi:.2f} mm apart along the slice normal"
        )
        lines.append(f"gantry tilt:  {info['gantry_tilt_deg']:.1f}° (from the slice positions)")
    if info["corrections"]:
        lines.append("corrections:")
        lines.extend(f"  - {c}" for c in info["corrections"])
    else:
        lines.append("corrections:  none (read as stored)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from hemolab.errors import HemolabError
    from hemolab.io import load_scan, sample_scan_path

    if args.sample == (args.scan is not None):
        raise HemolabError("give either SCAN or --sample")
    _, info = load_scan(sample_scan_path() if args.sample else args.scan, series_id=args.series)
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0
