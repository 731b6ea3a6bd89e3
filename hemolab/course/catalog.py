"""The course map: the notebooks in order, what each teaches, how long each takes, and the launch links.

:data:`COURSE` is the single source of truth for the order of the notebooks, their titles, what each
teaches, how long each takes per profile and what each needs from earlier ones; the navigation, the index
notebook, the README's course map and the standards checks (:mod:`hemolab.course.navigation`,
:mod:`hemolab.course.standards`) are generated from it. The repository is named once, in :data:`REPO`;
the Colab, Binder and ``pip install`` URLs derive from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


def _load_course() -> tuple[Lesson, ...]:
    data = json.loads((Path(__file__).with_name("lessons.json")).read_text(encoding="utf-8"))
    return tuple(
        Lesson(
            file=d["file"],
            title=d["title"],
            teaches=d["teaches"],
            minutes={p: (lo / 60.0, hi / 60.0) for p, (lo, hi) in d["seconds"].items()},
            needs=d["needs"],
            if_missing=d["if_missing"],
        )
        for d in data["lessons"]
    )


#: The course, in order, read from ``lessons.json`` next to this module (the data; this module the logic).
#: Times: tiny and small measured on a 2-core CPU, full (GPU) as each notebook states it.
COURSE: tuple[Lesson, ...] = _load_course()


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
