"""Agreement on volumes: the disagreement matrix of Arab 2020 (Fig. 1), rater regressions, Bland-Altman.

Arab 2020, Methods and Table 2 (docs/methods.md §1.7): the volume disagreement
``D_ij = (1/N) Σ_k (V_ik - V_jk) / ((V_ik + V_jk)/2)`` over all pairs of raters, drawn as a grey-scale
matrix, and a linear fit ``y = βx + α`` of one rater's volumes on another's with p-values.

Convention (a documented choice): the disagreement is **signed** as the paper writes it (``D_ji = -D_ij``);
positive and negative cases cancel in the mean, so :func:`volume_disagreement` also offers
``absolute=True``. Fig. 1 shows the size of the disagreement and the group figures the paper quotes
("expert-expert 0.09 ± 0.02") are mean ± SD of ``|D_ij|`` over the pairs of a group
(:func:`disagreement_groups`). A case where both volumes are 0 contributes 0 (both agree: no blood).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from hemolab.agreement.kappa import check_raters, pair_group
from hemolab.errors import HemolabError


def _volumes(v, name: str = "volumes") -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise HemolabError(f"{name} must be a non-empty list of finite volumes >= 0 (mL), got {v!r}")
    return arr


def volume_disagreement(v_i, v_j, *, absolute: bool = False) -> float:
    """The volume disagreement of raters ``i`` and ``j`` (Arab 2020, Methods; docs/methods.md §1).

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
    check_raters(volumes)
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
        rows.append({"group": pair_group(a, b, machines), "pair": f"{a}-{b}", "abs_d": abs(matrix.loc[a, b])})
    df = pd.DataFrame(rows)
    out = df.groupby("group")["abs_d"].agg(n_pairs="count", mean="mean", sd=lambda x: x.std(ddof=1))
    return out.reset_index()


def plot_disagreement_matrix(
    matrix: pd.DataFrame, ax=None, title: str | None = None, vmax: float | None = None
):
    """Draw the disagreement matrix as grey-scale blocks: the darker, the larger ``|D_ij|`` (Fig. 1).

    Each block is annotated with ``D_ij`` (row minus column, relative to their mean): with a sign when the
    matrix has negative entries (the paper's signed measure), without one when it has none (e.g. the
    ``absolute=True`` matrix, whose values are sizes).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    values = matrix.to_numpy(float)
    mag = np.abs(values)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
    else:
        fig = ax.figure
    if vmax is None or not np.isfinite(vmax) or vmax <= 0:
        vmax = max(float(np.nanmax(mag)) if mag.size else 0.0, 1e-9)
    fmt = "{:+.2f}" if np.any(values < 0) else "{:.2f}"
    im = ax.imshow(mag, cmap="Greys", vmin=0.0, vmax=vmax)
    names = list(matrix.index)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    for (r, c), val in np.ndenumerate(values):
        colour = "white" if mag[r, c] > 0.55 * vmax else "black"
        text = "0.00" if val == 0 else fmt.format(val)  # the diagonal (and exact ties): no sign
        ax.text(c, r, text, ha="center", va="center", color=colour, fontsize=9)
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
