"""Benchmark: tiled whole-scan inference of the Patel 3D CNN at the paper's size vs the paper's 104 s.

Patel 2019 ("Results") reports 104 ± 15 s per volume on an NVIDIA Titan X for the network (plus ~6 min
for the cranial-cavity segmentation). This script times hemolab's :func:`hemolab.segment.tiled_predict`
with the full-width network (base 32, ~16 M parameters) on a scan of the paper's size:

* ``--variant iso``: 124^3 input -> 36^3 output tiles on a 512 x 512 x 400 scan (Radboudumc:
  0.43 x 0.43 x 0.5 mm, 281-534 slices);
* ``--variant thick``: 124 x 124 x 40 -> 36 x 36 x 12 tiles on a 512 x 512 x 40 scan (PATCH, 5 mm).

Two configurations in the SAME run, so their ratio is fair:

* **baseline** -- eager fp32, one tile per forward pass, ``torch.no_grad``;
* **trick** -- ``torch.inference_mode`` with a batch of tiles per forward pass, plus bf16 autocast on a
  GPU (``--trick batch`` / ``batch+bf16``).

On a CPU a whole scan takes hours, so only ``--tiles`` tiles are timed and the time per scan is
*extrapolated* (tiles per scan x seconds per tile; the output says so). With ``--full-scan`` (meant for
a GPU) the whole scan is run through :func:`tiled_predict` and timed end to end.

Usage::

    python benchmarks/bench_patel.py                       # CPU: a few tiles, extrapolated
    python benchmarks/bench_patel.py --device cuda --full-scan --variant thick

Results are printed and written as JSON to ``workspace/benchmarks/bench_patel-<variant>-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np
import torch

PAPER_SECONDS = 104.0
SCANS = {"iso": ((512, 512, 400), (124, 124, 124)), "thick": ((512, 512, 40), (124, 124, 40))}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_tiles(
    model, device, input_size, n_tiles: int, batch: int, bf16: bool, inference_mode: bool
) -> float:
    """Seconds per tile: ``n_tiles`` random tiles in batches of ``batch`` (after one warm-up batch)."""
    ctx = torch.inference_mode if inference_mode else torch.no_grad
    x = torch.rand(batch, 1, *input_size, device=device)
    with ctx(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        model(x)  # warm-up (cuDNN autotuning, allocator)
        _sync(device)
        n_batches = max(1, math.ceil(n_tiles / batch))
        t0 = time.perf_counter()
        for _ in range(n_batches):
            model(x)
        _sync(device)
    return (time.perf_counter() - t0) / (n_batches * batch)


def time_scan(model, device, scan_shape, input_size, output_size, batch: int, bf16: bool, stride) -> float:
    """Seconds for :func:`hemolab.segment.tiled_predict` over a whole random scan (normalised values)."""
    from hemolab.segment import tiled_predict

    vol = np.random.default_rng(0).random(scan_shape, dtype=np.float32)
    _sync(device)
    t0 = time.perf_counter()
    tiled_predict(
        model, vol, input_size=input_size, output_size=output_size, device=device,
        batch_size=batch, amp=bf16, stride=stride, progress=False,
    )  # fmt: skip
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    from hemolab.config import get_device, workspace_dir
    from hemolab.models.patel import Patel3DCNN, count_parameters
    from hemolab.segment import default_stride, tile_grid

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--variant",
        choices=sorted(SCANS),
        default="iso",
        help="iso: 124^3 tiles, 512x512x400 scan; thick: 124x124x40 tiles, 512x512x40 scan",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if available)")
    p.add_argument("--base-filters", type=int, default=32, help="network width (the paper: 32)")
    p.add_argument(
        "--tiles", type=int, default=4, help="tiles to time per configuration when not --full-scan"
    )
    p.add_argument("--batch", type=int, default=4, help="tiles per forward pass for the trick")
    p.add_argument(
        "--trick",
        choices=("batch", "batch+bf16"),
        default=None,
        help="default: batch+bf16 on CUDA, batch on CPU",
    )
    p.add_argument("--full-scan", action="store_true", help="run whole scans through tiled_predict (GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    trick = args.trick or ("batch+bf16" if device.type == "cuda" else "batch")
    bf16 = trick == "batch+bf16"
    scan_shape, input_size = SCANS[args.variant]
    torch.manual_seed(0)
    model = Patel3DCNN(base_filters=args.base_filters, thick_slice=args.variant == "thick").to(device).eval()
    output_size = model.output_size(input_size)
    n_paper = len(tile_grid(scan_shape, input_size, output_size))
    aligned = default_stride(model, output_size)
    n_aligned = len(tile_grid(scan_shape, input_size, output_size, aligned))

    print(
        f"Patel 3D CNN ({args.variant}, base {args.base_filters}, {count_parameters(model):,} parameters) on "
        f"{device} | scan {scan_shape} | tiles {input_size} -> {output_size}: {n_paper} edge to edge (paper), "
        f"{n_aligned} aligned to the pooling grid (stride {aligned}, hemolab's default)"
    )
    result = {
        "variant": args.variant, "device": str(device), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "base_filters": args.base_filters, "scan_shape": scan_shape,
        "input_size": input_size, "output_size": output_size, "tiles_paper": n_paper, "tiles_aligned": n_aligned,
        "trick": trick, "batch": args.batch, "paper_seconds": PAPER_SECONDS,
    }  # fmt: skip
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)

    if args.full_scan:
        base_s = time_scan(model, device, scan_shape, input_size, output_size, 1, False, "paper")
        trick_s = time_scan(model, device, scan_shape, input_size, output_size, args.batch, bf16, "paper")
        aligned_s = time_scan(model, device, scan_shape, input_size, output_size, args.batch, bf16, None)
        result.update(
            mode="measured whole scan",
            baseline_scan_s=base_s,
            trick_scan_s=trick_s,
            trick_aligned_scan_s=aligned_s,
        )
    else:
        base_t = time_tiles(model, device, input_size, args.tiles, 1, False, inference_mode=False)
        trick_t = time_tiles(model, device, input_size, args.tiles, args.batch, bf16, inference_mode=True)
        base_s, trick_s = base_t * n_paper, trick_t * n_paper
        result.update(
            mode=f"extrapolated from {args.tiles} timed tiles per configuration",
            baseline_tile_s=base_t, trick_tile_s=trick_t, baseline_scan_s=base_s, trick_scan_s=trick_s,
            trick_aligned_scan_s=trick_t * n_aligned,
        )  # fmt: skip
    result["speed_up"] = base_s / trick_s
    result["baseline_vs_paper"] = base_s / PAPER_SECONDS
    result["trick_vs_paper"] = trick_s / PAPER_SECONDS

    print(f"mode: {result['mode']}")
    print(
        f"  baseline (eager fp32, 1 tile/pass, no_grad):  {base_s:10.1f} s per scan  ({base_s / PAPER_SECONDS:.2f} x the paper's 104 s)"
    )
    print(
        f"  trick ({trick}, inference_mode, batch {args.batch}): {trick_s:10.1f} s per scan  ({trick_s / PAPER_SECONDS:.2f} x the paper's 104 s)"
    )
    print(f"  speed-up of the trick in this run: {result['speed_up']:.2f}x")
    print(
        f"  with hemolab's aligned tiles (more tiles, identical to whole-volume inference): {result['trick_aligned_scan_s']:.1f} s"
    )
    out = workspace_dir("benchmarks") / f"bench_patel-{args.variant}-{device.type}.json"
    out.write_text(json.dumps(result, indent=1, default=list))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
