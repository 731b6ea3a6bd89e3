"""Segment the haemorrhage in one head CT with a trained checkpoint and write the mask.

SCAN is a NIfTI/NRRD/MHA file or a DICOM folder (read with ``hemolab.io.read_scan``). The mask is written
on the scan's own grid; the haemorrhage volume (voxel count x voxel volume) and the time taken are printed.
A scan that cannot be a head CT (``hemolab.validation.check_head_ct``) or a file that is not a hemolab
checkpoint stops with an error before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hemolab.errors import HemolabError, HemolabExistsError

HELP = "segment one scan with a trained checkpoint; print the bleed volume and the time taken"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan", metavar="SCAN", help="the CT: a NIfTI/NRRD/MHA file or a DICOM folder")
    parser.add_argument(
        "--model",
        required=True,
        metavar="CKPT",
        help="checkpoint (best.pt from `hemolab train` or notebook 03/04)",
    )
    parser.add_argument("--out", required=True, metavar="MASK.nii.gz", help="where to write the binary mask")
    parser.add_argument(
        "--probability",
        metavar="PROB.nii.gz",
        default=None,
        help="also write the probability map (on the scan's grid) here",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="probability threshold (default: the checkpoint's, 0.5 in the papers)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if available)")


def run(args: argparse.Namespace) -> int:
    from hemolab.architectures import load_checkpoint, segment_scan
    from hemolab.io import read_scan, write_image
    from hemolab.validation import check_head_ct

    out = Path(args.out)
    outputs = [out] + ([Path(args.probability)] if args.probability else [])
    for path in outputs:  # refuse before spending time on the network
        if path.exists() and not args.overwrite:
            raise HemolabExistsError(f"{path} exists: pass --overwrite to replace it")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise HemolabError(f"--threshold must lie strictly between 0 and 1, got {args.threshold}")
    model, meta = load_checkpoint(args.model, device=args.device)
    image = read_scan(args.scan)
    # the one check of a scan (hemolab.validation.check_head_ct), here with the size limits of a head too
    check_head_ct(image, name=f"the scan {Path(args.scan).name}", source=args.scan)
    result = segment_scan(image, model, meta, threshold=args.threshold)
    write_image(result.mask, out, overwrite=args.overwrite)
    if args.probability:
        write_image(result.probability, args.probability, overwrite=args.overwrite)
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
    print(f"haemorrhage volume: {result.volume_ml:.2f} mL (threshold {result.threshold:g})")
    print(f"time: {result.seconds:.2f} s ({stages}); mask written to {out}")
    return 0
