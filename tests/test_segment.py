"""Whole-scan segmentation (hemolab.segment): geometry of the mask, volume, dispatch, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hemolab.errors import HemolabError
from hemolab.io import array_from_image, image_from_array

pytest.importorskip("hemolab.preprocess")
from hemolab.segment import evaluate_cases, mask_volume_ml, overlap_metrics, segment_scan  # noqa: E402


class ThresholdNet(torch.nn.Module):
    """A stand-in 'network' whose logits say 'blood' where the preprocessed input is above 50 HU."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))

    def forward(self, x):  # x in [0, 1] = HU / 100
        return self.scale * (x - 0.5)


def head_with_bleed(size=(70, 60, 21), spacing=(0.7, 0.8, 3.0), origin=(-20.0, 5.0, 40.0)):
    """Air around a 'brain' at 30 HU with a 'bleed' at 70 HU (an ellipsoid)."""
    x, y, z = np.meshgrid(*[np.arange(s) for s in size], indexing="ij")
    c = [s / 2 for s in size]
    brain = ((x - c[0]) / 30) ** 2 + ((y - c[1]) / 26) ** 2 + ((z - c[2]) / 9) ** 2 < 1
    bleed = ((x - 40) / 10) ** 2 + ((y - 30) / 8) ** 2 + ((z - 10) / 4) ** 2 < 1
    hu = np.full(size, -1000.0, np.float32)
    hu[brain] = 30.0
    hu[bleed] = 70.0
    return image_from_array(hu, spacing=spacing, origin=origin), bleed


def test_mask_on_original_grid_and_volume():
    image, bleed = head_with_bleed()
    meta = {"arch": "cnnds", "grid_size": [32, 32, 16]}
    res = segment_scan(image, ThresholdNet(), meta, device="cpu")
    for img in (res.mask, res.probability):
        assert img.GetSize() == image.GetSize()
        np.testing.assert_allclose(img.GetSpacing(), image.GetSpacing())
        np.testing.assert_allclose(img.GetOrigin(), image.GetOrigin())
        np.testing.assert_allclose(img.GetDirection(), image.GetDirection())
    mask = array_from_image(res.mask)
    assert set(np.unique(mask)) <= {0, 1}
    assert res.volume_ml == pytest.approx(mask.sum() * 0.7 * 0.8 * 3.0 / 1000)
    assert res.volume_ml == pytest.approx(mask_volume_ml(res.mask))
    # the round trip through the 32x32x16 grid keeps the bleed
    assert overlap_metrics(mask, bleed, image.GetSpacing())["dice"] > 0.8
    prob = res.probability_array()
    assert prob.min() >= 0 and prob.max() <= 1
    assert set(res.timings) >= {"preprocess", "network", "postprocess"} and res.seconds > 0


def test_threshold_changes_volume_monotonically():
    image, _ = head_with_bleed()
    meta = {"arch": "cnnds", "grid_size": [32, 32, 16]}
    low = segment_scan(image, ThresholdNet(), meta, threshold=0.1)
    high = segment_scan(image, ThresholdNet(), meta, threshold=0.9)
    assert low.volume_ml >= high.volume_ml


def test_clear_errors():
    image, _ = head_with_bleed()
    with pytest.raises(HemolabError, match="SimpleITK image"):
        segment_scan(array_from_image(image), ThresholdNet(), {"arch": "cnnds", "grid_size": [32, 32, 16]})
    with pytest.raises(HemolabError, match="arch"):
        segment_scan(image, ThresholdNet(), {"arch": "resnet", "grid_size": [32, 32, 16]})
    with pytest.raises(HemolabError, match="threshold"):
        segment_scan(image, ThresholdNet(), {"arch": "cnnds", "grid_size": [32, 32, 16]}, threshold=1.5)
    with pytest.raises(HemolabError, match="3D"):
        segment_scan(sitk.Image(8, 8, sitk.sitkFloat32), ThresholdNet(), {"arch": "cnnds"})


def test_overlap_metrics_conventions():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2] = True
    b[1:3] = True
    m = overlap_metrics(b, a, (1.0, 1.0, 1.0))
    assert m["dice"] == pytest.approx(0.5) and m["precision"] == pytest.approx(0.5) and m["recall"] == 0.5
    assert m["true_volume_ml"] == pytest.approx(32 / 1000)
    empty = overlap_metrics(np.zeros_like(a), np.zeros_like(a), (1.0, 1.0, 1.0))
    assert empty["dice"] == 1.0


def test_evaluate_cases_on_tiny_cohort(tiny_cohort):
    from hemolab.datasets import load_dataset

    dataset = load_dataset(tiny_cohort)
    table, results = evaluate_cases(
        dataset.test, ThresholdNet(), {"arch": "cnnds", "grid_size": [32, 32, 16]}
    )
    assert list(table["case_id"]) == [c.case_id for c in dataset.test]
    assert table[["dice", "true_volume_ml", "pred_volume_ml"]].notna().all().all()
    assert set(results) == set(table["case_id"])
