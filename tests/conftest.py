"""Shared test set-up: every test writes into a temporary workspace, never into the checkout."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"

# One temporary workspace for the whole test session (each xdist worker gets its own), set before any
# hemolab import reads it, so nothing a test makes lands next to the sources.
if "HEMOLAB_TEST_WORKSPACE" not in os.environ:
    os.environ["HEMOLAB_TEST_WORKSPACE"] = tempfile.mkdtemp(prefix="hemolab-test-ws-")
os.environ["HEMOLAB_WORKSPACE"] = os.environ["HEMOLAB_TEST_WORKSPACE"]
os.environ.setdefault("MPLBACKEND", "Agg")
# Where tests/test_notebooks.py records each notebook's wall time (one file per test session, shared by the
# xdist workers, which inherit this environment); printed as a report at the end of the run.
os.environ.setdefault(
    "HEMOLAB_NB_TIMINGS", str(Path(tempfile.mkdtemp(prefix="hemolab-nb-times-")) / "notebook_timings.json")
)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """A report, not a test: how long each notebook took in the tiny profile in this run (wall time, papermill)."""
    import json

    path = Path(os.environ["HEMOLAB_NB_TIMINGS"])
    if not path.is_file():
        return
    timings = json.loads(path.read_text())
    terminalreporter.section("notebook run times, tiny profile (a report; machines are shared, times vary)")
    for name, seconds in sorted(timings.items()):
        terminalreporter.write_line(f"{name:45s} {seconds:7.1f} s")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The root of the source checkout."""
    return REPO


@pytest.fixture(scope="session")
def tiny_cohort() -> Path:
    """A tiny synthetic cohort (8 cases), generated once per test session."""
    from hemolab.datasets import ensure_cohort

    return ensure_cohort("tiny", seed=0)
