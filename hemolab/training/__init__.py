"""Training: the loop of Arab 2020 ("Training", docs/methods.md §1.5), its history, and each network's driver.

* :func:`fit` / :class:`Trainer` -- the loop (learning rate halved after 10 epochs without improvement,
  early stop after 50, best checkpoint, resumable), shared by CNN-DS and Patel; :class:`Hook` for what
  runs between its steps.
* :class:`History`, :func:`describe_schedule`, :func:`plot_history` -- what a run did.
* :func:`cnnds_settings`, :func:`train_cnnds` -- CNN-DS (:mod:`hemolab.training.cnnds`).
* :func:`patel_settings`, :func:`train_patel` -- the Patel 3D CNN (:mod:`hemolab.training.patel`, patches
  in :mod:`hemolab.training.patches`).
* :func:`describe_recipe` -- where a CPU profile departs from the paper, and why; the threshold chosen on
  validation scans is :mod:`hemolab.training.threshold`, the synthetic cases added to a run
  :func:`hemolab.training.data.synthetic_cases`.

Loading a trained network, and the checkpoints notebooks share, are in :mod:`hemolab.architectures`.
"""

from hemolab.training.cnnds import CNNDSSettings, cnnds_settings, make_loaders_for, train_cnnds
from hemolab.training.data import CachedCNNDSDataset, make_cnnds_loaders
from hemolab.training.engine import Hook, Schedule, StopTraining, Trainer, dice_metric, fit
from hemolab.training.history import History, describe_schedule
from hemolab.training.live_plot import LivePlot, plot_history
from hemolab.training.patel import PatelSettings, patel_settings, train_patel
from hemolab.training.recipe import describe_recipe

__all__ = [
    "CNNDSSettings",
    "CachedCNNDSDataset",
    "History",
    "Hook",
    "LivePlot",
    "PatelSettings",
    "Schedule",
    "StopTraining",
    "Trainer",
    "cnnds_settings",
    "describe_recipe",
    "describe_schedule",
    "dice_metric",
    "fit",
    "make_cnnds_loaders",
    "make_loaders_for",
    "patel_settings",
    "plot_history",
    "train_cnnds",
    "train_patel",
]
