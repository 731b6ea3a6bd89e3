"""Run profiles, the workspace folder and the compute device.

Every notebook and command that trains or generates data takes a ``profile``:

``tiny``
    CI: seconds per notebook, toy sizes.
``small``
    A CPU laptop or Binder: minutes, fits in 2 GB of RAM.
``full``
    A GPU: the papers' settings.

``profile=None`` means *auto*: ``full`` when CUDA is available, ``small`` otherwise.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from hemolab.errors import HemolabError

PROFILES: tuple[str, ...] = ("tiny", "small", "full")
WORKSPACE_ENV = "HEMOLAB_WORKSPACE"


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch  # imported when asked: reading a profile should not pay for torch's start-up

    return bool(torch.cuda.is_available())


def resolve_profile(profile: str | None = None) -> str:
    """Turn a profile name (or ``None`` for auto) into one of :data:`PROFILES`.

    Args:
        profile: ``"tiny"``, ``"small"``, ``"full"`` or ``None``. ``None`` reads the
            ``HEMOLAB_PROFILE`` environment variable and otherwise picks ``"full"`` on a CUDA
            machine and ``"small"`` elsewhere.

    Returns:
        The profile name.

    Raises:
        HemolabError: for an unknown profile name.
    """
    if profile is None:
        profile = os.environ.get("HEMOLAB_PROFILE") or ("full" if cuda_available() else "small")
    profile = str(profile).strip().lower()
    if profile not in PROFILES:
        raise HemolabError(
            f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)} (or None for auto)"
        )
    return profile


def _repo_root() -> Path | None:
    """The source checkout hemolab runs from, if it runs from one (editable install)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file() and (here / "notebooks").is_dir():
        return here
    return None


def workspace_dir(*parts: str, create: bool = True) -> Path:
    """The folder where hemolab writes everything it makes (datasets, checkpoints, figures).

    It is ``$HEMOLAB_WORKSPACE`` when that is set; otherwise ``workspace/`` at the root of the source
    checkout (ignored by git), or ``~/hemolab-workspace`` for an installed package. Outputs never go
    next to the notebooks or the sources.

    Args:
        *parts: sub-folders inside the workspace, e.g. ``workspace_dir("checkpoints")``.
        create: make the folder if it does not exist.

    Returns:
        The absolute path of the folder.
    """
    env = os.environ.get(WORKSPACE_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        repo = _repo_root()
        root = repo / "workspace" if repo is not None else Path.home() / "hemolab-workspace"
    path = root.joinpath(*parts).resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def get_device(device: str | None = None):
    """The torch device to compute on: CUDA when available, else CPU. Nothing hard-codes ``cuda:0``.

    Args:
        device: an explicit device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) or ``None`` for auto.

    Returns:
        A :class:`torch.device`.

    Raises:
        HemolabError: if CUDA is asked for but not available.
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HemolabError(f"device {device!r} asked for, but torch sees no CUDA GPU here: use 'cpu' or None")
    return dev


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _memory_gb() -> tuple[float | None, float | None]:
    """Total and available RAM in GB (Linux ``/proc/meminfo``; ``os.sysconf`` elsewhere; None if unknown)."""
    try:
        info = dict(
            line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
        )
        return (int(info["MemTotal"].split()[0]) / 1024**2, int(info["MemAvailable"].split()[0]) / 1024**2)
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, None
        except (AttributeError, ValueError, OSError):
            return None, None


def environment_report() -> str:
    """What a run depends on, as MONAI's ``print_config()`` shows it: versions, device, cores, memory.

    Returns:
        A few lines: Python, hemolab, torch, MONAI, SimpleITK, NumPy versions; the device torch uses (and
        the GPU's name and memory); CPU cores and torch threads; RAM total and available.
    """
    import platform
    from importlib import metadata

    import torch

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    versions = ", ".join(
        f"{name} {version(pkg)}" for name, pkg in
        [("hemolab", "hemolab"), ("torch", "torch"), ("MONAI", "monai"), ("SimpleITK", "SimpleITK"), ("NumPy", "numpy")]
    )  # fmt: skip
    device = get_device()
    if device.type == "cuda":
        try:
            memory = f", {torch.cuda.get_device_properties(device).total_memory / 1024**3:.0f} GB"
        except (RuntimeError, AssertionError):  # a device torch lists but cannot query
            memory = ""
        dev = f"{device} ({torch.cuda.get_device_name(device)}{memory})"
    else:
        dev = f"cpu ({os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads)"
    total, avail = _memory_gb()
    ram = (
        "unknown"
        if total is None
        else f"{total:.1f} GB" + ("" if avail is None else f" ({avail:.1f} GB available)")
    )
    return "\n".join([f"Python {platform.python_version()}; {versions}", f"device: {dev}; RAM: {ram}"])


def setup_notebook(profile: str | None = None, seed: int = 0) -> str:
    """What every notebook calls right after its ``parameters`` cell.

    Resolves the profile, seeds every random generator and prints where the notebook runs (profile,
    device, workspace folder) and on what (:func:`environment_report`: versions, cores, memory), so that a
    student always knows what they are looking at and an instructor can compare two students' runs.

    Args:
        profile: the notebook's ``profile`` parameter (``None`` = auto).
        seed: the random seed.

    Returns:
        The resolved profile name.
    """
    profile = resolve_profile(profile)
    seed_everything(seed)
    device = get_device()
    gpu = ""
    if device.type == "cuda":
        import torch

        gpu = f" ({torch.cuda.get_device_name(device)})"
    print(f"hemolab profile: {profile} | device: {device}{gpu} | workspace: {workspace_dir()}")
    print(environment_report())
    return profile


class ProfileSettings:
    """What the frozen dataclasses holding a profile's training settings share (CNN-DS, Patel).

    A subclass names itself in ``KIND`` (used in error messages) and builds its ``with_overrides`` on
    :meth:`_checked_overrides`.
    """

    KIND: ClassVar[str] = "training"

    def _checked_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """``overrides`` without its ``None`` values.

        Raises:
            HemolabError: for a name that is not one of the settings.
        """
        clean = {k: v for k, v in overrides.items() if v is not None}
        known = asdict(self)  # type: ignore[call-overload]
        unknown = set(clean) - set(known)
        if unknown:
            raise HemolabError(
                f"unknown {self.KIND} settings {sorted(unknown)}: valid ones are {sorted(known)}"
            )
        return clean

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), e.g. for a checkpoint's meta."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}  # type: ignore[call-overload]
