"""A synthetic cohort of head CTs with haemorrhage, written as a Medical Segmentation Decathlon dataset.

Arab 2020 (docs/methods.md §1) used 55 first non-contrast head CTs (512x512x43-66 voxels, in-plane
0.42-0.50 mm, slices 2.4-3 mm) split 40 train / 5 validation / 10 test, each labelled by three raters
whose majority vote is the reference. Those scans are not public, so hemolab generates look-alikes:

==========  =======  ==================  =================  =====================
profile     cases    grid (x, y, z)      in-plane (mm)      slices (mm)
==========  =======  ==================  =================  =====================
``tiny``    8        64 x 64 x 16        3.4-3.7            9.0-10.0
``small``   20       128 x 128 x 32      1.7-1.9            4.5-5.0
``full``    55       512 x 512 x 40-66   0.42-0.50          2.4-4.0 (native)
==========  =======  ==================  =================  =====================

The layout on disk (the one nnU-Net and MONAI's ``DecathlonDataset`` read)::

    DIR/dataset.json            name, modality, labels, training / validation / test lists
    DIR/imagesTr/<case>.nii.gz  int16 HU       DIR/labelsTr/<case>.nii.gz  uint8 reference (majority of 3)
    DIR/imagesTs/, labelsTs/    the test cases
    DIR/raters/<case>_rater{1,2,3}.nii.gz      each rater's delineation
    DIR/truth/<case>.nii.gz     the exact simulated bleed (what no real dataset has)
    DIR/cases.csv               one row per case: split, bleed type, volumes, spacing, shape, seed, ...

The same ``seed`` always gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hemolab.config import resolve_profile
from hemolab.errors import HemolabError, HemolabExistsError
from hemolab.io import decathlon_manifest, image_from_array, write_image
from hemolab.synth.anatomy import build_head
from hemolab.synth.bleeds import VOLUME_RANGE_ML, apply_bleed, bright_spill, make_bleed
from hemolab.synth.grid import Grid
from hemolab.synth.raters import majority_vote, simulate_raters
from hemolab.synth.scanner import acquire

#: Acquisition and size of each profile.
PROFILE_SPECS: dict[str, dict] = {
    "tiny": dict(n_cases=8, split=(5, 1, 2), matrix=64, in_plane=(3.4, 3.7), slices=(16, 16), slice_mm=(9.0, 10.0)),
    "small": dict(n_cases=20, split=(14, 2, 4), matrix=128, in_plane=(1.7, 1.9), slices=(32, 32), slice_mm=(4.5, 5.0)),
    "full": dict(n_cases=55, split=(40, 5, 10), matrix=512, in_plane=(0.42, 0.50), slices=(40, 66), slice_mm=(2.4, 4.0)),
}  # fmt: skip

#: The order bleed types are dealt to cases (after the scans without haemorrhage).
_TYPE_CYCLE = (
    "iph_deep",
    "iph_lobar",
    "sdh",
    "ivh",
    "edh",
    "sah",
    "iph_deep",
    "iph_lobar",
    "sdh",
    "iph_deep",
)

CSV_COLUMNS = (
    "case_id",
    "split",
    "bleed_type",
    "true_volume_ml",
    "reference_volume_ml",
    "rater1_volume_ml",
    "rater2_volume_ml",
    "rater3_volume_ml",
    "target_volume_ml",
    "spacing_x",
    "spacing_y",
    "spacing_z",
    "shape_x",
    "shape_y",
    "shape_z",
    "seed",
    "has_calcification",
    "calcification_in_reference",
    "touches_bone",
    "noise_sd",
    "profile",
)


@dataclass
class CasePlan:
    """What to generate for one case (everything needed to regenerate it on its own)."""

    case_id: str
    split: str
    bleed_type: str
    target_volume_ml: float
    seed: int
    profile: str


@dataclass
class SynthCase:
    """One generated case, in memory (arrays indexed ``[x, y, z]``)."""

    plan: CasePlan
    grid: Grid
    image: np.ndarray  # int16 HU
    truth: np.ndarray  # bool, the simulated bleed (before partial-volume blur)
    raters: list[np.ndarray]  # bool, one per rater
    reference: np.ndarray  # bool, majority vote of the raters
    calcification: np.ndarray  # bool, calcified voxels (not blood)
    info: dict = field(default_factory=dict)


def split_sizes(n_cases: int, profile: str) -> tuple[int, int, int]:
    """(train, validation, test) counts: the paper's 40/5/10 for 55 cases, the same proportions otherwise."""
    spec = PROFILE_SPECS[profile]
    if n_cases == spec["n_cases"]:
        return spec["split"]
    n_test = int(round(n_cases * 10 / 55)) if n_cases >= 3 else 0
    n_val = int(round(n_cases * 5 / 55)) if n_cases >= 4 else 0
    n_val = max(n_val, 1) if n_cases >= 4 else n_val
    n_test = max(n_test, 1) if n_cases >= 3 else n_test
    return n_cases - n_val - n_test, n_val, n_test


def plan_cohort(n_cases: int | None = None, seed: int = 0, profile: str = "tiny") -> list[CasePlan]:
    """Deal bleed types, target volumes, splits and per-case seeds for a cohort.

    About 15% of the cases (at least one) have no haemorrhage; the rest cycle through the bleed types.
    Target volumes are spread evenly on a log scale over each type's range, so that every cohort holds
    bleeds from under 1 mL to over 80 mL.

    Args:
        n_cases: number of cases (``None``: the profile's default, 8 / 20 / 55).
        seed: cohort seed.
        profile: ``"tiny"``, ``"small"`` or ``"full"``.

    Returns:
        One :class:`CasePlan` per case, in case-id order.

    Raises:
        HemolabError: for fewer than 1 case or an unknown profile.
    """
    profile = resolve_profile(profile)
    n = PROFILE_SPECS[profile]["n_cases"] if n_cases is None else n_cases
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise HemolabError(f"n_cases must be a whole number >= 1, got {n_cases!r}")
    n = int(n)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise HemolabError(f"seed must be a whole number >= 0, got {seed!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    n_none = max(1, int(round(0.15 * n))) if n >= 2 else 0
    types = ["none"] * n_none + [_TYPE_CYCLE[i % len(_TYPE_CYCLE)] for i in range(n - n_none)]
    # spread target volumes: rank u in [0, 1] per volume-driven case, evenly spaced, shuffled
    u = np.zeros(n)
    sized = [i for i, t in enumerate(types) if t != "none"]
    if len(sized) > 1:
        grid_u = np.linspace(0.0, 1.0, len(sized)) + rng.uniform(-0.1, 0.1, len(sized)) / len(sized)
        u[sized] = np.clip(rng.permutation(grid_u), 0.0, 1.0)
    elif sized:
        u[sized] = 0.5
    # the smallest and largest ranks go to intraparenchymal bleeds, whose range spans < 1 mL to > 80 mL
    iph = [i for i in sized if types[i].startswith("iph")]
    if len(iph) >= 2:
        i_min = sized[int(np.argmin(u[sized]))]
        u[i_min], u[iph[0]] = u[iph[0]], u[i_min]
        i_max = sized[int(np.argmax(u[sized]))]
        u[i_max], u[iph[1]] = u[iph[1]], u[i_max]
    order = rng.permutation(n)
    n_tr, n_val, n_te = split_sizes(n, profile)
    splits = ["train"] * n_tr + ["validation"] * n_val + ["test"] * n_te
    plans = []
    for pos, i in enumerate(order):
        t = types[i]
        lo_ml, hi_ml = VOLUME_RANGE_ML[t]
        target = 0.0 if t == "none" else float(lo_ml * (hi_ml / lo_ml) ** u[i])
        case_seed = int(np.random.SeedSequence([int(seed), int(pos)]).generate_state(1)[0])
        plans.append(CasePlan(f"case_{pos:03d}", splits[pos], t, round(target, 3), case_seed, profile))
    return plans


def case_grid(profile: str, rng: np.random.Generator) -> Grid:
    """Draw an acquisition grid (matrix, spacing) for one case of a profile, centred on the world origin."""
    spec = PROFILE_SPECS[profile]
    m = spec["matrix"]
    s_xy = float(np.round(rng.uniform(*spec["in_plane"]), 4))
    s_z = float(np.round(rng.uniform(*spec["slice_mm"]), 3))
    lo, hi = spec["slices"]
    nz = int(np.clip(round(rng.uniform(135.0, 165.0) / s_z), lo, hi)) if lo != hi else lo
    shape = (m, m, nz)
    spacing = (s_xy, s_xy, s_z)
    origin = tuple(float(-(n - 1) / 2.0 * s) for n, s in zip(shape, spacing, strict=True))
    return Grid(shape, spacing, origin)  # type: ignore[arg-type]


def generate_case(plan: CasePlan) -> SynthCase:
    """Generate one case (image, truth, raters, reference) from its plan, deterministically.

    Args:
        plan: from :func:`plan_cohort`.

    Returns:
        A :class:`SynthCase`.
    """
    rng = np.random.default_rng(plan.seed)
    grid = case_grid(plan.profile, rng)
    head = build_head(grid, rng)
    bleed = make_bleed(head, plan.bleed_type, plan.target_volume_ml, rng)
    bleed.fraction *= 1.0 - head.calcification  # calcified voxels stay calcification, never blood
    if bleed.oedema is not None:  # nor oedema: a deep bleed next to a calcified pineal leaves it bright
        bleed.oedema *= 1.0 - head.calcification
    # the label holds blood only: not the voxels that bone or calcification brighten (partial volume, blur)
    not_blood = bright_spill(head.image, bleed.fraction)
    label_fraction = np.where(not_blood, np.float32(0.0), bleed.fraction)
    image = head.image
    apply_bleed(image, bleed)
    noise_sd = float(rng.uniform(2.0, 3.0))
    hu = acquire(image, head, rng, noise_sd)
    truth = label_fraction >= 0.5
    calc = head.calcification >= 0.5
    raters = simulate_raters(
        label_fraction,
        grid,
        rng,
        bleed_type=plan.bleed_type,
        calcification=head.calcification,
        exclude=not_blood,
    )
    reference = majority_vote(raters)
    # blood right against bone (> 300 HU in the ideal image), only its partial-volume rim between them:
    # the hard cases of Arab 2020, Fig. 2
    from scipy import ndimage as ndi

    bone = head.image > 300.0
    touches = bool(truth.any() and (ndi.binary_dilation(truth, iterations=2) & bone & ~calc).any())
    v = grid.voxel_ml
    info = {
        "case_id": plan.case_id,
        "split": plan.split,
        "bleed_type": plan.bleed_type,
        "true_volume_ml": round(float(truth.sum()) * v, 4),
        "reference_volume_ml": round(float(reference.sum()) * v, 4),
        "rater1_volume_ml": round(float(raters[0].sum()) * v, 4),
        "rater2_volume_ml": round(float(raters[1].sum()) * v, 4),
        "rater3_volume_ml": round(float(raters[2].sum()) * v, 4),
        "target_volume_ml": plan.target_volume_ml,
        "spacing_x": grid.spacing[0],
        "spacing_y": grid.spacing[1],
        "spacing_z": grid.spacing[2],
        "shape_x": grid.shape[0],
        "shape_y": grid.shape[1],
        "shape_z": grid.shape[2],
        "seed": plan.seed,
        "has_calcification": bool(calc.any()),
        "calcification_in_reference": bool((reference & calc & ~truth).any()),
        "touches_bone": touches,
        "noise_sd": round(noise_sd, 3),
        "profile": plan.profile,
    }
    return SynthCase(plan, grid, hu, truth, raters, reference, calc, info)


#: The generator's release, written to ``dataset.json``: raised whenever the same plan gives other images, so
#: that :func:`hemolab.datasets.ensure_cohort` makes a cohort of the current generator instead of reusing one
#: an older hemolab wrote (2: the dense band under the inner table; oedema no longer covers calcifications).
GENERATOR_RELEASE = "3"


def _dataset_json(plans: list[CasePlan], profile: str, seed: int) -> dict:
    return decathlon_manifest(
        name=f"hemolab-synth-{profile}",
        description=(
            "Synthetic non-contrast head CTs with intracranial haemorrhage (hemolab.synth, "
            f"profile {profile}, seed {seed}); reference label = majority vote of 3 simulated raters."
        ),
        reference="hemolab; layout of the Medical Segmentation Decathlon",
        licence="CC0-1.0",
        release=GENERATOR_RELEASE,
        train_ids=[p.case_id for p in plans if p.split in ("train", "validation")],
        test_ids=[p.case_id for p in plans if p.split == "test"],
        validation_ids=[p.case_id for p in plans if p.split == "validation"],
    )


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_case(case: SynthCase, root: Path) -> None:
    """Write one generated case's files into a dataset folder."""

    g = case.grid
    cid = case.plan.case_id
    sub = "Ts" if case.plan.split == "test" else "Tr"

    def save(arr, rel):
        img = image_from_array(arr, spacing=g.spacing, origin=g.origin)
        write_image(img, root / rel, overwrite=True)

    save(case.image, f"images{sub}/{cid}.nii.gz")
    save(case.reference.astype(np.uint8), f"labels{sub}/{cid}.nii.gz")
    save(case.truth.astype(np.uint8), f"truth/{cid}.nii.gz")
    for i, r in enumerate(case.raters, start=1):
        save(r.astype(np.uint8), f"raters/{cid}_rater{i}.nii.gz")


def _is_cohort_folder(path: Path) -> bool:
    return (path / "dataset.json").is_file() or (path / "cases.csv").is_file()


def make_cohort(
    out: str | os.PathLike,
    n_cases: int | None = None,
    seed: int = 0,
    profile: str = "tiny",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate a synthetic cohort and write it in Medical Segmentation Decathlon layout.

    The cohort is written into a temporary folder next to ``out`` and renamed at the end, so that an
    interrupted run never leaves a half-written dataset behind.

    Args:
        out: the dataset folder to create.
        n_cases: number of cases (``None``: 8 for tiny, 20 for small, 55 for full as in Arab 2020).
        seed: cohort seed; the same seed gives byte-identical files.
        profile: ``"tiny"`` (64x64x16), ``"small"`` (128x128x32) or ``"full"`` (native 512x512x40-66).
        overwrite: replace an existing hemolab cohort at ``out``.
        progress: show a progress bar.

    Returns:
        The dataset folder.

    Raises:
        HemolabError: for bad arguments.
        HemolabExistsError: if ``out`` is a non-empty folder and ``overwrite`` is false, or is something
            other than a hemolab cohort (never deleted, even with ``overwrite``).
    """
    out = Path(out).expanduser().resolve()
    plans = plan_cohort(n_cases, seed, profile)
    profile = plans[0].profile
    if out.exists():
        if not out.is_dir():
            raise HemolabExistsError(f"{out} exists and is not a folder: choose another output folder")
        if any(out.iterdir()):
            if not overwrite:
                raise HemolabExistsError(
                    f"{out} exists and is not empty: pass overwrite=True (--overwrite) to replace it, or choose another folder"
                )
            if not _is_cohort_folder(out):
                raise HemolabExistsError(
                    f"{out} is not empty and does not hold a hemolab cohort (no dataset.json): "
                    "refusing to delete it even with overwrite; choose another folder"
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        rows = []
        for plan in tqdm(plans, desc=f"synth {profile}", disable=not progress, unit="case"):
            case = generate_case(plan)
            write_case(case, tmp)
            rows.append(case.info)
        with open(tmp / "dataset.json", "w", encoding="utf-8", newline="\n") as fh:
            json.dump(_dataset_json(plans, profile, seed), fh, indent=2)
            fh.write("\n")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([_fmt(row[c]) for c in CSV_COLUMNS])
        (tmp / "cases.csv").write_text(buf.getvalue(), encoding="utf-8")
        if out.exists():
            if any(out.iterdir()):
                shutil.rmtree(out)  # checked above: a hemolab cohort, and overwrite was asked for
            else:
                out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
