"""The course map: the notebooks in order, what each teaches, how long each takes, and the launch links.

:data:`COURSE` is the single source of truth for the order of the notebooks, their titles, what each
teaches, how long each takes per profile and what each needs from earlier ones; the navigation, the index
notebook, the README's course map and the standards checks (:mod:`hemolab.course.navigation`,
:mod:`hemolab.course.standards`) are generated from it. The repository is named once, in :data:`REPO`;
the Colab, Binder and ``pip install`` URLs derive from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from hemolab.config import PROFILES, resolve_profile, workspace_dir
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


__all__ = [
    "BADGE_TAG",
    "BRANCH",
    "COURSE",
    "GITHUB_URL",
    "INDEX",
    "NAV_TAG",
    "NBVAL_CHECK",
    "PARAMETERS_LINE",
    "PARAMETERS_TAG",
    "PIP_SPEC",
    "README_END",
    "README_START",
    "REPO",
    "SETUP_SOURCE",
    "SETUP_TAG",
    "Lesson",
    "binder_badge",
    "binder_url",
    "colab_badge",
    "colab_url",
    "course_markdown",
    "course_text",
    "expected_times",
    "format_minutes",
    "lesson",
    "parse_durations",
    "print_course",
    "workspace_report",
]
