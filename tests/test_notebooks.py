"""Every notebook in ``notebooks/`` runs top to bottom in the ``tiny`` profile.

Two independent runs per notebook, each in a fresh kernel and a FRESH workspace, so that each notebook
is shown to run on its own in a new clone (it must make whatever an earlier notebook would have left):

* papermill with ``-p profile tiny`` (the notebook's one ``parameters`` cell), failing on any error;
* nbval (``--nbval-lax``): cells marked ``# NBVAL_CHECK_OUTPUT`` must reproduce the expected output that
  ``hemolab.course.NBVAL_REFERENCES`` holds for them (the committed notebooks have no outputs).

New notebooks are picked up without editing this file. Wall times of the papermill runs are written to
the JSON file named by ``$HEMOLAB_NB_TIMINGS`` (tests/conftest.py sets one per session), and the run prints
them at its end as a report; no test asserts on elapsed time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_FILES = sorted((REPO / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 300


def _timings_file() -> Path:
    return Path(os.environ["HEMOLAB_NB_TIMINGS"])


def _record_timing(name: str, seconds: float) -> None:
    path = _timings_file()
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        data = {}
    data[name] = round(seconds, 1)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _env(workspace: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HEMOLAB_WORKSPACE=str(workspace),
        HEMOLAB_PROFILE="tiny",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        PYTHONUNBUFFERED="1",
        # two notebooks may run side by side on a 2-core machine
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    return env


def test_notebooks_exist():
    assert NOTEBOOK_FILES, "no notebooks found in notebooks/"


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOK_FILES, ids=[p.stem for p in NOTEBOOK_FILES])
def test_notebook_runs_with_papermill(notebook: Path, tmp_path: Path):
    import papermill as pm

    out = tmp_path / notebook.name
    start = time.perf_counter()
    old = dict(os.environ)
    os.environ.update(_env(tmp_path / "workspace"))
    try:
        pm.execute_notebook(
            str(notebook),
            str(out),
            parameters={"profile": "tiny"},
            kernel_name="python3",
            cwd=str(notebook.parent),
            progress_bar=False,
            execution_timeout=TIMEOUT_S,
        )
    finally:
        os.environ.clear()
        os.environ.update(old)
    _record_timing(notebook.name, time.perf_counter() - start)
    # outputs went to the workspace, never next to the sources
    assert not list((REPO / "notebooks").glob("*.nii.gz")), "a notebook wrote data next to the sources"


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOK_FILES, ids=[p.stem for p in NOTEBOOK_FILES])
def test_notebook_passes_nbval(notebook: Path, tmp_path: Path):
    import nbformat

    from hemolab.course import with_reference_outputs

    # committed notebooks carry no outputs: nbval runs on a copy holding the expected output of each
    # "# NBVAL_CHECK_OUTPUT" cell (hemolab.course.NBVAL_REFERENCES)
    checked = tmp_path / "nbval" / notebook.name
    checked.parent.mkdir()
    nbformat.write(with_reference_outputs(nbformat.read(notebook, as_version=4)), checked)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "--nbval-lax",
        f"--nbval-cell-timeout={TIMEOUT_S}",
        "--rootdir",
        str(tmp_path),
        str(checked),
    ]
    proc = subprocess.run(
        cmd,
        cwd=checked.parent,
        env=_env(tmp_path / "workspace"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * 3,
    )
    assert proc.returncode == 0, (
        f"nbval failed on {notebook.name}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    )
