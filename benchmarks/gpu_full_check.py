"""A prepared, short check that the ``full`` profile (the papers' settings) really trains on CUDA, with timings.

For a session that is lent a GPU for a few minutes: one command, one JSON file, then the numbers go into
``benchmarks/README.md``. For each network it

1. builds the ``full`` settings (CNN-DS 128x128x64, base 16, depth 5; Patel base 32, 124x124x40 patches),
2. trains for ``--seconds`` on a few ``full`` synthetic cases (``--cases``; generated on the machine's
   CPUs first), through the same driver the notebooks call, with a hook that records the loss of every
   step, the steps per second and the peak GPU memory,
3. times whole-scan inference with the trained weights (``hemolab.architectures.segment_scan``) on a
   generated case and on the shipped real head CT,

and writes everything to ``--out`` (default ``gpu_full_check.json``) and a short table to stdout. It checks
that the loss falls (mean of the last quarter of the steps below the first quarter) and says so.

Run it on a CPU with ``--device cpu --profile tiny --seconds 20`` to check the script itself (the test
suite does that); on a GPU: ``python benchmarks/gpu_full_check.py --device cuda --seconds 180``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hemolab.architectures import ARCHITECTURES, load_checkpoint, segment_scan
from hemolab.config import get_device, seed_everything
from hemolab.datasets import load_dataset
from hemolab.io import read_scan, sample_scan_path
from hemolab.synth import make_cohort
from hemolab.training import Hook, StopTraining


class StepRecorder(Hook):
    """Stops training after ``seconds``; records the epoch losses (the loop's own numbers) and the time."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.start = time.perf_counter()
        self.epochs: list[dict] = []

    def after_epoch(self, trainer, epoch: int) -> None:
        row = trainer.history.rows[-1]
        self.epochs.append({"epoch": epoch, "train_loss": row["train_loss"], "val_loss": row["val_loss"],
                            "seconds": row["seconds"]})  # fmt: skip
        if time.perf_counter() - self.start > self.seconds:
            raise StopTraining


def check_arch(
    arch: str, data: Path, device: torch.device, profile: str, seconds: float, run_root: Path
) -> dict:
    entry = ARCHITECTURES[arch]
    settings = entry.settings(profile)
    recorder = StepRecorder(seconds)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seed_everything(0)
    t0 = time.perf_counter()
    history = entry.train(data, profile, run_root / arch, device=device, progress=False, overwrite=True,
                          hooks=[recorder])  # fmt: skip
    train_s = time.perf_counter() - t0
    losses = history.train_loss
    quarter = max(1, len(losses) // 4)
    out = {
        "arch": arch,
        "settings": settings.as_dict(),
        "epochs": history.epochs,
        "train_seconds": round(train_s, 1),
        "seconds_per_epoch": round(float(np.mean([r["seconds"] for r in history.rows])), 2),
        "train_loss_first_quarter": float(np.mean(losses[:quarter])),
        "train_loss_last_quarter": float(np.mean(losses[-quarter:])),
        "loss_falls": bool(len(losses) >= 2 and np.mean(losses[-quarter:]) < np.mean(losses[:quarter])),
        "peak_gpu_memory_gb": (
            round(torch.cuda.max_memory_allocated(device) / 1024**3, 2) if device.type == "cuda" else None
        ),
    }
    model, meta = load_checkpoint(run_root / arch / "best.pt", device=device)
    case = load_dataset(data).test[0]
    for name, image in (
        ("synthetic test case", case.load_image()),
        ("real GE head CT", read_scan(sample_scan_path())),
    ):
        segment_scan(image, model, meta, device=device)  # warm-up (CUDA kernels, cudnn autotune)
        res = segment_scan(image, model, meta, device=device)
        out[f"inference_seconds[{name}]"] = round(res.seconds, 3)
        out[f"inference_timings[{name}]"] = {k: round(v, 3) for k, v in res.timings.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda (default when there is one) or cpu")
    parser.add_argument("--profile", default="full", choices=("tiny", "small", "full"))
    parser.add_argument("--seconds", type=float, default=180.0, help="training time per network")
    parser.add_argument("--cases", type=int, default=8, help="synthetic cases to generate (>= 4)")
    parser.add_argument("--arch", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--out", default="gpu_full_check.json")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="hemolab-gpu-check-"))
    t0 = time.perf_counter()
    data = make_cohort(
        work / "cohort", n_cases=max(4, args.cases), seed=0, profile=args.profile, progress=False
    )
    report = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "profile": args.profile,
        "cohort_seconds": round(time.perf_counter() - t0, 1),
        "networks": [
            check_arch(a, data, device, args.profile, args.seconds, work / "runs") for a in args.arch
        ],
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(
        f"{report['gpu'] or device}, profile {args.profile}, cohort generated in {report['cohort_seconds']} s"
    )
    for net in report["networks"]:
        print(
            f"{net['arch']:6s} {net['epochs']:3d} epochs in {net['train_seconds']:7.1f} s "
            f"({net['seconds_per_epoch']} s/epoch); loss {net['train_loss_first_quarter']:.3f} -> "
            f"{net['train_loss_last_quarter']:.3f} ({'falls' if net['loss_falls'] else 'DOES NOT FALL'}); "
            f"peak GPU memory {net['peak_gpu_memory_gb']} GB"
        )
        for key, value in net.items():
            if key.startswith("inference_seconds"):
                print(f"       {key}: {value} s")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
