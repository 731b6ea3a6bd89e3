"""The course map (hemolab.course.COURSE) and what is generated from it: navigation, index, README map, links."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import nbformat
import pytest

from hemolab import course
from hemolab.cli import main
from hemolab.errors import HemolabError

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO_ROOT / "notebooks"


# ---------------------------------------------------------------------------------------------------------
# The committed course
# ---------------------------------------------------------------------------------------------------------


def test_course_table_matches_the_notebooks_folder():
    assert course.course_problems(NOTEBOOKS) == []


def test_course_entries_are_well_formed():
    for item in course.COURSE:
        assert item.file.endswith(".ipynb") and item.file[:2].isdigit() and item.file[2] == "_", item.file
        assert item.title and item.teaches and item.needs and item.if_missing
        assert set(item.minutes) == {"tiny", "small", "full"}, item.file
        for low, high in item.minutes.values():
            assert 0 < low <= high, item.file
        # tiny is for CI: seconds per notebook (COMMON: < 60 s on 2 cores)
        assert item.minutes["tiny"][1] <= 1.0, f"{item.file}: tiny must stay under a minute"


def test_committed_navigation_index_and_readme_are_current():
    """`hemolab course nav` was run: running it again would change nothing."""
    assert course.update_navigation(NOTEBOOKS, check=True) == [], "run `hemolab course nav`"
    assert not course.write_index(NOTEBOOKS, check=True), "run `hemolab course nav`"
    assert not course.update_readme(REPO_ROOT / "README.md", check=True), "run `hemolab course nav`"


def test_index_checks_the_printed_course_map_with_nbval():
    nb = nbformat.read(NOTEBOOKS / course.INDEX, as_version=4)
    checked = [c for c in nb.cells if course.NBVAL_CHECK in c.source]
    assert len(checked) == 1
    assert not checked[0].outputs and checked[0].execution_count is None  # committed without outputs
    ready = course.with_reference_outputs(nb)
    filled = [c for c in ready.cells if course.NBVAL_CHECK in c.source]
    assert filled[0].execution_count is not None  # nbval ignores the outputs of an "unrun" cell
    assert "".join(o["text"] for o in filled[0].outputs) == course.course_text() + "\n"
    assert not checked[0].outputs, "with_reference_outputs changed the notebook it was given"


def test_a_checked_cell_without_a_reference_output_is_refused():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"{course.NBVAL_CHECK}\nprint(1)")]
    nb.cells[0]["id"] = "no-reference"
    with pytest.raises(HemolabError, match="NBVAL_REFERENCES"):
        course.with_reference_outputs(nb)


def test_index_lists_every_notebook_with_its_times_and_needs():
    nb = nbformat.read(NOTEBOOKS / course.INDEX, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for item in course.COURSE:
        assert f"[{item.title}]({item.file})" in text
        assert item.teaches in text and item.needs in text
        for low, high in item.minutes.values():
            assert course.format_minutes(low, high) in text
    for needed in ("HEMOLAB_WORKSPACE", "HEMOLAB_PROFILE", "tiny", "small", "full", "data_scripts/"):
        assert needed in text


# ---------------------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------------------


def test_urls_derive_from_the_repo_constant():
    assert course.colab_url("01_x.ipynb") == (
        f"https://colab.research.google.com/github/{course.REPO}/blob/{course.BRANCH}/notebooks/01_x.ipynb"
    )
    assert course.PIP_SPEC == f"hemolab @ git+https://github.com/{course.REPO}"
    badge = course.colab_badge("01_x.ipynb")
    assert badge.startswith("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](")
    assert badge.endswith(f"({course.colab_url('01_x.ipynb')})")


def test_binder_url_opens_jupyterlab_at_the_course_index():
    url = urlparse(course.binder_url())
    assert (url.scheme, url.netloc) == ("https", "mybinder.org")
    assert url.path == f"/v2/gh/{course.REPO}/{course.BRANCH}"
    (urlpath,) = parse_qs(url.query)["urlpath"]
    assert urlpath == "lab/tree/notebooks/index.ipynb"
    assert (REPO_ROOT / urlpath.removeprefix("lab/tree/")).is_file()
    assert course.binder_badge().endswith(f"({course.binder_url()})")


# ---------------------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("about 15 s (measured, 2 CPU cores)", (0.25, 0.25)),
        ("about 2-5 min on a CPU (estimate; longer if the checkpoints must be trained first)", (2, 5)),
        ("about 1–2 h on one GPU (estimate)", (60, 120)),
        ("4 epochs × 8 patches, base 4 filters, 2 test scans of 64×64×16 | 20 s", (1 / 3, 1 / 3)),
        ("124³ patches, 10 scans of 512×512×40–66 | 1.5–3 min", (1.5, 3)),
        (
            "43 s measured on 2 cores (about 10 s of CPU time, 8 s of it generating the cohort)",
            (43 / 60, 43 / 60),
        ),
        ("30 s–2 min", (0.5, 2)),
        ("~20 s (measured)", (1 / 3, 1 / 3)),
        ("90 seconds to 3 minutes", (1.5, 3)),
        ("TINY_TIME (measured)", None),
        ("100 epochs × 500 = 50,000 patches", None),
    ],
)
def test_parse_durations(text, expected):
    got = course.parse_durations(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_expected_times_reads_the_table_rows():
    md = (
        "# 09 · X\n\n**Expected run time**\n\n| profile | time | what |\n|---|---|---|\n"
        "| tiny | about 12 s (measured) | 8 cases of 64×64×16 |\n| **small** | 3-6 min (estimate) | 20 cases |\n"
        "| full | TBD | 55 cases |\n\nNeeds: the tiny profile of 03 takes 5 min."
    )
    assert course.expected_times(md) == {"tiny": (0.2, 0.2), "small": (3, 6), "full": None}
    assert course.expected_times("no statement") == {"tiny": None, "small": None, "full": None}


@pytest.mark.parametrize(
    ("low", "high", "text"),
    [
        (0.25, 0.25, "15 s"),
        (2, 5, "2–5 min"),
        (60, 120, "1–2 h"),
        (0.5, 2, "30 s–2 min"),
        (30, 60, "30 min–1 h"),
    ],
)
def test_format_minutes(low, high, text):
    assert course.format_minutes(low, high) == text


# ---------------------------------------------------------------------------------------------------------
# Navigation, on notebooks of our own
# ---------------------------------------------------------------------------------------------------------


def _lesson_nb(item: course.Lesson, extra_cells=()):
    v4 = nbformat.v4
    nb = v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}  # fmt: skip
    nb.cells = [
        v4.new_markdown_cell(f"{item.heading}\n\nintro"),
        v4.new_code_cell(course.PARAMETERS_LINE, metadata={"tags": ["parameters"]}),
        v4.new_code_cell(course.SETUP_SOURCE, metadata={"tags": ["hemolab-setup"]}),
        *extra_cells,
        v4.new_markdown_cell("## Summary\n\n- a\n\n## Exercises\n\n1. b"),
    ]
    return nb


@pytest.fixture
def course_dir(tmp_path: Path) -> Path:
    """Three course notebooks (00, 01, 03: 02 is missing) in a folder of their own."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for item in (course.COURSE[0], course.COURSE[1], course.COURSE[3]):
        nbformat.write(_lesson_nb(item), folder / item.file)
    return folder


def _content(nb) -> list[tuple]:
    tags = {course.BADGE_TAG, course.NAV_TAG}
    return [(c.get("id"), c.cell_type, c.source, json.dumps(c.metadata, sort_keys=True),
             json.dumps(c.get("outputs")), c.get("execution_count"))
            for c in nb.cells if not tags & set(c.metadata.get("tags", []))]  # fmt: skip


def test_update_navigation_inserts_badge_and_links_and_is_idempotent(course_dir: Path):
    before = {p.name: _content(nbformat.read(p, as_version=4)) for p in course_dir.glob("*.ipynb")}
    changed = course.update_navigation(course_dir)
    assert sorted(p.name for p in changed) == sorted(before)
    assert course.update_navigation(course_dir) == []  # idempotent
    assert course.update_navigation(course_dir, check=True) == []
    first, second, third = (
        nbformat.read(course_dir / course.COURSE[i].file, as_version=4) for i in (0, 1, 3)
    )
    for name in before:
        nb = nbformat.read(course_dir / name, as_version=4)
        assert _content(nb) == before[name], "update_navigation touched a content cell"
        assert nb.metadata["kernelspec"]["name"] == "python3"
        nbformat.validate(nb)
        assert nb.cells[0].metadata["tags"] == [course.BADGE_TAG]
        assert nb.cells[0].source == course.colab_badge(name)
        assert nb.cells[1].metadata["tags"] == [course.NAV_TAG] == nb.cells[-1].metadata["tags"]
        assert nb.cells[1].source == nb.cells[-1].source
    # links follow COURSE order over the notebooks that exist (02 is skipped), and point at real files
    assert first.cells[1].source == (
        f"[course index](index.ipynb) | [next: 01 · {course.COURSE[1].title} →](01_preprocessing.ipynb)"
    )
    nav = second.cells[1].source
    assert nav.startswith(f"← [previous: 00 · {course.COURSE[0].title}](00_head_ct_and_haemorrhage.ipynb)")
    assert nav.endswith(f"[next: 03 · {course.COURSE[3].title} →]({course.COURSE[3].file})")
    assert "next" not in third.cells[-1].source
    # every notebook passes the navigation and badge checks
    for p in course_dir.glob("*.ipynb"):
        assert course.notebook_problems(p, ["colab_badge", "navigation"]) == []


def test_update_navigation_replaces_stale_and_misplaced_generated_cells(course_dir: Path):
    path = course_dir / course.COURSE[1].file
    course.update_navigation(course_dir)
    nb = nbformat.read(path, as_version=4)
    good = nbformat.writes(nb)
    # a stale badge, a nav cell lost in the middle, and the bottom one removed
    nb.cells[0].source = "[![Open In Colab](x)](https://example.org/old)"
    nb.cells.insert(3, nbformat.v4.new_markdown_cell("← old", metadata={"tags": [course.NAV_TAG]}))
    nb.cells.pop()
    nbformat.write(nb, path)
    assert course.notebook_problems(path, ["colab_badge", "navigation"])
    assert course.update_navigation(course_dir) == [path]
    assert nbformat.writes(nbformat.read(path, as_version=4)) == good


def test_update_navigation_keeps_outputs_of_other_cells(course_dir: Path):
    path = course_dir / course.COURSE[0].file
    nb = nbformat.read(path, as_version=4)
    cell = nbformat.v4.new_code_cell("print(1)", execution_count=3)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells.insert(3, cell)
    nbformat.write(nb, path)
    course.update_navigation(course_dir)
    after = nbformat.read(path, as_version=4)
    kept = [c for c in after.cells if c.get("outputs")]
    assert len(kept) == 1 and kept[0].outputs[0]["text"] == "1\n" and kept[0].execution_count == 3


def test_update_navigation_refuses_a_missing_folder(tmp_path: Path):
    with pytest.raises(HemolabError, match="not a folder"):
        course.update_navigation(tmp_path / "nope")


def test_write_index_then_check_is_clean(course_dir: Path):
    assert course.write_index(course_dir)
    assert not course.write_index(course_dir)
    assert not course.write_index(course_dir, check=True)
    nb = nbformat.read(course_dir / course.INDEX, as_version=4)
    nbformat.validate(nb)
    assert course.notebook_problems(course_dir / course.INDEX, set(course.STANDARDS) - {"course_entry"}) == []
    assert nb.cells[1].source == f"[next: 00 · {course.COURSE[0].title} →](00_head_ct_and_haemorrhage.ipynb)"


def test_course_problems_names_missing_and_unknown_notebooks(course_dir: Path):
    nbformat.write(_lesson_nb(course.COURSE[0]), course_dir / "99_not_in_course.ipynb")
    problems = "\n".join(course.course_problems(course_dir))
    assert "02_cnn_ds_architecture.ipynb is in COURSE but not in" in problems
    assert "99_not_in_course.ipynb is in" in problems and "not in hemolab.course.COURSE" in problems
    assert "index.ipynb is missing" in problems


# ---------------------------------------------------------------------------------------------------------
# README block
# ---------------------------------------------------------------------------------------------------------


def test_update_readme_rewrites_only_the_marked_block(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{course.README_START}\nold map\n{course.README_END}\nafter\n")
    assert course.update_readme(readme, check=True)
    assert course.update_readme(readme)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{course.README_END}\nafter\n")
    assert "old map" not in text and course.course_markdown() in text and course.binder_url() in text
    assert not course.update_readme(readme)  # idempotent
    for item in course.COURSE:
        assert f"(notebooks/{item.file})" in text


def test_update_readme_without_markers_leaves_the_file_alone(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    assert not course.update_readme(readme)
    assert readme.read_text() == "# x\n"
    assert not course.update_readme(tmp_path / "missing.md")


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def test_cli_nav_check_and_write(course_dir: Path, capsys):
    readme = course_dir.parent / "README.md"
    readme.write_text(f"{course.README_START}\n{course.README_END}\n")
    args = ["course", "nav", "--notebooks", str(course_dir), "--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    assert "stale:" in capsys.readouterr().out
    assert not (course_dir / course.INDEX).exists()  # --check writes nothing
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert course.course_markdown() in readme.read_text()


def test_cli_check_reports_problems(course_dir: Path, capsys):
    assert main(["course", "check", "--notebooks", str(course_dir)]) == 1
    out = capsys.readouterr().out
    assert "Colab badge" in out and "02_cnn_ds_architecture.ipynb is in COURSE" in out


def test_cli_prints_tables_and_links(capsys):
    assert main(["course", "readme-table"]) == 0
    assert capsys.readouterr().out.strip() == course.course_markdown()
    assert main(["course", "text"]) == 0
    assert capsys.readouterr().out.strip() == course.course_text()
    assert main(["course", "links"]) == 0
    out = capsys.readouterr().out
    assert course.binder_badge() in out and course.colab_badge(course.INDEX) in out


# ---------------------------------------------------------------------------------------------------------
# Colab: a GPU runtime gets the full profile and the GPU without any notebook naming a device
# ---------------------------------------------------------------------------------------------------------


def test_gpu_runtime_picks_full_profile_and_cuda(monkeypatch, capsys):
    import torch

    from hemolab.config import get_device, resolve_profile, setup_notebook

    monkeypatch.delenv("HEMOLAB_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    assert resolve_profile(None) == "full"
    assert get_device().type == "cuda"
    assert setup_notebook(None) == "full"
    assert "profile: full | device: cuda (Tesla T4)" in capsys.readouterr().out
    monkeypatch.setenv("HEMOLAB_PROFILE", "small")  # an explicit choice wins
    assert resolve_profile(None) == "small"


def test_cpu_runtime_picks_small_profile(monkeypatch):
    import torch

    from hemolab.config import get_device, resolve_profile

    monkeypatch.delenv("HEMOLAB_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile(None) == "small"
    assert get_device().type == "cpu"


def test_workspace_report_creates_nothing(tmp_path: Path, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv("HEMOLAB_WORKSPACE", str(ws))
    report = course.workspace_report("tiny")
    assert not ws.exists()
    assert "synth-tiny-seed0" in report and "not yet made" in report
    (ws / "checkpoints" / "cnnds-tiny").mkdir(parents=True)
    (ws / "checkpoints" / "cnnds-tiny" / "best.pt").write_bytes(b"")
    assert "CNN-DS checkpoint (notebook 03): present" in course.workspace_report("tiny")


def test_committed_notebooks_copy_cleanly(tmp_path: Path):
    """Navigation over a copy of the committed folder is a no-op too (no dependence on the checkout path)."""
    copy = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, copy)
    assert course.update_navigation(copy) == []
    assert not course.write_index(copy)
