"""Atomic file writes: a file either keeps its old content or gets the whole new one, never half.

Used for everything hemolab writes that a user might read while it is being written or that an
interrupted run (a Binder session timing out) could leave half-finished: checkpoints, images, CSV tables,
generated notebooks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path``.

    The temporary file is in the same folder (so :func:`os.replace` is atomic) and keeps ``path``'s
    suffixes (so writers that choose a format by the file name, like SimpleITK, still do). It is removed
    if ``write`` fails.

    Args:
        path: the file to write; its folder is created if needed.
        write: writes the content to the path it is given.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{''.join(path.suffixes)}", dir=path.parent
    )
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
