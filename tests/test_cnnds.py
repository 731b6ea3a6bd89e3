"""CNN-DS (Arab 2020, Fig. 4): building blocks, shapes, parameters, receptive field, errors, inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hemolab.architectures import build_model
from hemolab.errors import HemolabError
from hemolab.models import CNNDS
from hemolab.models.blocks import ContextModule, LocalisationModule, UpsamplingModule
from hemolab.models.cnnds import check_input_size, parameter_counts
from hemolab.models.cnnds_analysis import (
    empirical_receptive_field_interval,
    parameter_table,
    receptive_field,
    receptive_field_interval,
    receptive_field_range,
)
from hemolab.models.inference import fast_inference_context, predict


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: one thread is faster, and far faster when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small(depth=3, ds=True, **kw):
    kw.setdefault("base_filters", 2)
    return CNNDS(1, 1, depth=depth, deep_supervision=ds, **kw)


# ------------------------------------------------------------------------------------- context module
def test_context_module_matches_hand_computed_reference():
    """One channel, kernels that are a scaled centre tap: every step can be written in NumPy."""
    torch.manual_seed(0)
    block = ContextModule(1, dropout=0.3).eval()  # eval: dropout off
    w1, b1, w2, b2 = 0.7, 0.1, -1.3, 0.05
    g1, be1, g2, be2 = 1.5, 0.2, 0.8, -0.3
    with torch.no_grad():
        for conv, w, b in ((block.conv1, w1, b1), (block.conv2, w2, b2)):
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1, 1] = w
            conv.bias.fill_(b)
        block.norm1.weight.fill_(g1)
        block.norm1.bias.fill_(be1)
        block.norm2.weight.fill_(g2)
        block.norm2.bias.fill_(be2)
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 3)).astype(np.float64)

    def inorm(a, g, b, eps=1e-5):
        return g * (a - a.mean()) / np.sqrt(a.var() + eps) + b

    def lrelu(a):
        return np.where(a > 0, a, 0.01 * a)

    y = w1 * lrelu(inorm(x, g1, be1)) + b1
    y = w2 * lrelu(inorm(y, g2, be2)) + b2
    expected = x + y
    got = block(torch.from_numpy(x).float()[None, None])[0, 0].detach().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_context_module_matches_monai_resblock():
    """Without dropout, the context module is MONAI's pre-activation ResBlock (SegResNet) plus conv biases."""
    from monai.networks.blocks.segresnet_block import ResBlock

    torch.manual_seed(1)
    ours = ContextModule(4, dropout=0.3).eval()
    peer = ResBlock(
        3, 4, norm=("INSTANCE", {"affine": True}), act=("LEAKYRELU", {"negative_slope": 0.01})
    ).eval()
    with torch.no_grad():
        for conv in (ours.conv1, ours.conv2):
            conv.bias.zero_()  # MONAI's convolutions have no bias
        peer.conv1.conv.weight.copy_(ours.conv1.weight)
        peer.conv2.conv.weight.copy_(ours.conv2.weight)
        for a, b in ((ours.norm1, peer.norm1), (ours.norm2, peer.norm2)):
            a.weight.uniform_(0.5, 1.5)
            a.bias.uniform_(-0.5, 0.5)
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    x = torch.randn(2, 4, 8, 6, 4)
    torch.testing.assert_close(ours(x), peer(x.clone()), rtol=1e-5, atol=1e-5)


def test_upsampling_and_localisation_modules():
    up = UpsamplingModule(8, 4)
    loc = LocalisationModule(8, 4)
    x = torch.randn(1, 8, 3, 4, 5)
    assert up(x).shape == (1, 4, 6, 8, 10)
    assert loc(torch.randn(1, 8, 6, 8, 10)).shape == (1, 4, 6, 8, 10)
    # voxel repetition: every 2x2x2 block of the up-scaled map is one voxel of the input
    rep = up.upscale(x)
    torch.testing.assert_close(rep[:, :, ::2, ::2, ::2], x)
    torch.testing.assert_close(rep[:, :, 1::2, 1::2, 1::2], x)
    from monai.networks.blocks import UpSample

    torch.testing.assert_close(
        rep, UpSample(3, scale_factor=2, mode="nontrainable", interp_mode="nearest", align_corners=None)(x)
    )


# ----------------------------------------------------------------------------------------- the network
@pytest.mark.parametrize("depth", [3, 4, 5, 6])
@pytest.mark.parametrize("ds", [True, False])
def test_output_shape_all_depths(depth, ds):
    m = 2 ** (depth - 1)
    net = _small(depth, ds).eval()
    x = torch.randn(2, 1, m, 2 * m, m)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 1, m, 2 * m, m)
    assert len(net.segmentation) == (min(3, depth - 1) if ds else 1)
    assert torch.isfinite(out).all()


def test_two_output_channels_and_named_structure():
    net = CNNDS(in_channels=2, out_channels=2, base_filters=4, depth=4)
    assert net(torch.randn(1, 2, 16, 16, 8)).shape == (1, 2, 16, 16, 8)
    names = dict(net.named_children())
    for key in ("entry", "down", "context", "upsample", "localisation", "segmentation"):
        assert key in names
    assert (
        len(net.context) == 4 and len(net.down) == 3 and len(net.upsample) == 3 and len(net.localisation) == 3
    )
    assert net.channels == [4, 8, 16, 32]
    assert net.down[0].stride == (2, 2, 2) and net.down[0].kernel_size == (3, 3, 3)
    assert all(s.kernel_size == (1, 1, 1) for s in net.segmentation)


def test_deep_supervision_output_is_the_upsampled_sum():
    torch.manual_seed(0)
    net = _small(4, True).eval()
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        out, maps = net.forward_with_intermediates(x)
        up = nn.Upsample(scale_factor=2, mode="nearest")
        expected = up(up(maps["segmentation[2]"]) + maps["segmentation[1]"]) + maps["segmentation[0]"]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, maps["sum[0]"])
    assert maps["segmentation[2]"].shape[2:] == (4, 4, 2)


@pytest.mark.parametrize("ds", [True, False])
def test_gradients_reach_every_segmentation_layer(ds):
    torch.manual_seed(0)
    net = _small(4, ds)
    net(torch.randn(1, 1, 16, 16, 8)).square().mean().backward()
    for seg in net.segmentation:
        assert seg.weight.grad is not None and seg.weight.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None, name


def _conv(cin, cout, k=3):
    return k**3 * cin * cout + cout


def _expected_parameters(depth, base, cin=1, cout=1, ds=True):
    ch = [base * 2**i for i in range(depth)]
    n = _conv(cin, ch[0])
    for i, c in enumerate(ch):
        n += 2 * _conv(c, c) + 2 * 2 * c  # context: two convs + two affine instance norms
        if i > 0:
            n += _conv(ch[i - 1], c)  # stride-2 conv
    for i in range(depth - 1):
        c = ch[i]
        n += _conv(ch[i + 1], c) + 2 * c  # up-sampling conv + norm
        n += _conv(2 * c, 2 * c) + 2 * 2 * c + _conv(2 * c, c, 1) + 2 * c  # localisation
    for i in range(min(3, depth - 1) if ds else 1):
        n += _conv(ch[i], cout, 1)
    return n


@pytest.mark.parametrize("depth", [3, 4, 5, 6])
def test_parameter_counts_per_depth(depth):
    table = {r["depth"]: r for r in parameter_table((depth,), base_filters=16)}
    row = table[depth]
    assert row["total"] == _expected_parameters(depth, 16)
    assert row["total_without_ds"] == _expected_parameters(depth, 16, ds=False)
    assert row["contracting"] + row["expansive"] + row["segmentation"] == row["total"]
    # deep supervision costs only the coarser 1x1x1 segmentation layers
    extra = sum(16 * 2**i + 1 for i in range(1, min(3, depth - 1)))
    assert row["total"] - row["total_without_ds"] == extra


def test_parameter_count_of_the_paper_default():
    net = CNNDS()  # base 16, depth 5
    assert (
        parameter_counts(net)["total"]
        == sum(p.numel() for p in net.parameters())
        == _expected_parameters(5, 16)
    )


def test_determinism_under_seed():
    from hemolab.config import seed_everything

    x = torch.randn(1, 1, 16, 16, 8)
    outs = []
    for _ in range(2):
        seed_everything(3)
        net = _small(4).train()  # dropout active: same seed, same masks
        outs.append(net(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_eval_is_deterministic_and_train_uses_dropout():
    torch.manual_seed(0)
    net = CNNDS(1, 1, base_filters=4, depth=3, dropout=0.5)
    x = torch.randn(1, 1, 16, 16, 8)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
        net.train()
        assert not torch.equal(net(x), net(x))


# --------------------------------------------------------------------------------------------- errors
def test_invalid_size_names_nearest_valid_sizes():
    net = _small(5)
    with pytest.raises(HemolabError) as err:
        net(torch.randn(1, 1, 100, 128, 64))
    msg = str(err.value)
    assert "x=100" in msg and "96 or 112" in msg and "multiple of 16" in msg
    with pytest.raises(HemolabError, match=r"z=8 \(nearest valid: 16\)"):
        check_input_size((16, 16, 8), 5)


def test_wrong_ndim_and_channels():
    net = _small(3)
    with pytest.raises(HemolabError, match="5D tensor"):
        net(torch.randn(1, 16, 16, 8))
    with pytest.raises(HemolabError, match="1 input channel"):
        net(torch.randn(1, 3, 16, 16, 8))
    with pytest.raises(HemolabError):
        CNNDS(depth=1)
    with pytest.raises(HemolabError):
        CNNDS(dropout=1.0)


def test_build_model():
    net = build_model("cnnds", depth=3, base_filters=4, deep_supervision=False)
    assert isinstance(net, CNNDS) and net.depth == 3 and not net.deep_supervision
    assert isinstance(build_model("CNNDS", **net.model_kwargs()), CNNDS)
    with pytest.raises(HemolabError, match="unknown network"):
        build_model("resnet")
    with pytest.raises(HemolabError, match="cannot build"):
        build_model("cnnds", depht=3)


# ---------------------------------------------------------------------------------- shapes and fields
def test_level_shapes_match_a_real_forward():
    net = _small(4)
    rows = net.level_shapes((32, 16, 8))
    shapes = {r["module"]: r["shape"] for r in rows}
    with torch.no_grad():
        out, maps = net.forward_with_intermediates(torch.randn(1, 1, 32, 16, 8))
    for key, t in maps.items():
        if key in shapes:
            assert shapes[key] == tuple(t.shape), key
    assert shapes["output"] == tuple(out.shape)
    assert shapes["context[3]"] == (1, 16, 4, 2, 1)
    full = {r["module"]: r["shape"] for r in CNNDS().level_shapes((128, 128, 64))}
    assert full["context[4]"] == (1, 256, 8, 8, 4)


@pytest.mark.parametrize("depth", [3, 4, 5])
def test_receptive_field_analytic_equals_gradient(depth):
    """Exact (first, last) input voxel of the field, at every position modulo 2**(depth-1)."""
    m = 2 ** (depth - 1)
    size = (receptive_field(depth) // m + 3) * m  # room for the whole field around the centre
    positions = list(range(size // 2 - m // 2, size // 2 + m // 2 + 1, 1 if depth < 5 else 3))
    measured = empirical_receptive_field_interval(depth, size=size, position=positions)
    assert measured == [receptive_field_interval(depth, p) for p in positions]
    lo, hi = receptive_field_range(depth)
    assert receptive_field(depth) == hi >= lo
    assert max(b - a + 1 for a, b in measured) == hi


def test_receptive_field_along_z():
    assert empirical_receptive_field_interval(3, size=64, axis=2, position=30) == receptive_field_interval(
        3, 30
    )


def test_receptive_field_values():
    assert receptive_field(3) == 49
    assert receptive_field_range(5) == (205, 221)
    assert receptive_field(6) > receptive_field(5)


# ----------------------------------------------------------------------------------------- inference
def test_predict_fast_close_to_plain():
    torch.manual_seed(0)
    net = CNNDS(1, 1, base_filters=4, depth=3)
    x = torch.rand(1, 1, 32, 32, 16)
    plain = predict(net, x, fast=False)
    fast = predict(net, x, fast=True)
    assert plain.shape == fast.shape == (1, 1, 32, 32, 16) and fast.dtype == torch.float32
    assert 0.0 <= float(fast.min()) and float(fast.max()) <= 1.0
    assert float((plain - fast).abs().max()) < 0.05
    with fast_inference_context("cpu", low_precision=False):
        torch.testing.assert_close(torch.sigmoid(net(x)), plain)
    two = predict(CNNDS(1, 2, base_filters=4, depth=3), x, fast=False)
    assert two.shape == (1, 1, 32, 32, 16)


def test_benchmark_script_runs(tmp_path, repo_root):
    """benchmarks/bench_cnnds.py end to end on a toy size (keeps the script from rotting)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_cnnds", repo_root / "benchmarks" / "bench_cnnds.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    args = [
        "--size",
        "16",
        "16",
        "8",
        "--base-filters",
        "2",
        "--depth",
        "3",
        "--repeats",
        "1",
        "--no-pipeline",
    ]
    assert bench.main([*args, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    variants = [r["variant"] for r in res["network"]]
    assert variants[0] == "eager fp32 (no_grad)" and "hemolab predict(fast=True)" in variants
    assert all("median_s" in r for r in res["network"])
    assert res["network"][0]["speed_up_vs_eager_fp32"] == 1.0
    assert [r["variant"] for r in res["training"]][0] == "fp32" and res["training"][0]["steps_per_s"] > 0


def test_upsample_mode_is_a_hook_for_the_exercises():
    """``upsample_mode="trilinear"`` swaps voxel repetition for interpolation, in the decoder and the DS sum."""
    x = torch.rand(1, 1, 16, 16, 8)
    torch.manual_seed(0)
    nearest = CNNDS(base_filters=4, depth=3, dropout=0.0).eval()
    torch.manual_seed(0)
    linear = CNNDS(base_filters=4, depth=3, dropout=0.0, upsample_mode="trilinear").eval()
    assert linear.segmentation_upscale.mode == "trilinear" and linear.upsample[0].upscale.mode == "trilinear"
    with torch.inference_mode():
        a, b = nearest(x), linear(x)
    assert a.shape == b.shape == (1, 1, 16, 16, 8) and not torch.allclose(a, b)
    assert build_model("cnnds", **linear.model_kwargs()).upsample_mode == "trilinear"
    with pytest.raises(HemolabError, match="upsample_mode"):
        CNNDS(upsample_mode="bicubic")
