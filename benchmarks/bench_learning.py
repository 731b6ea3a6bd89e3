"""Does a network learn, every time, in a profile a student can afford? Train it for several seeds and test it on
scans it never saw.

For each architecture and each training seed, in a child process of its own (so that its peak memory is its
own), this script

1. trains the network in ``--profile`` on the course's synthetic cohort (``ensure_cohort(profile, 0)``,
   exactly what notebooks 03 and 04 train on), timing the training (data preparation included);
2. segments **every** scan of an independent synthetic cohort (``--eval-seed``, default 2026: other heads,
   other bleeds, never seen in training) and the shipped real head CT (a normal GE scan: no blood);
3. reports mean Dice over the bleeds of at least 5 mL and over all bleeds, the median volume predicted on
   the blood-free scans, the volume predicted on the real scan, the training time and the peak memory.

and prints the table against the targets of the ``small`` profile (issue 11): CNN-DS mean Dice >= 0.75 on
bleeds >= 5 mL and >= 0.50 on all bleeds; Patel >= 0.60 and >= 0.40; both <= 1 mL (median) on blood-free
scans and <= 2 mL on the real scan; training <= 6 min (CNN-DS) / 12 min (Patel) on 2 cores; < 2 GB.

It is a benchmark, not a test: a run takes tens of minutes. Run it on an otherwise idle machine (``--jobs 1``,
the default) when the times matter::

    python benchmarks/bench_learning.py --arch cnnds patel --seeds 0 1 2 --markdown --out learning.json

``--set KEY=VALUE`` changes a training setting for every run, to measure a lever against the recipe, e.g. the
Patel network with the paper's HU window: ``--arch patel --set hu_window=-200,200``.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

#: Targets of the ``small`` profile: (Dice >= 5 mL, Dice all bleeds, blood-free median mL, real mL, minutes).
TARGETS: dict[str, tuple[float, float, float, float, float]] = {
    "cnnds": (0.75, 0.50, 1.0, 2.0, 6.0),
    "patel": (0.60, 0.40, 1.0, 2.0, 12.0),
}
MEMORY_MB = 2048.0


def parse_setting(text: str) -> tuple[str, object]:
    """``"hu_window=-200,200"`` -> ``("hu_window", (-200, 200))``: a ``--set`` value (a Python literal; commas
    make a tuple)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value if "," not in value or value.startswith(("(", "[")) else f"({value})")
    except (ValueError, SyntaxError):
        parsed = value  # a plain string, e.g. optimizer=sgd
    return key.strip(), tuple(parsed) if isinstance(parsed, list) else parsed


def worker(
    arch: str, seed: int, profile: str, eval_seed: int, run_root: Path, overrides: dict | None = None
) -> dict:
    """Train one network for one seed and measure it (runs in a child process); ``overrides`` change settings."""
    from hemolab.architectures import get_architecture
    from hemolab.datasets import ensure_cohort

    run_dir = run_root / f"{arch}-{profile}-seed{seed}"
    t0 = time.perf_counter()
    history = get_architecture(arch).train(ensure_cohort(profile, 0), profile, run_dir, seed=seed, overwrite=True,
                                           progress=False, **(overrides or {}))  # fmt: skip
    train_s = time.perf_counter() - t0
    row = measure(run_dir / "best.pt", eval_seed)
    # best_epoch stays the checkpoint's own: the epoch kept, which a whole-scan choice may have changed
    row.update({"seed": seed, "train_minutes": train_s / 60.0, "epochs": history.epochs,
                "best_loss_epoch": history.best_epoch,
                "overrides": {k: str(v) for k, v in (overrides or {}).items()}})  # fmt: skip
    row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return row


def measure(checkpoint: Path, eval_seed: int) -> dict:
    """Segment every scan of the unseen cohort and the real scan with a trained network: the row's numbers."""
    import torch

    from hemolab.architectures import load_checkpoint, segment_scan
    from hemolab.datasets import ensure_cohort, load_dataset
    from hemolab.evaluation import evaluate_cases
    from hemolab.io import read_scan, sample_scan_path

    model, meta = load_checkpoint(checkpoint)
    ds = load_dataset(ensure_cohort(meta.profile, eval_seed))
    cases = list(ds.train) + list(ds.validation) + list(ds.test)
    table, _ = evaluate_cases(cases, model, meta)
    real = segment_scan(read_scan(sample_scan_path()), model, meta)
    bleed = table[table.volume_ref_ml > 0]
    big = table[table.volume_ref_ml >= 5.0]
    free = table[table.volume_ref_ml == 0]
    return {
        "arch": meta.arch,
        "seed": meta.seed,
        "profile": meta.profile,
        "eval_cohort_seed": eval_seed,
        "n_eval_scans": len(table),
        "dice_ge5ml": float(big.dsc.mean()),
        "n_ge5ml": len(big),
        "dice_all_bleeds": float(bleed.dsc.mean()),
        "n_bleeds": len(bleed),
        "blood_free_median_ml": float(free.volume_pred_ml.median()),
        "n_blood_free": len(free),
        "real_scan_ml": float(real.volume_ml),
        "train_minutes": float("nan"),
        "epochs": meta.epochs_run,
        "best_epoch": meta.best_epoch,
        "threshold": float(meta.threshold),
        "peak_mb": float("nan"),
        "torch_threads": torch.get_num_threads(),
    }


def verdict(row: dict) -> dict[str, bool]:
    """Which targets a row meets."""
    big, allb, free, real, minutes = TARGETS[row["arch"]]
    return {
        "dice_ge5ml": row["dice_ge5ml"] >= big,
        "dice_all_bleeds": row["dice_all_bleeds"] >= allb,
        "blood_free_median_ml": row["blood_free_median_ml"] <= free,
        "real_scan_ml": row["real_scan_ml"] <= real,
        "train_minutes": math.isnan(row["train_minutes"])
        or row["train_minutes"] <= minutes,  # nan: not timed here
        "peak_mb": math.isnan(row["peak_mb"]) or row["peak_mb"] < MEMORY_MB,
    }


def markdown(rows: list[dict]) -> str:
    head = ("| network | seed | Dice ≥ 5 mL | Dice all bleeds | blood-free median mL | real scan mL | "
            "train min | peak MB | threshold | epochs (kept) |")  # fmt: skip
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ok = verdict(r)

        def cell(key: str, fmt: str, r=r, ok=ok) -> str:
            if isinstance(r[key], float) and math.isnan(r[key]):
                return "–"
            return f"{r[key]:{fmt}}" + ("" if ok[key] else " ✗")

        lines.append(
            f"| {r['arch']} | {r['seed']} | {cell('dice_ge5ml', '.3f')} | {cell('dice_all_bleeds', '.3f')} | "
            f"{cell('blood_free_median_ml', '.2f')} | {cell('real_scan_ml', '.1f')} | "
            f"{cell('train_minutes', '.1f')} | {cell('peak_mb', '.0f')} | {r['threshold']:.2f} | "
            f"{r['epochs']} ({r['best_epoch']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=["cnnds", "patel"], choices=["cnnds", "patel"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--profile", default="small")
    ap.add_argument("--eval-seed", type=int, default=2026, help="cohort seed of the unseen scans")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (>1 only when times do not matter)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument(
        "--evaluate",
        type=Path,
        default=None,
        metavar="BEST_PT",
        help="only measure an existing checkpoint (e.g. the one notebook 03 or 04 trained)",
    )
    ap.add_argument("--set", dest="overrides", action="append", type=parse_setting, default=[], metavar="KEY=VALUE",
                    help="change a training setting of every --arch, e.g. --arch patel --set hu_window=-200,200 "
                         "(the paper's window)")  # fmt: skip
    ap.add_argument("--worker", nargs=2, metavar=("ARCH", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--run-root", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.evaluate:
        rows = [measure(args.evaluate, args.eval_seed)]
        print(json.dumps(rows[0]))
        if args.markdown:
            print(markdown(rows))
        return 0
    if args.worker:
        overrides = dict(args.overrides)
        row = worker(
            args.worker[0], int(args.worker[1]), args.profile, args.eval_seed, args.run_root, overrides
        )
        print("ROW " + json.dumps(row), flush=True)
        return 0

    from hemolab.config import workspace_dir
    from hemolab.datasets import ensure_cohort

    ensure_cohort(args.profile, 0)  # generated once, before the runs start
    ensure_cohort(args.profile, args.eval_seed)
    run_root = Path(tempfile.mkdtemp(prefix="bench-learning-", dir=workspace_dir("benchmarks")))
    jobs = [(a, s) for a in args.arch for s in args.seeds]

    def run(job: tuple[str, int]) -> dict:
        arch, seed = job
        cmd = [sys.executable, __file__, "--worker", arch, str(seed), "--profile", args.profile,
               "--eval-seed", str(args.eval_seed), "--run-root", str(run_root)]  # fmt: skip
        cmd += [f"--set={k}={v!r}" for k, v in args.overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        rows = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        if proc.returncode != 0 or not rows:
            raise RuntimeError(f"{arch} seed {seed} failed:\n{proc.stderr[-3000:]}")
        print(f"done: {arch} seed {seed}: " + json.dumps(rows[0]), flush=True)
        return rows[0]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(run, jobs))
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.jobs} run(s) at once, "
          f"{(time.perf_counter() - t0) / 60:.1f} min in all; unseen cohort: {args.profile} seed {args.eval_seed}")  # fmt: skip
    if args.markdown:
        print(markdown(rows))
    for arch in args.arch:
        mine = [r for r in rows if r["arch"] == arch]
        passed = [all(verdict(r).values()) for r in mine]
        print(f"{arch}: {sum(passed)} of {len(mine)} seeds meet every target"
              + ("" if all(passed) else f" (medians: Dice≥5mL {np.median([r['dice_ge5ml'] for r in mine]):.2f})"))  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
