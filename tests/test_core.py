"""The foundation: profiles, workspace, device choice, input validation, the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hemolab import config, validation
from hemolab.cli import build_parser, main
from hemolab.errors import HemolabError


def test_resolve_profile_explicit_and_env(monkeypatch):
    monkeypatch.delenv("HEMOLAB_PROFILE", raising=False)
    assert config.resolve_profile("TINY") == "tiny"
    monkeypatch.setenv("HEMOLAB_PROFILE", "small")
    assert config.resolve_profile(None) == "small"
    with pytest.raises(HemolabError, match="unknown profile"):
        config.resolve_profile("huge")


@pytest.mark.parametrize("cuda, expected", [(True, "full"), (False, "small")])
def test_auto_profile_follows_the_gpu(monkeypatch, cuda, expected):
    monkeypatch.delenv("HEMOLAB_PROFILE", raising=False)
    monkeypatch.setattr(config, "cuda_available", lambda: cuda)
    assert config.resolve_profile(None) == expected


def test_workspace_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HEMOLAB_WORKSPACE", str(tmp_path / "ws"))
    path = config.workspace_dir("checkpoints", "x")
    assert path == (tmp_path / "ws" / "checkpoints" / "x").resolve() and path.is_dir()


def test_cpu_device_and_refused_cuda(monkeypatch):
    import torch

    assert config.get_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.get_device().type == "cpu"
    with pytest.raises(HemolabError, match="no CUDA"):
        config.get_device("cuda")


@pytest.mark.parametrize("shape", [(8, 8), (1, 2, 8, 8, 8), (2, 8, 8, 8)])
def test_check_volume_rejects_wrong_dimensions(shape):
    with pytest.raises(HemolabError, match="3D volume"):
        validation.check_volume(np.zeros(shape))


def test_check_volume_rejects_nan():
    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 2, 3] = np.nan
    with pytest.raises(HemolabError, match="NaN"):
        validation.check_volume(arr)


def test_check_hu_rejects_normalised_and_out_of_range():
    ct = np.full((8, 8, 8), -1000.0)
    ct[2:6, 2:6, 2:6] = 40.0
    ct[0, 0, 0] = 1200.0
    assert validation.check_hu(ct).dtype == np.float32
    with pytest.raises(HemolabError, match="does not look like a CT"):
        validation.check_hu(ct / 1200.0)
    with pytest.raises(HemolabError, match="Hounsfield"):
        validation.check_hu(ct * 10)


def test_check_mask():
    m = np.zeros((4, 4, 4), np.uint8)
    assert validation.check_mask(m).dtype == bool
    with pytest.raises(HemolabError, match="empty"):
        validation.check_mask(m, require_nonempty=True)
    with pytest.raises(HemolabError, match="binary"):
        validation.check_mask(m + 0.5)


def test_check_same_shape_and_spacing():
    with pytest.raises(HemolabError, match="same shape"):
        validation.check_same_shape(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(HemolabError, match="positive"):
        validation.check_spacing((1.0, 0.0, 2.0))


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no sub-commands registered"
    for name, subparser in sub.choices.items():
        text = subparser.format_help()
        assert "usage: hemolab " + name in text
        for action in subparser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"hemolab {name} {action.option_strings} has no help text"


def test_python_dash_m_hemolab_help():
    proc = subprocess.run([sys.executable, "-m", "hemolab", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: hemolab" in proc.stdout


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: hemolab" in capsys.readouterr().out
