"""The code notebooks 05-07 show and run, checked outside the notebooks (fast, no training).

* 07's analysis path (every code cell after the method is chosen) runs on small-like data: 4 test scans, 2 of
  them without blood, and a method that raises false alarms there, finds nothing, or finds everything. A
  method with false alarms makes the observer study's distances infinite on the blood-free scans; the paired
  tests then have fewer than 3 finite pairs, which used to crash the notebook (``HemolabError: a paired test
  needs at least 3 finite pairs, got 2``).
* 07's shown Cohen's kappa (the cell tagged ``shown-code``) equals ``hemolab.agreement.cohen_kappa`` and
  scikit-learn's ``cohen_kappa_score``.
* The generated texts and figures of 05-07: line styles of the loss curves (the paper's Fig. 3), the signs
  on the disagreement matrix, the ABC/2 summary and the ablation's evidence paragraph.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hemolab import agreement as G  # noqa: E402
from hemolab.io import image_from_array  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NB07 = NOTEBOOKS / "07_rater_agreement.ipynb"
SKIP_TAGS = {"parameters", "hemolab-setup", "choose-method"}


def _code_cells(path: Path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"]


def _tagged(path: Path, tag: str) -> str:
    cells = [c for c in _code_cells(path) if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name} needs exactly one code cell tagged {tag!r}"
    return cells[0].source


# ----------------------------------------------------------------------------------------- small-like data
class FakeCase:
    """Just what notebook 07's loop reads from a case."""

    def __init__(self, case_id: str, hu: np.ndarray, raters: list[np.ndarray], spacing):
        self.case_id = case_id
        self.info = {"seed": case_id[-1], "bleed_type": "none" if not raters[0].any() else "iph_deep"}
        self._hu, self._raters, self._spacing = hu, raters, spacing
        self._reference = np.sum(raters, axis=0) >= 2

    def load_image(self):
        return image_from_array(self._hu, spacing=self._spacing)

    def load_label(self):
        return image_from_array(self._reference.astype(np.uint8), spacing=self._spacing)

    def load_raters(self):
        return [image_from_array(r.astype(np.uint8), spacing=self._spacing) for r in self._raters]


def _small_like_cases():
    """4 test scans like the small profile's: 2 with a bleed (of different sizes), 2 without blood."""
    shape, spacing = (40, 40, 10), (1.8, 1.8, 5.0)
    x, y, z = np.mgrid[: shape[0], : shape[1], : shape[2]]
    head = ((x - 20) / 17) ** 2 + ((y - 20) / 19) ** 2 <= 1
    cases = []
    for k, radius in enumerate((6.0, 3.5, 0.0, 0.0)):
        hu = np.where(head, 35.0, -1000.0).astype(np.float32)
        bleed = (
            ((x - 15) / radius) ** 2 + ((y - 22) / radius) ** 2 + ((z - 5) / 2.5) ** 2 <= 1
            if radius
            else np.zeros(shape, bool)
        )
        hu[bleed] = 70.0
        raters = [bleed, G.perturb_mask(bleed, 1), G.perturb_mask(bleed, -1) if radius > 4 else bleed.copy()]
        cases.append(FakeCase(f"case_00{k}", hu, raters, spacing))
    return cases


def _false_alarm(case, image, reference):
    if reference.any():
        return G.perturb_mask(reference, 1)
    alarm = np.zeros(reference.shape, bool)
    alarm[28:31, 10:13, 4:6] = True  # a stray cluster on a blood-free scan
    return alarm


METHODS = {
    "false alarms on the blood-free scans": _false_alarm,
    "finds nothing": lambda case, image, reference: np.zeros(reference.shape, bool),
    "finds everything": lambda case, image, reference: np.ones(reference.shape, bool),
}


def _run_07(method) -> dict:
    """Every code cell of notebook 07 after the method is chosen, on the small-like cases."""
    ns: dict = {
        "profile": "small",
        "cases": _small_like_cases(),
        "method": method,
        "method_name": "test method",
        "display": lambda *args, **kwargs: None,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib's non-interactive show, statsmodels on 4 points
        try:
            for cell in _code_cells(NB07):
                if SKIP_TAGS & set(cell.metadata.get("tags", [])):
                    continue
                exec(compile(cell.source, f"{NB07.name}:{cell.get('id')}", "exec"), ns)
        finally:
            plt.close("all")
    return ns


@pytest.mark.parametrize("kind", list(METHODS))
def test_07_analysis_runs_on_blood_free_scans(kind):
    ns = _run_07(METHODS[kind])
    tests = ns["tests"]
    assert len(tests) == 12  # 2 comparisons x 6 metrics, none dropped
    if kind != "finds everything":
        # the distances have only the 2 scans with a bleed finite on both sides: reported, not raised
        stuck = tests[tests["test"] == "not computable"]
        assert set(stuck["metric"]) >= {"hd", "hd95", "mhd", "cmd"}
        assert (stuck["n_pairs"] < 3).all() and stuck["pvalue"].isna().all()
        assert all("3 needed" in note for note in stuck["note"])
    assert np.isfinite(ns["mw"]["pvalue"])
    assert isinstance(ns["verdict"], str) and ns["verdict"]


def test_07_false_alarm_data_is_what_crashed_the_old_code():
    """The data above is the failing case: fewer than 3 finite pairs for the distances."""
    ns = _run_07(_false_alarm)
    obs = ns["obs"]
    base = obs[obs["comparison"] == "inter-observer"].set_index("case")["hd"]
    other = obs[obs["comparison"] == "method vs observer 1"].set_index("case")["hd"]
    finite = np.isfinite(base) & np.isfinite(other.loc[base.index])
    assert int(finite.sum()) == 2
    with pytest.raises(Exception, match="at least 3 finite pairs"):
        G.paired_test(other.loc[base.index], base)  # what observer_tests used to call unguarded
    assert ns["false_alarms"] == ["case_002", "case_003"]


# ----------------------------------------------------------------------------------------- shown code
def test_07_shown_kappa_matches_library_and_sklearn():
    from sklearn.metrics import cohen_kappa_score

    source = _tagged(NB07, "shown-code")
    ns = {"np": np, "G": G, "case_ids": [], "masks": {"E1": [], "M": []}}
    exec(compile(source, f"{NB07.name}:shown-code", "exec"), ns)  # the cell checks itself, too
    my_kappa = ns["my_kappa"]
    rng = np.random.default_rng(7)
    for _ in range(10):
        a = rng.random((16, 12, 6)) < rng.uniform(0.0, 0.5)
        b = a ^ (rng.random(a.shape) < rng.uniform(0.0, 0.3))
        assert my_kappa(a, b) == pytest.approx(G.cohen_kappa(a, b))
        assert my_kappa(a, b) == pytest.approx(cohen_kappa_score(a.ravel(), b.ravel()))
    empty, full = np.zeros((4, 4, 2), bool), np.ones((4, 4, 2), bool)
    for a, b in ((empty, empty), (full, full), (empty, full), (full, empty)):
        assert my_kappa(a, b) == pytest.approx(G.cohen_kappa(a, b))


# ----------------------------------------------------------------------------------------- texts and figures
def test_plot_history_draws_train_solid_and_validation_dashed():
    from hemolab.training import plot_history

    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [-0.1, -0.3, -0.4],
            "val_loss": [-0.1, -0.2, -0.25],
            "lr": [1e-3] * 3,
        }
    )
    fig = plot_history(history, show_lr=False)
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert styles["train loss"] == "-" and styles["validation loss"] == "--"
    plt.close(fig)


def test_disagreement_matrix_signs_only_signed_values():
    volumes = {"E1": [1.0, 2.0, 0.0], "E2": [1.5, 1.0, 0.0], "M": [0.0, 3.0, 0.0]}
    for absolute, expect_plus in ((False, True), (True, False)):
        fig = G.plot_disagreement_matrix(G.disagreement_matrix(volumes, absolute=absolute))
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert any(t.startswith("+") for t in texts) == expect_plus
        assert "+0.00" not in texts
        plt.close(fig)


def test_describe_volume_estimates_follows_the_numbers():
    from hemolab.evaluation import describe_volume_estimates

    volumes = pd.DataFrame(
        {
            "bleed_type": ["sdh", "sdh", "iph_deep", "edh"],
            "true_ml": [10.0, 20.0, 10.0, 10.0],
            "abc2_ml": [20.0, 30.0, 10.2, 7.0],
            "planimetric_ml": [10.5, 19.0, 9.8, 10.0],
        }
    )
    text = describe_volume_estimates(volumes)
    assert "overestimated 2, underestimated 1" in text
    assert "sdh (1.75, n = 2)" in text and "iph_deep (1.02, n = 1)" in text and "edh (0.70, n = 1)" in text
    assert "within 10% of the truth" in text
    assert describe_volume_estimates(volumes.iloc[:0]).startswith("No case has a bleed")


def test_describe_evidence_one_seed_and_several():
    from hemolab.experiments.ablation import describe_evidence

    rows = []
    for seed, shift in ((0, 0.10), (1, -0.08), (2, 0.01)):
        for case, ref in (("a", 5.0), ("b", 0.0), ("c", 12.0)):
            for model, dsc in (("with DS", 0.6), ("without DS", 0.6 + shift)):
                rows.append({"seed": seed, "case_id": case, "model": model, "dsc": dsc, "volume_ref_ml": ref,
                             "volume_pred_ml": 0.3 if ref == 0 else ref})  # fmt: skip
    per_case = pd.DataFrame(rows)
    one = describe_evidence(per_case[per_case["seed"] == 0])
    assert "3 synthetic test scans (2 with a bleed) and 1 seed." in one
    assert "**One seed**" in one and "not measured" in one
    several = describe_evidence(per_case)
    assert "3 seeds" in several and "not evidence" in several
