"""Training: the loop of Arab 2020 ("Training", PAPERS.md §1), checkpoints, data loaders, grid search.

* :func:`fit` -- the training loop (learning rate halved after 10 epochs without improvement of the
  validation loss, early stop after 50, best checkpoint, resumable), shared by CNN-DS and Patel.
* :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`ensure_checkpoint` -- ``weights_only`` files.
* :func:`cnnds_settings` -- the CNN-DS training settings of each profile, in one place.
* :func:`make_cnnds_loaders` -- a hemolab dataset as cached, preprocessed torch DataLoaders.
* :func:`train_cnnds` -- all of it together: dataset folder in, ``run_dir/best.pt`` out.
* :func:`grid_search` -- the paper's search over depth, learning rate and dropout.
"""

from hemolab.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from hemolab.training.cnnds import ensure_checkpoint, train_cnnds
from hemolab.training.data import CachedCNNDSDataset, make_cnnds_loaders
from hemolab.training.engine import History, StopTraining, describe_schedule, dice_metric, fit
from hemolab.training.grid_search import grid_search
from hemolab.training.live_plot import LivePlot, plot_history
from hemolab.training.profiles import CNNDSSettings, cnnds_settings

__all__ = [
    "CNNDSSettings",
    "CachedCNNDSDataset",
    "History",
    "LivePlot",
    "StopTraining",
    "cnnds_settings",
    "describe_schedule",
    "dice_metric",
    "ensure_checkpoint",
    "fit",
    "grid_search",
    "load_checkpoint",
    "make_cnnds_loaders",
    "plot_history",
    "read_checkpoint",
    "save_checkpoint",
    "train_cnnds",
]
