"""Agreement between raters and the method: is the method distinguishable from an expert?

Two studies, two sets of tools (docs/methods.md §1.7 and §2.6):

* :mod:`~hemolab.agreement.kappa` -- Arab 2020: Cohen's kappa per image for every pair of raters and the
  Mann-Whitney U test between the human-human and human-machine groups;
* :mod:`~hemolab.agreement.volumes` -- Arab 2020: the volume-disagreement matrix (Fig. 1), rater-vs-rater
  regressions (Table 2), and a Bland-Altman analysis;
* :mod:`~hemolab.agreement.observer` -- Patel 2019's observer study (paired tests chosen by
  Shapiro-Wilk), and the what-if tools of notebook 07.
"""

from hemolab.agreement.kappa import (
    HUMAN_HUMAN,
    HUMAN_MACHINE,
    MACHINE_MACHINE,
    cohen_kappa,
    compare_kappa_groups,
    pairwise_kappa,
)
from hemolab.agreement.observer import (
    agreement_summary,
    observer_metrics,
    observer_tests,
    paired_test,
    perturb_mask,
    perturbation_table,
    simulated_reader,
)
from hemolab.agreement.volumes import (
    agreement_table,
    bland_altman,
    disagreement_groups,
    disagreement_matrix,
    plot_bland_altman,
    plot_disagreement_matrix,
    volume_disagreement,
    volume_regression,
)

__all__ = [
    "HUMAN_HUMAN",
    "HUMAN_MACHINE",
    "MACHINE_MACHINE",
    "agreement_summary",
    "agreement_table",
    "bland_altman",
    "cohen_kappa",
    "compare_kappa_groups",
    "disagreement_groups",
    "disagreement_matrix",
    "observer_metrics",
    "observer_tests",
    "paired_test",
    "pairwise_kappa",
    "perturb_mask",
    "perturbation_table",
    "plot_bland_altman",
    "plot_disagreement_matrix",
    "simulated_reader",
    "volume_disagreement",
    "volume_regression",
]
