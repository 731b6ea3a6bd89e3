"""The files that install the course elsewhere: binder/ (mybinder.org) and the root environment.yml (conda).

No network here, so "installable" is checked as far as this machine allows: the files parse; every package
they name is one of pyproject.toml's dependencies or extras (under its conda name where that differs) or on a
short allow-list; each pyproject dependency is there with the same lower bound (an extra, if listed, too); Binder's torch is the CPU build from
PyTorch's CPU index; postBuild is executable, fast and idempotent (run twice against a stand-in ``python``).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parent.parent
BINDER = REPO_ROOT / "binder"

#: pip name -> the conda-forge names that provide it.
CONDA_NAMES = {
    "torch": {"pytorch"},
    "simpleitk": {"simpleitk"},
    "matplotlib": {"matplotlib", "matplotlib-base"},
}
#: Names an environment file may list besides pyproject's dependencies.
ALLOWED_EXTRA = {"python", "pip"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_deps() -> dict[str, Requirement]:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {_norm(r.name): r for r in reqs}


def _split_conda(spec: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    assert m, f"cannot read conda spec {spec!r}"
    return _norm(m.group(1)), m.group(2).strip()


def _env(path: Path) -> tuple[dict, dict[str, str], list[str]]:
    """(the parsed file, {conda name: version spec}, [pip lines])."""
    env = yaml.safe_load(path.read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
        else:
            name, spec = _split_conda(dep)
            assert name not in conda, f"{path.name}: {name} listed twice"
            conda[name] = spec
    return env, conda, pip


def _pip_requirements(lines: list[str]) -> dict[str, Requirement]:
    return {_norm(r.name): r for r in (Requirement(x) for x in lines if not x.startswith("-"))}


def _lower_bound(spec: str) -> Version | None:
    m = re.search(r">=\s*([0-9][0-9.]*)", spec)
    return Version(m.group(1)) if m else None


def _provided(name: str, conda: dict[str, str], pip: dict[str, Requirement]) -> tuple[str, str] | None:
    """Which entry provides pyproject dependency ``name``: ('conda'|'pip', its version spec)."""
    if name in pip:
        return "pip", str(pip[name].specifier)
    for conda_name in CONDA_NAMES.get(name, {name}):
        if conda_name in conda:
            return "conda", conda[conda_name]
    return None


def _optional_deps() -> dict[str, Requirement]:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    reqs = [
        Requirement(r) for extra in data["project"].get("optional-dependencies", {}).values() for r in extra
    ]
    return {_norm(r.name): r for r in reqs}


def _known_names() -> set[str]:
    names = set(_pyproject_deps()) | set(_optional_deps()) | ALLOWED_EXTRA
    for aliases in CONDA_NAMES.values():
        names |= aliases
    return names


# ---------------------------------------------------------------------------------------------------------


def test_pyproject_dependencies_are_real_distributions():
    """Every name in pyproject.toml is a distribution installed in this environment (so pip knows it)."""
    for name, req in _pyproject_deps().items():
        version = Version(metadata.version(req.name))
        assert req.specifier.contains(version, prereleases=True), f"{name} {version} does not satisfy {req}"


@pytest.mark.parametrize(
    "path", [REPO_ROOT / "environment.yml", BINDER / "environment.yml"], ids=["root", "binder"]
)
def test_environment_names_exactly_the_pyproject_dependencies(path: Path):
    env, conda, pip_lines = _env(path)
    assert env["channels"][0] == "conda-forge" and "defaults" not in env["channels"]
    pip = _pip_requirements(pip_lines)
    unknown = (set(conda) | set(pip)) - _known_names()
    assert not unknown, (
        f"{path.name} names packages that are neither in pyproject.toml nor allowed: {unknown}"
    )
    required = _pyproject_deps()
    for name, req in {**_optional_deps(), **required}.items():
        where = _provided(name, conda, pip)
        if where is None and name not in required:
            continue  # an optional extra this environment does not install
        assert where is not None, f"{path.name} lacks pyproject dependency {req}"
        ours, theirs = _lower_bound(str(req.specifier)), _lower_bound(where[1])
        pinned = re.search(r"==\s*([0-9][0-9.]*)", where[1])
        if pinned:  # an exact pin must satisfy pyproject's range
            assert req.specifier.contains(Version(pinned.group(1))), f"{path.name}: {name}{where[1]} vs {req}"
        else:
            assert theirs == ours, f"{path.name}: {name} lower bound {theirs} differs from pyproject's {ours}"
    # nothing is installed twice (once by conda and once by pip)
    for name in pip:
        assert not (CONDA_NAMES.get(name, {name}) & set(conda)), (
            f"{path.name}: {name} from both conda and pip"
        )


def test_root_environment_installs_hemolab_itself():
    _, conda, pip_lines = _env(REPO_ROOT / "environment.yml")
    assert pip_lines == ["-e ."], (
        "the root environment installs hemolab editable from the checkout, nothing else"
    )
    assert "pytorch" in conda, "conda-forge chooses the CUDA or CPU build of pytorch by itself"
    assert _lower_bound(conda["python"]) == Version(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"].lstrip(">=")
    )


def test_binder_torch_is_the_cpu_build():
    _, conda, pip_lines = _env(BINDER / "environment.yml")
    assert "pytorch" not in conda and "torch" not in conda, "conda must not pull a (CUDA) pytorch on Binder"
    # MONAI depends on torch: from conda-forge it would pull conda's pytorch next to pip's torch
    assert "monai" not in conda
    assert f"--extra-index-url {CPU_INDEX}" in pip_lines or f"--index-url {CPU_INDEX}" in pip_lines
    torch = _pip_requirements(pip_lines)["torch"]
    (spec,) = list(torch.specifier)
    assert spec.operator == "==" and Version(spec.version).local == "cpu", f"pin the +cpu build, got {torch}"
    assert re.fullmatch(r"3\.\d+", conda["python"].lstrip("=")), "pin Python's minor version on Binder"


def test_binder_has_only_repo2docker_files():
    files = {p.name for p in BINDER.iterdir()}
    assert files <= {"environment.yml", "postBuild", "start", "apt.txt", "README.md"}, files
    assert not (BINDER / "requirements.txt").exists(), "repo2docker would ignore environment.yml"


def test_postbuild_is_executable_fast_and_idempotent(tmp_path: Path):
    post = BINDER / "postBuild"
    assert post.stat().st_mode & stat.S_IXUSR, "binder/postBuild must be executable (chmod +x)"
    text = post.read_text()
    assert text.startswith("#!/bin/bash\n") and "set -euo pipefail" in text
    # nothing slow: the only install is hemolab itself, without dependencies; no data, no training
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs == ["python -m pip install --no-cache-dir --no-deps -e ."], installs
    assert not re.search(r"hemolab (synth|train|demo)|papermill|conda install|mamba install", text)
    # run it twice against a stand-in `python` that records its calls
    bindir, prefix, log = tmp_path / "bin", tmp_path / "prefix", tmp_path / "calls.log"
    bindir.mkdir()
    fake = bindir / "python"  # NB_PYTHON_PREFIX is set as on Binder, so postBuild only calls python for pip
    fake.write_text(f'#!/bin/sh\necho "$PWD :: $*" >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "NB_PYTHON_PREFIX": str(prefix)}
    outputs = []
    for _ in range(2):
        proc = subprocess.run(
            ["bash", str(post)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append((prefix / "share/jupyter/lab/settings/overrides.json").read_text())
    assert outputs[0] == outputs[1]
    settings = yaml.safe_load(outputs[0])  # JSON is YAML
    assert settings["@jupyterlab/apputils-extension:notification"] == {
        "checkForUpdates": False,
        "fetchNews": "false",
    }
    calls = log.read_text().splitlines()
    assert calls == [f"{REPO_ROOT} :: -m pip install --no-cache-dir --no-deps -e ."] * 2, calls
