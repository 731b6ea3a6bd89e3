"""Saving and loading checkpoints that ``torch.load(..., weights_only=True)`` can read.

A hemolab checkpoint is a plain dictionary of tensors and primitive Python values (no pickled classes),
so it loads with PyTorch's safe ``weights_only=True`` unpickler::

    {"format": "hemolab-checkpoint", "version": 1,
     "model_state": {...}, "meta": {"arch": "cnnds", "model_kwargs": {...}, "profile": ..., ...},
     "optimizer_state": {...} | None, ...}

``meta`` says how to rebuild the network (``arch`` + ``model_kwargs``, given to
:func:`hemolab.models.build_model`) and how its input was prepared (``grid_size``, preprocessing
settings), so :func:`load_checkpoint` needs nothing but the file. Writes are atomic (a temporary file in
the same folder, then :func:`os.replace`), so an interrupted run never leaves half a checkpoint.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hemolab.errors import HemolabError, HemolabExistsError, HemolabFileError

CHECKPOINT_FORMAT = "hemolab-checkpoint"
CHECKPOINT_VERSION = 1

_PRIMITIVES = (str, int, float, bool, type(None))


def to_primitive(value: Any, name: str = "meta") -> Any:
    """Turn ``value`` into something ``weights_only`` loading accepts: primitives, lists, dicts, tensors.

    Tuples become lists, NumPy scalars become Python numbers, :class:`pathlib.Path` becomes a string.

    Raises:
        HemolabError: for anything else (e.g. a class instance), naming where it was found.
    """
    if isinstance(value, torch.Tensor | bool | str | type(None)):
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # NumPy scalar
        return value.item()
    if isinstance(value, list | tuple):
        return [to_primitive(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise HemolabError(f"{name} has a key {k!r} of type {type(k).__name__}: use str keys")
            out[k] = to_primitive(v, f"{name}[{k!r}]")
        return out
    if hasattr(value, "tolist"):  # NumPy array
        return value.tolist()
    raise HemolabError(
        f"{name} holds a {type(value).__name__}, which a weights_only checkpoint cannot store: "
        "use numbers, strings, lists and dicts only"
    )


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then rename it over ``path`` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    meta: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint (model weights + ``meta``, optionally the optimizer state), atomically.

    Args:
        path: the ``.pt`` file to write.
        model: the network; its ``state_dict`` is stored (on the CPU).
        meta: how to rebuild and use the model: at least ``arch`` and ``model_kwargs`` for
            :func:`load_checkpoint`; plus e.g. ``profile``, ``grid_size``, ``best_epoch``.
        optimizer: store its state too (for resuming).
        overwrite: replace an existing file.
        extra: more entries (tensors / primitives) for the top level, e.g. scheduler and RNG state.

    Returns:
        The path written.

    Raises:
        HemolabExistsError: if ``path`` exists and ``overwrite`` is false.
        HemolabError: if ``meta`` or ``extra`` hold something that is not a tensor or primitive value.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise HemolabExistsError(f"checkpoint {path} exists: pass overwrite=True (--overwrite) to replace it")
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": to_primitive(dict(meta or {}), "meta"),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
    }
    for key, value in (extra or {}).items():
        payload[key] = to_primitive(value, key)
    return atomic_torch_save(payload, path)


_WHAT_TO_DO = (
    "Give a best.pt written by `hemolab train`, notebook 03/04 or hemolab.training.ensure_checkpoint()"
)


def _load_or_explain(path: Path, device) -> Any:
    """``torch.load(path, weights_only=True)``, or a :class:`HemolabError` that says what the file is not.

    The message never repeats PyTorch's own text: for a file it refuses, PyTorch suggests loading it with
    unsafe options, which must never be offered for a file of unknown origin.
    """
    with open(path, "rb") as fh:
        head = fh.read(8)
    is_zip = head[:4] == b"PK\x03\x04"  # the zip archive torch.save writes (maybe cut short)
    is_legacy = head[:1] == b"\x80"  # a pickle (torch's legacy format starts with one)
    if not head:
        raise HemolabError(f"{path} is not a readable hemolab checkpoint: the file is empty. {_WHAT_TO_DO}")
    if not is_zip and not is_legacy:
        raise HemolabError(
            f"{path} is not a readable hemolab checkpoint: it is not a PyTorch file (neither the zip archive torch.save "
            f"writes nor a pickle; it starts with bytes {head[:4].hex(' ')}). {_WHAT_TO_DO}"
        )
    try:
        return torch.load(path, map_location=device or "cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = (
            "it holds Python objects other than tensors, numbers, strings, lists and dicts (e.g. a whole pickled "
            "model from another program), which a hemolab checkpoint never does, and hemolab does not load them"
        )
    except Exception as exc:  # noqa: BLE001 - RuntimeError, EOFError, zipfile errors ...: never show torch's text
        reason = (
            f"it is a damaged or incomplete PyTorch file ({type(exc).__name__}; e.g. an interrupted download or copy)"
            if is_zip
            else f"PyTorch cannot read it ({type(exc).__name__})"
        )
    raise HemolabError(f"{path} is not a readable hemolab checkpoint: {reason}. {_WHAT_TO_DO}")


def read_checkpoint(path: str | os.PathLike, device=None) -> dict[str, Any]:
    """Read a checkpoint file as its raw dictionary with ``torch.load(..., weights_only=True)``.

    Raises:
        HemolabFileError: if the file does not exist.
        HemolabError: if it is not a hemolab checkpoint, saying what it is not (not a PyTorch file, damaged,
            holds other Python objects, not a dictionary, no ``format`` entry); never PyTorch's own message.
    """
    path = Path(path)
    if not path.is_file():
        hint = " (it is a folder: point at its best.pt)" if path.is_dir() else ""
        raise HemolabFileError(
            f"checkpoint {path} not found{hint}: train one with `hemolab train` or notebook 03, "
            "or use hemolab.training.ensure_checkpoint()"
        )
    payload = _load_or_explain(path, device)
    if not isinstance(payload, dict):
        raise HemolabError(
            f"{path} is not a hemolab checkpoint: it holds a {type(payload).__name__}, not a dictionary. "
            f"{_WHAT_TO_DO}"
        )
    if "format" not in payload:
        keys = ", ".join(repr(k) for k in list(payload)[:6]) + (", ..." if len(payload) > 6 else "")
        raise HemolabError(
            f"{path} is not a hemolab checkpoint: it holds no 'format' key (its keys: {keys or 'none'}); it may be "
            f"a bare state_dict or another program's checkpoint. {_WHAT_TO_DO}"
        )
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise HemolabError(
            f"{path} is not a hemolab checkpoint: its 'format' is {str(payload.get('format'))[:60]!r}, not "
            f"{CHECKPOINT_FORMAT!r}. {_WHAT_TO_DO}"
        )
    return payload


def load_checkpoint(path: str | os.PathLike, device=None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained network from a checkpoint, ready for inference.

    The network is built with :func:`hemolab.models.build_model` from ``meta["arch"]`` and
    ``meta["model_kwargs"]``, its weights loaded, moved to ``device`` and put in ``eval()`` mode.

    Args:
        path: a ``best.pt`` / ``last.pt`` written by :func:`hemolab.training.fit` or :func:`save_checkpoint`.
        device: where to put the model (``None`` = :func:`hemolab.config.get_device`).

    Returns:
        ``(model, meta)``.

    Raises:
        HemolabFileError: if the file does not exist.
        HemolabError: if it is not a hemolab checkpoint or its ``meta`` does not say how to rebuild it.
    """
    from hemolab.config import get_device

    payload = read_checkpoint(path)
    meta = dict(payload.get("meta") or {})
    if "arch" not in meta:
        raise HemolabError(
            f"checkpoint {path} does not say which network it holds (meta has no 'arch'): "
            "it was saved without meta={'arch': ..., 'model_kwargs': {...}}"
        )
    from hemolab.models import build_model

    model = build_model(meta["arch"], **dict(meta.get("model_kwargs") or {}))
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as exc:
        raise HemolabError(
            f"the weights in {path} do not fit a {meta['arch']!r} network built from its meta: {exc}"
        ) from exc
    dev = get_device(device) if not isinstance(device, torch.device) else device
    model.to(dev).eval()
    return model, meta


def finite_or_none(x: float | None) -> float | None:
    """A float for a checkpoint's meta: ``None`` for NaN / infinity (they do not survive JSON)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
