"""Benchmark: the inference tile size of the `small` Patel network on a CPU, in one run.

The Patel network is fully convolutional with valid convolutions, so any valid tile size gives the same
probabilities (docs/methods.md §2.5): a larger tile only saves the context that neighbouring tiles would
compute twice. This script runs :func:`hemolab.segment.tiled_predict` over one 128 x 128 x 32 volume (the
`small` cohort's scans) with the `small` network (base 8, thick-slice, random weights: the timing does not
depend on them) at several tile sizes, and prints the seconds per scan, the ratio to the first size, the
largest difference of the probabilities to the first size, and the growth of the process's peak memory.

Usage::

    python benchmarks/bench_patel_tiles.py               # 148x148x44 (the old `small` size) vs 220x220x60
    python benchmarks/bench_patel_tiles.py --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch

SIZES = ((148, 148, 44), (220, 220, 60))


def main(argv: list[str] | None = None) -> int:
    from hemolab.models.patel import Patel3DCNN
    from hemolab.segment import default_stride, tile_grid, tiled_predict

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="timed passes per size (the fastest is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--shape", type=int, nargs=3, default=(128, 128, 32), help="the volume (x y z)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Patel3DCNN(base_filters=8, thick_slice=True).eval()
    volume = np.random.default_rng(0).random(tuple(args.shape), dtype=np.float32)
    rows, first = [], None
    for ins in SIZES:  # smallest first: the peak-memory growth is then what the larger tile adds
        outs = model.output_size(ins)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            prob = tiled_predict(model, volume, input_size=ins, output_size=outs, progress=False)
            times.append(time.perf_counter() - t0)
        first = prob if first is None else first
        rows.append({
            "input_size": ins, "output_size": outs,
            "tiles": len(tile_grid(volume.shape, ins, outs, default_stride(model, outs))),
            "seconds": min(times), "max_abs_difference": float(np.abs(prob - first).max()),
            "peak_mb_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - rss0,
        })  # fmt: skip
    print(
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, volume {tuple(args.shape)}"
    )
    print(
        "| tile (input -> output) | tiles | s per scan | vs first | max |Δp| vs first | peak memory growth MB |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['input_size']} -> {r['output_size']} | {r['tiles']} | {r['seconds']:.2f} | "
              f"{rows[0]['seconds'] / r['seconds']:.2f}x | {r['max_abs_difference']:.1e} | {r['peak_mb_growth']:.0f} |")  # fmt: skip
    print(json.dumps(rows, default=list))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
