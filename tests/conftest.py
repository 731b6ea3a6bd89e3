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


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The root of the source checkout."""
    return REPO


@pytest.fixture(scope="session")
def tiny_cohort() -> Path:
    """A tiny synthetic cohort (8 cases), generated once per test session."""
    from hemolab.datasets import ensure_cohort

    return ensure_cohort("tiny", seed=0)
