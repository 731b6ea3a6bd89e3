"""The synthetic cohort's "card": what it simulates and what it does not, with the numbers of a profile.

A model card for the data (notebook 00 shows it first): every number in it comes from the generator's own
constants (:data:`~hemolab.synth.cohort.PROFILE_SPECS`, :data:`~hemolab.synth.bleeds.VOLUME_RANGE_ML`,
:data:`~hemolab.synth.anatomy.TISSUE_HU`, the scanner's kernels) or from :func:`~hemolab.synth.cohort.plan_cohort`,
so the card cannot drift from the code. Arab 2020's data for comparison: docs/methods.md §1.1.
"""

from __future__ import annotations

from collections import Counter

from hemolab.config import resolve_profile
from hemolab.synth.anatomy import TISSUE_HU
from hemolab.synth.bleeds import BLEED_TYPES, BRIGHT_SPILL_HU, VOLUME_RANGE_ML
from hemolab.synth.cohort import PROFILE_SPECS, plan_cohort
from hemolab.synth.scanner import HU_MAX, HU_MIN, NOISE_KERNEL_VOXELS, PSF_SIGMA_VOXELS

#: What each bleed type is, in a few words (the shapes of :mod:`hemolab.synth.bleeds`).
BLEED_DESCRIPTIONS: dict[str, str] = {
    "iph_deep": "intraparenchymal, basal ganglia / thalamus; irregular, oedema rim, may reach the ventricles",
    "iph_lobar": "intraparenchymal near the cortex; about half reach the inner table of the skull",
    "ivh": "intraventricular, layering posteriorly with a blood-CSF level",
    "sdh": "subdural crescent between the inner table and the brain, pushing the brain in (mass effect)",
    "edh": "epidural lens between the inner table and the brain, pushing the brain in (mass effect)",
    "sah": "subarachnoid, thin blood in the sulci and extra-axial CSF of the convexity",
    "none": "no haemorrhage",
}

#: What the generator leaves out, and why it matters for what the networks learn.
NOT_SIMULATED: tuple[str, ...] = (
    "**real anatomical variation**: every head is one model perturbed (size, shape, tilt, skull thickness, "
    "atrophy); no children, no malformations, no other disease (tumour, infarct, old lesions, hydrocephalus)",
    "**one bleed per scan** of one type (a deep bleed may reach the ventricles); real patients often have "
    "several types at once, and subacute or chronic blood (isodense, hypodense) is not simulated: all blood "
    "is acute",
    "**patient motion**, and its blur and doubled edges",
    "**surgery and devices**: no craniectomy, burr holes, shunts, clips, coils or dental metal, and so no "
    "metal streaks",
    "**contrast agent** (the papers' scans are non-contrast too, but a real cohort can hold a contrast scan "
    "by mistake)",
    "**real rater disagreement**: the three raters make random, independent errors of a few kinds; real "
    "experts disagree systematically (the extent of subarachnoid blood, where a bleed meets the ventricle), "
    "and with experience and window settings",
    "**scanner variety**: one noise texture and one blur for all cases; no gantry tilt, uneven slices, "
    "other reconstruction kernels, ring artefacts or vendor differences (the real head CT shipped with hemolab "
    "has a tilt and uneven slices)",
)


def _range(lo: float, hi: float, unit: str = "") -> str:
    return f"{lo:g}{unit}" if lo == hi else f"{lo:g}–{hi:g}{unit}"


def cohort_card(profile: str | None = None, seed: int = 0) -> str:
    """A Markdown "cohort card" of the synthetic cohort of ``profile``: what it simulates and what it does not.

    Args:
        profile: ``"tiny"``, ``"small"``, ``"full"`` or ``None`` (auto, :func:`hemolab.config.resolve_profile`).
        seed: the cohort seed whose plan gives the counts per bleed type (0: the course's cohort).

    Returns:
        Markdown text (show it with ``IPython.display.Markdown``).
    """
    profile = resolve_profile(profile)
    spec = PROFILE_SPECS[profile]
    plans = plan_cohort(None, seed=seed, profile=profile)
    counts = Counter(p.bleed_type for p in plans)
    n_tr, n_val, n_te = spec["split"]
    lo_s, hi_s = spec["slices"]
    grid = f"{spec['matrix']}×{spec['matrix']}×{_range(lo_s, hi_s)}"
    lines = [
        f"**Cohort card: the synthetic cohort of the `{profile}` profile** (seed {seed}; generated from "
        "`hemolab.synth`'s own constants)",
        "",
        "**What it simulates**",
        "",
        f"- **cases**: {spec['n_cases']} ({n_tr} train / {n_val} validation / {n_te} test), {counts['none']} "
        f"without haemorrhage; grid {grid} voxels of {_range(*spec['in_plane'], ' mm')} in-plane and "
        f"{_range(*spec['slice_mm'], ' mm')} slices. Arab 2020 had 55 scans (40 / 5 / 10), 512×512×43–66 voxels "
        "of 0.42–0.50 mm with 2.4–3 mm slices, all with haemorrhage.",
        "- **anatomy**: an adult head built from perturbed ellipsoids: scalp, a skull of two tables and diploe "
        "with a skull base (fossae, petrous ridges, air cells, orbits), extra-axial CSF, cortex with sulci, white "
        "matter, deep grey nuclei, cerebellum, brainstem, the ventricles and the falx. Mean HU per tissue "
        "(drawn around these per case): "
        + ", ".join(f"{name.replace('_', ' ')} {hu:g}" for name, hu in TISSUE_HU.items())
        + ".",
        "- **five bleed types and none**, target volumes spread on a log scale (mL); counts in this cohort:",
        "",
        "  | type | what | volume range (mL) | cases |",
        "  |---|---|---|---|",
    ]
    for t in BLEED_TYPES:
        lo, hi = VOLUME_RANGE_ML[t]
        vol = "–" if t == "none" else _range(lo, hi)
        lines.append(f"  | `{t}` | {BLEED_DESCRIPTIONS[t]} | {vol} | {counts.get(t, 0)} |")
    lines += [
        "",
        "- **acute blood** of 50–80 HU, heterogeneous; extra-axial bleeds (SDH, EDH) lie between the skull and "
        "the brain, never in the bone, and push the brain in.",
        "- **the calcification trap**: calcified pineal gland, choroid plexus or falx in many heads, 180–400 HU "
        "and bright like blood in a brain window; never in the truth, sometimes drawn by one rater.",
        "- **the dural trap**: the tentorium and the superior sagittal, transverse and sigmoid sinuses (about 55 HU, against "
        "the inner table) and the choroid plexus in each atrium (about 45 HU), dense like a thin bleed (on real CT "
        "a network that never saw them calls them blood); never in the truth; and a **dense band under the inner "
        "table** (dura, the cortex's partial volume with bone, residual beam hardening: 12–30 HU above the brain "
        "beneath, fading over about 1 cm, strongest at the back of the head and the vertex), measured on the "
        "shipped real scan (`hemolab.synth.realism.inner_table_profile`); and a **denser skull base**: the brain of "
        "the lowest slices 12–24 HU above the middle of the brain at the floor, falling off over 2–3 cm, strongest "
        "behind the petrous ridges (beam hardening, partial volume with the floor), and a **denser vertex** (the "
        "top centimetre of brain 24–40 HU above the middle at the highest slice, where the calvarium is cut "
        "tangentially), both measured the same way (`hemolab.synth.realism.skull_base_profile`, `vertex_profile`).",
        "- **three raters** per case, each shifting the bleed's boundary a little (a personal bias), sometimes "
        "missing part of a thin subarachnoid bleed or a first/last slice, one of them sometimes calling a "
        "calcification blood; the reference label is their **majority vote** (at least 2 of 3), as in Arab 2020. "
        "The exact simulated bleed (`truth/`) is kept too, which no real dataset has.",
        f"- **labels hold blood only**: voxels that bone or a calcification brightens by {BRIGHT_SPILL_HU:g} HU "
        "or more (partial volume, blur) are not labelled, as experts stop at the bone.",
        f"- **the scanner**: partial-volume blur (Gaussian, σ = {PSF_SIGMA_VOXELS:g} voxel), beam-hardening "
        "streaks and dark bands at the skull base, **correlated noise** of 2–3 HU SD (white noise smoothed "
        f"in-plane with σ = {NOISE_KERNEL_VOXELS:g} voxel, like a reconstruction kernel), integers clipped to "
        f"[{HU_MIN}, {HU_MAX}] HU as a scanner stores them.",
        "",
        "**What it does not simulate**",
        "",
    ]
    lines += [f"- {item}" for item in NOT_SIMULATED]
    return "\n".join(lines) + "\n"


__all__ = ["BLEED_DESCRIPTIONS", "NOT_SIMULATED", "cohort_card"]
