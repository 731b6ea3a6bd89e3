"""data_scripts/physionet_ct_ich.py on a tiny fixture laid out like the real download (no network)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hemolab.datasets import load_dataset
from hemolab.io import array_from_image

REPO = Path(__file__).resolve().parent.parent
COLUMNS = [
    "PatientNumber", "SliceNumber", "Intraventricular", "Intraparenchymal", "Subarachnoid", "Epidural",
    "Subdural", "No_Hemorrhage", "Fracture_Yes_No",
]  # fmt: skip


@pytest.fixture(scope="module")
def ctich():
    spec = importlib.util.spec_from_file_location(
        "physionet_ct_ich", REPO / "data_scripts" / "physionet_ct_ich.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_nifti(arr_xyz: np.ndarray, path: Path, spacing=(0.45, 0.45, 5.0)) -> None:
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr_xyz.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # stored RAS-like, as NIfTI from other tools often is
    sitk.WriteImage(image, str(path))


# patient -> (subtypes present on some slice, bleed voxels); 049..058 and 066.. like the real numbering
PATIENTS = {
    49: ({"Intraparenchymal"}, 12),
    50: (set(), 0),
    51: ({"Subdural", "Epidural"}, 8),
    52: (set(), 0),
    53: ({"Intraventricular"}, 4),
    66: (set(), 0),
    67: ({"Subarachnoid"}, 6),
    68: (set(), 0),
    69: ({"Intraparenchymal", "Intraventricular"}, 10),
    70: (set(), 0),
    71: (set(), 0),
}


@pytest.fixture
def raw(tmp_path) -> Path:
    root = (
        tmp_path / "computed-tomography-images-for-intracranial-hemorrhage-detection-and-segmentation-1.3.1"
    )
    (root / "ct_scans").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    rng = np.random.default_rng(1)
    for pid, (subtypes, n_bleed) in PATIENTS.items():
        ct = np.full((16, 16, 4), -1024, np.int16)
        ct[2:14, 2:14, :] = 1200  # skull
        ct[4:12, 4:12, :] = 30 + rng.integers(-3, 3, (8, 8, 4))  # brain
        ct[0, 0, :] = -3024  # outside the field of view, as scanners write it
        mask = np.zeros(ct.shape, np.uint8)
        if n_bleed:
            flat = np.zeros(8 * 8 * 2, bool)
            flat[:n_bleed] = True
            mask[4:12, 4:12, 1:3] = flat.reshape(8, 8, 2) * 255  # masks are 0 / 255 in some versions
            ct[mask > 0] = 65
        _write_nifti(ct, root / "ct_scans" / f"{pid:03d}.nii")
        _write_nifti(mask, root / "masks" / f"{pid:03d}.nii")
        for s in range(1, 5):
            bleed_here = bool(n_bleed) and s in (2, 3)
            row = dict.fromkeys(COLUMNS, 0)
            row.update(PatientNumber=pid, SliceNumber=s, No_Hemorrhage=int(not bleed_here))
            for t in subtypes if bleed_here else ():
                row[t] = 1
            row["Fracture_Yes_No"] = int(pid == 51 and s == 2)
            rows.append(row)
    lines = [",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in rows]
    (root / "hemorrhage_diagnosis_raw_ct.csv").write_text("\n".join(lines) + "\n")
    return tmp_path  # the zip unpacks into one folder: convert() must find it


def test_convert_writes_a_dataset_hemolab_reads(ctich, raw, tmp_path):
    out = ctich.convert(raw, tmp_path / "ct-ich", seed=0)
    ds = load_dataset(out)
    assert len(ds) == len(PATIENTS) and ds.name == "physionet-ct-ich-1.3.1"
    assert len(ds.train) + len(ds.validation) + len(ds.test) == len(PATIENTS)
    assert len(ds.test) >= 2 and len(ds.validation) >= 1
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"} and meta["labels"]["1"] == "haemorrhage"
    by_id = {c.case_id: c for c in ds.cases}
    assert by_id["ctich_049"].info["bleed_type"] == "iph"
    assert by_id["ctich_051"].info["bleed_type"] == "sdh+edh" and by_id["ctich_051"].info["fracture"] is True
    assert by_id["ctich_069"].info["bleed_type"] == "iph+ivh"
    assert by_id["ctich_050"].info["bleed_type"] == "none"
    case = by_id["ctich_049"]
    image, label = case.load_image(), case.load_label()
    assert image.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
    assert image.GetSize() == label.GetSize() == (16, 16, 4)
    hu, lab = array_from_image(image), array_from_image(label)
    assert hu.min() == -1024  # -3024 outside the field of view became air
    assert set(np.unique(lab)) == {0, 1} and lab.sum() == 12
    assert np.all(hu[lab == 1] == 65)  # the mask still sits on the blood after re-orientation
    assert case.info["true_volume_ml"] == pytest.approx(12 * 0.45 * 0.45 * 5.0 / 1000, abs=1e-4)
    assert case.info["spacing_z"] == pytest.approx(5.0)


def test_split_is_deterministic_and_stratified(ctich, raw, tmp_path):
    a = load_dataset(ctich.convert(raw, tmp_path / "a", seed=3))
    b = load_dataset(ctich.convert(raw, tmp_path / "b", seed=3))
    assert [(c.case_id, c.split) for c in a.cases] == [(c.case_id, c.split) for c in b.cases]
    test_types = {c.info["bleed_type"] == "none" for c in a.test}
    assert test_types == {True, False}  # both strata are represented in the test set

    ids = [f"c{i:02d}" for i in range(75)]
    splits = ctich.assign_splits(ids, {c: i < 36 for i, c in enumerate(ids)}, seed=0)
    counts = {s: list(splits.values()).count(s) for s in ("train", "validation", "test")}
    assert counts == {"train": 55 - 1, "validation": 7, "test": 14}  # Arab 2020's 40:5:10, on 75 scans


def test_convert_refuses_to_overwrite_and_bad_raw(ctich, raw, tmp_path):
    out = ctich.convert(raw, tmp_path / "ds")
    with pytest.raises(FileExistsError, match="overwrite"):
        ctich.convert(raw, out)
    ctich.convert(raw, out, overwrite=True)
    with pytest.raises(FileNotFoundError, match="ct_scans"):
        ctich.convert(tmp_path / "nowhere", tmp_path / "x")
    assert ctich.main(["convert", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2


def _publish(folder: Path, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    sums = "".join(f"{hashlib.sha256(d).hexdigest()} {rel}\n" for rel, d in files.items())
    (folder / "SHA256SUMS.txt").write_text(sums)
    return folder.as_uri() + "/"


def test_download_from_a_local_mirror_verifies_checksums(ctich, tmp_path):
    files = {"ct_scans/049.nii": b"scan" * 1000, "masks/049.nii": b"mask" * 10, DIAG: b"PatientNumber\n49\n"}
    url = _publish(tmp_path / "mirror", files)
    out = ctich.download(tmp_path / "raw", base_url=url, opener=ctich.build_opener(url))
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data
    (tmp_path / "mirror" / "masks" / "049.nii").write_bytes(b"tampered")
    (out / "masks" / "049.nii").unlink()
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        ctich.download(tmp_path / "raw", base_url=url, opener=ctich.build_opener(url))
    assert not (out / "masks" / "049.nii.part").exists()


DIAG = "hemorrhage_diagnosis_raw_ct.csv"


class _RangeOpener:
    """A fake opener that serves bytes and honours HTTP Range requests (what PhysioNet does)."""

    def __init__(self, data: bytes):
        self.data, self.ranges = data, []

    def open(self, request, timeout=None):
        header = request.get_header("Range")
        self.ranges.append(header)
        start = int(header.split("=")[1].rstrip("-")) if header else 0
        response = io.BytesIO(self.data[start:])
        response.status = 206 if header else 200
        return response


def test_download_resumes_a_partial_file(ctich, tmp_path):
    data = bytes(range(256)) * 40
    dest = tmp_path / "ct_scans" / "050.nii"
    dest.parent.mkdir()
    (dest.parent / "050.nii.part").write_bytes(data[:1000])  # an interrupted download
    opener = _RangeOpener(data)
    ctich.download_file(
        "https://physionet.org/x", dest, sha256=hashlib.sha256(data).hexdigest(), opener=opener
    )
    assert opener.ranges == ["bytes=1000-"] and dest.read_bytes() == data
    ctich.download_file(
        "https://physionet.org/x", dest, sha256=hashlib.sha256(data).hexdigest(), opener=opener
    )
    assert len(opener.ranges) == 1  # complete and verified: not fetched again


def test_basic_auth_opener_is_built_without_network(ctich, monkeypatch):
    import urllib.request

    opener = ctich.build_opener("https://physionet.org/files/ct-ich/1.3.1/", "someone", "secret")
    assert any(isinstance(h, urllib.request.HTTPBasicAuthHandler) for h in opener.handlers)
