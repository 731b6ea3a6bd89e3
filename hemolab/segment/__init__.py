"""Whole-scan inference: a scan in, a mask on the scan's own grid and a volume in mL out.

* :mod:`~hemolab.segment.result` -- :class:`SegmentationResult` and the steps every pipeline shares;
* :mod:`~hemolab.segment.cnnds` -- CNN-DS on the whole head (Arab 2020; docs/methods.md §1);
* :mod:`~hemolab.segment.tiling` -- tiled inference for a valid-convolution network (Patel 2019);
* :mod:`~hemolab.segment.postprocess` -- connected components and the 0.1 mL cluster removal;
* :mod:`~hemolab.segment.patel` -- the Patel 3D CNN pipeline (docs/methods.md §2.5).

Which pipeline a checkpoint needs is the registry's business: :func:`hemolab.architectures.segment_scan`.
"""

from hemolab.segment.cnnds import segment_cnnds
from hemolab.segment.patel import segment_patel
from hemolab.segment.postprocess import (
    cluster_removal_effect,
    component_volumes_ml,
    remove_calcified_components,
    remove_small_components,
)
from hemolab.segment.result import SegmentationResult
from hemolab.segment.tiling import (
    Tile,
    aligned_stride,
    default_stride,
    draw_tile_grid,
    tile_grid,
    tiled_predict,
)

__all__ = [
    "SegmentationResult",
    "Tile",
    "aligned_stride",
    "cluster_removal_effect",
    "component_volumes_ml",
    "default_stride",
    "draw_tile_grid",
    "remove_calcified_components",
    "remove_small_components",
    "segment_cnnds",
    "segment_patel",
    "tile_grid",
    "tiled_predict",
]
