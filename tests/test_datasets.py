"""Tests of hemolab.datasets: the MSD-layout loader and the workspace cohort."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from hemolab.datasets import Case, Dataset, ensure_cohort, load_dataset
from hemolab.errors import HemolabError, HemolabFileError
from hemolab.io import array_from_image, image_from_array, write_image
from hemolab.synth.cohort import GENERATOR_RELEASE


def test_dataset_json_is_valid_msd(tiny_cohort):
    meta = json.loads((tiny_cohort / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "haemorrhage"}
    assert meta["numTraining"] == len(meta["training"]) == 6
    assert meta["numTest"] == len(meta["test"]) == 2
    train_ids = {e["image"].split("/")[-1][:-7] for e in meta["training"]}
    assert set(meta["validation"]) <= train_ids and len(meta["validation"]) == 1
    for entry in meta["training"] + meta["test"]:
        assert (tiny_cohort / entry["image"]).is_file() and (tiny_cohort / entry["label"]).is_file()
    for entry in meta["test"]:
        assert entry["image"].startswith("./imagesTs/") and entry["label"].startswith("./labelsTs/")
    with open(tiny_cohort / "cases.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    for col in (
        "case_id",
        "split",
        "bleed_type",
        "true_volume_ml",
        "reference_volume_ml",
        "spacing_x",
        "shape_z",
        "seed",
        "has_calcification",
    ):
        assert col in rows[0]


def test_loader_round_trip(tiny_cohort):
    ds = load_dataset(tiny_cohort)
    assert isinstance(ds, Dataset) and ds.root == tiny_cohort.resolve()
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (5, 1, 2)
    assert len(ds) == 8 and ds[ds.cases[0].case_id] is ds.cases[0]
    for case in ds.cases:
        assert isinstance(case, Case)
        assert case.split in ("train", "validation", "test")
        assert case.info["case_id"] == case.case_id and case.info["split"] == case.split
        img, lab = case.load_image(), case.load_label()
        assert img.GetPixelID() == sitk.sitkInt16 and lab.GetPixelID() == sitk.sitkUInt8
        assert (
            img.GetSize()
            == lab.GetSize()
            == (case.info["shape_x"], case.info["shape_y"], case.info["shape_z"])
        )
        assert img.GetSpacing() == pytest.approx(lab.GetSpacing())
        assert img.GetSpacing() == pytest.approx(
            (case.info["spacing_x"], case.info["spacing_y"], case.info["spacing_z"])
        )
        assert img.GetOrigin() == pytest.approx(lab.GetOrigin())
        arr, lab_arr = array_from_image(img), array_from_image(lab)
        assert arr.min() >= -1024 and arr.max() > 700  # HU with bone
        assert set(np.unique(lab_arr)) <= {0, 1}
        voxel_ml = np.prod(img.GetSpacing()) / 1000.0
        assert lab_arr.sum() * voxel_ml == pytest.approx(case.info["reference_volume_ml"], abs=1e-3)
        raters = case.load_raters()
        assert len(raters) == 3 and all(r.GetSize() == img.GetSize() for r in raters)
        votes = sum(array_from_image(r).astype(int) for r in raters)
        np.testing.assert_array_equal(lab_arr, (votes >= 2).astype(np.uint8))
        truth = array_from_image(case.load_truth())
        assert truth.sum() * voxel_ml == pytest.approx(case.info["true_volume_ml"], abs=1e-3)
    assert ds.table().shape[0] == 8
    assert "Dataset(" in repr(ds)


def test_ensure_cohort_reuses(tiny_cohort, capsys):
    again = ensure_cohort("tiny", seed=0)
    assert again == tiny_cohort
    assert "generating" not in capsys.readouterr().out


def test_ensure_cohort_generates_in_workspace(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEMOLAB_WORKSPACE", str(tmp_path))
    path = ensure_cohort("tiny", seed=4)
    assert path == (tmp_path / "data" / "synth-tiny-seed4").resolve()
    assert "generating" in capsys.readouterr().out
    mtime = (path / "dataset.json").stat().st_mtime_ns
    assert ensure_cohort("tiny", seed=4) == path
    assert (path / "dataset.json").stat().st_mtime_ns == mtime
    assert not [p for p in (tmp_path / "data").iterdir() if ".tmp-" in p.name]

    # a cohort an older generator wrote is moved aside, not reused and not deleted
    manifest = json.loads((path / "dataset.json").read_text())
    (path / "dataset.json").write_text(json.dumps({**manifest, "release": "1.0"}))
    (path / "mine.txt").write_text("a note the user left")
    assert ensure_cohort("tiny", seed=4) == path
    out = capsys.readouterr().out
    assert "older generator (release 1.0" in out and "generating" in out
    assert (tmp_path / "data" / "synth-tiny-seed4.release-1.0" / "mine.txt").is_file()
    assert json.loads((path / "dataset.json").read_text())["release"] == GENERATOR_RELEASE


def test_loader_errors(tmp_path):
    with pytest.raises(HemolabFileError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(HemolabFileError, match="dataset.json"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(HemolabError, match="JSON"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/a.nii.gz"}], "validation": ["zz"]})
    )
    with pytest.raises(HemolabError, match="validation"):
        load_dataset(tmp_path)


def test_plain_msd_dataset_without_extras(tmp_path):
    """A Decathlon folder without cases.csv or raters, with bare test paths, still loads."""
    img = image_from_array(np.zeros((4, 4, 2), np.int16), spacing=(1, 1, 2))
    write_image(img, tmp_path / "imagesTr" / "a.nii.gz")
    write_image(img, tmp_path / "labelsTr" / "a.nii.gz")
    write_image(img, tmp_path / "imagesTs" / "b.nii.gz")
    meta = {
        "name": "plain",
        "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}],
        "test": ["./imagesTs/b.nii.gz"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(tmp_path)
    assert [c.case_id for c in ds.train] == ["a"] and [c.case_id for c in ds.test] == ["b"]
    assert ds.test[0].label_path is None and ds.train[0].info == {}
    with pytest.raises(HemolabFileError, match="no label"):
        ds.test[0].load_label()
    with pytest.raises(HemolabFileError, match="rater"):
        ds.train[0].load_raters()
    assert ds.train[0].load_image().GetSize() == (4, 4, 2)
