"""Agreement between raters and the method: is the method distinguishable from an expert?

Two studies, two sets of tools (PAPERS.md §1 "Agreement" and §2 "Reported results"):

* **Arab 2020** (CNN-DS), Methods, "Statistical analysis": three experts ``E1, E2, E3`` and the method
  ``M`` segment each of the ``N`` test images.

  - Cohen's kappa per image for every pair (:func:`cohen_kappa`, :func:`pairwise_kappa`), computed over
    *all the image voxels* ("The kappa measures for all the image voxels were grouped ...").
    Pass ``regions`` (e.g. the head or cranial-cavity mask) to restrict it; with a small bleed in a large
    image, ``p_e`` is close to 1 and kappa is close to the Dice coefficient either way.
  - The kappas fall into a "human-human" group ``{K(Ei, Ej)_n}`` and a "human-machine" group
    ``{K(M, Ei)_n}``, R x N values each; the Mann-Whitney U test compares them
    (:func:`compare_kappa_groups`). If it finds no difference, the method agrees with the experts as they
    agree with each other.
  - Volume disagreement ``D_ij = (1/N) Σ_k (V_ik - V_jk) / ((V_ik + V_jk)/2)`` over all pairs
    (:func:`volume_disagreement`, :func:`disagreement_matrix`) drawn as Fig. 1
    (:func:`plot_disagreement_matrix`).
  - A linear fit ``y = βx + α`` of one rater's volumes on another's, with p-values (Table 2,
    :func:`volume_regression`, :func:`agreement_table`).

* **Patel 2019**, Methods, "Observer variability": the same metrics as the evaluation (DSC, HD, ...)
  for inter-observer, intra-observer and method-vs-observer pairs (:func:`observer_metrics`), compared
  with a paired test chosen by Shapiro-Wilk (:func:`paired_test`, :func:`observer_tests`).

Plus a Bland-Altman analysis of volumes (:func:`bland_altman`, :func:`plot_bland_altman`) and the pure
functions behind notebook 07's interactive part (:func:`perturb_mask`, :func:`agreement_summary`,
:func:`perturbation_table`).

Conventions (documented choices):

* Kappa of two masks that are both entirely background (or both entirely foreground) within the region is
  ``0/0``; hemolab returns 1.0 (perfect agreement, like the DSC of two empty masks), where scikit-learn's
  ``cohen_kappa_score`` returns NaN.
* The disagreement measure is **signed** as the paper writes it: ``D_ij > 0`` when rater ``i`` measures
  more blood than rater ``j``, and ``D_ji = -D_ij``. Positive and negative cases cancel in the mean, so
  :func:`volume_disagreement` also offers ``absolute=True`` (the mean of ``|...|``). Fig. 1 shows the
  size of the disagreement (darker = larger ``|D_ij|``) and the group figures quoted by the paper
  ("expert-expert 0.09 ± 0.02") are mean ± SD of ``|D_ij|`` over the pairs of a group
  (:func:`disagreement_groups`). A case where both volumes are 0 contributes 0 (both agree: no blood).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy import stats

from hemolab.errors import HemolabError
from hemolab.metrics import METRIC_NAMES, dice, evaluate, volume_ml
from hemolab.validation import check_mask, check_same_shape, check_spacing

__all__ = [
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

HUMAN_HUMAN = "human-human"
HUMAN_MACHINE = "human-machine"
MACHINE_MACHINE = "machine-machine"


# ----------------------------------------------------------------------------------------- kappa
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


def _group(a: str, b: str, machines: Sequence[str]) -> str:
    m = (a in machines) + (b in machines)
    return (HUMAN_HUMAN, HUMAN_MACHINE, MACHINE_MACHINE)[m]


def _check_raters(masks: Mapping[str, Sequence]) -> int:
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
    n = _check_raters(masks)
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
                    "group": _group(a, b, machines),
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


# ----------------------------------------------------------------------------------------- volumes
def _volumes(v, name: str = "volumes") -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise HemolabError(f"{name} must be a non-empty list of finite volumes >= 0 (mL), got {v!r}")
    return arr


def volume_disagreement(v_i, v_j, *, absolute: bool = False) -> float:
    """The volume disagreement of raters ``i`` and ``j`` (Arab 2020, Methods; PAPERS.md §1).

    ``D_ij = (1/N) Σ_k (V_ik - V_jk) / ((V_ik + V_jk) / 2)``: the mean relative difference of their
    volumes over the ``N`` images. Signed as in the paper (``D_ji = -D_ij``).

    Args:
        v_i: volumes measured by rater ``i``, one per image (mL).
        v_j: volumes measured by rater ``j`` for the same images.
        absolute: average ``|V_ik - V_jk| / mean`` instead, so that over- and under-estimates cannot
            cancel (not the paper's formula; hemolab's addition).

    Returns:
        ``D_ij`` (a fraction: 0.09 = 9%). A case where both volumes are 0 contributes 0.
    """
    a, b = _volumes(v_i, "v_i"), _volumes(v_j, "v_j")
    if a.shape != b.shape:
        raise HemolabError(f"v_i and v_j need one volume per image each, got {a.size} and {b.size}")
    mean = (a + b) / 2.0
    rel = np.divide(a - b, mean, out=np.zeros_like(a), where=mean > 0)
    if absolute:
        rel = np.abs(rel)
    return float(rel.mean())


def disagreement_matrix(volumes: Mapping[str, Sequence[float]], *, absolute: bool = False) -> pd.DataFrame:
    """``D_ij`` of :func:`volume_disagreement` for every ordered pair of raters (Arab 2020, Fig. 1).

    Args:
        volumes: ``{rater name: [volume of case 1, ...]}`` in mL, same cases in the same order.
        absolute: see :func:`volume_disagreement`.

    Returns:
        A square DataFrame (rows ``i``, columns ``j``); zero diagonal; antisymmetric unless ``absolute``.
    """
    names = list(volumes)
    _check_raters(volumes)
    d = pd.DataFrame(0.0, index=names, columns=names)
    for i, j in itertools.permutations(names, 2):
        d.loc[i, j] = volume_disagreement(volumes[i], volumes[j], absolute=absolute)
    return d


def disagreement_groups(matrix: pd.DataFrame, machines: Sequence[str] = ("M",)) -> pd.DataFrame:
    """Mean ± SD of ``|D_ij|`` over the pairs ``i < j`` of each group (Arab 2020, Results: 0.09 ± 0.02).

    Returns:
        One row per group with ``n_pairs, mean, sd``.
    """
    rows = []
    for a, b in itertools.combinations(list(matrix.index), 2):
        rows.append({"group": _group(a, b, machines), "pair": f"{a}-{b}", "abs_d": abs(matrix.loc[a, b])})
    df = pd.DataFrame(rows)
    out = df.groupby("group")["abs_d"].agg(n_pairs="count", mean="mean", sd=lambda x: x.std(ddof=1))
    return out.reset_index()


def plot_disagreement_matrix(
    matrix: pd.DataFrame, ax=None, title: str | None = None, vmax: float | None = None
):
    """Draw the disagreement matrix as grey-scale blocks: the darker, the larger ``|D_ij|`` (Fig. 1).

    Each block is annotated with the signed ``D_ij`` (row minus column, relative to their mean).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    mag = np.abs(matrix.to_numpy(float))
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
    else:
        fig = ax.figure
    vmax = vmax if vmax is not None else max(float(mag.max()), 1e-9)
    im = ax.imshow(mag, cmap="Greys", vmin=0.0, vmax=vmax)
    names = list(matrix.index)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    for (r, c), val in np.ndenumerate(matrix.to_numpy(float)):
        colour = "white" if mag[r, c] > 0.55 * vmax else "black"
        ax.text(c, r, f"{val:+.2f}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xlabel("rater j")
    ax.set_ylabel("rater i")
    ax.set_title(title or "Volume disagreement D_ij")
    fig.colorbar(im, ax=ax, label="|D_ij|", fraction=0.046, pad=0.04)
    return fig


def volume_regression(x, y) -> dict:
    """Linear fit ``y = βx + α`` of one rater's volumes on another's, ordinary least squares (Table 2).

    Uses :class:`statsmodels.regression.linear_model.OLS`. ``β`` near 1 and ``α`` near 0 mean no bias;
    a small ``p_β`` says the volumes are related; a large ``p_α`` says the intercept is not
    distinguishable from 0.

    Args:
        x: volumes of rater ``x`` (mL).
        y: volumes of rater ``y`` for the same images.

    Returns:
        ``dict(beta, alpha, p_beta, p_alpha, beta_ci, alpha_ci, r2, n)`` (95% confidence intervals).

    Raises:
        HemolabError: for fewer than 3 images or volumes that are all equal.
    """
    import statsmodels.api as sm

    xa, ya = _volumes(x, "x"), _volumes(y, "y")
    if xa.shape != ya.shape or xa.size < 3:
        raise HemolabError(f"need at least 3 paired volumes, got {xa.size} and {ya.size}")
    if np.ptp(xa) == 0:
        raise HemolabError("all x volumes are equal: the slope of a regression on them is undefined")
    fit = sm.OLS(ya, sm.add_constant(xa)).fit()
    ci = np.asarray(fit.conf_int(0.05))
    return {
        "beta": float(fit.params[1]),
        "alpha": float(fit.params[0]),
        "p_beta": float(fit.pvalues[1]),
        "p_alpha": float(fit.pvalues[0]),
        "beta_ci": (float(ci[1, 0]), float(ci[1, 1])),
        "alpha_ci": (float(ci[0, 0]), float(ci[0, 1])),
        "r2": float(fit.rsquared),
        "n": int(xa.size),
    }


def agreement_table(kappas: pd.DataFrame, volumes: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Arab 2020's Table 2: per pair, kappa (mean and 95% CI over images) and the volume regression.

    Args:
        kappas: output of :func:`pairwise_kappa`.
        volumes: ``{rater: volumes}`` in the same case order as the masks behind ``kappas``.

    Returns:
        One row per pair: ``pair, group, kappa, kappa_ci_low, kappa_ci_high, beta, p_beta, alpha,
        p_alpha, r2`` (regression of ``rater_b``'s volumes on ``rater_a``'s; NaN where undefined).
    """
    rows = []
    for (a, b), sub in kappas.groupby(["rater_a", "rater_b"], sort=False):
        k = sub["kappa"].to_numpy(float)
        half = stats.t.ppf(0.975, k.size - 1) * k.std(ddof=1) / np.sqrt(k.size) if k.size > 1 else np.nan
        row = {
            "pair": f"{a}-{b}",
            "group": sub["group"].iloc[0],
            "kappa": float(k.mean()),
            "kappa_ci_low": float(k.mean() - half),
            "kappa_ci_high": float(k.mean() + half),
        }
        try:
            reg = volume_regression(volumes[a], volumes[b])
            row |= {key: reg[key] for key in ("beta", "p_beta", "alpha", "p_alpha", "r2")}
        except HemolabError:
            row |= dict.fromkeys(("beta", "p_beta", "alpha", "p_alpha", "r2"), float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- Bland-Altman
def bland_altman(a, b) -> dict:
    """Bland-Altman agreement of two volume measurements (mL).

    Differences ``d = a - b`` against means ``(a + b)/2``; bias = mean of ``d``; 95% limits of agreement
    = bias ± 1.96 SD of ``d`` (``ddof=1``).

    Returns:
        ``dict(n, mean_diff, sd_diff, loa_low, loa_high)``.
    """
    xa, xb = _volumes(a, "a"), _volumes(b, "b")
    if xa.shape != xb.shape or xa.size < 2:
        raise HemolabError(f"need at least 2 paired volumes, got {xa.size} and {xb.size}")
    d = xa - xb
    md, sd = float(d.mean()), float(d.std(ddof=1))
    return {
        "n": int(d.size),
        "mean_diff": md,
        "sd_diff": sd,
        "loa_low": md - 1.96 * sd,
        "loa_high": md + 1.96 * sd,
    }


def plot_bland_altman(a, b, ax=None, labels: tuple[str, str] = ("A", "B"), units: str = "mL"):
    """Bland-Altman plot: difference against mean, with the bias and the 95% limits of agreement.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    res = bland_altman(a, b)
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
    else:
        fig = ax.figure
    ax.scatter((xa + xb) / 2, xa - xb, s=18, color="k")
    for y, style, text in (
        (res["mean_diff"], "-", f"bias {res['mean_diff']:+.2f}"),
        (res["loa_high"], "--", f"+1.96 SD {res['loa_high']:+.2f}"),
        (res["loa_low"], "--", f"-1.96 SD {res['loa_low']:+.2f}"),
    ):
        ax.axhline(y, ls=style, color="grey", lw=1)
        ax.annotate(text, (1.0, y), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8)
    ax.set_xlabel(f"mean of {labels[0]} and {labels[1]} ({units})")
    ax.set_ylabel(f"{labels[0]} - {labels[1]} ({units})")
    ax.set_title(f"Bland-Altman: {labels[0]} vs {labels[1]} (n = {res['n']})")
    return fig


# ----------------------------------------------------------------------------------------- Patel's study
def paired_test(a, b, alpha: float = 0.05) -> dict:
    """Paired test chosen by normality, as Patel 2019 (Methods, "Observer variability").

    Shapiro-Wilk on the paired differences ``a - b``: if it does not reject normality (``p >= alpha``) a
    paired t-test (:func:`scipy.stats.ttest_rel`), otherwise the Wilcoxon signed-rank test
    (:func:`scipy.stats.wilcoxon`).

    Args:
        a: one measurement per case (e.g. the method-vs-observer DSC).
        b: the paired measurement of the same cases (e.g. the inter-observer DSC).
        alpha: the Shapiro-Wilk level.

    Returns:
        ``dict(test, statistic, pvalue, normal_p)``; ``test`` is "paired t-test", "Wilcoxon signed-rank"
        or "identical" (all differences 0: no test, ``pvalue`` 1.0).

    Raises:
        HemolabError: for fewer than 3 finite pairs (Shapiro-Wilk needs 3).
    """
    xa, xb = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if xa.shape != xb.shape:
        raise HemolabError(f"a and b must be paired (same length), got {xa.size} and {xb.size}")
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    if xa.size < 3:
        raise HemolabError(f"a paired test needs at least 3 finite pairs, got {xa.size}")
    d = xa - xb
    if np.all(d == 0):
        return {"test": "identical", "statistic": float("nan"), "pvalue": 1.0, "normal_p": float("nan")}
    normal_p = float(stats.shapiro(d).pvalue) if np.ptp(d) > 0 else 0.0
    if normal_p >= alpha:
        res = stats.ttest_rel(xa, xb)
        test = "paired t-test"
    else:
        res = stats.wilcoxon(xa, xb)
        test = "Wilcoxon signed-rank"
    return {
        "test": test,
        "statistic": float(res.statistic),
        "pvalue": float(res.pvalue),
        "normal_p": normal_p,
    }


def observer_metrics(
    observer1: Sequence,
    observer2: Sequence,
    method: Sequence,
    spacings: Sequence[Sequence[float]],
    *,
    observer2_repeat: Sequence | None = None,
    case_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Patel 2019's observer study (Table 2): every metric for every comparison, per case.

    Comparisons (reference first): "inter-observer" (observer 1 vs observer 2), "intra-observer"
    (observer 2's first vs second reading, when ``observer2_repeat`` is given), "method vs observer 1",
    "method vs observer 2" (the observer is the reference).

    Returns:
        A long table: ``case, comparison`` and the metrics of :func:`hemolab.metrics.evaluate`.
    """
    n = _check_raters({"observer1": observer1, "observer2": observer2, "method": method})
    if len(spacings) != n:
        raise HemolabError(f"need one spacing per case ({n}), got {len(spacings)}")
    case_ids = case_ids if case_ids is not None else [str(i) for i in range(n)]
    rows = []
    for k in range(n):
        sp = check_spacing(spacings[k])
        pairs = [("inter-observer", observer2[k], observer1[k])]
        if observer2_repeat is not None:
            pairs.append(("intra-observer", observer2_repeat[k], observer2[k]))
        pairs += [
            ("method vs observer 1", method[k], observer1[k]),
            ("method vs observer 2", method[k], observer2[k]),
        ]
        for name, pred, ref in pairs:
            rows.append({"case": case_ids[k], "comparison": name} | evaluate(pred, ref, sp))
    return pd.DataFrame(rows)


def observer_tests(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("dsc", "hd", "hd95", "mhd", "cmd", "avd"),
    baseline: str = "inter-observer",
) -> pd.DataFrame:
    """Paired tests of each "method vs observer k" against the inter-observer values (Patel 2019, Table 2).

    Returns:
        One row per (comparison, metric): ``comparison, metric, test, statistic, pvalue, normal_p``.
    """
    rows = []
    base = table[table["comparison"] == baseline].set_index("case")
    for comp in [c for c in table["comparison"].unique() if c.startswith("method")]:
        other = table[table["comparison"] == comp].set_index("case").loc[base.index]
        for m in metrics:
            if m not in METRIC_NAMES:
                raise HemolabError(f"unknown metric {m!r}: choose from {METRIC_NAMES}")
            rows.append({"comparison": comp, "metric": m} | paired_test(other[m], base[m]))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- what-if
def perturb_mask(mask, k: int = 0, *, drop_component: int | None = None, inplane: bool = True) -> np.ndarray:
    """Move a rater's boundary by ``k`` voxels and optionally leave out one component.

    Args:
        mask: binary mask indexed ``[x, y, z]``.
        k: ``> 0`` dilates by ``k`` voxels (draws larger), ``< 0`` erodes by ``|k|`` (draws smaller),
            using the cross (face neighbours).
        drop_component: remove one connected component (26-connected), counted by size: 0 = the largest,
            1 = the second largest, -1 = the smallest. Applied before the boundary moves. An index
            beyond the number of components changes nothing.
        inplane: move the boundary only within each axial slice (as a rater draws slice by slice);
            ``False`` also moves it across slices.

    Returns:
        The new boolean mask (the input is not changed).
    """
    m = check_mask(mask, "mask").copy()
    k = int(k)
    if drop_component is not None and m.any():
        lab, n = ndi.label(m, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(lab.ravel())[1:]
        order = np.argsort(-sizes, kind="stable") + 1  # labels from largest to smallest
        idx = int(drop_component)
        if -n <= idx < n:
            m[lab == order[idx]] = False
    if k == 0:
        return m
    structure = ndi.generate_binary_structure(3, 1)
    if inplane:
        structure[:, :, 0] = False
        structure[:, :, 2] = False
    if k > 0:
        return ndi.binary_dilation(m, structure=structure, iterations=k)
    return ndi.binary_erosion(m, structure=structure, iterations=-k, border_value=0)


def agreement_summary(masks: Mapping[str, np.ndarray], spacing: Sequence[float], focus: str) -> pd.DataFrame:
    """How one rater agrees with every other on one case: kappa, DSC and volume disagreement.

    Args:
        masks: ``{rater name: mask}`` for one case, all on the same grid.
        spacing: voxel size in mm.
        focus: the rater to compare with the others.

    Returns:
        One row per other rater (index): ``kappa, dsc, volume_ml`` (the focus rater's),
        ``volume_other_ml`` and ``disagreement`` (signed ``(V_focus - V_other)/mean``, the paper's
        measure for a single image).
    """
    if focus not in masks:
        raise HemolabError(f"focus {focus!r} is not one of the raters {list(masks)}")
    sp = check_spacing(spacing)
    v_focus = volume_ml(masks[focus], sp)
    rows = {}
    for name, other in masks.items():
        if name == focus:
            continue
        v_other = volume_ml(other, sp)
        rows[name] = {
            "kappa": cohen_kappa(masks[focus], other),
            "dsc": dice(masks[focus], other),
            "volume_ml": v_focus,
            "volume_other_ml": v_other,
            "disagreement": volume_disagreement([v_focus], [v_other]),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def perturbation_table(
    masks: Mapping[str, np.ndarray],
    spacing: Sequence[float],
    focus: str,
    ks: Sequence[int] = (-2, -1, 0, 1, 2),
    *,
    drop_component: int | None = None,
    inplane: bool = True,
) -> pd.DataFrame:
    """:func:`agreement_summary` after moving ``focus``'s boundary by each ``k`` in ``ks``.

    Returns:
        A long table: ``k, other`` and the columns of :func:`agreement_summary`.
    """
    frames = []
    for k in ks:
        changed = dict(masks)
        changed[focus] = perturb_mask(masks[focus], k, drop_component=drop_component, inplane=inplane)
        df = agreement_summary(changed, spacing, focus)
        df.insert(0, "other", df.index)
        df.insert(0, "k", int(k))
        frames.append(df.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


def simulated_reader(reference, seed: int = 0, *, shifts: Sequence[int] = (-1, 1)) -> np.ndarray:
    """A rater-like stand-in for a method: the reference with its boundary moved by one voxel.

    Used by notebooks 06 and 07 in the ``tiny`` profile, where a network trained in seconds is useless:
    it draws one shift from ``shifts`` with ``numpy.random.default_rng(seed)`` and applies
    :func:`perturb_mask` (in-plane). It is **not** a segmentation method: it has seen the reference.

    Args:
        reference: the reference mask of one case.
        seed: the random seed (use the case's index or seed so each case differs).
        shifts: the boundary shifts (voxels) to choose from.

    Returns:
        The perturbed mask.
    """
    k = int(np.random.default_rng(seed).choice(np.asarray(shifts, dtype=int)))
    return perturb_mask(reference, k)
