"""Cohen's kappa between raters and the method, and the Mann-Whitney test of its two groups (Arab 2020).

Arab 2020, Methods, "Performance evaluation metrics" (docs/methods.md §1.7): Cohen's kappa per image for
every pair of raters (three experts ``E1, E2, E3`` and the method ``M``), computed over *all the image
voxels*; the kappas fall into a "human-human" and a "human-machine" group, R x N values each, compared
with the Mann-Whitney U test. If it finds no difference, the method agrees with the experts as they agree
with each other.

Convention (a documented choice): the kappa of two masks that are both entirely background (or both
entirely foreground) within the region is ``0/0``; hemolab returns 1.0 (perfect agreement, like the DSC of
two empty masks), where scikit-learn's ``cohen_kappa_score`` returns NaN.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from hemolab.errors import HemolabError
from hemolab.validation import check_mask, check_same_shape

HUMAN_HUMAN = "human-human"
HUMAN_MACHINE = "human-machine"
MACHINE_MACHINE = "machine-machine"


def cohen_kappa(mask_a, mask_b, region=None) -> float:
    """Cohen's kappa between two binary masks, voxel by voxel (Arab 2020, Methods).

    ``kappa = (p_o - p_e) / (1 - p_e)`` where ``p_o`` is the fraction of voxels on which the two agree
    and ``p_e = p_a p_b + (1 - p_a)(1 - p_b)`` the agreement expected by chance from each mask's
    foreground fraction ``p_a``, ``p_b``.

    Args:
        mask_a: binary mask indexed ``[x, y, z]``.
        mask_b: binary mask on the same grid.
        region: optional binary mask: count only the voxels inside it (e.g. the head). ``None`` = all
            the image voxels, as in the paper.

    Returns:
        Kappa in [-1, 1]; 1.0 when both masks are constant and equal within the region (see the module
        docstring).

    Raises:
        HemolabError: for non-binary masks, different shapes or an empty region.
    """
    a = check_mask(mask_a, "mask_a")
    b = check_mask(mask_b, "mask_b")
    check_same_shape(a, b, ("mask_a", "mask_b"))
    if region is not None:
        r = check_mask(region, "region")
        check_same_shape(a, r, ("mask_a", "region"))
        if not r.any():
            raise HemolabError("region is empty: kappa needs at least one voxel to compare")
        a, b = a[r], b[r]
    n = float(a.size)
    n11 = float(np.count_nonzero(a & b))
    na, nb = float(np.count_nonzero(a)), float(np.count_nonzero(b))
    n00 = n - na - nb + n11
    p_o = (n11 + n00) / n
    pa, pb = na / n, nb / n
    p_e = pa * pb + (1.0 - pa) * (1.0 - pb)
    if p_e >= 1.0:  # both masks constant and equal (all background or all foreground)
        return 1.0
    return float((p_o - p_e) / (1.0 - p_e))


def pair_group(a: str, b: str, machines: Sequence[str]) -> str:
    m = (a in machines) + (b in machines)
    return (HUMAN_HUMAN, HUMAN_MACHINE, MACHINE_MACHINE)[m]


def check_raters(masks: Mapping[str, Sequence]) -> int:
    if len(masks) < 2:
        raise HemolabError(f"need at least two raters to compare, got {list(masks)}")
    lengths = {name: len(v) for name, v in masks.items()}
    if len(set(lengths.values())) != 1:
        raise HemolabError(f"every rater must have one mask per case, got counts {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise HemolabError("no cases: every rater's list of masks is empty")
    return n


def pairwise_kappa(
    masks: Mapping[str, Sequence],
    *,
    machines: Sequence[str] = ("M",),
    regions: Sequence | None = None,
    case_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Cohen's kappa per image for every pair of raters (and the method) (Arab 2020, Table 2).

    Args:
        masks: ``{rater name: [mask of case 1, mask of case 2, ...]}``, the same cases in the same order
            for every rater, e.g. ``{"E1": [...], "E2": [...], "E3": [...], "M": [...]}``.
        machines: which names are automatic methods ("human-machine" pairs involve one of them).
        regions: optional masks, one per case, restricting the voxels counted (see :func:`cohen_kappa`).
        case_ids: names of the cases (default ``0, 1, ...``).

    Returns:
        A long table, one row per (case, pair): columns ``case, rater_a, rater_b, pair, group, kappa``;
        ``group`` is "human-human", "human-machine" or "machine-machine". Pairs follow the order of
        ``masks`` (``E1-E2, E1-E3, ..., E3-M``).
    """
    n = check_raters(masks)
    if case_ids is None:
        case_ids = [str(i) for i in range(n)]
    if len(case_ids) != n or (regions is not None and len(regions) != n):
        raise HemolabError(f"case_ids and regions need one entry per case ({n})")
    rows = []
    for a, b in itertools.combinations(list(masks), 2):
        for k in range(n):
            region = None if regions is None else regions[k]
            rows.append(
                {
                    "case": case_ids[k],
                    "rater_a": a,
                    "rater_b": b,
                    "pair": f"{a}-{b}",
                    "group": pair_group(a, b, machines),
                    "kappa": cohen_kappa(masks[a][k], masks[b][k], region),
                }
            )
    return pd.DataFrame(rows)


def compare_kappa_groups(kappas: pd.DataFrame, alternative: str = "two-sided") -> dict:
    """Mann-Whitney U test between the "human-human" and "human-machine" kappas (Arab 2020, Methods).

    The paper pools all images and pairs: R x N values per group (3 x 10 = 30). The test is unpaired
    because no human-human kappa matches a particular human-machine one. Caveat: values from the same
    image are not independent, so the p-value is optimistic about what n = R x N can show.

    Args:
        kappas: the output of :func:`pairwise_kappa`.
        alternative: passed to :func:`scipy.stats.mannwhitneyu`.

    Returns:
        ``dict(statistic, pvalue, n_human_human, n_human_machine, mean_human_human, sd_human_human,
        mean_human_machine, sd_human_machine)``.
    """
    hh = kappas.loc[kappas["group"] == HUMAN_HUMAN, "kappa"].to_numpy(float)
    hm = kappas.loc[kappas["group"] == HUMAN_MACHINE, "kappa"].to_numpy(float)
    if hh.size == 0 or hm.size == 0:
        raise HemolabError(
            f"need kappas in both groups, got {hh.size} human-human and {hm.size} human-machine: "
            "pass at least two human raters and the method (name it in `machines`)"
        )
    res = stats.mannwhitneyu(hh, hm, alternative=alternative)

    def sd(x):
        return float(np.std(x, ddof=1)) if x.size > 1 else float("nan")

    return {
        "statistic": float(res.statistic),
        "pvalue": float(res.pvalue),
        "n_human_human": int(hh.size),
        "n_human_machine": int(hm.size),
        "mean_human_human": float(hh.mean()),
        "sd_human_human": sd(hh),
        "mean_human_machine": float(hm.mean()),
        "sd_human_machine": sd(hm),
    }
