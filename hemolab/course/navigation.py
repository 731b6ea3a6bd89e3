"""Generated notebook cells, the course index and the README course map, all from :data:`~hemolab.course.catalog.COURSE`.

* the Colab badge and the previous / index / next links in every notebook (:func:`update_navigation`);
* the course index notebook ``notebooks/index.ipynb`` (:func:`build_index`);
* the course map in ``README.md`` between ``<!-- course-map:start -->`` and ``<!-- course-map:end -->``
  (:func:`update_readme`).

Relative links between notebooks work on GitHub, in JupyterLab and on Colab alike, because Colab's
``/github/<owner>/<repo>/blob/<branch>/<path>`` URLs mirror GitHub's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import nbformat

from hemolab.atomic import atomic_write_text
from hemolab.course.catalog import (
    BADGE_TAG,
    COURSE,
    GITHUB_URL,
    INDEX,
    NAV_TAG,
    NBVAL_CHECK,
    PARAMETERS_LINE,
    PARAMETERS_TAG,
    README_END,
    README_START,
    SETUP_SOURCE,
    SETUP_TAG,
    binder_badge,
    colab_badge,
    course_markdown,
    course_text,
    lesson,
)
from hemolab.errors import HemolabError


def _read(path: Path):
    return nbformat.read(str(path), as_version=4)


def _writes(nb) -> str:
    return nbformat.writes(nb) + "\n"


def _write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically if it differs from what is there; whether it wrote."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
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


__all__ = [
    "INDEX_TITLE",
    "NBVAL_REFERENCES",
    "build_index",
    "nav_markdown",
    "readme_block",
    "update_navigation",
    "update_readme",
    "with_navigation",
    "with_reference_outputs",
    "write_index",
]
