"""Generate a synthetic cohort of non-contrast head CTs with intracranial haemorrhage.

Each case has an int16 HU scan, three simulated raters' delineations and their majority vote as the
reference label, written in Medical Segmentation Decathlon layout (dataset.json, imagesTr, labelsTr,
imagesTs, labelsTs, raters/, truth/, cases.csv). The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import time

HELP = "generate a synthetic head-CT haemorrhage cohort (MSD layout, 3 raters per case)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``hemolab synth``."""
    parser.add_argument("--out", required=True, help="dataset folder to create (must not exist or be empty)")
    parser.add_argument(
        "--cases",
        type=int,
        default=None,
        help="number of cases (default by profile: tiny 8, small 20, full 55 as in Arab 2020)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="cohort seed; the same seed gives identical files (default 0)"
    )
    parser.add_argument(
        "--profile",
        default="tiny",
        choices=("tiny", "small", "full"),
        help="grid size: tiny 64x64x16, small 128x128x32, full native 512x512x40-66 (default tiny)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing hemolab cohort at --out"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Generate the cohort and print a one-line summary."""
    from hemolab.datasets import load_dataset
    from hemolab.synth import make_cohort

    t0 = time.perf_counter()
    out = make_cohort(
        args.out,
        n_cases=args.cases,
        seed=args.seed,
        profile=args.profile,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    ds = load_dataset(out)
    print(
        f"wrote {len(ds)} cases ({len(ds.train)} train, {len(ds.validation)} validation, {len(ds.test)} test) "
        f"to {out} in {time.perf_counter() - t0:.1f} s"
    )
    return 0
