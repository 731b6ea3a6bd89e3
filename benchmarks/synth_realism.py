"""Does the synthetic cohort look like real head CT? And how fast is it generated?

Prints, for the real head CT shipped with hemolab and for synthetic scans, measured the same way
(:func:`hemolab.synth.realism.realism_stats`): parenchyma median HU, noise SD and in-plane lag-1 noise
correlation; the HU under the inner table by distance from the skull, back and front of the head
(:func:`hemolab.synth.realism.inner_table_profile`, blood-free synthetic scans); how much denser the brain of
the lowest and the highest slices is than the middle of the brain (:func:`hemolab.synth.realism.skull_base_profile`,
:func:`hemolab.synth.realism.vertex_profile`, the same scans); then the HU under the labels (truth and reference) per bleed type of a cohort
(:func:`hemolab.synth.realism.label_hu_stats`), and seconds per case per profile.

    python benchmarks/synth_realism.py                       # small cohort (20 cases) + 1 full case
    python benchmarks/synth_realism.py --full-cases 2 --small-cases 20 --tiny-cases 8 --json out.json

The real scan is measured twice: as stored (the raw DICOM slices, native in-plane grid, no resampling)
and as :func:`hemolab.io.read_scan` returns it (gantry tilt corrected by resampling, which smooths).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import SimpleITK as sitk

from hemolab.io import array_from_image, image_from_array, read_scan, sample_scan_path
from hemolab.preprocess import cranial_cavity_mask
from hemolab.synth import BLEED_TYPES, generate_case, plan_cohort
from hemolab.synth.realism import (
    INNER_TABLE_BINS_MM,
    SKULL_BASE_BINS_MM,
    inner_table_profile,
    label_hu_stats,
    realism_stats,
    skull_base_profile,
    vertex_profile,
)


def real_stats() -> dict:
    """Realism statistics of the shipped GE head CT: raw slices, and the tilt-corrected volume."""
    files = sorted(sample_scan_path().glob("*.dcm"))
    slices = [array_from_image(sitk.ReadImage(str(f), sitk.sitkFloat32)) for f in files]
    raw = np.concatenate(slices, axis=2)
    sp = sitk.ReadImage(str(files[0])).GetSpacing()
    out = {"real_raw_slices": realism_stats(raw, None, (sp[0], sp[1], 5.0))}
    img = read_scan(sample_scan_path())
    out["real_read_scan"] = realism_stats(array_from_image(img), None, img.GetSpacing())
    out["real_read_scan"]["inner_table"] = inner_table_profile(array_from_image(img), img.GetSpacing())
    cavity = array_from_image(cranial_cavity_mask(img)) > 0
    out["real_read_scan"]["skull_base"] = skull_base_profile(array_from_image(img), img.GetSpacing(), cavity)[
        "rise"
    ]
    out["real_read_scan"]["vertex"] = vertex_profile(array_from_image(img), img.GetSpacing(), cavity)["rise"]
    return out


def cohort_stats(profile: str, n_cases: int | None, seed: int = 0) -> tuple[dict, dict, list[float]]:
    """Generate a cohort in memory; per-case realism stats, label HU stats per bleed type, seconds per case."""
    plans = plan_cohort(n_cases, seed=seed, profile=profile)
    scans, per_type, seconds = [], defaultdict(lambda: defaultdict(list)), []
    for plan in plans:
        t0 = time.perf_counter()
        case = generate_case(plan)
        seconds.append(time.perf_counter() - t0)
        scans.append(realism_stats(case.image, None, case.grid.spacing))
        if not case.truth.any():
            scans[-1]["inner_table"] = inner_table_profile(case.image, case.grid.spacing)
            sp = case.grid.spacing
            cavity = array_from_image(cranial_cavity_mask(image_from_array(case.image, spacing=sp))) > 0
            scans[-1]["skull_base"] = skull_base_profile(case.image, sp, cavity)["rise"]
            scans[-1]["vertex"] = vertex_profile(case.image, sp, cavity)["rise"]
        for name, lab in (("truth", case.truth), ("reference", case.reference)):
            if lab.any():
                s = label_hu_stats(case.image, lab)
                per_type[plan.bleed_type][name].append(s)
                per_type[plan.bleed_type][name + "_values"].append(case.image[lab].astype(np.float32))
    return {"scans": scans}, per_type, seconds


def _summary(per_type: dict) -> dict:
    out = {}
    for t in BLEED_TYPES:
        if t not in per_type:
            continue
        out[t] = {}
        for name in ("truth", "reference"):
            vals = np.concatenate(per_type[t][name + "_values"])
            stats = per_type[t][name]
            out[t][name] = {
                "cases": len(stats),
                "pooled_p5_p50_p95": [round(float(x), 1) for x in np.percentile(vals, [5, 50, 95])],
                "worst_case_p95": round(max(s["p95"] for s in stats), 1),
                "worst_case_above_150": round(max(s["above_150"] for s in stats), 3),
                "worst_case_below_45": round(max(s["below_45"] for s in stats), 3),
                "core_voxels_above_150": int(sum(s["core_above_150"] for s in stats)),
            }
    return out


def _inner_table_summary(scans: list[dict]) -> dict | None:
    """Median over the blood-free scans of each inner-table bin (``None`` when the cohort has none)."""
    profiles = [s["inner_table"] for s in scans if "inner_table" in s]
    if not profiles:
        return None
    return {
        side: [
            round(float(np.nanmedian([p[side][i] for p in profiles])), 1)
            for i in range(len(INNER_TABLE_BINS_MM))
        ]
        for side in ("back", "front")
    } | {"scans": len(profiles)}


def _end_summary(scans: list[dict], key: str) -> list[float] | None:
    """Median over the blood-free scans of each bin of ``key`` (``"skull_base"`` or ``"vertex"``; ``None`` when
    the cohort has no blood-free scan)."""
    rises = [s[key] for s in scans if key in s]
    if not rises:
        return None
    return [round(float(np.nanmedian([r[i] for r in rises])), 1) for i in range(len(SKULL_BASE_BINS_MM))]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny-cases", type=int, default=8)
    ap.add_argument("--small-cases", type=int, default=20)
    ap.add_argument("--full-cases", type=int, default=1, help="full-profile (512x512) cases; 0 to skip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    result: dict = {"real": real_stats(), "profiles": {}}
    print("scan                      parenchyma HU  noise SD  lag-1 corr  voxels")
    for name, s in result["real"].items():
        print(
            f"{name:<25} {s['parenchyma_hu']:>13.1f} {s['noise_sd']:>9.2f} {s['lag1_corr']:>11.2f} {s['n_voxels']:>7d}"
        )
    for profile, n in (("tiny", args.tiny_cases), ("small", args.small_cases), ("full", args.full_cases)):
        if n <= 0:
            continue
        scans, per_type, seconds = cohort_stats(profile, n, args.seed)
        ok = [s for s in scans["scans"] if np.isfinite(s["noise_sd"])]
        res = {
            "cases": n,
            "s_per_case_median": round(float(np.median(seconds)), 3),
            "s_per_case_mean": round(float(np.mean(seconds)), 3),
            "parenchyma_hu": round(float(np.median([s["parenchyma_hu"] for s in ok])), 2),
            "noise_sd": round(float(np.median([s["noise_sd"] for s in ok])), 2),
            "lag1_corr": round(float(np.median([s["lag1_corr"] for s in ok])), 3),
            "inner_table": _inner_table_summary(scans["scans"]),
            "skull_base": _end_summary(scans["scans"], "skull_base"),
            "vertex": _end_summary(scans["scans"], "vertex"),
            "labels": _summary(per_type),
        }
        result["profiles"][profile] = res
        print(
            f"synthetic {profile:<15} {res['parenchyma_hu']:>13.1f} {res['noise_sd']:>9.2f} "
            f"{res['lag1_corr']:>11.2f}   ({n} cases, {res['s_per_case_mean']:.2f} s/case mean)"
        )
    bins = "  ".join(f"{lo:g}-{hi:g} mm" for lo, hi in INNER_TABLE_BINS_MM)
    print(f"\nmedian HU under the inner table, by distance from the skull: back | front ({bins})")
    rows = [("real (read_scan)", result["real"]["real_read_scan"]["inner_table"])]
    rows += [(f"synthetic {p} (blood-free)", r["inner_table"]) for p, r in result["profiles"].items()]
    for name, prof in rows:
        if prof is None:
            continue
        back, front = ("  ".join(f"{v:6.1f}" for v in prof[side]) for side in ("back", "front"))
        print(f"  {name:<28} {back} | {front}")
    bins = "  ".join(f"{lo:g}-{hi:g} mm" for lo, hi in SKULL_BASE_BINS_MM)
    for key, where in (("skull_base", "above the lowest"), ("vertex", "below the highest")):
        print(f"\nHU above the middle of the brain, by distance {where} slice of the brain ({bins})")
        rows = [("real (read_scan)", result["real"]["real_read_scan"][key])]
        rows += [(f"synthetic {p} (blood-free)", r[key]) for p, r in result["profiles"].items()]
        for name, rise in rows:
            if rise is not None:
                print(f"  {name:<28} " + "  ".join(f"{v:+6.1f}" for v in rise))
    for profile, res in result["profiles"].items():
        print(
            f"\nlabel HU, profile {profile}: type  label  cases  p5/p50/p95 pooled  worst p95  worst >150  worst <45  core>150"
        )
        for t, by in res["labels"].items():
            for name, s in by.items():
                p = "/".join(f"{x:.0f}" for x in s["pooled_p5_p50_p95"])
                print(
                    f"  {t:<9} {name:<9} {s['cases']:>3}  {p:>14}  {s['worst_case_p95']:>9.0f}  "
                    f"{s['worst_case_above_150']:>10.3f}  {s['worst_case_below_45']:>9.3f}  {s['core_voxels_above_150']:>8d}"
                )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
