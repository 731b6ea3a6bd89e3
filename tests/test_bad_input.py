"""Bad input never gives a silent answer: every case of the issue through the CLI and the Python API.

Each bad input must stop with a :class:`~hemolab.errors.HemolabError` whose message names the file, what is
wrong and what to do; the CLI exits non-zero and writes nothing. The inputs that were handled well (missing
path, folder without DICOM, 2D/4D image, existing --out, bad labels in evaluate, the shipped tilted DICOM)
must stay so. The README's troubleshooting section lists the same cases.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hemolab.cli import main
from hemolab.errors import HemolabError, HemolabFileError
from hemolab.io import array_from_image, image_from_array, load_scan, read_scan, sample_scan_path, write_image
from hemolab.validation import (
    MAX_VOXEL_MM,
    MIN_AIR_FRACTION,
    MIN_BONE_FRACTION,
    MIN_FOV_MM,
    MIN_VOXELS_PER_AXIS,
    check_head_ct,
)

pytest.importorskip("hemolab.models.cnnds")
pytest.importorskip("hemolab.preprocess")


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_cohort, tmp_path_factory) -> Path:
    """A CNN-DS checkpoint from `hemolab train --profile tiny` (one epoch), trained once per session."""
    run = tmp_path_factory.mktemp("bad-input-run") / "run"
    args = ["train", "--data", str(tiny_cohort), "--profile", "tiny", "--out", str(run), "--epochs", "1"]
    assert main(args + ["--quiet"]) == 0
    return run / "best.pt"


@pytest.fixture(scope="session")
def head(tiny_cohort) -> sitk.Image:
    """A tiny-profile synthetic head CT (int16 HU) as stored in the cohort."""
    from hemolab.datasets import load_dataset

    return sitk.ReadImage(str(load_dataset(tiny_cohort).test[0].image_path))


def _phantom(shape, value_air=-1000.0) -> np.ndarray:
    """A head-like ball: air around a bony shell around brain (passes the intensity checks at any size)."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    arr = np.full(shape, value_air, np.float32)
    arr[r < 0.95] = 1000.0
    arr[r < 0.7] = 35.0
    return arr


@pytest.fixture(scope="session")
def bad(head, tmp_path_factory) -> dict[str, Path]:
    """The bad scans of the issue, written as files."""
    root = tmp_path_factory.mktemp("bad-scans")
    hu = array_from_image(head).astype(np.float32)
    files: dict[str, Path] = {}
    mri = (hu - hu.min()) / (hu.max() - hu.min()) * 4095.0  # intensities 0..4095, no air
    files["mri"] = write_image(image_from_array(mri.astype(np.int16), reference=head), root / "mri.nii.gz")
    nan = hu.copy()
    nan[20:30, 20:30, 6:9] = np.nan  # image_from_array refuses NaN, so write through SimpleITK directly
    nan_img = sitk.GetImageFromArray(nan.transpose(2, 1, 0))
    nan_img.CopyInformation(head)
    sitk.WriteImage(nan_img, str(root / "nan.nii.gz"))
    files["nan"] = root / "nan.nii.gz"
    whole = write_image(head, root / "whole.nii.gz").read_bytes()
    files["truncated"] = root / "truncated.nii.gz"
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    files["tiny_image"] = write_image(
        image_from_array(_phantom((5, 5, 5)), spacing=(1, 1, 1)), root / "five.nii.gz"
    )
    files["coarse"] = write_image(
        image_from_array(_phantom((12, 12, 8)), spacing=(30, 30, 30)), root / "coarse.nii.gz"
    )
    files["model_random"] = root / "model.pt"
    files["model_random"].write_bytes(np.random.default_rng(0).bytes(4096))
    return files


#: bad scan -> what the message must say (regex); each message also names the file.
SCAN_MESSAGES = {
    "mri": r"no air around the head.*Hounsfield",
    "nan": r"NaN",
    "truncated": r"cannot be read completely.*truncated",
    "tiny_image": rf"5x5x5 voxels.*at least {MIN_VOXELS_PER_AXIS} voxels",
    "coarse": r"voxels of \(30, 30, 30\) mm.*at most 10 mm",
}


def _segment(scan, model, out: Path, *extra: str) -> int:
    return main(["segment", str(scan), "--model", str(model), "--out", str(out), *extra])


# ---------------------------------------------------------------------------------------- the one check


def test_limits_are_the_documented_ones():
    assert (MIN_AIR_FRACTION, MIN_BONE_FRACTION) == (0.05, 0.005)
    assert (MIN_FOV_MM, MIN_VOXELS_PER_AXIS, MAX_VOXEL_MM) == (100.0, 8, 10.0)


def test_real_scan_and_tiny_cohort_pass(tiny_cohort):
    from hemolab.datasets import validate_dataset

    image, info = load_scan(sample_scan_path())
    assert any("gantry tilt" in c for c in info["corrections"])  # odd but usable: corrected and said so
    check_head_ct(image, name="the GE sample scan")
    ds = validate_dataset(tiny_cohort)  # every case of the tiny profile, labels included
    assert len(ds.cases) == 8


@pytest.mark.parametrize("profile", ["small", "full"])
def test_synthetic_heads_of_every_profile_pass(profile):
    from hemolab.synth import generate_case, plan_cohort

    plans = plan_cohort(None, 0, profile)
    for plan in plans[:2] if profile == "small" else plans[:1]:  # a full-size head takes ~10 s
        case = generate_case(plan)
        check_head_ct(np.asarray(case.image), case.grid.spacing, name=f"{profile} {plan.case_id}")


def test_padding_is_corrected_and_said_so(head, tmp_path):
    arr = array_from_image(head).astype(np.float32)
    arr[:3] = -3024.0  # what many scanners write outside the reconstruction circle
    path = write_image(image_from_array(arr.astype(np.int16), reference=head), tmp_path / "padded.nii.gz")
    image, info = load_scan(path)
    assert any("field of view" in c for c in info["corrections"])
    check_head_ct(image)  # passes once corrected
    with pytest.raises(HemolabError, match=r"padding.*read_scan"):  # the raw array names the way out
        check_head_ct(arr, head.GetSpacing(), name="padded")


def test_check_head_ct_on_arrays():
    good = _phantom((40, 40, 20))
    check_head_ct(good, (5.0, 5.0, 8.0))
    with pytest.raises(HemolabError, match="NaN"):
        bad = good.copy()
        bad[3, 3, 3] = np.nan
        check_head_ct(bad, (5.0, 5.0, 8.0))
    with pytest.raises(HemolabError, match="no air"):
        check_head_ct(good - good.min(), (5.0, 5.0, 8.0))
    with pytest.raises(HemolabError, match="no skull"):
        check_head_ct(np.clip(good, -1000, 100), (5.0, 5.0, 8.0))
    with pytest.raises(HemolabError, match=r"covers only 40 x 40 x 20 mm"):
        check_head_ct(good, (1.0, 1.0, 1.0))
    with pytest.raises(HemolabError, match=r"spacing.*positive"):
        check_head_ct(good, (0.0, 1.0, 1.0))


# ----------------------------------------------------------------------------------------- hemolab segment


@pytest.mark.parametrize("which", list(SCAN_MESSAGES))
def test_segment_cli_refuses_bad_scans(which, bad, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "mask.nii.gz"
    prob = tmp_path / "prob.nii.gz"
    assert _segment(bad[which], tiny_checkpoint, out, "--probability", str(prob)) == 2
    err = capsys.readouterr().err
    assert err.startswith("hemolab segment: error: ") and "Traceback" not in err
    assert bad[which].name in err
    assert re.search(SCAN_MESSAGES[which], err, flags=re.S), err
    assert not out.exists() and not prob.exists()


@pytest.mark.parametrize("which", ["mri", "nan", "truncated"])
def test_read_scan_refuses_bad_content(which, bad):
    error = HemolabFileError if which == "truncated" else HemolabError
    with pytest.raises(error, match=SCAN_MESSAGES[which]):
        read_scan(bad[which])


@pytest.mark.parametrize("which", ["tiny_image", "coarse"])
def test_size_limits_through_the_api(which, bad):
    image = read_scan(bad[which])  # a reader also reads small phantoms; the size is checked where it is used
    with pytest.raises(HemolabError, match=SCAN_MESSAGES[which]):
        check_head_ct(image, name=f"the scan {bad[which].name}", source=bad[which])


@pytest.mark.parametrize("which", ["mri", "tiny_image", "coarse"])
def test_segment_scan_refuses_bad_scans(which, bad, tiny_checkpoint):
    from hemolab.architectures import load_checkpoint, segment_scan

    model, meta = load_checkpoint(tiny_checkpoint, device="cpu")
    image = sitk.Cast(sitk.ReadImage(str(bad[which])), sitk.sitkFloat32)
    with pytest.raises(HemolabError, match=SCAN_MESSAGES[which]):
        segment_scan(image, model, meta)


def _checkpoint_files(tiny_checkpoint, bad, tmp_path) -> dict[str, Path]:
    import torch

    files = {"random bytes": bad["model_random"]}
    files["no format"] = tmp_path / "state.pt"
    torch.save({"conv.weight": torch.zeros(2)}, files["no format"])
    files["pickled object"] = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), files["pickled object"])
    whole = tiny_checkpoint.read_bytes()
    files["truncated"] = tmp_path / "cut.pt"
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    files["not a dict"] = tmp_path / "list.pt"
    torch.save([1, 2, 3], files["not a dict"])
    return files


CHECKPOINT_MESSAGES = {
    "random bytes": "it is not a PyTorch file",
    "no format": "it holds no 'format' key",
    "pickled object": "holds Python objects other than tensors",
    "truncated": "damaged or incomplete PyTorch file",
    "not a dict": "holds a list, not a dictionary",
}


def test_not_a_hemolab_checkpoint(tiny_checkpoint, bad, head, tmp_path, capsys):
    from hemolab.architectures import load_checkpoint

    scan = write_image(head, tmp_path / "scan.nii.gz")
    out = tmp_path / "mask.nii.gz"
    for what, path in _checkpoint_files(tiny_checkpoint, bad, tmp_path).items():
        assert _segment(scan, path, out) == 2, what
        err = capsys.readouterr().err
        assert re.search(rf"{re.escape(str(path))} is not a (readable )?hemolab checkpoint: ", err), err
        assert CHECKPOINT_MESSAGES[what] in err, (what, err)
        assert "weights_only" not in err and "hemolab train" in err
        assert not out.exists()
        with pytest.raises(HemolabError, match=CHECKPOINT_MESSAGES[what]) as info:
            load_checkpoint(path, device="cpu")
        text = str(info.value)
        assert "weights_only" not in text and "weights-only" not in text.lower()
        # nothing chained either: a notebook's traceback must not show PyTorch's advice
        assert info.value.__cause__ is None and info.value.__context__ is None


# ------------------------------------------------------------------------------------ must stay handled


def test_inputs_that_were_handled_well_stay_so(tiny_checkpoint, head, tmp_path, capsys):
    out = tmp_path / "mask.nii.gz"
    assert _segment(tmp_path / "missing.nii.gz", tiny_checkpoint, out) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _segment(tmp_path / "empty", tiny_checkpoint, out) == 2
    assert "no DICOM series" in capsys.readouterr().err
    sitk.WriteImage(sitk.GetImageFromArray(np.full((16, 16), 30, np.int16)), str(tmp_path / "slice.nii.gz"))
    assert _segment(tmp_path / "slice.nii.gz", tiny_checkpoint, out) == 2
    assert "2D" in capsys.readouterr().err
    sitk.WriteImage(sitk.JoinSeries([head, head]), str(tmp_path / "series.nii.gz"))
    assert _segment(tmp_path / "series.nii.gz", tiny_checkpoint, out) == 2
    assert "4D" in capsys.readouterr().err
    assert not out.exists()
    out.write_bytes(b"keep me")
    assert _segment(write_image(head, tmp_path / "scan.nii.gz"), tiny_checkpoint, out) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"


def test_shipped_tilted_dicom_segments(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "mask.nii.gz"
    assert _segment(sample_scan_path(), tiny_checkpoint, out) == 0
    assert "mL" in capsys.readouterr().out and out.is_file()


def test_evaluate_refuses_bad_labels(head, tmp_path, capsys):
    from hemolab.commands.evaluate import evaluate_folders

    label = np.zeros(head.GetSize(), np.uint8)
    label[20:30, 20:30, 5:9] = 1
    for sub in ("ref", "two", "grid", "cut"):
        (tmp_path / sub).mkdir()
    ref = write_image(image_from_array(label, reference=head), tmp_path / "ref" / "case_a.nii.gz")
    write_image(image_from_array(label * 2, reference=head), tmp_path / "two" / "case_a.nii.gz")
    moved = image_from_array(label, spacing=head.GetSpacing(), origin=np.add(head.GetOrigin(), 7.0))
    write_image(moved, tmp_path / "grid" / "case_a.nii.gz")
    whole = ref.read_bytes()
    (tmp_path / "cut" / "case_a.nii.gz").write_bytes(whole[: len(whole) // 2])
    expected = {"two": "binary", "grid": "different voxel grids", "cut": "cannot be read completely"}
    for sub, message in expected.items():
        csv = tmp_path / f"{sub}.csv"
        args = ["evaluate", "--pred", str(tmp_path / sub), "--ref", str(tmp_path / "ref"), "--out", str(csv)]
        assert main(args) == 2, sub
        err = capsys.readouterr().err
        assert message in err and "case_a" in err, err
        assert not csv.exists()
        with pytest.raises(HemolabError, match=message):
            evaluate_folders(tmp_path / sub, tmp_path / "ref")


# ------------------------------------------------------------------------- a dataset with broken cases


@pytest.fixture
def broken_dataset(tiny_cohort, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the tiny cohort with three broken training cases: truncated image, label on another grid,
    label values {0, 2}."""
    from hemolab.datasets import load_dataset

    root = tmp_path / "broken"
    shutil.copytree(tiny_cohort, root)
    ds = load_dataset(root)
    cases = ds.train[:3]
    whole = cases[0].image_path.read_bytes()
    cases[0].image_path.write_bytes(whole[: len(whole) // 2])
    lab = sitk.ReadImage(str(cases[1].label_path))
    lab.SetOrigin(tuple(o + 5.0 for o in lab.GetOrigin()))
    sitk.WriteImage(lab, str(cases[1].label_path))
    lab = sitk.ReadImage(str(cases[2].label_path))
    arr = array_from_image(lab)
    arr = arr * 2
    arr[0, 0, 0] = 2  # values {0, 2} even for a case without bleed
    write_image(image_from_array(arr, reference=lab), cases[2].label_path, overwrite=True)
    return root, [c.case_id for c in cases]


def test_validate_dataset_names_every_broken_case(broken_dataset):
    from hemolab.datasets import validate_dataset

    root, broken = broken_dataset
    with pytest.raises(HemolabError, match=r"3 of \d+ case\(s\)") as info:
        validate_dataset(root)
    text = str(info.value)
    for cid, what in zip(
        broken, ("cannot be read completely", "different voxel grids", "binary"), strict=True
    ):
        line = next(line for line in text.splitlines() if f"case {cid} " in line)
        assert what in line, line


def test_train_cli_stops_before_the_first_epoch(broken_dataset, tmp_path, capsys):
    root, broken = broken_dataset
    run = tmp_path / "run"
    args = ["train", "--data", str(root), "--profile", "tiny", "--out", str(run), "--epochs", "1", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert all(cid in err for cid in broken), err
    assert not run.exists()  # nothing started
    dataset_json = json.loads((root / "dataset.json").read_text())
    assert dataset_json["training"]  # untouched


def test_train_cnnds_validates_first(broken_dataset, tmp_path):
    from hemolab.training import train_cnnds

    root, _ = broken_dataset
    with pytest.raises(HemolabError, match=r"3 of \d+ case\(s\)"):
        train_cnnds(root, "tiny", tmp_path / "run", progress=False, device="cpu", max_epochs=1)


def test_train_patel_validates_first(broken_dataset, tmp_path):
    from hemolab.training import train_patel

    root, _ = broken_dataset
    with pytest.raises(HemolabError, match=r"3 of \d+ case\(s\)"):
        train_patel(root, "tiny", tmp_path / "run", max_epochs=1, progress=False, device="cpu")
