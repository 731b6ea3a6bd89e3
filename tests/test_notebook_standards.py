"""Every notebook in notebooks/ follows the course's standards (new notebooks are picked up automatically).

The checks live in :mod:`hemolab.course` (``STANDARDS``), so that ``hemolab course check`` runs the same ones
before a commit. Each is run on each notebook as its own test, and each is shown to catch what it is meant to
catch on a notebook broken on purpose.

Run times are not tested (these machines are shared and noisy; a timed test fails for no fault of the
code): tests/test_notebooks.py records each notebook's tiny-profile wall time and the test run prints them
as a report at its end (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from hemolab import course

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO_ROOT / "notebooks"
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOK_FILES, "no notebooks in notebooks/"


@pytest.mark.parametrize("standard", list(course.STANDARDS))
@pytest.mark.parametrize("notebook", NOTEBOOK_FILES, ids=[p.stem for p in NOTEBOOK_FILES])
def test_notebook_standard(notebook: Path, standard: str):
    problems = course.notebook_problems(notebook, [standard])
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------
# Each check catches what it is for: start from a notebook that passes everything and break one thing
# ---------------------------------------------------------------------------------------------------------

LESSON = course.COURSE[2]


def _times_table(item: course.Lesson) -> str:
    rows = "\n".join(
        f"| {p} | {course.format_minutes(*item.minutes[p])} |" for p in ("tiny", "small", "full")
    )
    return f"**Expected run time**\n\n| profile | time |\n|---|---|\n{rows}"


def _good_notebook():
    v4 = nbformat.v4
    nb = v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    nb.cells = [
        v4.new_markdown_cell(
            f"{LESSON.heading}\n\nWhat it is about.\n\n**Learning goals**\n\n- one\n- two\n\n{_times_table(LESSON)}"
        ),
        v4.new_code_cell(course.PARAMETERS_LINE, metadata={"tags": ["parameters"]}),
        v4.new_code_cell(course.SETUP_SOURCE, metadata={"tags": ["hemolab-setup"]}),
        v4.new_code_cell("from hemolab.config import get_device\n\nmodel.to(get_device())"),
        v4.new_markdown_cell("## Summary\n\n- a\n"),
        v4.new_markdown_cell("## Exercises\n\n1. b\n"),
    ]
    return course.with_navigation(nb, LESSON.file, [course.INDEX] + [i.file for i in course.COURSE])


def _problems(tmp_path: Path, nb, standard: str) -> list[str]:
    path = tmp_path / LESSON.file
    nbformat.write(nb, path)
    for item in course.COURSE:  # navigation is checked against the notebooks that exist beside it
        if item.file != LESSON.file:
            (tmp_path / item.file).write_text("{}")
    return course.notebook_problems(path, [standard])


def test_good_notebook_passes_every_standard(tmp_path: Path):
    path = tmp_path / "notebooks"
    path.mkdir()
    assert [p for s in course.STANDARDS for p in _problems(path, _good_notebook(), s)] == []


def _break_title(nb):
    nb.cells[2].source = nb.cells[2].source.replace(f"# {LESSON.number} · ", "# ")


def _break_goals(nb):
    nb.cells[2].source = nb.cells[2].source.replace("**Learning goals**\n\n- one\n- two", "")


def _break_times(nb):
    small = course.format_minutes(*LESSON.minutes["small"])
    nb.cells[2].source = nb.cells[2].source.replace(f"| small | {small} |", "| small | to be measured |")


def _break_course_times(nb):
    tiny = course.format_minutes(*LESSON.minutes["tiny"])
    nb.cells[2].source = nb.cells[2].source.replace(f"| tiny | {tiny} |", "| tiny | 59 s |")


def _break_badge(nb):
    nb.cells[0].source = nb.cells[0].source.replace(course.REPO, "someone/fork")


def _break_nav(nb):
    nb.cells.pop()


def _second_parameters(nb):
    nb.cells.insert(5, nbformat.v4.new_code_cell("profile = 'tiny'", metadata={"tags": ["parameters"]}))


def _torch_in_setup(nb):
    nb.cells[4].source = nb.cells[4].source.replace('%pip install -q "', '%pip install -q torch "')


def _unconditional_install(nb):
    nb.cells[4].source = f'%pip install -q "{course.PIP_SPEC}"\nfrom hemolab.config import setup_notebook\n' \
        "profile = setup_notebook(profile)"  # fmt: skip


def _no_exercises(nb):
    nb.cells[-2].source = "## More"


def _with_output(nb):
    nb.cells[5].execution_count = 4
    nb.cells[5].outputs = [nbformat.v4.new_output("stream", name="stdout", text="x\n")]


def _output_in_checked_cell(nb):
    nb.cells[5].source = f"{course.NBVAL_CHECK}\n" + nb.cells[5].source
    nb.cells[5].execution_count = 1
    nb.cells[5].outputs = [nbformat.v4.new_output("stream", name="stdout", text="table\n")]


def _device(nb):
    nb.cells[5].source = 'x = x.to("cuda:0")'


def _dot_cuda(nb):
    nb.cells[5].source = "model = model.cuda()"


def _device_kw(nb):
    nb.cells[5].source = 'x = torch.zeros(3, device="cuda")'


def _kernel(nb):
    nb.metadata["kernelspec"] = {"name": "julia-1.10", "language": "julia", "display_name": "Julia"}


@pytest.mark.parametrize(
    ("standard", "breaker"),
    [
        ("title", _break_title),
        ("learning_goals", _break_goals),
        ("expected_times", _break_times),
        ("course_entry", _break_course_times),
        ("colab_badge", _break_badge),
        ("navigation", _break_nav),
        ("parameters", _second_parameters),
        ("setup_cell", _torch_in_setup),
        ("setup_cell", _unconditional_install),
        ("summary_exercises", _no_exercises),
        ("no_outputs", _with_output),
        ("no_outputs", _output_in_checked_cell),
        ("no_hard_coded_device", _device),
        ("no_hard_coded_device", _dot_cuda),
        ("no_hard_coded_device", _device_kw),
        ("kernelspec", _kernel),
    ],
    ids=lambda x: x if isinstance(x, str) else x.__name__.strip("_"),
)
def test_each_check_catches_its_problem(tmp_path: Path, standard, breaker):
    nb = _good_notebook()
    breaker(nb)
    assert _problems(tmp_path, nb, standard), f"{standard} did not notice {breaker.__name__}"


@pytest.mark.parametrize("notebook", NOTEBOOK_FILES, ids=[p.stem for p in NOTEBOOK_FILES])
def test_papermill_reads_the_profile_parameter(notebook: Path):
    """papermill parses the parameters cell (a comment with '=' in it makes it warn 'Unable to parse line')."""
    import papermill as pm

    params = pm.inspect_notebook(str(notebook))
    assert list(params) == ["profile"], f"papermill sees parameters {list(params)} in {notebook.name}"
    assert params["profile"]["default"] == "None"


def test_papermill_check_rejects_a_parameters_line_it_cannot_parse(tmp_path: Path):
    import papermill as pm

    nb = _good_notebook()
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = 'profile = None  # "tiny" | "small"; None = auto'
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    assert "profile" not in pm.inspect_notebook(str(path))
