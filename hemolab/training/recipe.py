"""What a CPU profile changes in a paper's training recipe, and why: the table notebooks 03 and 04 print.

The papers' methods are the ``full`` profile. Where ``small`` or ``tiny`` departs from them, it is a choice,
made so that a network learns on a CPU budget (how far it does is measured by ``benchmarks/bench_learning.py``),
and the notebook says so: :func:`describe_recipe` lists every recipe setting whose value differs from
``full`` with the reason (docs/methods.md §5.1 for CNN-DS, §5.2 for the Patel network). Sizes, widths,
epoch counts and patiences, which every CPU profile shrinks, are left out.
"""

from __future__ import annotations

import pandas as pd

from hemolab.config import ProfileSettings

#: Why a CPU profile may change each recipe setting (docs/methods.md §5).
WHY: dict[str, str] = {
    "loss": "Dice + cross-entropy gives every voxel a gradient from the first step, so a small budget does not "
    "end on the 'no blood' plateau",
    "monitor": "the best epoch is the one whose masks are best on the validation scans",
    "crop_head": "the box around the cranial cavity is resampled instead of the whole field of view: more "
    "voxels land on the brain",
    "synthetic_train": "synthetic heads are free: more of them teach more than more epochs on a few",
    "min_val_cases": "the best epoch and the threshold are chosen on at least this many scans, not two",
    "cpu_bf16": "bfloat16 autocast: about 2.5x faster per step on a CPU (benchmarks/README.md)",
    "tune_threshold": "an operating point chosen on the whole validation scans is stored in the checkpoint: the "
    "best mean Dice on the bleeds among thresholds at which blood-free scans get at most 0.5 mL on average; an "
    "uncalibrated network's best threshold is not 0.5",
    "blood_free_calibration": "synthetic heads without haemorrhage are added to the scans the threshold is "
    "chosen on, so that the false-alarm budget holds on more than the one or two normal heads a validation "
    "split has (never trained on)",
    "restrict_to_cranial_cavity": "only predictions inside the cranial cavity are kept (Patel's post-processing)",
    "min_component_ml": "clusters under this volume are removed (Patel's 0.1 mL rule)",
    "max_calcified_fraction": "a cluster more than this share of which is brighter than blood ever is (> 120 HU) "
    "is a calcification, not a bleed, and is removed: a small network calls the calcification trap and its "
    "halo blood",
    "min_cluster_median_hu": "a cluster whose median HU is that of brain (below this) is not acute blood, which "
    "is hyperdense: a small network calls the halo around a calcification or a dense band blood",
    "hu_window": "the HU range scaled to [0, 1]: over [0, 100] HU (CNN-DS's window) blood stands 5 times further "
    "from brain in the input than over [-200, 200], and a few hundred patches are enough to learn it",
    "optimizer": "Adam gets much further than SGD in the few hundred steps a CPU affords (the paper: 50,000 "
    "patches)",
    "fg_fraction": "fewer patches centred on blood: whole scans hold far less blood than balanced patches",
    "hard_negative_fraction": "background patches centred on non-blood voxels as bright as blood (>= 50 HU: the "
    "band under the inner table, sinuses, falx, calcification), the ones a network calls blood by mistake",
    "lr": "the learning rate that fits the shorter schedule",
    "lr_decay": "the learning rate falls along a half cosine to zero by the last epoch: the late epochs refine "
    "instead of jumping around at a constant rate, whose epoch-to-epoch noise a short run cannot average out",
    "snapshot_every": "the epoch is chosen with the threshold, by the masks of the whole validation scans within "
    "the false-alarm budget: what picks the best epoch during training (Patel: the loss on a few validation "
    "patches; CNN-DS: the Dice at 0.5) ranked epochs unlike the masks a student finally gets",
    "augment": "left-right mirroring is off: a few epochs cannot profit from it",
}


def describe_recipe(settings: ProfileSettings, paper: ProfileSettings) -> pd.DataFrame:
    """The recipe settings where ``settings`` departs from ``paper`` (the ``full`` profile), with the reason.

    Args:
        settings: a profile's settings (:func:`hemolab.training.cnnds_settings`, ``patel_settings``).
        paper: the same network's ``full`` settings.

    Returns:
        A DataFrame indexed by setting with columns ``this profile``, ``full (paper)``, ``why``; empty for
        ``full`` itself.
    """
    mine, ref = settings.as_dict(), paper.as_dict()
    rows = [
        {"setting": key, "this profile": mine[key], "full (paper)": ref[key], "why": why}
        for key, why in WHY.items()
        if key in mine and key in ref and mine[key] != ref[key]
    ]
    return pd.DataFrame(rows, columns=["setting", "this profile", "full (paper)", "why"]).set_index("setting")
