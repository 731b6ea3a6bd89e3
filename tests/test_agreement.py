"""hemolab.agreement against scikit-learn, scipy.stats and statsmodels-independent checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy import stats

from hemolab import agreement as G
from hemolab.errors import HemolabError

SPACING = (0.5, 0.5, 2.5)


def _rater_masks(seed: int, n_cases: int = 4, shape=(24, 24, 8)):
    """Three 'experts' and a 'method': noisy versions of one blob per case."""
    rng = np.random.default_rng(seed)
    out = {"E1": [], "E2": [], "E3": [], "M": []}
    for _ in range(n_cases):
        truth = ndi.gaussian_filter(rng.random(shape), 2.5)
        for name, noise in (("E1", 0.004), ("E2", 0.004), ("E3", 0.006), ("M", 0.008)):
            out[name].append(truth + noise * rng.standard_normal(shape) > np.quantile(truth, 0.8))
    return out


# ----------------------------------------------------------------------------------------- kappa
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kappa_matches_sklearn(seed):
    from sklearn.metrics import cohen_kappa_score

    masks = _rater_masks(seed, n_cases=1)
    a, b = masks["E1"][0], masks["M"][0]
    assert G.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a.ravel(), b.ravel()))


def test_kappa_within_region_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    masks = _rater_masks(3, n_cases=1)
    a, b = masks["E2"][0], masks["E3"][0]
    region = np.zeros_like(a)
    region[4:20, 4:20, :] = True
    expected = cohen_kappa_score(a[region], b[region])
    assert G.cohen_kappa(a, b, region) == pytest.approx(expected)
    assert G.cohen_kappa(a, b, region) != pytest.approx(G.cohen_kappa(a, b))


def test_kappa_degenerate_cases():
    z = np.zeros((5, 5, 5), bool)
    assert G.cohen_kappa(z, z) == 1.0  # sklearn gives NaN here; hemolab documents 1.0
    o = np.ones_like(z)
    assert G.cohen_kappa(o, o) == 1.0
    a = z.copy()
    a[2, 2, 2] = True
    assert G.cohen_kappa(a, z) == pytest.approx(0.0)
    assert G.cohen_kappa(a, ~a) < 0
    with pytest.raises(HemolabError, match="region is empty"):
        G.cohen_kappa(a, a, region=z)
    with pytest.raises(HemolabError, match="binary"):
        G.cohen_kappa(a.astype(float) * 2, a)


def test_pairwise_kappa_table_and_groups():
    masks = _rater_masks(0, n_cases=3)
    df = G.pairwise_kappa(masks, machines=("M",), case_ids=["a", "b", "c"])
    assert len(df) == 6 * 3
    assert list(df["pair"].unique()) == ["E1-E2", "E1-E3", "E1-M", "E2-E3", "E2-M", "E3-M"]
    assert (df["group"] == "human-human").sum() == 9 and (df["group"] == "human-machine").sum() == 9
    row = df[(df["pair"] == "E1-M") & (df["case"] == "b")].iloc[0]
    assert row["kappa"] == pytest.approx(G.cohen_kappa(masks["E1"][1], masks["M"][1]))


def test_pairwise_kappa_rejects_uneven_raters():
    masks = _rater_masks(0, n_cases=2)
    masks["M"] = masks["M"][:1]
    with pytest.raises(HemolabError, match="one mask per case"):
        G.pairwise_kappa(masks)


def test_mann_whitney_between_groups():
    hh = np.linspace(0.85, 0.90, 9)
    kappas = pd.DataFrame(
        {"group": ["human-human"] * 9 + ["human-machine"] * 9, "kappa": np.concatenate([hh, hh - 0.2])}
    )
    res = G.compare_kappa_groups(kappas)
    assert res["n_human_human"] == res["n_human_machine"] == 9
    assert res["pvalue"] < 0.001  # fully separated groups
    assert res["mean_human_human"] == pytest.approx(hh.mean())
    same = kappas.assign(kappa=np.concatenate([hh, hh[::-1]]))
    assert G.compare_kappa_groups(same)["pvalue"] == pytest.approx(1.0)
    with pytest.raises(HemolabError, match="both groups"):
        G.compare_kappa_groups(kappas[kappas["group"] == "human-human"])


# ----------------------------------------------------------------------------------------- volumes
def test_volume_disagreement_by_hand():
    vi, vj = [10.0, 20.0, 0.0], [8.0, 25.0, 0.0]
    expected = ((2 / 9) + (-5 / 22.5) + 0.0) / 3
    assert G.volume_disagreement(vi, vj) == pytest.approx(expected)
    assert G.volume_disagreement(vj, vi) == pytest.approx(-expected)
    assert G.volume_disagreement(vi, vj, absolute=True) == pytest.approx(((2 / 9) + (5 / 22.5)) / 3)


def test_disagreement_matrix_and_groups():
    vols = {"E1": [10, 20, 30], "E2": [11, 19, 33], "E3": [14, 26, 36], "M": [10, 21, 31]}
    d = G.disagreement_matrix(vols)
    assert list(d.index) == list(d.columns) == ["E1", "E2", "E3", "M"]
    np.testing.assert_allclose(d.to_numpy(), -d.to_numpy().T)
    assert np.all(np.diag(d.to_numpy()) == 0)
    assert d.loc["E3", "E1"] == pytest.approx(G.volume_disagreement(vols["E3"], vols["E1"]))
    groups = G.disagreement_groups(d, machines=("M",)).set_index("group")
    hh = [abs(d.loc[a, b]) for a, b in (("E1", "E2"), ("E1", "E3"), ("E2", "E3"))]
    assert groups.loc["human-human", "mean"] == pytest.approx(np.mean(hh))
    assert groups.loc["human-human", "n_pairs"] == 3


def test_plot_disagreement_matrix_is_darker_for_larger_disagreement():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vols = {"E1": [10, 20], "E2": [10, 20], "E3": [20, 40]}
    fig = G.plot_disagreement_matrix(G.disagreement_matrix(vols))
    img = fig.axes[0].images[0]
    rgba = img.cmap(img.norm(img.get_array()))
    grey = rgba[..., :3].mean(axis=-1)
    assert grey[0, 2] < grey[0, 1]  # E1-E3 (large) darker than E1-E2 (none)
    plt.close(fig)


def test_volume_regression_against_scipy_linregress():
    rng = np.random.default_rng(0)
    x = rng.uniform(2, 60, 12)
    y = 1.1 * x + 0.5 + rng.normal(0, 2, 12)
    r = G.volume_regression(x, y)
    ref = stats.linregress(x, y)
    assert r["beta"] == pytest.approx(ref.slope)
    assert r["alpha"] == pytest.approx(ref.intercept)
    assert r["p_beta"] == pytest.approx(ref.pvalue)
    # intercept p-value from its standard error (t with n-2 degrees of freedom)
    t_alpha = ref.intercept / ref.intercept_stderr
    assert r["p_alpha"] == pytest.approx(2 * stats.t.sf(abs(t_alpha), len(x) - 2))
    assert r["beta_ci"][0] < r["beta"] < r["beta_ci"][1]
    with pytest.raises(HemolabError):
        G.volume_regression([1, 2], [1, 2])


def test_agreement_table():
    masks = _rater_masks(1, n_cases=4)
    vols = {k: [float(m.sum()) * 0.625 / 1000 for m in v] for k, v in masks.items()}
    kappas = G.pairwise_kappa(masks)
    table = G.agreement_table(kappas, vols)
    assert len(table) == 6
    assert {"kappa", "kappa_ci_low", "beta", "p_beta", "alpha", "p_alpha"} <= set(table.columns)
    row = table.set_index("pair").loc["E1-E2"]
    assert row["kappa"] == pytest.approx(kappas[kappas["pair"] == "E1-E2"]["kappa"].mean())
    assert row["kappa_ci_low"] <= row["kappa"] <= row["kappa_ci_high"]


def test_bland_altman_numbers_and_plot():
    import matplotlib.pyplot as plt

    a, b = np.array([10.0, 20, 30, 40]), np.array([9.0, 21, 27, 41])
    r = G.bland_altman(a, b)
    d = a - b
    assert r["mean_diff"] == pytest.approx(d.mean())
    assert r["loa_high"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
    assert r["loa_low"] == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))
    fig = G.plot_bland_altman(a, b, labels=("E1", "M"))
    assert len(fig.axes[0].collections[0].get_offsets()) == 4
    plt.close(fig)


# ----------------------------------------------------------------------------------------- paired test
def test_paired_test_normal_uses_t_test():
    rng = np.random.default_rng(2)
    a = rng.normal(0.9, 0.03, 20)
    b = a - 0.02 + rng.normal(0, 0.01, 20)
    r = G.paired_test(a, b)
    assert r["normal_p"] == pytest.approx(stats.shapiro(a - b).pvalue)
    assert r["test"] == "paired t-test"
    assert r["pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_paired_test_skewed_uses_wilcoxon():
    a = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 5.0, 9.0])
    b = np.zeros(10) + np.arange(10) * 1e-3
    r = G.paired_test(a, b)
    assert r["normal_p"] < 0.05
    assert r["test"] == "Wilcoxon signed-rank"
    assert r["pvalue"] == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_paired_test_edge_cases():
    assert G.paired_test([1, 2, 3], [1, 2, 3])["test"] == "identical"
    with pytest.raises(HemolabError, match="at least 3"):
        G.paired_test([1, 2], [2, 3])


def test_observer_metrics_and_tests():
    masks = _rater_masks(4, n_cases=5)
    repeat = [G.perturb_mask(m, 1) for m in masks["E2"]]
    table = G.observer_metrics(masks["E1"], masks["E2"], masks["M"], [SPACING] * 5, observer2_repeat=repeat)
    assert set(table["comparison"]) == {
        "inter-observer",
        "intra-observer",
        "method vs observer 1",
        "method vs observer 2",
    }
    assert len(table) == 20
    tests = G.observer_tests(table, metrics=("dsc", "hd95"))
    assert len(tests) == 4
    assert set(tests["test"]) <= {"paired t-test", "Wilcoxon signed-rank", "identical"}
    assert tests["pvalue"].between(0, 1).all()


# ----------------------------------------------------------------------------------------- what-if
def test_perturb_mask_moves_the_boundary_in_plane():
    m = np.zeros((15, 15, 7), bool)
    m[5:10, 5:10, 2:5] = True
    grown = G.perturb_mask(m, 1)
    assert grown[4:11, 5:10, 2:5].all() and grown[5:10, 4:11, 2:5].all()
    assert not grown[:, :, 1].any() and not grown[:, :, 5].any()  # not across slices
    assert G.perturb_mask(m, 1, inplane=False)[:, :, 1].any()
    shrunk = G.perturb_mask(m, -1)
    assert shrunk.sum() == 3 * 3 * 3
    assert G.perturb_mask(m, -3).sum() == 0
    assert np.array_equal(G.perturb_mask(m, 0), m) and G.perturb_mask(m, 0) is not m


def test_perturb_mask_drops_components_by_size():
    m = np.zeros((20, 20, 4), bool)
    m[1:9, 1:9, 1:3] = True  # largest
    m[12:15, 12:15, 1:3] = True  # smallest
    assert G.perturb_mask(m, 0, drop_component=0).sum() == 18
    assert G.perturb_mask(m, 0, drop_component=-1).sum() == 128
    assert G.perturb_mask(m, 0, drop_component=5).sum() == m.sum()


def test_agreement_summary_and_perturbation_table():
    masks = _rater_masks(5, n_cases=1)
    one = {k: v[0] for k, v in masks.items()}
    one["E1copy"] = one["E1"].copy()
    s = G.agreement_summary(one, SPACING, "E1")
    assert list(s.index) == ["E2", "E3", "M", "E1copy"]
    assert s.loc["E1copy", "kappa"] == pytest.approx(1.0) and s.loc["E1copy", "dsc"] == 1.0
    assert s.loc["E1copy", "disagreement"] == 0.0
    t = G.perturbation_table(one, SPACING, "E1", ks=(-2, -1, 0, 1, 2))
    copy = t[t["other"] == "E1copy"].set_index("k")
    assert copy.loc[0, "dsc"] == 1.0
    assert copy.loc[1, "dsc"] < 1.0 and copy.loc[2, "dsc"] < copy.loc[1, "dsc"]
    assert copy.loc[-2, "disagreement"] < copy.loc[-1, "disagreement"] < 0 < copy.loc[1, "disagreement"]
    with pytest.raises(HemolabError, match="focus"):
        G.agreement_summary(one, SPACING, "E9")


def test_simulated_reader_is_a_one_voxel_shift():
    m = np.zeros((15, 15, 5), bool)
    m[4:11, 4:11, 1:4] = True
    outs = {G.simulated_reader(m, seed).sum() for seed in range(12)}
    assert outs == {G.perturb_mask(m, -1).sum(), G.perturb_mask(m, 1).sum()}
    assert np.array_equal(G.simulated_reader(m, 3), G.simulated_reader(m, 3))


def test_observer_tests_report_a_statistic_that_cannot_be_computed():
    """Two blood-free scans with a false alarm give infinite HD: reported as not computable, no crash."""
    import pandas as pd

    rows = []
    for case, (inter, method) in enumerate(
        [(1.0, 1.2), (2.0, 2.1), (0.0, float("inf")), (0.0, float("inf"))]
    ):
        rows.append({"case": case, "comparison": "inter-observer", "dsc": 0.9, "hd": inter})
        rows.append(
            {"case": case, "comparison": "method vs observer 1", "dsc": 0.8 + 0.01 * case, "hd": method}
        )
    table = pd.DataFrame(rows)
    out = G.observer_tests(table, metrics=("dsc", "hd")).set_index("metric")
    assert out.loc["hd", "test"] == "not computable" and np.isnan(out.loc["hd", "pvalue"])
    assert out.loc["hd", "n_pairs"] == 2 and "only 2 of 4 cases" in out.loc["hd", "note"]
    assert (
        out.loc["dsc", "test"] in ("paired t-test", "Wilcoxon signed-rank") and out.loc["dsc", "n_pairs"] == 4
    )
