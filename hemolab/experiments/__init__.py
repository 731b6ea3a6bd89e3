"""Experiments built from many training runs: the deep-supervision ablation and the paper's grid search.

* :func:`run_ablation`, :func:`ablation_table`, :func:`describe_ablation` -- Arab 2020, Fig. 3 and the
  comparison with and without deep supervision (docs/methods.md §1.6);
* :func:`grid_search` -- the search over depth, learning rate and dropout (docs/methods.md §1.5).
"""

from hemolab.experiments.ablation import ablation_table, describe_ablation, describe_evidence, run_ablation
from hemolab.experiments.grid_search import grid_search

__all__ = ["ablation_table", "describe_ablation", "describe_evidence", "grid_search", "run_ablation"]
