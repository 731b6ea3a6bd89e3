"""The deep-supervision ablation of Arab 2020 (Results, Fig. 3 and the Table 4 comparison; docs/methods.md §1.6).

The same CNN-DS is trained twice on the same data with the same seeds: once with deep supervision (the
three finest decoder levels' segmentation maps summed into the output) and once without (only the
finest segmentation layer). The paper reports that without deep supervision test Dice drops by 0.05,
precision by 0.04 and recall by 0.06, and that training converges more slowly (Fig. 3).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hemolab.architectures import load_checkpoint, run_status
from hemolab.config import resolve_profile, workspace_dir
from hemolab.datasets import load_dataset
from hemolab.evaluation import evaluate_cases
from hemolab.training.cnnds import cnnds_settings, make_loaders_for, train_cnnds

#: The paper's reported change "without DS minus with DS" (docs/methods.md §1.6).
PAPER_DELTAS: dict[str, float] = {"dsc": -0.05, "precision": -0.04, "recall": -0.06}

VARIANTS: dict[str, bool] = {"with DS": True, "without DS": False}


def run_ablation(
    dataset,
    profile: str | None = None,
    *,
    seeds: Sequence[int] | None = None,
    run_root=None,
    max_epochs: int | None = None,
    resume: bool = True,
    progress: bool = True,
    device=None,
):
    """Train CNN-DS with and without deep supervision (same data, same seeds) and test both.

    Args:
        dataset: a dataset folder or loaded Dataset (train / validation / test splits).
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto).
        seeds: the seeds to repeat the comparison with (default: 3 seeds in full, 1 otherwise).
        run_root: folder for the runs (default ``workspace/runs/ablation-<profile>``).
        max_epochs: epoch limit (default: the profile's).
        resume: reuse / continue runs already in ``run_root``.
        progress: progress bars and one line per run.
        device: ``None`` = CUDA if available.

    Returns:
        ``(histories, per_case)``: a dict ``(variant, seed) -> History`` and a DataFrame with one row per
        (variant, seed, test case): dsc, precision, recall, volumes, inference seconds, plus the run's
        training seconds, epochs and best epoch.
    """
    profile = resolve_profile(profile)
    if seeds is None:
        seeds = (0, 1, 2) if profile == "full" else (0,)
    if not hasattr(dataset, "test"):
        dataset = load_dataset(dataset)
    settings = cnnds_settings(profile, max_epochs=max_epochs)
    run_root = Path(run_root) if run_root is not None else workspace_dir("runs", f"ablation-{profile}")
    frames, histories = [], {}
    for seed in seeds:
        loaders = make_loaders_for(dataset, settings, seed=seed)  # identical data order for both variants
        for variant, ds in VARIANTS.items():
            run_dir = run_root / f"{'ds' if ds else 'nods'}-seed{seed}"
            if resume and (run_dir / "last.pt").is_file():
                status = run_status(run_dir)
                if not status["finished"]:
                    print(
                        f"{variant}, seed {seed}: the run in {run_dir} was interrupted after {status['epochs']} of "
                        f"{status['max_epochs']} epochs: resuming it to the end ..."
                    )
            start = time.perf_counter()
            history = train_cnnds(
                dataset,
                settings=settings.with_overrides(deep_supervision=ds),
                run_dir=run_dir,
                seed=seed,
                resume=resume,
                overwrite=not resume,
                progress=progress,
                device=device,
                loaders=loaders,
            )
            histories[(variant, seed)] = history
            model, meta = load_checkpoint(run_dir / "best.pt", device=device)
            table, _ = evaluate_cases(dataset.test, model, meta, device=device)
            table.insert(0, "seed", seed)
            table.insert(0, "model", variant)
            table["train_seconds"] = history.seconds
            table["epochs"] = history.epochs
            table["best_epoch"] = history.best_epoch
            frames.append(table)
            if progress:
                print(
                    f"{variant}, seed {seed}: {history.summary()}; test Dice {table['dsc'].mean():.3f} "
                    f"({time.perf_counter() - start:.0f} s)"
                )
    return histories, pd.concat(frames, ignore_index=True)


def ablation_table(per_case):
    """Table 4-like summary: mean ± SD of Dice, precision, recall and times per model, the measured change
    without deep supervision and the paper's reported change next to it.

    Args:
        per_case: the second value returned by :func:`run_ablation`.

    Returns:
        A DataFrame indexed by metric with columns ``with DS``, ``without DS`` (as "mean ± sd" strings),
        ``measured change``, ``paper's change`` and the numeric ``with DS mean`` / ``without DS mean``.
    """
    rows = []
    for metric in ("dsc", "precision", "recall", "seconds", "train_seconds"):
        row = {"metric": metric}
        means = {}
        for variant in VARIANTS:
            # one value per seed: the mean over test cases; SD over cases (1 seed) or over seeds
            sub = per_case[per_case["model"] == variant]
            per_seed = sub.groupby("seed")[metric].mean()
            values = per_seed if len(per_seed) > 1 else sub[metric]
            mean, sd = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan
            means[variant] = mean
            row[variant] = f"{mean:.3f} ± {sd:.3f}" if metric in PAPER_DELTAS else f"{mean:.2f} ± {sd:.2f}"
            row[f"{variant} mean"] = mean
        row["measured change"] = means["without DS"] - means["with DS"]
        row["paper's change"] = PAPER_DELTAS.get(metric, math.nan)
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def describe_ablation(table, histories=None, *, tolerance: float = 0.02, min_dice: float = 0.2) -> str:
    """Words for what the measured ablation shows, derived from the numbers (never assumed).

    Args:
        table: from :func:`ablation_table`.
        histories: from :func:`run_ablation` (for the convergence comparison), optional.
        tolerance: changes smaller than this (in Dice / precision / recall) are called "no clear difference".
        min_dice: if neither variant reaches this mean test Dice, say that the comparison is meaningless.

    Returns:
        A paragraph of Markdown.
    """
    lines = []
    best_dice = max(float(table.loc["dsc", "with DS mean"]), float(table.loc["dsc", "without DS mean"]))
    if best_dice < min_dice:
        lines.append(
            f"- **Neither network learned enough to compare** (best mean test Dice {best_dice:.3f} < {min_dice}): "
            "the runs are too short for this question; the differences below mean nothing."
        )
    for metric in ("dsc", "precision", "recall"):
        d = float(table.loc[metric, "measured change"])
        paper = PAPER_DELTAS[metric]
        if not math.isfinite(d):
            lines.append(f"- {metric}: could not be measured.")
            continue
        if abs(d) < tolerance:
            verdict = f"no clear difference ({d:+.3f}, smaller than {tolerance})"
        elif d < 0:
            verdict = (
                f"lower without deep supervision ({d:+.3f}), the direction the paper reports ({paper:+.2f})"
            )
        else:
            verdict = f"HIGHER without deep supervision ({d:+.3f}), the opposite of the paper's {paper:+.2f}"
        lines.append(f"- **{metric}**: {verdict}.")
    if histories:
        conv = convergence(histories)
        if conv:
            ds, nods = conv.get("with DS"), conv.get("without DS")
            if ds is not None and nods is not None:
                if ds < nods:
                    lines.append(
                        f"- **convergence**: with deep supervision the validation loss first got within 10% of its "
                        f"final best at epoch {ds:.1f} vs {nods:.1f} without: faster, as in the paper's Fig. 3."
                    )
                elif ds > nods:
                    lines.append(
                        f"- **convergence**: with deep supervision the validation loss got within 10% of its best at "
                        f"epoch {ds:.1f} vs {nods:.1f} without: slower here, unlike the paper's Fig. 3."
                    )
                else:
                    lines.append(
                        f"- **convergence**: both reached within 10% of their best at epoch {ds:.1f}."
                    )
    return "\n".join(lines)


def convergence(histories, within: float = 0.10) -> dict[str, float]:
    """Mean (over seeds) first epoch at which the validation loss is within ``within`` of the run's best."""
    out: dict[str, list[int]] = {}
    for (variant, _seed), h in histories.items():
        if not h.rows:
            continue
        best = min(h.val_loss)
        target = best + within * abs(best)
        first = next(r["epoch"] for r in h.rows if r["val_loss"] <= target)
        out.setdefault(variant, []).append(first)
    return {k: float(sum(v)) / len(v) for k, v in out.items()}


def describe_evidence(per_case, *, tolerance: float = 0.02) -> str:
    """Words for what this run's data can and cannot show, computed from ``per_case`` (never assumed).

    It states how many test scans (with a bleed) and seeds stand behind the table, how the Dice change is
    spread over the test scans and, with several seeds, over the seeds: a change smaller than the
    seed-to-seed spread is not evidence either way, and with one seed that spread is not measured at all.
    Because Dice on a blood-free scan is 1 or 0 (nothing or anything predicted), it also gives the Dice over
    the scans with a bleed and the volume predicted on the blood-free ones.

    Args:
        per_case: the second value returned by :func:`run_ablation`.
        tolerance: as in :func:`describe_ablation`.

    Returns:
        A paragraph of Markdown.
    """
    seeds = sorted(per_case["seed"].unique())
    n_test = per_case["case_id"].nunique()
    bleed = per_case["volume_ref_ml"] > 0
    n_bleed = per_case.loc[bleed, "case_id"].nunique()
    ds = per_case[per_case["model"] == "with DS"].set_index(["seed", "case_id"])["dsc"]
    nods = per_case[per_case["model"] == "without DS"].set_index(["seed", "case_id"])["dsc"]
    diff = (nods - ds).dropna()  # without - with, per (seed, test scan)
    lines = [
        f"- **What stands behind the table**: {n_test} synthetic test scans ({n_bleed} with a bleed) and "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}."
    ]
    if len(diff):
        higher = int((diff < 0).sum())
        lower = int((diff > 0).sum())
        sd_case = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
        spread = f" (SD {sd_case:.3f} over the scans)" if math.isfinite(sd_case) else ""
        lines.append(
            f"- **Per scan**, deep supervision gave the higher Dice on {higher}, the lower on {lower} and the same "
            f"on {len(diff) - higher - lower} of {len(diff)} (scan, seed) pairs; the change per scan ranged from "
            f"{diff.min():+.3f} to {diff.max():+.3f}{spread}."
        )
    per_seed = diff.groupby(level="seed").mean() if len(diff) else diff
    if len(per_seed) >= 2:
        mean, sd = float(per_seed.mean()), float(per_seed.std(ddof=1))
        if abs(mean) <= sd or abs(mean) < tolerance:
            verdict = "no larger than the seed-to-seed spread, so it is **not evidence** either way"
        else:
            verdict = f"larger than the seed-to-seed spread, though {len(per_seed)} seeds are still few"
        lines.append(
            f"- **Seeds**: the mean Dice change per seed ranged from {per_seed.min():+.3f} to {per_seed.max():+.3f} "
            f"(mean {mean:+.3f}, SD {sd:.3f}); the change is {verdict}."
        )
    else:
        lines.append(
            "- **One seed**: how much the change would move with another seed (another initialisation and "
            "data order) is not measured here, so no difference in this table is evidence for or against the "
            "paper: a difference smaller than the seed-to-seed spread would not be, and that spread is unknown. "
            "Run more seeds to measure it."
        )
    if 0 < n_bleed < n_test:
        on_bleed = per_case[bleed].groupby("model")["dsc"].mean()
        fp_ml = per_case[~bleed].groupby("model")["volume_pred_ml"].sum()
        lines.append(
            f"- **Scans with and without blood**: over the {n_bleed} scans with a bleed the Dice is "
            f"{on_bleed['with DS']:.3f} with and {on_bleed['without DS']:.3f} without deep supervision "
            f"({on_bleed['without DS'] - on_bleed['with DS']:+.3f}). On a scan without blood Dice is 1 if nothing "
            "is predicted and 0 otherwise, so one stray cluster moves the mean over all scans a lot: on the "
            f"{n_test - n_bleed} blood-free scans the networks predicted {fp_ml['with DS']:.2f} mL (with) and "
            f"{fp_ml['without DS']:.2f} mL (without) in all."
        )
    return "\n".join(lines)
