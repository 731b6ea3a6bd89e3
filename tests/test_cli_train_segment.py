"""`hemolab train`, `hemolab segment` and `hemolab demo` end to end on the tiny cohort."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from hemolab.cli import main

pytest.importorskip("hemolab.models.cnnds")
pytest.importorskip("hemolab.preprocess")


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    rc = main(
        [
            "train",
            "--data",
            str(tiny_cohort),
            "--profile",
            "tiny",
            "--out",
            str(run),
            "--epochs",
            "1",
            "--quiet",
        ]
    )
    assert rc == 0
    return run


def test_train_writes_run(trained, capsys):
    import pandas as pd

    assert (trained / "best.pt").is_file() and (trained / "last.pt").is_file()
    assert len(pd.read_csv(trained / "history.csv")) == 1


def test_train_refuses_existing_run_and_resumes(trained, tiny_cohort, capsys):
    args = ["train", "--data", str(tiny_cohort), "--profile", "tiny", "--out", str(trained), "--quiet"]
    assert main(args + ["--epochs", "1"]) == 2
    assert "resume" in capsys.readouterr().err  # the message names the way out
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    import pandas as pd

    assert pd.read_csv(trained / "history.csv")["epoch"].tolist() == [1, 2]


def test_segment_writes_mask_on_scan_grid(trained, tiny_cohort, tmp_path, capsys):
    from hemolab.datasets import load_dataset

    case = load_dataset(tiny_cohort).test[0]
    out = tmp_path / "mask.nii.gz"
    rc = main(["segment", str(case.image_path), "--model", str(trained / "best.pt"), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mL" in printed and "time" in printed
    mask, image = sitk.ReadImage(str(out)), sitk.ReadImage(str(case.image_path))
    assert mask.GetSize() == image.GetSize()
    np.testing.assert_allclose(mask.GetSpacing(), image.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-4)
    # refuses to overwrite, then does with --overwrite
    assert (
        main(["segment", str(case.image_path), "--model", str(trained / "best.pt"), "--out", str(out)]) == 2
    )
    assert "exists" in capsys.readouterr().err
    args = [
        "segment",
        str(case.image_path),
        "--model",
        str(trained / "best.pt"),
        "--out",
        str(out),
        "--overwrite",
    ]
    assert main(args) == 0


def test_clear_errors(tiny_cohort, tmp_path, capsys):
    from hemolab.datasets import load_dataset

    case = load_dataset(tiny_cohort).test[0]
    rc = main(
        [
            "segment",
            str(case.image_path),
            "--model",
            str(tmp_path / "nope.pt"),
            "--out",
            str(tmp_path / "m.nii.gz"),
        ]
    )
    assert rc == 2 and "not found" in capsys.readouterr().err
    rc = main(["train", "--data", str(tmp_path), "--profile", "tiny", "--out", str(tmp_path / "r")])
    assert rc == 2 and "dataset.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tiny_cohort), "--arch", "vgg", "--out", str(tmp_path / "r")])


def test_demo_runs_headless(tiny_cohort, capsys):
    # the tiny cohort of the session's workspace is reused; one epoch keeps it short
    assert main(["demo", "--profile", "tiny", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mean Dice" in out and "volume_ref_ml" in out and "[4/4]" in out


def test_train_patel_arch_is_dispatched(tiny_cohort, tmp_path, monkeypatch, capsys):
    """`--arch patel` goes through the registry entry; the CLI's choices are the registry's names."""
    import dataclasses

    from hemolab import architectures
    from hemolab.commands.train import ARCHITECTURE_NAMES
    from hemolab.training import History

    assert ARCHITECTURE_NAMES == tuple(architectures.ARCHITECTURES)
    calls = {}

    def fake_train_patel(data, profile, out, **kw):
        calls.update(data=data, profile=profile, out=out, **kw)
        return History()

    entry = dataclasses.replace(architectures.ARCHITECTURES["patel"], train=fake_train_patel)
    monkeypatch.setitem(architectures.ARCHITECTURES, "patel", entry)
    rc = main(
        [
            "train",
            "--data",
            str(tiny_cohort),
            "--arch",
            "patel",
            "--profile",
            "tiny",
            "--out",
            str(tmp_path / "p"),
        ]
    )
    assert rc == 0 and calls["profile"] == "tiny" and calls["out"] == tmp_path / "p"
