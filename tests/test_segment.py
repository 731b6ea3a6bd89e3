"""Whole-scan segmentation (hemolab.segment, hemolab.architectures.segment_scan): geometry, volume, meta, errors.

The phantom below is no head (no skull, 5 cm across): :func:`hemolab.architectures.segment_scan` refuses it
(tested here), so the pipeline itself is tested through :func:`hemolab.segment.segment_cnnds`, the function
``segment_scan`` hands a checked scan to.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hemolab.architectures import segment_scan as checked_segment_scan
from hemolab.checkpoint import CheckpointMeta
from hemolab.errors import HemolabError
from hemolab.evaluation import CASE_COLUMNS, evaluate_cases
from hemolab.io import array_from_image, image_from_array
from hemolab.metrics import overlap, volume_ml
from hemolab.segment import segment_cnnds as segment_scan

META = {"arch": "cnnds", "grid_size": [32, 32, 16]}  # a version-1 style dict: the paper's HU window


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
    res = segment_scan(image, ThresholdNet(), META, device="cpu")
    for img in (res.mask, res.probability):
        assert img.GetSize() == image.GetSize()
        np.testing.assert_allclose(img.GetSpacing(), image.GetSpacing())
        np.testing.assert_allclose(img.GetOrigin(), image.GetOrigin())
        np.testing.assert_allclose(img.GetDirection(), image.GetDirection())
    mask = array_from_image(res.mask)
    assert set(np.unique(mask)) <= {0, 1}
    assert res.volume_ml == pytest.approx(mask.sum() * 0.7 * 0.8 * 3.0 / 1000)
    assert res.volume_ml == pytest.approx(volume_ml(mask, image.GetSpacing()))
    # the round trip through the 32x32x16 grid keeps the bleed
    assert overlap(mask, bleed, image.GetSpacing())["dsc"] > 0.8
    prob = res.probability_array()
    assert prob.min() >= 0 and prob.max() <= 1
    assert set(res.timings) >= {"preprocess", "network", "postprocess"} and res.seconds > 0


def test_threshold_changes_volume_monotonically():
    image, _ = head_with_bleed()
    low = segment_scan(image, ThresholdNet(), META, threshold=0.1)
    high = segment_scan(image, ThresholdNet(), META, threshold=0.9)
    assert low.volume_ml >= high.volume_ml


def test_inference_uses_the_checkpoints_threshold_and_hu_window():
    """The typed meta is what inference reads: its threshold (unless one is given) and its HU window."""
    image, _ = head_with_bleed()
    meta = CheckpointMeta(
        arch="cnnds", model_kwargs={}, profile="tiny", hu_window=(0.0, 100.0), grid_size=(32, 32, 16)
    )
    default = segment_scan(image, ThresholdNet(), meta)
    stored_high = segment_scan(image, ThresholdNet(), meta.replace(threshold=0.9))
    assert stored_high.threshold == 0.9 and default.threshold == 0.5
    assert stored_high.volume_ml == pytest.approx(
        segment_scan(image, ThresholdNet(), meta, threshold=0.9).volume_ml
    )
    assert stored_high.volume_ml < default.volume_ml
    # a window of [-100, 300] HU maps 70 HU below ThresholdNet's cut at 0.5: no bleed is found
    shifted = segment_scan(image, ThresholdNet(), meta.replace(hu_window=(-100.0, 300.0)))
    assert shifted.volume_ml < 0.1 * default.volume_ml


def test_segment_scan_refuses_a_phantom_that_is_no_head():
    image, _ = head_with_bleed()
    with pytest.raises(HemolabError, match="a head needs at least 100 mm"):
        checked_segment_scan(image, ThresholdNet(), META)


def test_clear_errors():
    image, _ = head_with_bleed()
    with pytest.raises(HemolabError, match="SimpleITK image"):
        segment_scan(array_from_image(image), ThresholdNet(), META)
    with pytest.raises(HemolabError, match="arch"):
        checked_segment_scan(
            sitk.Image(8, 8, 8, sitk.sitkFloat32) * 0 - 1000, ThresholdNet(), {"arch": "resnet"}
        )
    with pytest.raises(HemolabError, match="threshold"):
        segment_scan(image, ThresholdNet(), META, threshold=1.5)
    with pytest.raises(HemolabError, match="3D"):
        segment_scan(sitk.Image(8, 8, sitk.sitkFloat32), ThresholdNet(), {"arch": "cnnds"})


def test_overlap_is_evaluate_without_distances():
    from hemolab.metrics import OVERLAP_NAMES, evaluate

    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2] = True
    b[1:3] = True
    m = overlap(b, a, (1.0, 1.0, 1.0))
    assert m["dsc"] == pytest.approx(0.5) and m["precision"] == pytest.approx(0.5) and m["recall"] == 0.5
    assert m["volume_ref_ml"] == pytest.approx(32 / 1000)
    full = evaluate(b, a, (1.0, 1.0, 1.0))
    assert tuple(m) == OVERLAP_NAMES and all(m[k] == full[k] for k in OVERLAP_NAMES)
    empty = overlap(np.zeros_like(a), np.zeros_like(a), (1.0, 1.0, 1.0))
    assert empty["dsc"] == 1.0


def test_evaluate_cases_on_tiny_cohort(tiny_cohort):
    from hemolab.datasets import load_dataset

    dataset = load_dataset(tiny_cohort)
    table, results = evaluate_cases(dataset.test, ThresholdNet(), META)
    assert list(table["case_id"]) == [c.case_id for c in dataset.test]
    assert tuple(table.columns) == CASE_COLUMNS and table.notna().all().all()
    assert set(results) == set(table["case_id"])
