"""Benchmark CNN-DS: seconds per scan (network alone and whole pipeline) and training steps per second.

Arab et al. 2020 report 0.74 +- 0.07 s per scan on one Tesla K40 GPU, preprocessing included, for
a 128x128x64 input (base 16 filters, depth 5: the defaults here). This script measures, in ONE run so
that the ratios are fair:

1. the network alone (batch 1) under several inference settings, each compared with plain eager
   float32 (``torch.no_grad``): ``torch.inference_mode``, channels-last 3D memory layout, bfloat16 /
   float16 autocast, optionally ``torch.compile``, and :func:`hemolab.models.inference.predict` with
   ``fast=True`` (what hemolab uses). For every setting it reports how far the output moves from float32
   (largest probability difference, Dice of the 0.5-thresholded masks), on the random-weight paper-size
   network and -- with ``--checkpoint`` (or ``auto``) -- on a trained checkpoint's own grid and real cases;
2. the whole pipeline, :func:`hemolab.architectures.segment_scan` on the shipped GE head CT (skipped if
   that module is absent);
3. training steps per second (Adam, batch 1, the paper's soft Dice loss), float32 and autocast.

Usage::

    python benchmarks/bench_cnnds.py --device cpu --repeats 3 --out results.json
    python benchmarks/bench_cnnds.py --device cuda --repeats 20 --compile --out results-cuda.json

The network has random weights for the timings (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from hemolab.losses import SoftDiceLoss
from hemolab.models import CNNDS
from hemolab.models.inference import bf16_supported, predict

PAPER_SECONDS_PER_SCAN = 0.74  # Arab 2020, Results: 0.74 +- 0.07 s on one Tesla K40, preprocessing included


# ------------------------------------------------------------------------------------------ helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Wall-clock seconds of ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Windows
        return None


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": bf16_supported(device),
        "device": str(device),
        "loadavg_start": _loadavg(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict:
    """How far a variant's logits are from float32: probabilities and 0.5-thresholded masks."""
    p, q = torch.sigmoid(out.float()), torch.sigmoid(ref.float())
    a, b = p >= 0.5, q >= 0.5
    total = int(a.sum() + b.sum())
    dice = 2 * int((a & b).sum()) / total if total else 1.0
    return {
        "max_abs_prob_diff": float((p - q).abs().max()),
        "mean_abs_prob_diff": float((p - q).abs().mean()),
        "mask_dice_vs_fp32": dice,
        "voxels_flipped": int((a ^ b).sum()),
    }


# ------------------------------------------------------------------------------------------ variants
def inference_variants(device: torch.device, use_compile: bool) -> dict[str, tuple[bool, Callable]]:
    """name -> (channels_last, context factory). The first one is the baseline."""
    amp = torch.bfloat16 if (device.type == "cpu" or bf16_supported(device)) else torch.float16
    amp_name = "bf16" if amp == torch.bfloat16 else "fp16"

    def autocast():
        return torch.autocast(device.type, dtype=amp)

    variants: dict[str, tuple[bool, Callable]] = {
        "eager fp32 (no_grad)": (False, torch.no_grad),
        "inference_mode fp32": (False, torch.inference_mode),
        "inference_mode + channels_last_3d fp32": (True, torch.inference_mode),
        f"inference_mode + {amp_name} autocast": (False, autocast),
        f"inference_mode + channels_last_3d + {amp_name} autocast": (True, autocast),
    }
    if device.type == "cuda":
        variants["inference_mode + TF32"] = (False, torch.inference_mode)
        variants["inference_mode + fp16 autocast"] = (
            False,
            lambda: torch.autocast("cuda", dtype=torch.float16),
        )
    if use_compile:
        variants[f"torch.compile + channels_last_3d + {amp_name} autocast"] = (True, autocast)
        variants["torch.compile fp32"] = (False, torch.inference_mode)
    return variants


def bench_network(
    model: CNNDS, x: torch.Tensor, device: torch.device, repeats: int, use_compile: bool
) -> list:
    """Seconds per forward pass of the network alone, per inference setting, with accuracy vs fp32."""
    rows = []
    with torch.no_grad():
        ref = model(x).float()
    for name, (channels_last, ctx) in inference_variants(device, use_compile).items():
        row: dict = {"variant": name}
        try:
            net = copy.deepcopy(model).eval()
            xi = x
            if channels_last:
                net = net.to(memory_format=torch.channels_last_3d)
                xi = x.contiguous(memory_format=torch.channels_last_3d)
            if "compile" in name:
                t0 = time.perf_counter()
                net = torch.compile(net)
            tf32 = "TF32" in name

            def run(net=net, xi=xi, ctx=ctx, name=name, tf32=tf32):
                old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
                if tf32:
                    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
                try:
                    with torch.inference_mode(), ctx():
                        return net(xi)
                finally:
                    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

            if "compile" in name:
                run()
                row["compile_s"] = time.perf_counter() - t0
            row.update(time_call(run, device, repeats))
            row.update(compare(run(), ref))
        except Exception as exc:  # noqa: BLE001 - report and continue with the next setting
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        _print_row(row)
    # the library function itself (what segmentation code calls)
    row = {"variant": "hemolab predict(fast=True)"}
    net = copy.deepcopy(model)
    row.update(time_call(lambda: predict(net, x, fast=True), device, repeats))
    prob = predict(net, x, fast=True)
    row.update(compare(torch.logit(prob.clamp(1e-7, 1 - 1e-7)), ref))
    rows.append(row)
    _print_row(row)
    return _with_speed_ups(rows, "speed_up_vs_eager_fp32")


def _with_speed_ups(rows: list[dict], key: str) -> list[dict]:
    """Each row's speed-up against the first row (the float32 baseline), measured in the same run."""
    base = rows[0].get("median_s")
    for r in rows:
        if base and "median_s" in r:
            r[key] = base / r["median_s"]
    return rows


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"  {row['variant']:<58} ERROR {row['error']}", flush=True)
        return
    print(
        f"  {row['variant']:<58} {row['median_s']:8.3f} s  max|dp| {row.get('max_abs_prob_diff', 0):.2e}  "
        f"Dice vs fp32 {row.get('mask_dice_vs_fp32', 1):.4f}",
        flush=True,
    )


# --------------------------------------------------------------------------- accuracy on a trained net
def _compare_probs(fast: torch.Tensor, ref: torch.Tensor, label: np.ndarray | None = None) -> dict:
    a, b = (fast >= 0.5).cpu().numpy()[0, 0], (ref >= 0.5).cpu().numpy()[0, 0]
    total = int(a.sum() + b.sum())
    row = {
        "max_abs_prob_diff": float((fast - ref).abs().max()),
        "mask_dice_vs_fp32": 2 * int((a & b).sum()) / total if total else 1.0,
        "voxels_fp32": int(b.sum()),
        "voxels_fast": int(a.sum()),
        "volume_diff_percent": 100.0 * (int(a.sum()) - int(b.sum())) / int(b.sum()) if b.sum() else 0.0,
    }
    if label is not None:
        for name, m in (("fp32", b), ("fast", a)):
            t = int(m.sum() + label.sum())
            row[f"dice_vs_reference_{name}"] = 2 * int((m & label).sum()) / t if t else 1.0
    return row


def _summarise(rows: list[dict], **info) -> dict:
    return {
        **info,
        "cases": len(rows),
        "max_abs_prob_diff": max(r["max_abs_prob_diff"] for r in rows),
        "min_mask_dice_vs_fp32": min(r["mask_dice_vs_fp32"] for r in rows),
        "max_abs_volume_diff_percent": max(abs(r["volume_diff_percent"]) for r in rows),
        "per_case": rows,
    }


def accuracy_on_checkpoint(path: str, device: torch.device, max_cases: int = 4) -> dict:
    """fp32 vs predict(fast=True) on a trained checkpoint: cohort cases and the GE scan at its own grid."""
    from hemolab.architectures import load_checkpoint
    from hemolab.io import read_scan, sample_scan_path
    from hemolab.preprocess import prepare_cnnds

    model, meta = load_checkpoint(path, device=device)
    size = tuple(int(s) for s in meta.grid_size)
    images = []
    try:
        from hemolab.datasets import ensure_cohort, load_dataset

        ds = load_dataset(ensure_cohort(meta.profile or "tiny"))
        images = [c.load_image() for c in (ds.test + ds.validation)[:max_cases]]
    except Exception as exc:  # noqa: BLE001
        print(f"  (no cohort for the accuracy check: {exc})")
    images.append(read_scan(sample_scan_path()))
    rows = []
    for img in images:
        x = torch.from_numpy(np.asarray(prepare_cnnds(img, size), dtype=np.float32))[None, None].to(device)
        rows.append(
            _compare_probs(predict(copy.deepcopy(model), x, fast=True), predict(model, x, fast=False))
        )
    return _summarise(
        rows, source=f"checkpoint {path}", model_kwargs=dict(meta.model_kwargs), grid_size=list(size)
    )


def accuracy_on_overfit(
    device: torch.device, steps: int = 80, grid=(64, 64, 16), depth: int = 4, base: int = 8
) -> dict:
    """fp32 vs predict(fast=True) on a network trained (overfitted) here, so that its logits are confident.

    A randomly initialised network has logits near 0 everywhere, where any rounding flips the mask: a
    pessimistic test. A trained one is confident except at the bleed's border. Without a well-trained
    checkpoint at hand, this trains a CNN-DS (depth 4, base 8) for ``steps`` Adam steps on the tiny
    synthetic cohort's training cases and compares float32 with the fast path on all 8 cases.
    """
    from hemolab.datasets import ensure_cohort, load_dataset
    from hemolab.preprocess import prepare_cnnds, prepare_label

    ds = load_dataset(ensure_cohort("tiny"))
    data = []
    for case in ds.cases:
        x = torch.from_numpy(np.asarray(prepare_cnnds(case.load_image(), grid), dtype=np.float32))[None, None]
        y = np.asarray(prepare_label(case.load_label(), size=grid), dtype=bool)
        data.append((case, x.to(device), y))
    torch.manual_seed(0)
    net = CNNDS(1, 1, base, depth, dropout=0.0).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    loss_fn = SoftDiceLoss()
    train = [
        (x, torch.from_numpy(y.astype(np.float32))[None, None].to(device))
        for c, x, y in data
        if c.split == "train"
    ]
    t0 = time.perf_counter()
    for step in range(steps):
        x, y = train[step % len(train)]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    rows = []
    for case, x, y in data:
        row = _compare_probs(predict(copy.deepcopy(net), x, fast=True), predict(net, x, fast=False), y)
        row["case"] = f"{case.case_id} ({case.split})"
        rows.append(row)
    return _summarise(
        rows,
        source=f"CNN-DS depth {depth} base {base} trained here for {steps} steps ({train_s:.0f} s) on the tiny cohort",
        model_kwargs=net.model_kwargs(),
        grid_size=list(grid),
        final_train_loss=float(loss.detach()),
    )


# ------------------------------------------------------------------------------------------- pipeline
def bench_pipeline(model: CNNDS, device: torch.device, repeats: int, size) -> dict:
    """segment_scan (preprocess + network + back to the scan's grid + volume) on the shipped GE head CT."""
    try:
        from hemolab.architectures import segment_scan
    except ImportError as exc:
        return {"skipped": f"hemolab.architectures not available ({exc})"}
    from hemolab.io import read_scan, sample_scan_path

    t0 = time.perf_counter()
    image = read_scan(sample_scan_path())
    read_s = time.perf_counter() - t0
    meta = {"arch": "cnnds", "grid_size": list(size), "model_kwargs": model.model_kwargs()}
    results = []

    def run():
        results.append(segment_scan(image, model, meta, device=device))

    timing = time_call(run, device, repeats)
    stages: dict[str, list[float]] = {}
    for r in results[1:]:
        for k, v in r.timings.items():
            stages.setdefault(k, []).append(v)
    return {
        "scan": f"{sample_scan_path().name}: {image.GetSize()} voxels, spacing {tuple(round(s, 3) for s in image.GetSpacing())} mm",
        "read_scan_s": read_s,
        **timing,
        "stages_median_s": {k: statistics.median(v) for k, v in stages.items()},
    }


# ------------------------------------------------------------------------------------------- training
def bench_training(model: CNNDS, x: torch.Tensor, device: torch.device, repeats: int) -> list:
    """Training steps per second: forward + paper's Dice loss + backward + Adam step, batch 1."""
    label = torch.zeros_like(x)
    s = x.shape[2:]
    label[..., s[0] // 3 : s[0] // 2, s[1] // 3 : s[1] // 2, s[2] // 3 : s[2] // 2] = 1
    amp = torch.bfloat16 if (device.type == "cpu" or bf16_supported(device)) else torch.float16
    rows = []
    loss_fn = SoftDiceLoss()
    for name, dtype in (("fp32", None), (f"{'bf16' if amp == torch.bfloat16 else 'fp16'} autocast", amp)):
        row: dict = {"variant": name}
        try:
            net = copy.deepcopy(model).train()
            opt = torch.optim.Adam(net.parameters(), lr=5e-4)
            scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

            def step(net=net, opt=opt, dtype=dtype, scaler=scaler):
                opt.zero_grad(set_to_none=True)
                ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
                with ctx:
                    logits = net(x)
                loss = loss_fn(logits.float(), label)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()

            row.update(time_call(step, device, repeats))
            row["steps_per_s"] = 1.0 / row["median_s"]
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        if "error" in row:
            print(f"  train {name:<20} ERROR {row['error']}", flush=True)
        else:
            print(
                f"  train {name:<20} {row['median_s']:8.3f} s/step  {row['steps_per_s']:.3f} steps/s",
                flush=True,
            )
    return _with_speed_ups(rows, "speed_up_vs_fp32")


# ----------------------------------------------------------------------------------------------- main
def markdown_table(results: dict) -> str:
    """The results as the Markdown tables of benchmarks/README.md."""
    lines = [
        "| setting (network alone, batch 1) | s / scan (median) | vs eager fp32 | max abs Δp | mask Dice vs fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results["network"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | error: {r['error'][:60]} | | | |")
            continue
        lines.append(
            f"| {r['variant']} | {r['median_s']:.3f} | {r.get('speed_up_vs_eager_fp32', 1):.2f}x | "
            f"{r['max_abs_prob_diff']:.1e} | {r['mask_dice_vs_fp32']:.4f} |"
        )
    p = results.get("pipeline") or {}
    if "median_s" in p:
        st = ", ".join(f"{k} {v:.2f} s" for k, v in p["stages_median_s"].items())
        lines += [
            "",
            f"Whole pipeline (`segment_scan`, {p['scan']}): **{p['median_s']:.2f} s** per scan ({st}); reading the DICOM folder: {p['read_scan_s']:.2f} s.",
        ]
    elif p:
        lines += ["", f"Whole pipeline: {p.get('skipped') or p.get('error')}"]
    if results.get("training"):
        lines += [
            "",
            "| training step (batch 1, Adam, soft Dice) | s / step | steps / s | vs fp32 |",
            "|---|---:|---:|---:|",
        ]
        for r in results["training"]:
            if "error" in r:
                lines.append(f"| {r['variant']} | error: {r['error'][:60]} | | |")
            else:
                lines.append(
                    f"| {r['variant']} | {r['median_s']:.2f} | {r['steps_per_s']:.3f} | {r.get('speed_up_vs_fp32', 1):.2f}x |"
                )
    acc = results.get("accuracy_trained")
    if acc and "cases" in acc:
        lines += [
            "",
            f"Trained network ({acc['source']}; grid {acc['grid_size']}), {acc['cases']} scans: "
            f"`predict(fast=True)` vs float32: max abs Δp {acc['max_abs_prob_diff']:.1e}, "
            f"lowest mask Dice {acc['min_mask_dice_vs_fp32']:.4f}, largest volume change "
            f"{acc['max_abs_volume_diff_percent']:.2f} %.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed repetitions per measurement (after 1 warm-up)"
    )
    ap.add_argument(
        "--train-repeats", type=int, default=None, help="timed training steps (default: --repeats)"
    )
    ap.add_argument(
        "--size", type=int, nargs=3, default=(128, 128, 64), help="input grid x y z (paper: 128 128 64)"
    )
    ap.add_argument("--base-filters", type=int, default=16, help="channels of level 0 (paper: 16)")
    ap.add_argument("--depth", type=int, default=5, help="levels (default 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    ap.add_argument("--no-pipeline", action="store_true", help="skip the whole-pipeline measurement")
    ap.add_argument("--no-train", action="store_true", help="skip the training-step measurement")
    ap.add_argument(
        "--accuracy",
        default="overfit",
        help="how to check predict(fast=True) against float32 on a TRAINED network: 'overfit' (default: train "
        "a depth-4 CNN-DS on the tiny synthetic cohort here), a path to a CNN-DS best.pt, or 'none'",
    )
    ap.add_argument(
        "--overfit-steps", type=int, default=80, help="Adam steps of the 'overfit' accuracy check"
    )
    ap.add_argument("--out", default=None, help="write the results as JSON to this file")
    ap.add_argument(
        "--markdown", action="store_true", help="print the Markdown tables for benchmarks/README.md"
    )
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA asked for but not available", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = CNNDS(1, 1, args.base_filters, args.depth).to(device).eval()
    x = torch.rand(1, 1, *args.size, device=device)
    results: dict = {
        "machine": machine_info(device),
        "config": {
            "size": list(args.size),
            "base_filters": args.base_filters,
            "depth": args.depth,
            "parameters": sum(p.numel() for p in model.parameters()),
            "repeats": args.repeats,
        },
        "paper_seconds_per_scan": PAPER_SECONDS_PER_SCAN,
    }
    print(
        f"CNN-DS {args.size} base {args.base_filters} depth {args.depth} on {device} "
        f"({results['machine']['cpu'] if device.type == 'cpu' else results['machine'].get('gpu')}), "
        f"{torch.get_num_threads()} threads, load {results['machine']['loadavg_start']}"
    )
    print("network alone:")
    results["network"] = bench_network(model, x, device, args.repeats, args.compile)
    if not args.no_pipeline:
        print("whole pipeline:")
        try:
            results["pipeline"] = bench_pipeline(model, device, args.repeats, args.size)
        except Exception as exc:  # noqa: BLE001
            results["pipeline"] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        print(f"  {results['pipeline'].get('median_s', results['pipeline'])}")
    if not args.no_train:
        print("training:")
        results["training"] = bench_training(model, x, device, args.train_repeats or args.repeats)
    if args.accuracy != "none":
        print("accuracy of predict(fast=True) vs float32 on a trained network:")
        try:
            if args.accuracy == "overfit":
                results["accuracy_trained"] = accuracy_on_overfit(device, steps=args.overfit_steps)
            else:
                results["accuracy_trained"] = accuracy_on_checkpoint(args.accuracy, device)
            a = results["accuracy_trained"]
            print(
                f"  {a['source']}: max |dp| {a['max_abs_prob_diff']:.2e}, lowest mask Dice "
                f"{a['min_mask_dice_vs_fp32']:.4f}, largest volume change {a['max_abs_volume_diff_percent']:.2f} %"
            )
        except Exception as exc:  # noqa: BLE001
            results["accuracy_trained"] = {
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(),
            }
            print(f"  {results['accuracy_trained']['error']}")
    results["machine"]["loadavg_end"] = _loadavg()
    table = markdown_table(results)
    print()
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
