"""The whole story, headless, in a few minutes on a CPU.

1. make a small synthetic cohort (``hemolab.datasets.ensure_cohort``; reused if it exists);
2. train a small CNN-DS on it (Arab 2020's schedule, scaled down; a finished demo run is reused);
3. segment the held-out test cases and print true vs predicted volume and Dice;
4. segment the real sample head CT shipped with hemolab (a GE scan without a reference label) and print
   the volume found;
5. write everything it printed as a JSON summary (``demo-summary.json`` in the run folder) and print its path.

Everything goes to the workspace folder (``$HEMOLAB_WORKSPACE``).
"""

from __future__ import annotations

import argparse
import json
import math
import time

HELP = "the whole story headless: synthetic cohort -> train CNN-DS -> segment -> volumes and Dice"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=("tiny", "small", "full"),
        default="small",
        help="size of cohort and network: tiny (seconds, learns little), small (default, minutes on a CPU), "
        "full (the paper's settings; GPU)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the cohort and the training run")
    parser.add_argument("--epochs", type=int, default=None, help="epoch limit (default: the profile's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from hemolab.architectures import load_checkpoint, segment_scan
    from hemolab.atomic import atomic_write_text
    from hemolab.config import resolve_profile, workspace_dir
    from hemolab.datasets import ensure_cohort, load_dataset
    from hemolab.evaluation import evaluate_cases
    from hemolab.io import read_scan, sample_scan_path
    from hemolab.training import train_cnnds

    profile = resolve_profile(args.profile)
    start = time.perf_counter()
    print(f"[1/4] synthetic cohort ({profile} profile)")
    root = ensure_cohort(profile, seed=args.seed)
    dataset = load_dataset(root)
    print(
        f"      {root}: {len(dataset.train)} train, {len(dataset.validation)} validation, {len(dataset.test)} test cases"
    )

    print("[2/4] training CNN-DS")
    suffix = f"-{args.epochs}ep" if args.epochs else ""
    run_dir = workspace_dir("runs", f"demo-cnnds-{profile}-seed{args.seed}{suffix}")
    history = train_cnnds(
        dataset,
        profile,
        run_dir,
        seed=args.seed,
        resume=True,
        progress=not args.quiet,
        device=args.device,
        max_epochs=args.epochs,
    )
    print(f"      {history.summary()}")
    train_seconds = time.perf_counter() - start
    model, meta = load_checkpoint(run_dir / "best.pt", device=args.device)

    print("[3/4] segmenting the test cases")
    table, _ = evaluate_cases(dataset.test, model, meta, progress=not args.quiet)
    shown = table[["case_id", "volume_ref_ml", "volume_pred_ml", "dsc", "precision", "recall", "seconds"]]
    with pd.option_context("display.width", 120, "display.precision", 3):
        print(shown.to_string(index=False))
    bleed = table["volume_ref_ml"] > 0
    print(
        f"      mean Dice {table['dsc'].mean():.3f} (the paper, full size on real scans: 0.84 +/- 0.06); "
        f"mean |volume error| {(table['volume_pred_ml'] - table['volume_ref_ml']).abs().mean():.2f} mL"
    )
    if bleed.any():
        print(
            f"      over the {int(bleed.sum())} scans with a bleed: mean Dice {table.loc[bleed, 'dsc'].mean():.3f}"
        )
    if (~bleed).any():
        print(
            f"      on the {int((~bleed).sum())} blood-free scans: {table.loc[~bleed, 'volume_pred_ml'].mean():.2f} mL "
            "predicted on average (0 is right)"
        )

    print("[4/4] segmenting the real sample scan (GE head CT, no reference label)")
    real_ml = None
    try:
        scan = read_scan(sample_scan_path())
    except Exception as exc:  # noqa: BLE001 - the demo goes on without the sample scan
        print(f"      skipped: could not read the sample scan ({exc})")
    else:
        res = segment_scan(scan, model, meta)
        real_ml = res.volume_ml
        print(
            f"      size {scan.GetSize()}, spacing {tuple(round(s, 2) for s in scan.GetSpacing())} mm: "
            f"predicted haemorrhage {res.volume_ml:.2f} mL in {res.seconds:.2f} s "
            "(a network trained on synthetic heads; read it as a demonstration, not a diagnosis)"
        )
    summary = {
        "profile": profile,
        "seed": args.seed,
        "training": {
            "epochs": history.epochs,
            "best_epoch": history.best_epoch,
            "best_val_dice": _finite(history.best_val_dice),
            "minutes_including_cohort": train_seconds / 60,
        },
        "threshold": meta.threshold,
        "test_cases": json.loads(table.to_json(orient="records")),  # NaN -> null
        "mean_dice": float(table["dsc"].mean()),
        "mean_dice_bleeds": float(table.loc[bleed, "dsc"].mean()) if bleed.any() else None,
        "blood_free_mean_pred_ml": float(table.loc[~bleed, "volume_pred_ml"].mean())
        if (~bleed).any()
        else None,
        "real_scan_pred_ml": real_ml,
        "seconds": time.perf_counter() - start,
        "note": "a network trained on synthetic heads: a demonstration, not a diagnosis",
    }
    out = run_dir / "demo-summary.json"
    atomic_write_text(out, json.dumps(summary, indent=1, default=_finite, allow_nan=False))
    print(f"done in {summary['seconds']:.0f} s; summary: {out}; outputs in {workspace_dir()}")
    return 0


def _finite(x):
    """JSON has no NaN or infinity: None instead (and plain floats for NumPy numbers)."""
    x = float(x)
    return x if math.isfinite(x) else None
