"""The course as a whole: its map, the navigation between notebooks, launch links and notebook standards.

:data:`COURSE` is the single source of truth for the order of the notebooks, their titles, what each
teaches, how long each takes per profile and what each needs from earlier ones. Everything else is
generated from it, so it never goes stale:

* the Colab badge and the previous / index / next links in every notebook (:func:`update_navigation`);
* the course index notebook ``notebooks/index.ipynb`` (:func:`build_index`);
* the course map in ``README.md`` between ``<!-- course-map:start -->`` and ``<!-- course-map:end -->``
  (:func:`update_readme`);
* the checks that the notebooks follow the course's standards (:func:`notebook_problems`), which the tests
  and ``hemolab course check`` run.

The repository is named once, in :data:`REPO`; the Colab, Binder and ``pip install`` URLs derive from it.
Relative links between notebooks work on GitHub, in JupyterLab and on Colab alike, because Colab's
``/github/<owner>/<repo>/blob/<branch>/<path>`` URLs mirror GitHub's.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hemolab.config import PROFILES
from hemolab.errors import HemolabError

#: The GitHub repository ``owner/name``: every URL below is derived from it.
REPO = "hemolab/hemolab"
#: The branch that Colab and Binder open.
BRANCH = "main"
GITHUB_URL = f"https://github.com/{REPO}"
#: What a notebook's set-up cell installs on Colab (torch is already there, and is never reinstalled).
PIP_SPEC = f"hemolab @ git+{GITHUB_URL}"
#: The course index notebook (in the notebooks folder).
INDEX = "index.ipynb"
#: Cell tags of the generated cells, and of the two cells every notebook starts its code with.
BADGE_TAG = "hemolab-badge"
NAV_TAG = "hemolab-nav"
PARAMETERS_TAG = "parameters"
SETUP_TAG = "hemolab-setup"
#: nbval compares the stored output of cells that contain this marker.
NBVAL_CHECK = "# NBVAL_CHECK_OUTPUT"
#: README markers of the generated course map.
README_START = "<!-- course-map:start -->"
README_END = "<!-- course-map:end -->"
#: The exact line of every notebook's ``parameters`` cell (COMMON conventions).
PARAMETERS_LINE = 'profile = None  # "tiny", "small", "full", or None for auto: full on a GPU, small on a CPU'
#: The set-up cell every notebook runs right after its parameters (installs hemolab on Colab only).
SETUP_SOURCE = f"""try:  # on Colab, install hemolab once; elsewhere it is already installed
    import hemolab
except ImportError:
    %pip install -q "{PIP_SPEC}"
from hemolab.config import setup_notebook
profile = setup_notebook(profile)"""


def colab_url(notebook: str) -> str:
    """The URL that opens ``notebooks/<notebook>`` of :data:`REPO` on Google Colab."""
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{notebook}"


def binder_url(notebook: str = INDEX) -> str:
    """The mybinder.org URL that builds :data:`REPO` and opens JupyterLab at ``notebooks/<notebook>``."""
    return f"https://mybinder.org/v2/gh/{REPO}/{BRANCH}?urlpath=lab/tree/notebooks/{notebook}"


def colab_badge(notebook: str) -> str:
    """Markdown of the "Open In Colab" badge for one notebook."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"
    )


def binder_badge(notebook: str = INDEX) -> str:
    """Markdown of the "launch binder" badge that opens JupyterLab at one notebook (the index by default)."""
    return f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder_url(notebook)})"


# --------------------------------------------------------------------------------------------------------
# The course map
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lesson:
    """One notebook of the course.

    Attributes:
        file: the notebook's file name in ``notebooks/``.
        title: its title, as in its ``# NN · Title`` heading.
        teaches: one line on what it teaches.
        minutes: per profile, the expected run time as ``(low, high)`` minutes; the same numbers as the
            notebook's own "Expected run time" table (checked by :func:`course_problems`).
        needs: what it needs from earlier notebooks.
        if_missing: what it does when that is missing.
    """

    file: str
    title: str
    teaches: str
    minutes: Mapping[str, tuple[float, float]]
    needs: str
    if_missing: str

    @property
    def number(self) -> str:
        """The two-digit number the file name starts with."""
        return self.file[:2]

    @property
    def heading(self) -> str:
        """The notebook's first heading, ``# NN · Title``."""
        return f"# {self.number} · {self.title}"


def _s(seconds: float) -> float:
    return seconds / 60.0


#: The course, in order. Times: tiny and small measured on a 2-core CPU (tiny: the test suite's papermill runs,
#: two notebooks at once; small: one after another in a fresh workspace); full (GPU) as each notebook states it
#: (an estimate unless the notebook says measured).
COURSE: tuple[Lesson, ...] = (
    Lesson(
        file="00_head_ct_and_haemorrhage.ipynb",
        title="Head CT and haemorrhage",
        teaches="Hounsfield units, display windows, the five bleed types and the calcification trap, on the "
        "synthetic cohort and on the real (tilted) head CT that ships with hemolab.",
        minutes={"tiny": (_s(11), _s(11)), "small": (_s(17), _s(17)), "full": (5, 5)},
        needs="nothing",
        if_missing="generates the synthetic cohort",
    ),
    Lesson(
        file="01_preprocessing.ipynb",
        title="Preprocessing: from a scanner's CT to a network's input",
        teaches="Resampling to a fixed grid and back, HU clipping and normalisation of each paper, the "
        "cranial-cavity mask, and the same steps as MONAI pipelines.",
        minutes={"tiny": (_s(16), _s(16)), "small": (_s(28), _s(28)), "full": (5, 10)},
        needs="nothing",
        if_missing="generates the synthetic cohort",
    ),
    Lesson(
        file="02_cnn_ds_architecture.ipynb",
        title="The CNN-DS network, block by block",
        teaches="Arab 2020's 3D U-Net with residual context modules and deep supervision, module by module: "
        "shapes, parameters, receptive field and feature maps.",
        minutes={"tiny": (_s(7), _s(7)), "small": (_s(8), _s(8)), "full": (1, 1)},
        needs="the CNN-DS checkpoint of 03, if there is one",
        if_missing="uses a randomly initialised network (and says so)",
    ),
    Lesson(
        file="03_train_cnn_ds.ipynb",
        title="Training CNN-DS",
        teaches="Training as Arab 2020 did (soft Dice, Adam, LR halving, early stopping), reading the curves, "
        "checkpoints, and test Dice and volumes on the original grid.",
        minutes={"tiny": (_s(8), _s(8)), "small": (5, 5), "full": (60, 180)},
        needs="nothing",
        if_missing="generates the synthetic cohort; saves the checkpoint 05-07 use; an interrupted run resumes",
    ),
    Lesson(
        file="04_patel_3d_cnn.ipynb",
        title="The Patel 3D CNN: valid convolutions, weight maps and tiled inference",
        teaches="Why 124³ gives 36³, the weight map and weighted cross-entropy, patch training, seamless "
        "tiled inference and the 0.1 mL cluster removal of Patel 2019.",
        minutes={"tiny": (_s(23), _s(23)), "small": (12, 12), "full": (60, 120)},
        needs="nothing",
        if_missing="generates the synthetic cohort; saves the checkpoint 06 uses; an interrupted run resumes",
    ),
    Lesson(
        file="05_ablation_deep_supervision.ipynb",
        title="Ablation: does deep supervision help?",
        teaches="A fair ablation: CNN-DS trained with and without deep supervision on the same data and "
        "seeds, curves and test scores next to Arab 2020's.",
        minutes={"tiny": (_s(8), _s(8)), "small": (11, 11), "full": (120, 360)},
        needs="nothing (trains its own pair of networks)",
        if_missing="generates the synthetic cohort; re-running reuses finished runs",
    ),
    Lesson(
        file="06_evaluation_and_volume.ipynb",
        title="Evaluation and volume",
        teaches="Every metric of both papers on pictures, both networks on the test set, failure cases, and "
        "how well ABC/2 measures a bleed's volume.",
        minutes={"tiny": (_s(7), _s(7)), "small": (_s(31), _s(31)), "full": (2, 4)},
        needs="the CNN-DS checkpoint of 03 and the Patel checkpoint of 04 (small and full)",
        if_missing="trains each missing checkpoint first (takes a while)",
    ),
    Lesson(
        file="07_rater_agreement.ipynb",
        title="Rater agreement: is the method distinguishable from an expert?",
        teaches="Cohen's kappa between raters and the method, the Mann-Whitney test, volume disagreement "
        "matrices and rater-vs-rater volume fits, as in Arab 2020.",
        minutes={"tiny": (_s(6), _s(6)), "small": (_s(6), _s(6)), "full": (1, 2)},
        needs="the CNN-DS checkpoint of 03 (small and full)",
        if_missing="trains the missing checkpoint first (takes a while)",
    ),
)


def lesson(file: str) -> Lesson:
    """The :class:`Lesson` of a notebook file name.

    Raises:
        HemolabError: if the file is not in :data:`COURSE`.
    """
    for item in COURSE:
        if item.file == file:
            return item
    raise HemolabError(f"{file!r} is not in hemolab.course.COURSE: add it there (file, title, times, needs)")


# --------------------------------------------------------------------------------------------------------
# Durations: formatting COURSE's times, and reading a notebook's "Expected run time" statement
# --------------------------------------------------------------------------------------------------------

_UNITS = {"s": 1 / 60, "sec": 1 / 60, "secs": 1 / 60, "second": 1 / 60, "seconds": 1 / 60,
          "min": 1.0, "mins": 1.0, "minute": 1.0, "minutes": 1.0,
          "h": 60.0, "hr": 60.0, "hrs": 60.0, "hour": 60.0, "hours": 60.0}  # fmt: skip
_UNIT = r"(?:seconds|second|secs|sec|s|minutes|minute|mins|min|hours|hour|hrs|hr|h)(?![\w³²])"
_NUMBER = r"\d+(?:\.\d+)?"
#: A duration ("15 s") or a range ("2-5 min", "1–2 h", "30 s–2 min"); counts without a unit do not match.
_DURATION = re.compile(
    rf"(?P<a>{_NUMBER})\s*(?:(?P<ua>{_UNIT})\s*)?(?:(?:-|–|—|to)\s*(?P<b>{_NUMBER})\s*)?(?P<ub>{_UNIT})",
    re.IGNORECASE,
)


def _fmt_one(minutes: float) -> tuple[float, str]:
    if minutes < 1:
        return round(minutes * 60), "s"
    if minutes < 60:
        return (round(minutes, 1) if minutes < 10 else round(minutes)), "min"
    return round(minutes / 60, 1), "h"


def _num(x: float) -> str:
    return f"{x:g}"


def format_minutes(low: float, high: float | None = None) -> str:
    """A duration or range for people: ``"15 s"``, ``"2–5 min"``, ``"1–2 h"``, ``"30 s–2 min"``."""
    high = low if high is None else high
    (a, ua), (b, ub) = _fmt_one(low), _fmt_one(high)
    if (a, ua) == (b, ub):
        return f"{_num(a)} {ua}"
    if ua == ub:
        return f"{_num(a)}–{_num(b)} {ua}"
    return f"{_num(a)} {ua}–{_num(b)} {ub}"


def parse_durations(text: str) -> tuple[float, float] | None:
    """The first duration or range written in ``text``, as ``(low, high)`` minutes (``None`` if there is none).

    ``"about 2-5 min on a CPU"`` -> ``(2, 5)``; ``"43 s measured (about 10 s of CPU time)"`` -> ``(43/60, 43/60)``:
    the first duration is the statement, later ones are details. Counts without a unit ("4 epochs",
    "64×64×16") are ignored.
    """
    m = _DURATION.search(text)
    if m is None:
        return None
    high = float(m.group("b") or m.group("a")) * _UNITS[m.group("ub").lower()]
    low = float(m.group("a")) * _UNITS[(m.group("ua") or m.group("ub")).lower()]
    return low, high


def expected_times(markdown: str) -> dict[str, tuple[float, float] | None]:
    """Read a notebook's "Expected run time" statement: per profile, the ``(low, high)`` minutes it states.

    The statement is the text after "Expected run time" (usually a small table whose first column is the
    profile); each line that starts with a profile name gives that profile's durations. A profile that is
    not mentioned, or mentioned without a duration, maps to ``None``.
    """
    found: dict[str, tuple[float, float] | None] = {p: None for p in PROFILES}
    at = markdown.lower().find("expected run time")
    if at < 0:
        return found
    for line in markdown[at:].splitlines()[1:]:
        m = re.match(r"^[\s|*_`-]*(tiny|small|full)\b[\s|*_`:]*(.*)$", line, re.IGNORECASE)
        if m and found[m.group(1).lower()] is None:
            found[m.group(1).lower()] = parse_durations(m.group(2))
    return found


# --------------------------------------------------------------------------------------------------------
# Tables for people: README / index markdown, and the plain text the index prints
# --------------------------------------------------------------------------------------------------------


def _times(item: Lesson) -> dict[str, str]:
    return {p: format_minutes(*item.minutes[p]) for p in PROFILES}


def course_markdown(link_prefix: str = "notebooks/") -> str:
    """The course map as a markdown table (links relative to the README by default; ``""`` for the index)."""
    lines = [
        "| # | notebook | what it teaches | tiny | small (CPU) | full (GPU) | needs from earlier notebooks |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in COURSE:
        t = _times(item)
        needs = item.needs if item.if_missing == "-" else f"{item.needs}; if missing: {item.if_missing}"
        lines.append(
            f"| {item.number} | [{item.title}]({link_prefix}{item.file}) | {item.teaches} | {t['tiny']} | "
            f"{t['small']} | {t['full']} | {needs} |"
        )
    return "\n".join(lines)


def course_text() -> str:
    """The course map as plain text (what the index notebook prints, and nbval checks)."""
    out = []
    for item in COURSE:
        t = _times(item)
        out.append(f"{item.number}  {item.title}")
        out.append(f"    file:  {item.file}")
        out.append(f"    time:  tiny {t['tiny']} | small {t['small']} | full {t['full']}")
        needs = item.needs if item.if_missing == "-" else f"{item.needs}; if missing: {item.if_missing}"
        out.append(f"    needs: {needs}")
    total = {
        p: (sum(i.minutes[p][0] for i in COURSE), sum(i.minutes[p][1] for i in COURSE)) for p in PROFILES
    }
    out.append("whole course: " + " | ".join(f"{p} {format_minutes(*total[p])}" for p in PROFILES))
    return "\n".join(out)


def print_course() -> None:
    """Print :func:`course_text`."""
    print(course_text())


def workspace_report(profile: str | None = None) -> str:
    """What later notebooks reuse from earlier ones, for one profile, and whether it exists yet.

    Looks (without creating anything) for the synthetic cohort (notebook 00/01), the CNN-DS checkpoint
    (notebook 03) and the Patel checkpoint (notebook 04) in the workspace.
    """
    from hemolab.config import resolve_profile, workspace_dir

    profile = resolve_profile(profile)
    root = workspace_dir(create=False)
    items = [
        ("synthetic cohort (made by any notebook that needs it)", root / "data" / f"synth-{profile}-seed0"),
        ("CNN-DS checkpoint (notebook 03)", root / "checkpoints" / f"cnnds-{profile}" / "best.pt"),
        ("Patel checkpoint (notebook 04)", root / "checkpoints" / f"patel-{profile}" / "best.pt"),
    ]
    lines = [f"workspace: {root}  (profile {profile})"]
    for name, path in items:
        state = "present" if path.exists() else "not yet made: the notebook that needs it makes it"
        lines.append(f"  {name}: {state}\n    {path}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# Notebook files: reading, writing, generated cells
# --------------------------------------------------------------------------------------------------------


def _read(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def _writes(nb) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


def _write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically if it differs from what is there; whether it wrote."""
    import os

    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _sequence(notebooks_dir: Path) -> list[str]:
    """The navigation order: the index, then the COURSE notebooks that exist in the folder."""
    return [INDEX] + [item.file for item in COURSE if (notebooks_dir / item.file).is_file()]


def _label(file: str) -> str:
    if file == INDEX:
        return "course index"
    item = lesson(file)
    return f"{item.number} · {item.title}"


def nav_markdown(file: str, sequence: list[str]) -> str:
    """The ``← previous | course index | next →`` line of one notebook, given the navigation order."""
    i = sequence.index(file)
    parts = []
    if i > 0 and sequence[i - 1] != INDEX:
        parts.append(f"← [previous: {_label(sequence[i - 1])}]({sequence[i - 1]})")
    if file != INDEX:
        parts.append(f"[course index]({INDEX})")
    if i + 1 < len(sequence):
        parts.append(f"[next: {_label(sequence[i + 1])} →]({sequence[i + 1]})")
    return " | ".join(parts)


def _generated_cell(nb, source: str, tag: str, cell_id: str):
    import nbformat

    cell = nbformat.v4.new_markdown_cell(source, metadata={"tags": [tag]})
    if (nb.nbformat, nb.nbformat_minor) >= (4, 5):
        cell["id"] = cell_id
    else:
        cell.pop("id", None)
    return cell


def with_navigation(nb, file: str, sequence: list[str]):
    """A copy of ``nb`` with its generated cells (badge, navigation at top and bottom) made current.

    Cells tagged :data:`BADGE_TAG` or :data:`NAV_TAG` are removed wherever they are and written anew:
    the badge first, a navigation cell right after it, and another as the very last cell. No other cell
    is touched; outputs and metadata are kept as they are.
    """
    nb = copy.deepcopy(nb)
    keep = [c for c in nb.cells if not ({BADGE_TAG, NAV_TAG} & set(_tags(c)))]
    nav = nav_markdown(file, sequence)
    nb.cells = [
        _generated_cell(nb, colab_badge(file), BADGE_TAG, "hemolab-badge"),
        _generated_cell(nb, nav, NAV_TAG, "hemolab-nav-top"),
        *keep,
        _generated_cell(nb, nav, NAV_TAG, "hemolab-nav-bottom"),
    ]
    return nb


def update_navigation(notebooks_dir: str | Path, check: bool = False) -> list[Path]:
    """Insert or rewrite the Colab badge and the previous/next links in every course notebook.

    Idempotent: a second run changes nothing. Notebooks that are not in :data:`COURSE` (other than the
    index) are left alone; :func:`course_problems` reports them.

    Args:
        notebooks_dir: the ``notebooks/`` folder.
        check: only report which files would change; write nothing.

    Returns:
        The notebooks that were (or, with ``check``, would be) changed.

    Raises:
        HemolabError: if the folder does not exist.
    """
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise HemolabError(f"{notebooks_dir} is not a folder: give the course's notebooks/ folder")
    sequence = _sequence(notebooks_dir)
    changed = []
    for file in sequence:
        path = notebooks_dir / file
        if not path.is_file():  # the index, before `hemolab course index` made it
            continue
        text = _writes(with_navigation(_read(path), file, sequence))
        if check:
            if path.read_text(encoding="utf-8") != text:
                changed.append(path)
        elif _write_if_changed(path, text):
            changed.append(path)
    return changed


# --------------------------------------------------------------------------------------------------------
# The index notebook
# --------------------------------------------------------------------------------------------------------

INDEX_TITLE = "# hemolab · Course index"

_INDEX_INTRO = f"""{INDEX_TITLE}

Welcome to **hemolab**, a course on segmenting and measuring brain haemorrhage in non-contrast head CT. It
reproduces two published methods end to end: **CNN-DS** (Arab et al., *Sci Rep* 10:19389, 2020), a 3D U-Net
with deep supervision on whole heads, and the **Patel 3D CNN** (Patel et al., *Sci Rep* 9:17858, 2019), a
valid-convolution U-Net on patches with tiled inference. No data of your own is needed: a realistic synthetic
cohort is generated on the fly, and a real head CT ships with hemolab.

Work through the notebooks in order (each links to the previous and the next one), or jump in anywhere: every
notebook runs on its own, and makes whatever an earlier notebook would have left (data, checkpoints) if it is
missing.

**Expected run time** of this page

| profile | time |
|---|---|
| tiny | under 5 s |
| small | under 5 s |
| full | under 5 s |"""

_INDEX_PROFILES = """## Choosing a profile

Every notebook has a `profile` parameter in its first code cell. Leave it at `None` and hemolab chooses:

| profile | for | what it does |
|---|---|---|
| `tiny` | tests and CI | toy sizes; every notebook runs in seconds; the numbers it shows are not meaningful |
| `small` | a laptop CPU, Binder | reduced grids and cohort (20 cases), a few minutes per notebook, under 2 GB of RAM |
| `full` | a GPU (Colab, a lab machine) | the papers' settings: 55 cases, 128×128×64 for CNN-DS, 124³ patches for Patel |

`None` means: the `HEMOLAB_PROFILE` environment variable if it is set, otherwise `full` when PyTorch sees a
GPU and `small` when it does not. To choose by hand, write e.g. `profile = "small"` in the parameters cell,
or set `HEMOLAB_PROFILE=small` before starting Jupyter. The device is never hard-coded: the notebooks compute
on the GPU when there is one and on the CPU otherwise.

The line printed by the set-up cell above says which profile, device and workspace this kernel uses."""

_INDEX_WORKSPACE = """## Where outputs go

Everything the notebooks make (the synthetic cohort, checkpoints, figures, tables) goes into one
**workspace** folder, never next to the notebooks:

- `$HEMOLAB_WORKSPACE` if that environment variable is set;
- otherwise `workspace/` at the root of the hemolab checkout (ignored by git), which is where it lands on
  Binder and on a lab machine with `pip install -e .`;
- otherwise (hemolab installed from a wheel, e.g. on Colab) `~/hemolab-workspace`.

Later notebooks reuse what earlier ones made for the same profile. The cell below shows what is there now;
delete the workspace folder to start from scratch."""

_INDEX_LAUNCH = f"""## Running the course elsewhere

- **Binder** (no installation, CPU only, `small` profile): {binder_badge()}
  A session has about 2 GB of RAM and is closed after some idle minutes: download what you want to keep.
- **Colab** (a free GPU, `full` profile): open any notebook with its badge at the top, then choose
  *Runtime → Change runtime type → GPU*. The set-up cell installs hemolab (never torch, which Colab has).
- **A lab machine**: `pip install -e .` in a clone of `{GITHUB_URL}`, then `jupyter lab notebooks/index.ipynb`.
- **Real data**: `data_scripts/physionet_ct_ich.py` downloads the public PhysioNet CT-ICH data set (75 head
  CTs with haemorrhage masks; a free PhysioNet account and its data use agreement are needed) and converts it
  into the same layout as the synthetic cohort. Then, in a notebook, replace `ensure_cohort(profile)` with
  the converted folder, or train from the command line: `hemolab train --data ~/data/ct-ich --profile full`.
  See `data_scripts/README.md`."""


def build_index():
    """The course index notebook, generated from :data:`COURSE` (without its badge and navigation cells).

    Its one checked cell (marked :data:`NBVAL_CHECK`) prints :func:`course_text`. Like every notebook it is
    committed without outputs; :func:`with_reference_outputs` adds the expected text for nbval, which then
    fails as soon as the printed map and :func:`course_text` differ.
    """
    import nbformat

    v4 = nbformat.v4
    nb = v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    course_cell = v4.new_code_cell(
        f"{NBVAL_CHECK}\nfrom hemolab.course import print_course\n\nprint_course()"
    )
    cells = [
        (v4.new_markdown_cell(_INDEX_INTRO), "index-intro"),
        (v4.new_code_cell(PARAMETERS_LINE, metadata={"tags": [PARAMETERS_TAG]}), "index-parameters"),
        (v4.new_code_cell(SETUP_SOURCE, metadata={"tags": [SETUP_TAG]}), "index-setup"),
        (v4.new_markdown_cell("## The course\n\n" + course_markdown(link_prefix="")), "index-map"),
        (
            v4.new_markdown_cell(
                "The same map as text, printed from `hemolab.course.COURSE` (the one table the index, the README and "
                "the navigation links are generated from):"
            ),
            "index-map-text-intro",
        ),  # fmt: skip
        (course_cell, "index-map-text"),
        (v4.new_markdown_cell(_INDEX_PROFILES), "index-profiles"),
        (v4.new_markdown_cell(_INDEX_WORKSPACE), "index-workspace"),
        (
            v4.new_code_cell(
                "from hemolab.course import workspace_report\n\nprint(workspace_report(profile))"
            ),
            "index-workspace-report",
        ),  # fmt: skip
        (v4.new_markdown_cell(_INDEX_LAUNCH), "index-launch"),
    ]
    for cell, cell_id in cells:
        cell["id"] = cell_id
    nb.cells = [c for c, _ in cells]
    return nb


#: The expected printed output of each cell marked :data:`NBVAL_CHECK`, by cell id. Notebooks are committed
#: without outputs; :func:`with_reference_outputs` puts these in before nbval compares them with a fresh run.
NBVAL_REFERENCES: dict[str, Callable[[], str]] = {
    "index-map-text": lambda: course_text() + "\n",
}


def with_reference_outputs(nb):
    """A copy of ``nb`` whose :data:`NBVAL_CHECK` cells hold their expected output, ready for nbval.

    Returns:
        The copy (the notebook passed in is not changed).

    Raises:
        HemolabError: for a checked cell that has no entry in :data:`NBVAL_REFERENCES`.
    """
    import nbformat

    out = copy.deepcopy(nb)
    for cell in out.cells:
        if cell.cell_type != "code" or NBVAL_CHECK not in _source(cell):
            continue
        reference = NBVAL_REFERENCES.get(cell.get("id", ""))
        if reference is None:
            raise HemolabError(
                f"cell {cell.get('id')!r} is marked {NBVAL_CHECK!r} but hemolab.course.NBVAL_REFERENCES has no "
                "expected output for it: add one, keyed by the cell's id"
            )
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=reference())]
        cell.execution_count = 1  # nbval only compares the stored output of a cell that has run
    return out


def write_index(notebooks_dir: str | Path, check: bool = False) -> bool:
    """Write ``index.ipynb`` (with its badge and navigation) into ``notebooks_dir`` if it changed.

    Returns:
        Whether the file was (or, with ``check``, would be) changed.
    """
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise HemolabError(f"{notebooks_dir} is not a folder: give the course's notebooks/ folder")
    path = notebooks_dir / INDEX
    text = _writes(with_navigation(build_index(), INDEX, _sequence(notebooks_dir)))
    if check:
        return not path.is_file() or path.read_text(encoding="utf-8") != text
    return _write_if_changed(path, text)


# --------------------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------------------


def readme_block() -> str:
    """What goes between the README's course-map markers: launch badges and the course map."""
    return (
        f"{binder_badge()} {colab_badge(INDEX)}\n\n{course_markdown(link_prefix='notebooks/')}\n\n"
        "Times: `tiny` and `small` measured on a 2-core CPU (`tiny` by the test suite, two notebooks at once; "
        "`small` one notebook after another in a fresh workspace); `full` on one GPU is the notebooks' estimate. "
        "Generated from `hemolab.course.COURSE` by `hemolab course nav`; do not edit by hand."
    )


def update_readme(readme: str | Path, check: bool = False) -> bool:
    """Rewrite the block between :data:`README_START` and :data:`README_END` in ``readme``.

    Returns:
        Whether the file was (or would be) changed; ``False`` when the file or its markers are missing.
    """
    readme = Path(readme)
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    new = text[: start + len(README_START)] + "\n" + readme_block() + "\n" + text[end:]
    if check:
        return new != text
    return _write_if_changed(readme, new)


# --------------------------------------------------------------------------------------------------------
# Standards: what every notebook must have (run by the tests and by `hemolab course check`)
# --------------------------------------------------------------------------------------------------------

_HARD_CODED_DEVICE = [
    (re.compile(r"cuda:\d"), '"cuda:N"'),
    (re.compile(r"\.cuda\(\s*\)"), ".cuda()"),
    (re.compile(r"""device\s*=\s*["']cuda"""), 'device="cuda"'),
    (re.compile(r"""\.to\(\s*["']cuda"""), '.to("cuda")'),
]


def _content_cells(nb) -> list:
    return [c for c in nb.cells if not ({BADGE_TAG, NAV_TAG} & set(_tags(c)))]


def _intro(nb) -> str:
    md = [c for c in _content_cells(nb) if c.cell_type == "markdown"]
    return _source(md[0]) if md else ""


def check_title(nb, file: str) -> list[str]:
    """The first content cell is markdown starting with ``# NN · Title`` (the index: its own title)."""
    cells = _content_cells(nb)
    first = _source(cells[0]).lstrip() if cells and cells[0].cell_type == "markdown" else ""
    if file == INDEX:
        return [] if first.startswith(INDEX_TITLE) else [f"the first cell must start with {INDEX_TITLE!r}"]
    number = file[:2]
    if not re.match(rf"# {re.escape(number)} · \S", first):
        return [f"the first cell must be markdown starting with '# {number} · Title' (found {first[:60]!r})"]
    return []


def check_learning_goals(nb, file: str) -> list[str]:
    """The introduction lists **Learning goals** (lessons only)."""
    if file == INDEX:
        return []
    intro = _intro(nb)
    if "learning goals" not in intro.lower() or not re.search(r"^\s*[-*] ", intro, re.MULTILINE):
        return ["the introduction must list 'Learning goals' as bullets"]
    return []


def check_expected_times(nb, file: str) -> list[str]:
    """The introduction states an "Expected run time" with a duration for tiny, small and full."""
    times = expected_times(_intro(nb))
    missing = [p for p, t in times.items() if t is None]
    if missing:
        return [
            "the introduction's 'Expected run time' must give a duration (e.g. '15 s', '2-5 min', '1-2 h') for "
            f"each profile; none found for: {', '.join(missing)}"
        ]
    return []


def check_badge(nb, file: str) -> list[str]:
    """The first cell is the generated Colab badge (tag ``hemolab-badge``)."""
    first = nb.cells[0] if nb.cells else None
    if first is None or BADGE_TAG not in _tags(first) or _source(first) != colab_badge(file):
        return ["the first cell must be the generated Colab badge: run `hemolab course nav`"]
    if sum(BADGE_TAG in _tags(c) for c in nb.cells) != 1:
        return ["there must be exactly one badge cell: run `hemolab course nav`"]
    return []


def check_navigation(nb, file: str, sequence: list[str] | None = None) -> list[str]:
    """Navigation cells (tag ``hemolab-nav``) right after the badge and as the last cell, up to date."""
    if sequence is None:
        sequence = [INDEX] + [item.file for item in COURSE]
    if file not in sequence:
        return [f"{file} is not in hemolab.course.COURSE, so it has no place in the navigation"]
    want = nav_markdown(file, sequence)
    navs = [i for i, c in enumerate(nb.cells) if NAV_TAG in _tags(c)]
    if navs != [1, len(nb.cells) - 1] or any(_source(nb.cells[i]) != want for i in navs):
        return ["previous/next navigation missing or stale (want it 2nd and last): run `hemolab course nav`"]
    return []


def check_parameters(nb, file: str) -> list[str]:
    """Exactly one ``parameters`` cell, the first code cell, setting ``profile = None``; then the set-up cell."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in nb.cells if PARAMETERS_TAG in _tags(c)]
    problems = []
    if len(tagged) != 1:
        problems.append(f"exactly one cell must be tagged 'parameters' (found {len(tagged)})")
    elif tagged[0].cell_type != "code" or not re.search(
        r"^profile = None\b", _source(tagged[0]), re.MULTILINE
    ):
        problems.append("the 'parameters' cell must be a code cell containing 'profile = None'")
    elif not code or code[0] is not tagged[0]:
        problems.append("the 'parameters' cell must be the first code cell")
    elif len(code) < 2 or SETUP_TAG not in _tags(code[1]):
        problems.append("the second code cell must be the set-up cell tagged 'hemolab-setup'")
    return problems


def check_setup(nb, file: str) -> list[str]:
    """The set-up cell installs hemolab from :data:`REPO` only when missing, never torch, then sets up."""
    cells = [c for c in nb.cells if SETUP_TAG in _tags(c)]
    if len(cells) != 1:
        return [f"exactly one cell must be tagged 'hemolab-setup' (found {len(cells)})"]
    src = _source(cells[0])
    problems = []
    pips = [line for line in src.splitlines() if re.search(r"\bpip\b", line)]
    if not re.search(r"^try:.*\n\s+import hemolab\s*\nexcept ImportError:", src, re.MULTILINE):
        problems.append("the set-up cell must install hemolab only when `import hemolab` fails")
    if len(pips) != 1 or PIP_SPEC not in pips[0]:
        problems.append(f"the set-up cell must have one pip line installing {PIP_SPEC!r}")
    if any(re.search(r"torch", line, re.IGNORECASE) for line in pips):
        problems.append("the set-up cell's pip line must not name torch (Colab has it; never reinstall it)")
    if "setup_notebook(profile)" not in src:
        problems.append("the set-up cell must call `profile = setup_notebook(profile)`")
    return problems


def check_summary_exercises(nb, file: str) -> list[str]:
    """Markdown sections ``## Summary`` and ``## Exercises`` (lessons only)."""
    if file == INDEX:
        return []
    md = "\n".join(_source(c) for c in nb.cells if c.cell_type == "markdown")
    return [f"a markdown cell must have the heading '{h}'" for h in ("## Summary", "## Exercises")
            if not re.search(rf"^{h}\s*$", md, re.MULTILINE)]  # fmt: skip


def check_no_outputs(nb, file: str) -> list[str]:
    """No committed outputs or execution counts, not even in cells nbval checks.

    The expected output of a cell marked ``# NBVAL_CHECK_OUTPUT`` lives in :data:`NBVAL_REFERENCES` and is put
    in by :func:`with_reference_outputs` when the tests run nbval.
    """
    problems = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        if c.get("execution_count") is not None:
            problems.append(f"cell {i} has an execution count: clear outputs before committing")
        if c.get("outputs"):
            problems.append(f"cell {i} has committed outputs: clear outputs before committing")
    return problems


def check_no_device(nb, file: str) -> list[str]:
    """No code cell hard-codes a device ("cuda:0", ``.cuda()``, ``device="cuda"``, ``.to("cuda")``)."""
    problems = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        for pattern, name in _HARD_CODED_DEVICE:
            if pattern.search(_source(c)):
                problems.append(f"cell {i} hard-codes a device ({name}): use hemolab.config.get_device()")
    return problems


def check_kernelspec(nb, file: str) -> list[str]:
    """The notebook's kernel is ``python3``."""
    ks = nb.metadata.get("kernelspec", {})
    if ks.get("name") != "python3" or ks.get("language", "python") != "python":
        return [f"metadata.kernelspec must name the python3 kernel (found {dict(ks)!r})"]
    return []


def check_course_entry(nb, file: str) -> list[str]:
    """The notebook is in :data:`COURSE` with the same title and the same expected times it states."""
    if file == INDEX:
        return []
    try:
        item = lesson(file)
    except HemolabError as exc:
        return [str(exc)]
    problems = []
    first = _intro(nb).lstrip().splitlines()
    if not first or first[0].strip() != item.heading:
        problems.append(f"its heading {first[0] if first else ''!r} differs from COURSE's {item.heading!r}")
    stated = expected_times(_intro(nb))
    for p in PROFILES:
        if stated[p] is None:
            continue
        a, b = item.minutes[p]
        c, d = stated[p]
        if abs(a - c) > 1e-6 * max(1, c) or abs(b - d) > 1e-6 * max(1, d):
            problems.append(
                f"COURSE says {p} takes {format_minutes(a, b)}, the notebook says {format_minutes(c, d)}: "
                f"set COURSE minutes[{p!r}] = ({_as_code(c)}, {_as_code(d)}) or fix the notebook"
            )
    return problems


def _as_code(minutes: float) -> str:
    return f"_s({minutes * 60:g})" if minutes < 1 else f"{minutes:g}"


#: Every standard, by name (the tests parametrise over these).
STANDARDS: dict[str, Callable[..., list[str]]] = {
    "title": check_title,
    "learning_goals": check_learning_goals,
    "expected_times": check_expected_times,
    "colab_badge": check_badge,
    "navigation": check_navigation,
    "parameters": check_parameters,
    "setup_cell": check_setup,
    "summary_exercises": check_summary_exercises,
    "no_outputs": check_no_outputs,
    "no_hard_coded_device": check_no_device,
    "kernelspec": check_kernelspec,
    "course_entry": check_course_entry,
}


def notebook_problems(path: str | Path, standards: Iterable[str] | None = None) -> list[str]:
    """Everything in one notebook that breaks the course's standards (an empty list when it is fine).

    Args:
        path: the ``.ipynb`` file.
        standards: names from :data:`STANDARDS` to check (default: all).
    """
    path = Path(path)
    nb = _read(path)
    problems = []
    for name in standards or STANDARDS:
        if name == "navigation":
            found = check_navigation(nb, path.name, _sequence(path.parent))
        else:
            found = STANDARDS[name](nb, path.name)
        problems.extend(f"{path.name}: {p}" for p in found)
    return problems


def course_problems(notebooks_dir: str | Path) -> list[str]:
    """Mismatches between :data:`COURSE` and the notebooks folder (files missing or not in COURSE)."""
    notebooks_dir = Path(notebooks_dir)
    files = {p.name for p in notebooks_dir.glob("*.ipynb")}
    known = {item.file for item in COURSE}
    problems = [f"{f} is in COURSE but not in {notebooks_dir}" for f in sorted(known - files)]
    problems += [
        f"{f} is in {notebooks_dir} but not in hemolab.course.COURSE" for f in sorted(files - known - {INDEX})
    ]
    if INDEX not in files:
        problems.append(f"{INDEX} is missing: run `hemolab course nav`")
    numbers = [item.number for item in COURSE]
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        problems.append("COURSE must list the notebooks in the order of their numbers, each number once")
    return problems
