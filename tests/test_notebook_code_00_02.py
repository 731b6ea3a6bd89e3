"""The code notebooks 00-02 write out must stay what the library does, and the cohort card must stay the code's.

Notebook 02 writes out the context module's forward pass and the deep-supervision sum (cells tagged
``shown-code``); these tests run those cells' functions against :class:`hemolab.models.blocks.ContextModule`
and :class:`hemolab.models.CNNDS` with the same weights, so the shown code cannot silently drift.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

from hemolab.models import CNNDS
from hemolab.models.blocks import ContextModule
from hemolab.synth import BLEED_TYPES, PROFILE_SPECS, plan_cohort
from hemolab.synth.bleeds import BRIGHT_SPILL_HU, VOLUME_RANGE_ML
from hemolab.synth.card import NOT_SIMULATED, cohort_card
from hemolab.synth.scanner import NOISE_KERNEL_VOXELS

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NB02 = NOTEBOOKS / "02_cnn_ds_architecture.ipynb"
TAG = "shown-code"


def shown_code(path: Path) -> dict:
    """Execute a notebook's ``shown-code`` cells in a fresh namespace and return it."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and TAG in c.metadata.get("tags", [])]
    assert cells, f"{path.name} has no cell tagged {TAG!r}"
    namespace: dict = {"torch": torch}
    for cell in cells:
        exec(compile(cell.source, f"{path.name}:{TAG}", "exec"), namespace)  # noqa: S102 - the course's own code
    return namespace


@pytest.fixture(scope="module")
def nb02() -> dict:
    return shown_code(NB02)


def _randomise_norms(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.InstanceNorm3d) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("channels, dropout", [(4, 0.3), (6, 0.0)])
def test_context_module_written_out_equals_library(nb02, channels, dropout):
    torch.manual_seed(0)
    m = ContextModule(channels, dropout=dropout).eval()
    _randomise_norms(m)
    x = torch.randn(2, channels, 8, 6, 4)
    with torch.no_grad():
        torch.testing.assert_close(nb02["context_module"](x, m), m(x))


def test_context_module_written_out_drops_like_library_in_training(nb02):
    # in training mode, the same dropout draw must give the same output
    m = ContextModule(4, dropout=0.5).train()
    _randomise_norms(m)
    x = torch.randn(1, 4, 8, 8, 4)
    with torch.no_grad():
        torch.manual_seed(1)
        mine = nb02["context_module"](x, m)
        torch.manual_seed(1)
        ref = m(x)
    torch.testing.assert_close(mine, ref)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(base_filters=4, depth=3),
        dict(base_filters=2, depth=5),
        dict(base_filters=2, depth=4, deep_supervision=False),
        dict(base_filters=2, depth=4, upsample_mode="trilinear"),
    ],
)
def test_deep_supervision_sum_written_out_equals_network(nb02, kwargs):
    torch.manual_seed(0)
    net = CNNDS(**kwargs).eval()
    x = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        logits, maps = net.forward_with_intermediates(x)
        decoded = [maps[f"localisation[{i}]"] for i in range(net.depth - 1)]
        mode = kwargs.get("upsample_mode", "nearest")
        upscale = torch.nn.Upsample(
            scale_factor=2, mode=mode, **({"align_corners": False} if mode != "nearest" else {})
        )
        torch.testing.assert_close(nb02["deep_supervision_sum"](decoded, net.segmentation, upscale), logits)


def test_deep_supervision_sum_matches_a_loaded_state_dict(nb02):
    # the same weights, loaded into a second network, give the same sum (the notebook's exercise 3 hook)
    torch.manual_seed(0)
    a = CNNDS(base_filters=2, depth=4).eval()
    b = CNNDS(base_filters=2, depth=4, upsample_mode="trilinear").eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 1, 16, 16, 8)
    with torch.no_grad():
        logits, maps = b.forward_with_intermediates(x)
        decoded = [maps[f"localisation[{i}]"] for i in range(b.depth - 1)]
        up = torch.nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        torch.testing.assert_close(nb02["deep_supervision_sum"](decoded, b.segmentation, up), logits)


@pytest.mark.parametrize("profile", sorted(PROFILE_SPECS))
def test_cohort_card_states_the_generators_numbers(profile):
    card = cohort_card(profile)
    spec = PROFILE_SPECS[profile]
    n_tr, n_val, n_te = spec["split"]
    assert f"{spec['n_cases']} ({n_tr} train / {n_val} validation / {n_te} test)" in card
    assert f"{spec['matrix']}×{spec['matrix']}×" in card
    assert f"{spec['in_plane'][0]:g}–{spec['in_plane'][1]:g} mm" in card
    for t in BLEED_TYPES:
        assert f"`{t}`" in card
        if t != "none":
            lo, hi = VOLUME_RANGE_ML[t]
            assert f"{lo:g}–{hi:g}" in card
    assert f"{BRIGHT_SPILL_HU:g} HU" in card
    assert f"σ = {NOISE_KERNEL_VOXELS:g} voxel" in card
    assert "majority vote" in card and "What it does not simulate" in card
    assert all(item in card for item in NOT_SIMULATED)


def test_cohort_card_counts_match_the_plan():
    plans = plan_cohort(None, seed=0, profile="tiny")
    card = cohort_card("tiny")
    n_none = sum(p.bleed_type == "none" for p in plans)
    assert f"{n_none} without haemorrhage" in card
