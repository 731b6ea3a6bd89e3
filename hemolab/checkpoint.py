"""Checkpoints: the typed :class:`CheckpointMeta`, and files that ``torch.load(..., weights_only=True)`` reads.

A hemolab checkpoint is a plain dictionary of tensors and primitive Python values (no pickled classes),
so it loads with PyTorch's safe ``weights_only=True`` unpickler::

    {"format": "hemolab-checkpoint", "version": 2,
     "model_state": {...}, "meta": CheckpointMeta(...).to_dict(),
     "optimizer_state": {...} | None, ...}

:class:`CheckpointMeta` says how to rebuild the network (``arch`` + ``model_kwargs``, see
:data:`hemolab.architectures.ARCHITECTURES`) and how inference must prepare a scan and read the output
(the grid or tile sizes, the HU window, the probability threshold, the cluster rule), so
:func:`hemolab.architectures.load_checkpoint` needs nothing but the file and inference uses exactly what
training used. Writes are atomic (a temporary file in
the same folder, then :func:`os.replace`), so an interrupted run never leaves half a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hemolab.atomic import atomic_write
from hemolab.errors import HemolabError, HemolabExistsError, HemolabFileError
from hemolab.validation import check_spacing, check_window

CHECKPOINT_FORMAT = "hemolab-checkpoint"
CHECKPOINT_VERSION = 2

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


def _size(value: Any, name: str) -> tuple[int, int, int] | None:
    if value is None:
        return None
    size = tuple(int(v) for v in value)
    if len(size) != 3 or min(size) < 1:
        raise HemolabError(f"checkpoint meta {name} must be three positive integers (x, y, z), got {value!r}")
    return size  # type: ignore[return-value]


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about its network: how to rebuild it and how inference must use it.

    Training writes it (:func:`hemolab.training.fit`); :func:`hemolab.architectures.load_checkpoint` reads
    it back; :func:`hemolab.architectures.segment_scan` takes its preprocessing, sizes, threshold and
    cluster rule from it, so a scan is prepared exactly as the training data was.

    Attributes:
        arch: the architecture's name in :data:`hemolab.architectures.ARCHITECTURES` (``"cnnds"``,
            ``"patel"``).
        model_kwargs: the network's constructor arguments.
        profile: ``"tiny"``, ``"small"`` or ``"full"``.
        hu_window: the HU range the input was clipped to before scaling to [0, 1] (CNN-DS: [0, 100],
            Arab 2020 "Preprocessing"; Patel: [-200, 200], Patel 2019 "Pre-processing").
        threshold: the probability threshold of the mask (the papers: 0.5; a profile may store one chosen
            on validation scans).
        grid_size: CNN-DS: the whole-head grid ``(x, y, z)`` (128x128x64 in the paper).
        input_size, output_size: Patel: the training patch sizes (124^3 -> 36^3 in the paper).
        inference_input_size, inference_output_size: Patel: the tile sizes at inference.
        tile_stride: Patel: the step between tiles (``None``: aligned to the pooling grid).
        min_component_ml: clusters smaller than this are removed (Patel: 0.1 mL; 0: none).
        restrict_to_cranial_cavity: keep only predictions inside the cranial cavity (Patel; CNN-DS ``small``).
        max_calcified_fraction: remove clusters with a larger share of voxels above 120 HU (calcification or
            bone; :func:`hemolab.segment.postprocess.remove_calcified_components`; 0: none, the papers).
        min_cluster_median_hu: remove clusters whose median HU is lower (brain, not acute blood;
            :func:`hemolab.segment.postprocess.remove_isodense_components`; 0: none, the papers).
        crop_head: CNN-DS: crop the scan to the box around the cranial cavity before resampling to
            ``grid_size`` (:func:`hemolab.preprocess.head_box`; the ``small`` profile's choice).
        voxel_size_range: Patel: the smallest and the largest voxel size (mm, per axis) of the training
            scans, ``((x, y, z), (x, y, z))``. The network works on a scan's own grid and its filters are
            learnt in voxels: inference resamples a scan whose voxels lie well outside this range to the
            nearest size inside it (:func:`hemolab.segment.patel.working_spacing`; ``None``: never).
        settings: the training settings of the run (``ProfileSettings.as_dict``), for the record.
        seed: the run's seed. dataset: the training data's folder.
        best_epoch, best_val_loss, best_val_dice, epochs_run: how training went (filled in by ``fit``).
        version: the format version of this meta (:data:`CHECKPOINT_VERSION`).
    """

    arch: str
    model_kwargs: dict[str, Any]
    profile: str
    hu_window: tuple[float, float]
    threshold: float = 0.5
    grid_size: tuple[int, int, int] | None = None
    input_size: tuple[int, int, int] | None = None
    output_size: tuple[int, int, int] | None = None
    inference_input_size: tuple[int, int, int] | None = None
    inference_output_size: tuple[int, int, int] | None = None
    tile_stride: tuple[int, int, int] | None = None
    min_component_ml: float = 0.0
    restrict_to_cranial_cavity: bool = False
    max_calcified_fraction: float = 0.0
    min_cluster_median_hu: float = 0.0
    crop_head: bool = False
    voxel_size_range: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    dataset: str | None = None
    best_epoch: int | None = None
    best_val_loss: float | None = None
    best_val_dice: float | None = None
    epochs_run: int | None = None
    version: int = CHECKPOINT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch:
            raise HemolabError(f"checkpoint meta needs the architecture's name in 'arch', got {self.arch!r}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise HemolabError(
                f"checkpoint meta threshold must lie strictly between 0 and 1, got {self.threshold}"
            )
        object.__setattr__(self, "hu_window", check_window(self.hu_window, "checkpoint meta hu_window"))
        object.__setattr__(self, "threshold", float(self.threshold))
        for name in ("grid_size", "input_size", "output_size", "inference_input_size",
                     "inference_output_size", "tile_stride"):  # fmt: skip
            object.__setattr__(self, name, _size(getattr(self, name), name))
        if self.voxel_size_range is not None:
            name = "checkpoint meta voxel_size_range"
            if len(self.voxel_size_range) != 2:
                raise HemolabError(
                    f"{name} must be ((x, y, z), (x, y, z)) in mm, got {self.voxel_size_range!r}"
                )
            lo, hi = (check_spacing(end, name) for end in self.voxel_size_range)
            if not all(a <= b for a, b in zip(lo, hi, strict=True)):
                raise HemolabError(
                    f"{name} must list the smallest voxel size first, got {self.voxel_size_range!r}"
                )
            object.__setattr__(self, "voxel_size_range", (lo, hi))

    @classmethod
    def for_run(cls, arch: str, settings: Any, hu_window: Sequence[float], **fields: Any) -> CheckpointMeta:
        """The meta of a training run of ``arch`` with ``settings`` (a profile's settings dataclass).

        Args:
            arch: the architecture's name.
            settings: has ``profile``, ``model_kwargs()`` and ``as_dict()`` (:class:`hemolab.config.ProfileSettings`).
            hu_window: the HU range the network's input is scaled from.
            **fields: the architecture's own fields (sizes, threshold, cluster rule) and e.g. ``seed``.
        """
        return cls(arch=arch, model_kwargs=settings.model_kwargs(), profile=settings.profile,
                   hu_window=tuple(hu_window), settings=settings.as_dict(), **fields)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The meta as primitives (what the checkpoint file stores)."""
        return to_primitive(dataclasses.asdict(self), "meta")

    def replace(self, **changes: Any) -> CheckpointMeta:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "checkpoint") -> CheckpointMeta:
        """Read a stored meta; a version-1 meta (hemolab 0.1: a plain dict) is converted.

        Raises:
            HemolabError: for a meta that does not say which network it is, or a newer version.
        """
        if isinstance(data, CheckpointMeta):
            return data
        if not isinstance(data, Mapping) or "arch" not in data:
            raise HemolabError(
                f"{source} does not say which network it holds (its meta has no 'arch'): "
                "it was not written by hemolab's training"
            )
        version = int(data.get("version", 1))
        if version > CHECKPOINT_VERSION:
            raise HemolabError(
                f"{source} was written by a newer hemolab (meta version {version}, this one reads up to "
                f"{CHECKPOINT_VERSION}): update hemolab"
            )
        values = dict(data)
        if version == 1:  # hemolab 0.1 kept the HU window inside free-form dicts
            norm = values.pop("normalisation", None) or {}
            prep = values.pop("preprocessing", None) or {}
            window = norm.get("hu_window") or prep.get("hu_clip")
            if window is None:
                window = (-200.0, 200.0) if values["arch"] == "patel" else (0.0, 100.0)
            values["hu_window"] = window
            values["version"] = CHECKPOINT_VERSION
        known = {f.name for f in dataclasses.fields(cls)}
        values.setdefault("model_kwargs", {})
        values.setdefault("profile", "full")
        if "hu_window" not in values:
            raise HemolabError(
                f"{source}: its meta has no 'hu_window' (the HU range the network was trained on)"
            )
        return cls(**{k: v for k, v in values.items() if k in known})


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (:func:`hemolab.atomic.atomic_write`)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    meta: CheckpointMeta | Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint (model weights + ``meta``, optionally the optimizer state), atomically.

    Args:
        path: the ``.pt`` file to write.
        model: the network; its ``state_dict`` is stored (on the CPU).
        meta: how to rebuild and use the model (:class:`CheckpointMeta`; a plain mapping is stored as
            it is, for files that are not meant to be loaded as a network).
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
        "meta": meta.to_dict()
        if isinstance(meta, CheckpointMeta)
        else to_primitive(dict(meta or {}), "meta"),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
    }
    for key, value in (extra or {}).items():
        payload[key] = to_primitive(value, key)
    return atomic_torch_save(payload, path)


_WHAT_TO_DO = (
    "Give a best.pt written by `hemolab train`, notebook 03/04 or hemolab.architectures.ensure_checkpoint()"
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
            "or use hemolab.architectures.ensure_checkpoint()"
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


def finite_or_none(x: float | None) -> float | None:
    """A float for a checkpoint's meta: ``None`` for NaN / infinity (they do not survive JSON)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
