"""The Patel 3D CNN (Patel 2019, Fig. 7; docs/methods.md §2): size arithmetic, crops, parameters, shapes."""

from __future__ import annotations

import pytest
import torch

from hemolab.errors import HemolabError
from hemolab.models.patel import (
    Patel3DCNN,
    count_parameters,
    format_size_table,
    patel_output_size,
    patel_size_table,
    valid_input_sizes,
)


@pytest.mark.parametrize(
    ("n", "out"), [(92, 4), (100, 12), (108, 20), (116, 28), (124, 36), (132, 44), (188, 100)]
)
def test_output_size_valid(n, out):
    assert Patel3DCNN.output_size(n) == (out, out, out)
    assert patel_output_size((n, 124, 92)) == (out, 36, 4)


def test_valid_sizes_are_4_mod_8_from_92():
    sizes = valid_input_sizes(1, 300)
    assert sizes[0] == 92
    assert all(n % 8 == 4 for n in sizes)
    assert sizes == list(range(92, 301, 8))


@pytest.mark.parametrize(
    ("n", "below", "above"),
    [(120, "116", "124"), (125, "124", "132"), (93, "92", "100"), (128, "124", "132")],
)
def test_output_size_invalid_names_nearest(n, below, above):
    with pytest.raises(HemolabError) as err:
        Patel3DCNN.output_size(n)
    msg = str(err.value)
    assert f"{below} (output {int(below) - 88})" in msg and f"{above} (output {int(above) - 88})" in msg


@pytest.mark.parametrize("n", [1, 36, 60, 84, 88, 91])
def test_output_size_too_small(n):
    with pytest.raises(HemolabError, match="92 \\(output 4\\)"):
        Patel3DCNN.output_size(n)


def test_crops_at_124_are_4_16_40():
    rows = patel_size_table(124)
    crops = [r.operation for r in rows if r.operation.startswith("concat")]
    assert crops == [
        "concat encoder 3 cropped by 4 per side",
        "concat encoder 2 cropped by 16 per side",
        "concat encoder 1 cropped by 40 per side",
    ]
    assert rows[-1].size == (36, 36, 36)
    # channels of Fig. 7: 768, 384, 192 after concatenation
    assert [r.channels for r in rows if r.operation.startswith("concat")] == [768, 384, 192]
    assert "cropped by 40 per side" in format_size_table(rows)


def test_crops_are_the_real_ones_in_forward(monkeypatch):
    """The crop the forward pass applies equals the table (4, 16, 40 at 124^3), checked by hooking it."""
    import hemolab.models.patel as patel

    seen = []
    real = patel.center_crop

    def spy(x, size):
        seen.append((x.shape[2] - size[0]) // 2)
        return real(x, size)

    monkeypatch.setattr(patel, "center_crop", spy)
    model = Patel3DCNN(base_filters=1).eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 1, 124, 124, 124))
    assert seen == [4, 16, 40]
    assert y.shape == (1, 2, 36, 36, 36)


def test_parameter_count_base_32():
    # conv weights (no bias before BatchNorm) 16,313,184 + BatchNorm 2 x 2,336 + head 64*2 + 2 = 16,317,986
    model = Patel3DCNN()
    assert count_parameters(model) == 16_317_986
    assert abs(count_parameters(model) - 16e6) / 16e6 < 0.03  # "about 16 M" (paper)


def test_forward_shapes_and_logits():
    model = Patel3DCNN(base_filters=2).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 1, 92, 100, 108))
    assert y.shape == (2, 2, 4, 12, 20)
    p = torch.softmax(y, 1)
    assert torch.allclose(p.sum(1), torch.ones_like(p[:, 0]))


def test_forward_rejects_bad_input():
    model = Patel3DCNN(base_filters=2)
    with pytest.raises(HemolabError, match="Nearest valid: 92"):
        model(torch.zeros(1, 1, 96, 92, 92))
    with pytest.raises(HemolabError, match=r"\(B, 1, x, y, z\)"):
        model(torch.zeros(1, 92, 92, 92))


def test_thick_slice_variant():
    assert Patel3DCNN.output_size((124, 124, 40), thick_slice=True) == (36, 36, 12)
    model = Patel3DCNN(base_filters=2, thick_slice=True).eval()
    assert model.output_size((124, 124, 40)) == (36, 36, 12)
    assert model.output_size((92, 92, 29)) == (4, 4, 1)  # any z >= 29; z loses 28 (14 convolutions)
    assert model.output_size((92, 92, 33)) == (4, 4, 5)
    with torch.no_grad():
        y = model(torch.zeros(1, 1, 92, 92, 33))
    assert y.shape == (1, 2, 4, 4, 5)
    with pytest.raises(HemolabError, match="29"):
        model.output_size((124, 124, 20))
    rows = patel_size_table((124, 124, 40), thick_slice=True)
    crops = [r.operation for r in rows if r.operation.startswith("concat")]
    assert crops[-1] == "concat encoder 1 cropped by (40, 40, 10) per side"
    # the same width has the same parameters (only pooling changes)
    assert count_parameters(Patel3DCNN(base_filters=2, thick_slice=True)) == count_parameters(
        Patel3DCNN(base_filters=2)
    )


def test_upsampling_is_repetition_and_dropout_at_bottom():
    model = Patel3DCNN(base_filters=2)
    x = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    up = model.upsample(x)
    assert torch.equal(up[0, 0, :2, :2, :2], torch.full((2, 2, 2), 0.0))
    assert torch.equal(up, x.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4))
    assert isinstance(model.dropout, torch.nn.Dropout3d) and model.dropout.p == 0.5


def test_valid_network_versus_padded_peer():
    """A padded U-Net (MONAI BasicUNet) keeps the size; the valid Patel network loses 88 per axis."""
    from monai.networks.nets import BasicUNet

    x = torch.zeros(1, 1, 96, 96, 96)
    peer = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(2, 2, 2, 2, 2, 2)).eval()
    with torch.no_grad():
        assert peer(x).shape[2:] == (96, 96, 96)
    with pytest.raises(HemolabError):
        Patel3DCNN.output_size(96)
    with torch.no_grad():
        assert Patel3DCNN(base_filters=1).eval()(torch.zeros(1, 1, 100, 100, 100)).shape[2:] == (12, 12, 12)
