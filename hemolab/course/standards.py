"""The course's notebook standards: what every notebook must have, checked by the tests and ``hemolab course check``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from hemolab.config import PROFILES
from hemolab.course.catalog import (
    BADGE_TAG,
    COURSE,
    INDEX,
    NAV_TAG,
    PARAMETERS_TAG,
    PIP_SPEC,
    SETUP_TAG,
    colab_badge,
    expected_times,
    format_minutes,
    lesson,
)
from hemolab.course.navigation import INDEX_TITLE, _read, _sequence, _source, _tags, nav_markdown
from hemolab.errors import HemolabError

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
_ORIGIN_LOWER = re.compile(r"""origin\s*=\s*["']lower["']""")
_ELLIPSIS = re.compile(r"\[(?:\.\.\.|…)\]")


def check_slice_orientation(nb, file: str) -> list[str]:
    """No ``origin="lower"``: every slice is shown as the viewer shows it (anterior up, ``hemolab.viz``).

    Drawing an axial slice with ``origin="lower"`` turns it upside down against every other figure of the
    course; use :func:`hemolab.viz.render_slice`, or ``imshow(slice.T)`` with the default origin.
    """
    return [
        f'code cell {i} uses origin="lower": show slices as hemolab.viz does (anterior up, default origin)'
        for i, c in enumerate(_content_cells(nb))
        if c.cell_type == "code" and _ORIGIN_LOWER.search(_source(c))
    ]


def check_quotes(nb, file: str) -> list[str]:
    """A quotation that leaves words out (``[...]``) says what it left out and why, in the same cell.

    Cutting a paper's sentence where it contradicts the code hides a disagreement: quote in full, or mark
    the cut and explain it in the cell with the words "left out".
    """
    problems = []
    for i, c in enumerate(_content_cells(nb)):
        if c.cell_type != "markdown":
            continue
        src = _source(c)
        quoted = [line for line in src.splitlines() if line.lstrip().startswith(">") or '"' in line]
        if any(_ELLIPSIS.search(line) for line in quoted) and "left out" not in src.lower():
            problems.append(f"markdown cell {i} cuts a quotation with [...] without saying what is left out")
    return problems


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
    "slice_orientation": check_slice_orientation,
    "quotes": check_quotes,
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


__all__ = [
    "STANDARDS",
    "check_badge",
    "check_course_entry",
    "check_expected_times",
    "check_kernelspec",
    "check_learning_goals",
    "check_navigation",
    "check_no_device",
    "check_no_outputs",
    "check_parameters",
    "check_quotes",
    "check_setup",
    "check_slice_orientation",
    "check_summary_exercises",
    "check_title",
    "course_problems",
    "notebook_problems",
]
