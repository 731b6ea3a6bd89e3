#!/usr/bin/env python
"""Download the PhysioNet CT-ICH dataset and convert it to hemolab's dataset layout.

The dataset: Hssayeni M. (2020). *Computed Tomography Images for Intracranial Hemorrhage Detection and
Segmentation* (version 1.3.1). PhysioNet. https://doi.org/10.13026/4nae-zg36 -- 75 head CTs of patients
with traumatic brain injury (36 with haemorrhage), NIfTI, with a haemorrhage mask per scan drawn by the
consensus of two radiologists and a per-slice diagnosis table. Please also cite Hssayeni et al., *Data* 5(1):14
(2020) and PhysioNet (Goldberger et al., *Circulation* 101(23):e215, 2000).

Access: version 1.3.1 is *restricted access* on PhysioNet: you need a PhysioNet account and must sign the
project's data use agreement (PhysioNet Restricted Health Data License 1.5.0) on its web page first. The
data may not be redistributed; hemolab ships none of it.

Raw layout (as downloaded)::

    RAW/ct_scans/049.nii ... 130.nii          the scans (HU)
    RAW/masks/049.nii ... 130.nii             the haemorrhage masks (0 / non-zero)
    RAW/hemorrhage_diagnosis_raw_ct.csv       PatientNumber, SliceNumber, Intraventricular, Intraparenchymal,
                                              Subarachnoid, Epidural, Subdural, No_Hemorrhage, Fracture_Yes_No
    RAW/Patient_demographics.csv, SHA256SUMS.txt, ...

Converted layout (what ``hemolab.datasets.load_dataset`` and ``hemolab train --data`` read)::

    OUT/dataset.json   OUT/cases.csv   OUT/imagesTr/ctich_049.nii.gz   OUT/labelsTr/ctich_049.nii.gz
    OUT/imagesTs/...   OUT/labelsTs/...

Usage::

    python data_scripts/physionet_ct_ich.py download --out ~/data/ct-ich-raw --user YOUR_PHYSIONET_NAME
    python data_scripts/physionet_ct_ich.py convert --raw ~/data/ct-ich-raw --out ~/data/ct-ich

The split is deterministic (``--seed``) and stratified by haemorrhage / no haemorrhage, in the proportions of
Arab 2020 (40 train : 5 validation : 10 test, docs/methods.md §1): of 75 scans, 54 train, 7 validation, 14 test.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterable
from pathlib import Path

BASE_URL = "https://physionet.org/files/ct-ich/1.3.1/"
CHECKSUMS = "SHA256SUMS.txt"
DIAGNOSIS_CSV = "hemorrhage_diagnosis_raw_ct.csv"
#: The subtype columns of the diagnosis table and hemolab's bleed-type names (as in hemolab.synth).
SUBTYPES: dict[str, str] = {
    "Intraparenchymal": "iph",
    "Intraventricular": "ivh",
    "Subarachnoid": "sah",
    "Subdural": "sdh",
    "Epidural": "edh",
}
#: Arab 2020's proportions: 40 train, 5 validation, 10 test (of 55).
SPLIT_FRACTIONS: tuple[float, float, float] = (40 / 55, 5 / 55, 10 / 55)
CITATION = (
    "Hssayeni M. (2020). Computed Tomography Images for Intracranial Hemorrhage Detection and Segmentation "
    "(version 1.3.1). PhysioNet. https://doi.org/10.13026/4nae-zg36; Hssayeni et al., Data 5(1):14 (2020)"
)


# ------------------------------------------------------------------------------------------------ download


def parse_checksums(text: str) -> dict[str, str]:
    """``SHA256SUMS.txt`` (``<sha256>  <relative path>`` per line) as ``{path: sha256}``."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_opener(base_url: str, username: str | None = None, password: str | None = None):
    """A urllib opener, with HTTP basic authentication for PhysioNet when a user name is given."""
    handlers = []
    if username:
        if password is None:
            password = os.environ.get("PHYSIONET_PASSWORD") or getpass.getpass(
                f"PhysioNet password for {username}: "
            )
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        manager.add_password(None, base_url, username, password)
        handlers.append(urllib.request.HTTPBasicAuthHandler(manager))
    return urllib.request.build_opener(*handlers)


def download_file(
    url: str, dest: Path, *, sha256: str | None = None, opener=None, chunk: int = 1 << 20
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` and checking the SHA-256 if given.

    A file already at ``dest`` with the right checksum is not downloaded again. A resumed download asks for
    the missing bytes (HTTP ``Range``); a server that answers with the whole file instead restarts it.

    Raises:
        RuntimeError: if the downloaded file's checksum does not match (the partial file is removed).
    """
    opener = opener or urllib.request.build_opener()
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "hemolab-data-script"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with opener.open(request, timeout=60) as response:
        resumed = have > 0 and getattr(response, "status", None) == 206
        with open(part, "ab" if resumed else "wb") as fh:
            while block := response.read(chunk):
                fh.write(block)
    if sha256 is not None and (got := sha256_of(part)) != sha256:
        part.unlink()
        raise RuntimeError(
            f"checksum mismatch for {url}: expected {sha256}, got {got}; run the download again"
        )
    os.replace(part, dest)
    return dest


def download(
    out: str | os.PathLike,
    *,
    base_url: str = BASE_URL,
    username: str | None = None,
    password: str | None = None,
    opener=None,
    include: Iterable[str] = ("ct_scans/", "masks/", ".csv", ".txt"),
) -> Path:
    """Download the files listed in the project's ``SHA256SUMS.txt`` (verified, resumable) into ``out``.

    Args:
        out: the raw folder.
        base_url: the project's file URL (ends with ``/``); a ``file://`` URL works for a local mirror.
        username, password: PhysioNet credentials (password: ``$PHYSIONET_PASSWORD`` or asked for).
        opener: a ``urllib`` opener to use instead of building one (tests).
        include: download only paths starting with or ending with one of these.

    Returns:
        The raw folder.
    """
    from tqdm.auto import tqdm

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    opener = opener or build_opener(base_url, username or os.environ.get("PHYSIONET_USERNAME"), password)
    sums_path = download_file(base_url + CHECKSUMS, out / CHECKSUMS, opener=opener)
    sums = parse_checksums(sums_path.read_text())
    if not sums:
        raise RuntimeError(f"{base_url}{CHECKSUMS} lists no files: is this the right project and version?")
    wanted = [p for p in sorted(sums) if any(p.startswith(k) or p.endswith(k) for k in include)]
    for rel in tqdm(wanted, desc="CT-ICH download", unit="file"):
        download_file(base_url + rel, out / rel, sha256=sums[rel], opener=opener)
    return out


# ------------------------------------------------------------------------------------------------ convert


def find_raw_root(raw: Path) -> Path:
    """The folder holding ``ct_scans/`` (the raw folder itself, or the single folder a zip unpacks into)."""
    if (raw / "ct_scans").is_dir():
        return raw
    inner = [p for p in raw.iterdir() if p.is_dir() and (p / "ct_scans").is_dir()] if raw.is_dir() else []
    if len(inner) == 1:
        return inner[0]
    raise FileNotFoundError(f"{raw} has no ct_scans/ folder: point --raw at the downloaded CT-ICH folder")


def read_diagnosis(path: Path) -> dict[int, dict]:
    """Per patient, from the per-slice table: subtypes present, slices with blood, fracture."""
    patients: dict[int, dict] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            pid = int(float(row["PatientNumber"]))
            p = patients.setdefault(pid, {"subtypes": set(), "slices_with_bleed": 0, "fracture": False})
            present = [SUBTYPES[c] for c in SUBTYPES if int(float(row[c] or 0)) == 1]
            p["subtypes"].update(present)
            p["slices_with_bleed"] += int(float(row["No_Hemorrhage"] or 0)) == 0
            p["fracture"] |= int(float(row.get("Fracture_Yes_No") or 0)) == 1
    return patients


def bleed_type(subtypes: set[str]) -> str:
    """``"none"``, one subtype (``"iph"``, ...) or several joined by ``+`` in a fixed order."""
    order = list(SUBTYPES.values())
    return "+".join(sorted(subtypes, key=order.index)) if subtypes else "none"


def assign_splits(case_ids: list[str], has_bleed: dict[str, bool], seed: int = 0) -> dict[str, str]:
    """A deterministic split in Arab 2020's proportions, stratified by haemorrhage yes/no."""
    import numpy as np

    rng = np.random.default_rng(seed)
    splits = {}
    for stratum in (True, False):
        ids = sorted(c for c in case_ids if has_bleed[c] == stratum)
        rng.shuffle(ids)
        n_test = int(round(len(ids) * SPLIT_FRACTIONS[2]))
        n_val = int(round(len(ids) * SPLIT_FRACTIONS[1]))
        for i, cid in enumerate(ids):
            splits[cid] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    return splits


def _read_mask(path: Path, scan):
    """The raw mask (0 / non-zero, any orientation) as uint8 0/1 on the scan's grid."""
    import numpy as np
    import SimpleITK as sitk

    from hemolab.errors import HemolabError
    from hemolab.io import array_from_image, check_same_geometry, image_from_array

    raw = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    mask = image_from_array((array_from_image(raw) > 0).astype(np.uint8), reference=raw)
    note = ""
    try:
        check_same_geometry(scan, mask, ("scan", f"mask {path.name}"))
    except HemolabError:
        if mask.GetSize() != scan.GetSize():
            raise
        mask.CopyInformation(scan)  # same voxels, a header written differently: trust the scan's
        note = "mask header differed from the scan's; scan geometry used"
    return mask, note


def convert(
    raw: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0, overwrite: bool = False
) -> Path:
    """Convert a raw CT-ICH folder to hemolab's Medical Segmentation Decathlon layout.

    Each scan is read with :func:`hemolab.io.read_scan` (HU, LPS orientation; values outside the field of
    view set to air) and written as int16 NIfTI; each mask as uint8 0/1 on the scan's grid.

    Args:
        raw: the downloaded folder (with ``ct_scans/``, ``masks/``, ``hemorrhage_diagnosis_raw_ct.csv``).
        out: the dataset folder to create.
        seed: seed of the train / validation / test split.
        overwrite: replace an existing ``out``.

    Returns:
        The dataset folder.
    """
    import numpy as np
    import SimpleITK as sitk
    from tqdm.auto import tqdm

    from hemolab.errors import HemolabExistsError
    from hemolab.io import array_from_image, decathlon_manifest, image_from_array, read_scan, write_image

    root, out = find_raw_root(Path(raw).expanduser()), Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        raise HemolabExistsError(f"{out} exists: pass --overwrite to replace it")
    diagnosis = read_diagnosis(root / DIAGNOSIS_CSV)
    scans = sorted((root / "ct_scans").glob("*.nii*"))
    if not scans:
        raise FileNotFoundError(f"no NIfTI scans in {root / 'ct_scans'}")
    number = {s: int(s.name.split(".")[0]) for s in scans}
    ids = {s: f"ctich_{number[s]:03d}" for s in scans}
    has_bleed = {ids[s]: bool(diagnosis.get(number[s], {}).get("subtypes")) for s in scans}
    splits = assign_splits(list(ids.values()), has_bleed, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    rows, training, test = [], [], []
    try:
        for scan_path in tqdm(scans, desc="CT-ICH convert", unit="scan"):
            cid, pid = ids[scan_path], number[scan_path]
            masks = sorted((root / "masks").glob(f"{scan_path.name.split('.')[0]}.nii*"))
            if not masks:
                raise FileNotFoundError(f"no mask for {scan_path.name} in {root / 'masks'}")
            scan = read_scan(scan_path)
            mask, note = _read_mask(masks[0], scan)
            hu = np.rint(array_from_image(scan)).clip(-1024, 3071).astype(np.int16)
            sub = "Ts" if splits[cid] == "test" else "Tr"
            write_image(image_from_array(hu, reference=scan), tmp / f"images{sub}" / f"{cid}.nii.gz")
            write_image(mask, tmp / f"labels{sub}" / f"{cid}.nii.gz")
            (test if sub == "Ts" else training).append(cid)
            sp, voxel_ml = scan.GetSpacing(), float(np.prod(scan.GetSpacing())) / 1000.0
            volume = round(float(sitk.GetArrayViewFromImage(mask).sum()) * voxel_ml, 4)
            d = diagnosis.get(pid, {"subtypes": set(), "slices_with_bleed": 0, "fracture": False})
            rows.append({
                "case_id": cid, "split": splits[cid], "bleed_type": bleed_type(d["subtypes"]),
                "true_volume_ml": volume, "reference_volume_ml": volume,
                "spacing_x": round(sp[0], 5), "spacing_y": round(sp[1], 5), "spacing_z": round(sp[2], 5),
                "shape_x": scan.GetSize()[0], "shape_y": scan.GetSize()[1], "shape_z": scan.GetSize()[2],
                "seed": seed, "patient_number": pid, "slices_with_bleed": d["slices_with_bleed"],
                "fracture": d["fracture"], "source": "physionet-ct-ich-1.3.1", "note": note,
            })  # fmt: skip
        validation = sorted(r["case_id"] for r in rows if r["split"] == "validation")
        meta = decathlon_manifest(
            name="physionet-ct-ich-1.3.1",
            description=(
                "Head CTs of 75 patients with traumatic brain injury; haemorrhage masks by the consensus of "
                "two radiologists (one reference, no separate raters). true_volume_ml = reference volume."
            ),
            reference=CITATION,
            licence="PhysioNet Restricted Health Data License 1.5.0 (do not redistribute)",
            release="1.3.1",
            train_ids=training,
            test_ids=test,
            validation_ids=validation,
        )
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=1))
        with open(tmp / "cases.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(sorted(rows, key=lambda r: r["case_id"]))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "download", help="download the raw dataset (PhysioNet account + signed agreement needed)"
    )
    d.add_argument("--out", required=True, help="raw folder to download into (resumes; verifies SHA-256)")
    d.add_argument("--user", default=None, help="PhysioNet user name (default $PHYSIONET_USERNAME)")
    d.add_argument("--base-url", default=BASE_URL, help=f"project file URL (default {BASE_URL})")
    c = sub.add_parser("convert", help="convert a raw folder to hemolab's dataset layout")
    c.add_argument("--raw", required=True, help="the downloaded folder (with ct_scans/ and masks/)")
    c.add_argument("--out", required=True, help="the dataset folder to create")
    c.add_argument("--seed", type=int, default=0, help="seed of the train/validation/test split (default 0)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            path = download(args.out, base_url=args.base_url, username=args.user)
            print(f"downloaded to {path}; next: python {sys.argv[0]} convert --raw {path} --out DATASET")
        else:
            path = convert(args.raw, args.out, seed=args.seed, overwrite=args.overwrite)
            print(
                f"dataset written to {path}: hemolab.datasets.load_dataset({str(path)!r}) or hemolab train --data {path}"
            )
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
