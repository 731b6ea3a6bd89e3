"""Synthetic head CTs with intracranial haemorrhage, three raters each, in Medical Segmentation Decathlon layout.

The papers' data (Arab 2020: 55 scans, three raters; Patel 2019) are not public, so hemolab generates a
look-alike cohort (docs/methods.md §1): :func:`make_cohort` writes it, :func:`hemolab.datasets.load_dataset` reads it,
:func:`hemolab.datasets.ensure_cohort` makes the workspace's copy on first use.

Modules: :mod:`~hemolab.synth.grid` (voxel grids, smooth random fields), :mod:`~hemolab.synth.anatomy`
(the head), :mod:`~hemolab.synth.bleeds` (haemorrhage types), :mod:`~hemolab.synth.scanner` (blur, streaks,
noise), :mod:`~hemolab.synth.raters` (three raters, majority vote), :mod:`~hemolab.synth.cohort` (the writer),
:mod:`~hemolab.synth.realism` (the same realism measurements on real and synthetic CT: parenchyma HU, noise
SD and texture, the band under the inner table, the denser skull base and vertex, label HU; :func:`realism_stats`,
:func:`inner_table_profile`, :func:`skull_base_profile`, :func:`vertex_profile`, :func:`label_hu_stats`).
"""

from hemolab.synth.bleeds import BLEED_TYPES
from hemolab.synth.cohort import PROFILE_SPECS, CasePlan, SynthCase, generate_case, make_cohort, plan_cohort
from hemolab.synth.realism import (
    inner_table_profile,
    label_hu_stats,
    realism_stats,
    skull_base_profile,
    vertex_profile,
)

__all__ = [
    "BLEED_TYPES",
    "PROFILE_SPECS",
    "CasePlan",
    "SynthCase",
    "generate_case",
    "inner_table_profile",
    "skull_base_profile",
    "vertex_profile",
    "label_hu_stats",
    "make_cohort",
    "plan_cohort",
    "realism_stats",
]
