"""Preprocessing for both papers: resampling, intensity windows, the cranial cavity, MONAI pipelines.

* :mod:`~hemolab.preprocess.resample` -- :func:`resample_to_size` (CNN-DS's 128x128x64 grid),
  :func:`resample_to_spacing`, :func:`resample_like` (back onto the original scan), :func:`cnnds_grid`,
  :func:`check_grid_for_cnnds`.
* :mod:`~hemolab.preprocess.intensity` -- :func:`clip_cnnds` ([0, 100] HU), :func:`normalise_patel`
  ([-200, 200] HU -> [0, 1]), and the slice-based U-Net baseline's :func:`window_zscore`,
  :func:`curvature_denoise`, :func:`close_label`.
* :mod:`~hemolab.preprocess.cavity` -- :func:`cranial_cavity_mask`, the intracranial region from the CT alone;
  :func:`head_box` / :func:`crop_to_box`, the box around it.
* :mod:`~hemolab.preprocess.prepare` -- :func:`prepare_cnnds`, :func:`prepare_patel`: the one place
  training and inference get their input from.
* :mod:`~hemolab.preprocess.transforms` -- MONAI dict pipelines :func:`cnnds_transforms`,
  :func:`patel_transforms` (imported lazily: MONAI takes a few seconds to import).
"""

from __future__ import annotations

from typing import Any

from hemolab.preprocess.cavity import (
    cranial_cavity_array,
    cranial_cavity_mask,
    crop_to_box,
    fill_holes_per_slice,
    head_box,
)
from hemolab.preprocess.intensity import (
    CNNDS_HU_RANGE,
    PAD_VALUE,
    PATEL_HU_RANGE,
    SLICE_UNET_WINDOW,
    clip_cnnds,
    close_label,
    curvature_denoise,
    normalise_patel,
    scale_window,
    window_zscore,
)
from hemolab.preprocess.prepare import prepare_cnnds, prepare_label, prepare_patel
from hemolab.preprocess.resample import (
    CNNDS_GRIDS,
    check_grid_for_cnnds,
    cnnds_grid,
    field_of_view,
    grid_for_size,
    resample_like,
    resample_to_size,
    resample_to_spacing,
)

_LAZY = {
    "cnnds_transforms",
    "patel_transforms",
    "patel_augmentation",
    "LoadScand",
    "CheckHUd",
    "ResampleToSpacingd",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from hemolab.preprocess import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'hemolab.preprocess' has no attribute {name!r}")


__all__ = [
    "CNNDS_GRIDS",
    "CNNDS_HU_RANGE",
    "PAD_VALUE",
    "PATEL_HU_RANGE",
    "SLICE_UNET_WINDOW",
    "CheckHUd",
    "LoadScand",
    "ResampleToSpacingd",
    "check_grid_for_cnnds",
    "clip_cnnds",
    "close_label",
    "cnnds_grid",
    "cnnds_transforms",
    "cranial_cavity_array",
    "cranial_cavity_mask",
    "crop_to_box",
    "curvature_denoise",
    "field_of_view",
    "fill_holes_per_slice",
    "grid_for_size",
    "head_box",
    "normalise_patel",
    "scale_window",
    "patel_augmentation",
    "patel_transforms",
    "prepare_cnnds",
    "prepare_label",
    "prepare_patel",
    "resample_like",
    "resample_to_size",
    "resample_to_spacing",
    "window_zscore",
]
