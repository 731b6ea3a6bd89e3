"""CNN-DS training settings for each profile, in one place.

``full`` is the paper's set-up (Arab 2020, Methods, "Training"; PAPERS.md §1): 128x128x64 grid, base 16
filters, depth 5, Adam at 5e-4, dropout 0.3, batch 1, learning rate halved after 10 epochs without
improvement, early stop after 50, at most 500 epochs. (Base 16 / depth 5 / 5e-4 / 0.3 are the defaults of
the code base the design comes from, marked (R) in PAPERS.md; the paper chose its values by grid search.)

``small`` and ``tiny`` shrink the grid, the width and the number of epochs so that training fits a CPU
laptop (minutes) or CI (seconds). They are our choices (documented in notebook 03); the patiences are
scaled down with the epoch budget so that learning-rate halving and early stopping can still happen.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from hemolab.config import ProfileSettings


@dataclass(frozen=True)
class CNNDSSettings(ProfileSettings):
    """Everything that defines a CNN-DS training run of one profile.

    Attributes:
        profile: ``"tiny"``, ``"small"`` or ``"full"``.
        grid_size: the network's input/output grid ``(x, y, z)`` (:func:`hemolab.preprocess.cnnds_grid`).
        base_filters: channels of the first level (doubled at each level below).
        depth: number of levels of the contracting path.
        dropout: dropout rate inside the context modules.
        lr: Adam's learning rate.
        batch_size: cases per step (the paper: 1).
        max_epochs: the epoch limit.
        lr_patience: epochs without improvement of the validation loss before the learning rate is halved.
        lr_factor: the factor applied then.
        stop_patience: epochs without improvement before stopping early.
        augment: random left-right mirroring of the training cases (our choice; not in the paper).
        deep_supervision: the paper's network; ``False`` for the ablation (notebook 05).
        grid_depths, grid_lrs, grid_dropouts: the values :func:`hemolab.training.grid_search` tries.
    """

    KIND: ClassVar[str] = "CNN-DS"

    profile: str
    grid_size: tuple[int, int, int]
    base_filters: int
    depth: int
    dropout: float = 0.3
    lr: float = 5e-4
    batch_size: int = 1
    max_epochs: int = 500
    lr_patience: int = 10
    lr_factor: float = 0.5
    stop_patience: int = 50
    augment: bool = True
    deep_supervision: bool = True
    grid_depths: tuple[int, ...] = (3, 4, 5, 6)
    grid_lrs: tuple[float, ...] = (1e-2, 5e-3, 1e-3, 5e-4, 1e-4)
    grid_dropouts: tuple[float, ...] = (0.3, 0.4, 0.5)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``hemolab.models.build_model("cnnds", **kw)``."""
        return {
            "in_channels": 1,
            "out_channels": 1,
            "base_filters": self.base_filters,
            "depth": self.depth,
            "dropout": self.dropout,
            "deep_supervision": self.deep_supervision,
        }

    def with_overrides(self, **overrides: Any) -> CNNDSSettings:
        """A copy with some settings changed (``None`` values are ignored)."""
        clean = self._checked_overrides(overrides)
        if "grid_size" in clean:
            clean["grid_size"] = tuple(int(s) for s in clean["grid_size"])
        return replace(self, **clean)


def _grid(profile: str) -> tuple[int, int, int]:
    try:
        from hemolab.preprocess import cnnds_grid
    except ImportError:  # pragma: no cover - preprocess is part of hemolab; fallback while it is written
        return {"tiny": (32, 32, 16), "small": (64, 64, 32), "full": (128, 128, 64)}[profile]
    return tuple(int(s) for s in cnnds_grid(profile))  # type: ignore[return-value]


def cnnds_settings(profile: str | None = None, **overrides: Any) -> CNNDSSettings:
    """The CNN-DS training settings of a profile.

    Args:
        profile: ``"tiny"`` | ``"small"`` | ``"full"`` | ``None`` (auto, see :func:`hemolab.config.resolve_profile`).
        **overrides: settings to change, e.g. ``max_epochs=20`` (``None`` values are ignored).

    Returns:
        A frozen :class:`CNNDSSettings`.
    """
    from hemolab.config import resolve_profile

    profile = resolve_profile(profile)
    if profile == "full":
        s = CNNDSSettings("full", _grid("full"), base_filters=16, depth=5)
    elif profile == "small":
        s = CNNDSSettings(
            "small",
            _grid("small"),
            base_filters=8,
            depth=4,
            lr=5e-3,
            max_epochs=100,
            lr_patience=8,
            stop_patience=20,
            grid_depths=(3, 4),
            grid_lrs=(5e-3,),
            grid_dropouts=(0.3,),
        )
    else:
        s = CNNDSSettings(
            "tiny",
            _grid("tiny"),
            base_filters=4,
            depth=3,
            lr=5e-3,
            max_epochs=3,
            lr_patience=1,
            stop_patience=3,
            augment=False,
            grid_depths=(2, 3),
            grid_lrs=(5e-3,),
            grid_dropouts=(0.3,),
        )
    return s.with_overrides(**overrides)
