"""Compare a folder of predicted masks with a folder of reference masks, case by case.

Files are matched by case id: the file name without its extension (``case_007.nii.gz`` in --pred is
compared with ``case_007.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha`` in --ref). Every case must be in both
folders, and each pair must share one voxel grid (size, spacing, origin, direction). The metrics are those
of ``hemolab.metrics.evaluate`` (docs/methods.md §4): DSC, precision, recall, F1, HD, 95% HD, modified HD,
contour mean distance (mm, with the voxel spacing), AVD (%) and both volumes (mL).

A per-case table goes to --out (CSV); a summary (mean ± SD as Arab 2020 reports, median [IQR] as Patel 2019
does) is printed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hemolab.atomic import atomic_write
from hemolab.errors import HemolabError, HemolabExistsError, HemolabFileError

HELP = "compare predicted masks with reference masks (DSC, HD, 95%% HD, ..., volumes); write a per-case CSV"

#: File types read as masks.
MASK_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def case_id(path: Path) -> str | None:
    """The case id of a mask file (its name without the extension), or ``None`` if it is not a mask file."""
    name = path.name
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def list_masks(folder: str | os.PathLike, what: str) -> dict[str, Path]:
    """``{case id: path}`` for the mask files in ``folder``.

    Raises:
        HemolabFileError: the folder does not exist.
        HemolabError: it holds no mask file, or two files share a case id.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HemolabFileError(f"{what} folder {folder} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        cid = case_id(path)
        if cid is None or not path.is_file():
            continue
        if cid in found:
            raise HemolabError(
                f"{what} folder {folder} has two files for case {cid!r}: {found[cid].name}, {path.name}"
            )
        found[cid] = path
    if not found:
        raise HemolabError(f"{what} folder {folder} holds no mask file ({', '.join(MASK_SUFFIXES)})")
    return found


def match_cases(pred: dict[str, Path], ref: dict[str, Path]) -> list[str]:
    """The case ids present in both; raises when a case is in only one folder (nothing is skipped silently)."""
    only_pred, only_ref = sorted(set(pred) - set(ref)), sorted(set(ref) - set(pred))
    if only_pred or only_ref:

        def show(ids):
            return ", ".join(ids[:8]) + (f", ... ({len(ids)} in all)" if len(ids) > 8 else "")

        parts = []
        if only_ref:
            parts.append(f"no prediction for reference case(s) {show(only_ref)}")
        if only_pred:
            parts.append(f"no reference for predicted case(s) {show(only_pred)}")
        raise HemolabError(
            "--pred and --ref must hold the same cases, matched by file name without extension: "
            + "; ".join(parts)
        )
    return sorted(pred)


def evaluate_folders(pred_dir: str | os.PathLike, ref_dir: str | os.PathLike, *, progress: bool = False):
    """Evaluate every predicted mask against the reference of the same case id.

    Args:
        pred_dir: folder of predicted binary masks.
        ref_dir: folder of reference binary masks.
        progress: show a progress bar.

    Returns:
        A pandas DataFrame, one row per case: ``case_id``, the metrics of
        :func:`hemolab.metrics.evaluate`, and ``spacing_x/y/z``.

    Raises:
        HemolabError: missing or mismatched cases, masks that are not binary, different voxel grids.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from hemolab.io import array_from_image, read_label
    from hemolab.metrics import evaluate

    pred, ref = list_masks(pred_dir, "--pred"), list_masks(ref_dir, "--ref")
    rows = []
    for cid in tqdm(match_cases(pred, ref), desc="evaluate", disable=not progress):
        ref_img = read_label(ref[cid])
        try:
            pred_img = read_label(pred[cid], like=ref_img)
        except HemolabError as exc:
            raise HemolabError(f"case {cid!r}: {exc}") from exc
        spacing = tuple(float(s) for s in ref_img.GetSpacing())
        res = evaluate(array_from_image(pred_img), array_from_image(ref_img), spacing)
        rows.append(
            {"case_id": cid} | res | dict(zip(("spacing_x", "spacing_y", "spacing_z"), spacing, strict=True))
        )
    return pd.DataFrame(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred", required=True, metavar="DIR", help="folder of predicted masks (NIfTI/NRRD/MHA)"
    )
    parser.add_argument(
        "--ref", required=True, metavar="DIR", help="folder of reference masks with the same names"
    )
    parser.add_argument(
        "--out", default=None, metavar="CSV", help="write the per-case table to this CSV file"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from hemolab.metrics import summary_table

    out = Path(args.out).expanduser() if args.out else None
    if out is not None:
        if out.exists() and not args.overwrite:
            raise HemolabExistsError(f"{out} exists: pass --overwrite to replace it")
        if out.suffix.lower() != ".csv":
            raise HemolabError(f"--out must be a .csv file, got {out}")
    table = evaluate_folders(args.pred, args.ref, progress=True)
    if out is not None:
        atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    with pd.option_context("display.width", 120, "display.max_columns", 10):
        print(f"{len(table)} case(s): {args.pred} against {args.ref}")
        print(summary_table(table).to_string())
    if out is not None:
        print(f"per-case table written to {out}")
    return 0
