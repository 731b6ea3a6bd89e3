"""The two networks hemolab teaches, and :func:`build_model` to rebuild either from a checkpoint's meta.

* :class:`CNNDS` -- Arab et al. 2020 (PAPERS.md §1): a 3D U-Net with residual context modules and deep
  supervision on the whole head (128x128x64).
* :class:`Patel3DCNN` -- Patel et al. 2019 (PAPERS.md §2): a valid-convolution 3D U-Net on 124^3 patches.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hemolab.errors import HemolabError
from hemolab.models.cnnds import CNNDS, fast_inference_context, predict, receptive_field

try:  # written by another part of the project; optional while it is being developed
    from hemolab.models.patel import Patel3DCNN
except ImportError:  # pragma: no cover
    Patel3DCNN = None  # type: ignore[assignment,misc]

#: Architecture names accepted by :func:`build_model` (the ``meta["arch"]`` of a checkpoint).
ARCHS: tuple[str, ...] = ("cnnds", "patel")


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build a network by name, e.g. ``build_model("cnnds", depth=4, base_filters=8)``.

    Used by checkpoint loading: a checkpoint stores ``meta["arch"]`` and ``meta["model_kwargs"]``.

    Args:
        arch: ``"cnnds"`` (:class:`CNNDS`) or ``"patel"`` (:class:`Patel3DCNN`).
        **kwargs: the network's constructor arguments.

    Returns:
        The network (randomly initialised; load weights afterwards).

    Raises:
        HemolabError: for an unknown ``arch`` or keyword arguments the network does not take.
    """
    name = str(arch).strip().lower()
    if name == "cnnds":
        cls = CNNDS
    elif name == "patel":
        if Patel3DCNN is None:
            raise HemolabError(
                "the Patel 3D CNN (hemolab.models.patel) is not available in this installation"
            )
        cls = Patel3DCNN
    else:
        raise HemolabError(f"unknown network architecture {arch!r}: choose one of {', '.join(ARCHS)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise HemolabError(f"cannot build a {name!r} network from {sorted(kwargs)}: {exc}") from exc


__all__ = [
    "ARCHS",
    "CNNDS",
    "Patel3DCNN",
    "build_model",
    "fast_inference_context",
    "predict",
    "receptive_field",
]
