"""Reading a segmentation dataset in Medical Segmentation Decathlon (MSD) / nnU-Net layout.

A dataset folder holds ``dataset.json`` (name, modality, labels and the lists ``training``, ``test`` and,
for hemolab, ``validation``: the ids of the training cases held out for model selection), the scans in
``imagesTr`` / ``imagesTs`` and their labels in ``labelsTr`` / ``labelsTs``. hemolab's synthetic cohorts
(:func:`hemolab.synth.make_cohort`) add ``raters/<case>_rater{1,2,3}.nii.gz`` (three delineations whose
majority vote is the label, as in Arab 2020), ``truth/<case>.nii.gz`` (the exact simulated bleed) and
``cases.csv`` (one row of facts per case).

:func:`ensure_cohort` gives every notebook the same cohort in the workspace, generating it on first use.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
from tqdm.auto import tqdm

from hemolab.config import resolve_profile, workspace_dir
from hemolab.errors import HemolabError, HemolabFileError
from hemolab.io import array_from_image, check_file_complete, check_same_geometry
from hemolab.synth import make_cohort
from hemolab.synth.cohort import GENERATOR_RELEASE
from hemolab.validation import check_head_ct, check_mask

SPLITS: tuple[str, ...] = ("train", "validation", "test")


def _parse(value: str):
    """A cases.csv cell as bool / int / float / str."""
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


@dataclass
class Case:
    """One case of a dataset: where its files are, and what ``cases.csv`` says about it.

    Attributes:
        case_id: e.g. ``"case_003"``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        image_path: the scan (NIfTI, int16 HU for hemolab cohorts).
        label_path: the reference label (uint8 0/1), or ``None`` if the dataset has none for this case.
        rater_paths: the raters' delineations (empty if the dataset has none).
        info: the case's row of ``cases.csv`` (empty if there is no ``cases.csv``).
        truth_path: the exact simulated bleed (synthetic cohorts only), else ``None``.
    """

    case_id: str
    split: str
    image_path: Path
    label_path: Path | None
    rater_paths: list[Path] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    truth_path: Path | None = None

    def load_image(self) -> sitk.Image:
        """The scan as a SimpleITK image (HU)."""
        return _read(self.image_path, "image")

    def load_label(self) -> sitk.Image:
        """The reference label as a SimpleITK image (uint8, 0 = background, 1 = haemorrhage)."""
        if self.label_path is None:
            raise HemolabFileError(f"case {self.case_id} has no label in this dataset")
        return sitk.Cast(_read(self.label_path, "label"), sitk.sitkUInt8)

    def load_raters(self) -> list[sitk.Image]:
        """The raters' delineations (uint8 images), in rater order."""
        if not self.rater_paths:
            raise HemolabFileError(f"case {self.case_id} has no rater delineations in this dataset")
        return [sitk.Cast(_read(p, "rater mask"), sitk.sitkUInt8) for p in self.rater_paths]

    def load_truth(self) -> sitk.Image:
        """The exact simulated bleed (synthetic cohorts only; real datasets have no such thing)."""
        if self.truth_path is None:
            raise HemolabFileError(
                f"case {self.case_id} has no ground-truth file (only synthetic cohorts have one)"
            )
        return sitk.Cast(_read(self.truth_path, "truth"), sitk.sitkUInt8)

    def __repr__(self) -> str:
        kind = self.info.get("bleed_type", "?")
        return f"Case({self.case_id!r}, split={self.split!r}, bleed_type={kind!r})"


def _read(path: Path, what: str) -> sitk.Image:
    if not path.is_file():
        raise HemolabFileError(f"{what} file {path} is missing: the dataset folder is incomplete")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise HemolabFileError(
            f"{what} file {path} is not an image SimpleITK can read: it is damaged or truncated (an interrupted "
            "copy?); make or fetch it again"
        ) from None
    check_file_complete(path)
    return image


@dataclass
class Dataset:
    """A dataset folder: its ``dataset.json`` and its cases split into train / validation / test."""

    root: Path
    meta: dict
    cases: list[Case]

    @property
    def train(self) -> list[Case]:
        """Training cases (not including the validation ones)."""
        return [c for c in self.cases if c.split == "train"]

    @property
    def validation(self) -> list[Case]:
        """Training cases held out for validation (model selection, early stopping)."""
        return [c for c in self.cases if c.split == "validation"]

    @property
    def test(self) -> list[Case]:
        """Test cases."""
        return [c for c in self.cases if c.split == "test"]

    @property
    def name(self) -> str:
        """The dataset's name from ``dataset.json``."""
        return str(self.meta.get("name", self.root.name))

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, key: int | str) -> Case:
        if isinstance(key, str):
            for c in self.cases:
                if c.case_id == key:
                    return c
            raise KeyError(f"no case {key!r} in {self.root}")
        return self.cases[key]

    def table(self):
        """The cases as a pandas DataFrame (``cases.csv`` plus split and paths)."""
        import pandas as pd

        rows = []
        for c in self.cases:
            row = dict(c.info)
            row.update(case_id=c.case_id, split=c.split, image_path=str(c.image_path))
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, root={str(self.root)!r}, train={len(self.train)}, "
            f"validation={len(self.validation)}, test={len(self.test)})"
        )


def _case_id(rel: str) -> str:
    name = Path(rel).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Read a dataset folder in Medical Segmentation Decathlon layout.

    Args:
        root: the folder holding ``dataset.json``.

    Returns:
        A :class:`Dataset` with ``.cases``, ``.train``, ``.validation``, ``.test``.

    Raises:
        HemolabFileError: if the folder or its ``dataset.json`` is missing.
        HemolabError: if ``dataset.json`` is not valid.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise HemolabFileError(
            f"dataset folder {root} does not exist: make one with `hemolab synth --out {root}` "
            "or hemolab.datasets.ensure_cohort()"
        )
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise HemolabFileError(
            f"{root} has no dataset.json, so it is not a dataset in Medical Segmentation Decathlon layout"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HemolabError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("training", []), list):
        raise HemolabError(
            f"{meta_path} must be an object with a 'training' list of {{image, label}} entries"
        )
    info: dict[str, dict] = {}
    csv_path = root / "cases.csv"
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                info[row["case_id"]] = {k: _parse(v) for k, v in row.items()}
    validation = {str(v) for v in meta.get("validation", [])}
    cases = []
    for split_key, entries in (("training", meta.get("training", [])), ("test", meta.get("test", []))):
        for entry in entries:
            if isinstance(entry, str):  # MSD test lists hold bare image paths
                entry = {"image": entry}
            if not isinstance(entry, dict) or "image" not in entry:
                raise HemolabError(
                    f"{meta_path}: every '{split_key}' entry needs an 'image' path, got {entry!r}"
                )
            cid = _case_id(entry["image"])
            if split_key == "test":
                split = "test"
            else:
                split = "validation" if cid in validation else "train"
            label = entry.get("label")
            raters = sorted((root / "raters").glob(f"{cid}_rater*.nii.gz"))
            truth = root / "truth" / f"{cid}.nii.gz"
            cases.append(
                Case(
                    case_id=cid,
                    split=split,
                    image_path=(root / entry["image"]).resolve(),
                    label_path=(root / label).resolve() if label else None,
                    rater_paths=raters,
                    info=info.get(cid, {}),
                    truth_path=truth if truth.is_file() else None,
                )
            )
    unknown = validation - {c.case_id for c in cases}
    if unknown:
        raise HemolabError(f"{meta_path}: validation ids {sorted(unknown)} are not in the 'training' list")
    return Dataset(root=root, meta=meta, cases=cases)


def validate_dataset(
    dataset: Dataset | str | os.PathLike, splits: tuple[str, ...] | None = None, *, progress: bool = False
) -> Dataset:
    """Read and check every case of a dataset up front, so that training never fails mid-run on a bad case.

    For each case: the image is read completely (a truncated file fails) and passes
    :func:`hemolab.validation.check_head_ct` (finite HU values, air, bone, a size that can hold a head); the
    label exists (train and validation cases), is binary (0/1) and lies on the image's voxel grid (size,
    spacing, origin, direction). Every case is checked before anything is raised, and one error lists them all.

    Args:
        dataset: a dataset folder or a loaded :class:`Dataset`.
        splits: the splits to check, e.g. ``("train", "validation")`` for training; ``None``: every case.
        progress: show a progress bar.

    Returns:
        The :class:`Dataset` (loaded if a folder was given).

    Raises:
        HemolabError: naming each broken case, what is wrong with it and what to do.
    """
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    wanted = SPLITS if splits is None else tuple(splits)
    unknown = set(wanted) - set(SPLITS)
    if unknown:
        raise HemolabError(f"splits must be among {SPLITS}, got {sorted(unknown)}")
    cases = [c for c in ds.cases if c.split in wanted]
    if not cases:
        raise HemolabError(f"dataset {ds.root} has no {' / '.join(wanted)} cases to check")
    problems: list[str] = []
    for case in tqdm(cases, desc="checking cases", unit="case", disable=not progress, leave=False):
        try:
            image = case.load_image()
            check_head_ct(image, name=f"image {case.image_path.name}", source=case.image_path)
            if case.label_path is None:
                if case.split != "test":
                    raise HemolabError(
                        f"it has no label: a {case.split} case needs one ('label' in dataset.json)"
                    )
                continue
            label = _read(case.label_path, "label")
            check_mask(array_from_image(label), f"label {case.label_path.name} ({case.label_path})")
            check_same_geometry(
                image, label, (f"image {case.image_path.name}", f"label {case.label_path.name}")
            )
        except HemolabError as exc:
            problems.append(f"case {case.case_id} ({case.split}): {exc}")
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise HemolabError(
            f"{len(problems)} of {len(cases)} case(s) of dataset {ds.root} cannot be used:\n  "
            + "\n  ".join(shown)
            + "\nFix or replace these files, or remove the cases from dataset.json, and run again"
        )
    return ds


def cohort_dir(profile: str | None = None, seed: int = 0) -> Path:
    """Where :func:`ensure_cohort` keeps the synthetic cohort of a profile and seed (not created here)."""
    return workspace_dir("data") / f"synth-{resolve_profile(profile)}-seed{seed}"


def ensure_cohort(profile: str | None = None, seed: int = 0) -> Path:
    """The synthetic cohort of ``profile`` in the workspace, generated first if it is not there yet.

    The folder is ``workspace_dir("data", f"synth-{profile}-seed{seed}")``. Generation writes into a
    temporary folder and renames it at the end, so a run that was interrupted leaves nothing half-written.

    Args:
        profile: ``"tiny"`` (8 cases), ``"small"`` (20), ``"full"`` (55) or ``None`` for auto.
        seed: cohort seed.

    Returns:
        The dataset folder (load it with :func:`load_dataset`).
    """

    profile = resolve_profile(profile)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise HemolabError(f"seed must be a whole number >= 0, got {seed!r}")
    path = cohort_dir(profile, seed)
    if (path / "dataset.json").is_file() and (path / "cases.csv").is_file():
        release = _cohort_release(path)
        if release == GENERATOR_RELEASE:
            return path
        aside = _free_name(path.with_name(f"{path.name}.release-{release}"))
        path.rename(aside)
        print(
            f"hemolab: the synthetic cohort in {path} was made by an older generator (release {release}, now "
            f"{GENERATOR_RELEASE}); moved to {aside} (delete it when you no longer need it) and made anew.",
            flush=True,
        )
    print(f"hemolab: generating the synthetic {profile} cohort (seed {seed}) in {path} ...", flush=True)
    try:
        make_cohort(path, seed=seed, profile=profile)
    except OSError:
        if not (path / "dataset.json").is_file():  # not a cohort finished by a process running beside us
            raise
    return workspace_dir("data", f"synth-{profile}-seed{seed}")


def _cohort_release(path: Path) -> str:
    """The generator release written in a synthetic cohort's ``dataset.json`` ("1.0" before it was raised)."""
    try:
        return str(json.loads((path / "dataset.json").read_text(encoding="utf-8")).get("release", "?"))
    except (OSError, ValueError):
        return "?"


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... whichever does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


__all__ = ["SPLITS", "Case", "Dataset", "cohort_dir", "ensure_cohort", "load_dataset", "validate_dataset"]
