"""mIoU and Otsu's threshold, worked by hand."""

import numpy as np
import pytest

from xattr_jax.metrics import binarize_map, conservation_report, miou, otsu_threshold

_MAP = np.array([[0.0, 0.2, 0.8, 1.0], [-0.5, 0.1, 0.9, 0.4]])
_MASK = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], bool)


def test_miou_mean_threshold_by_hand():
    # positive part, max 1: [[0, .2, .8, 1], [0, .1, .9, .4]]; mean = 3.4 / 8 = 0.425
    # foreground (> 0.425): (0,2), (0,3), (1,2)
    # fg: |P ∩ G| = 3, |P ∪ G| = 4 -> 0.75
    # bg: ¬P = {(0,0),(0,1),(1,0),(1,1),(1,3)}, ¬G = {(0,0),(0,1),(1,0),(1,1)}: 4 / 5 = 0.8
    res = miou(_MAP[None], _MASK[None])
    assert res["thresholds"][0] == pytest.approx(0.425)
    assert res["iou_fg"] == pytest.approx(0.75)
    assert res["iou_bg"] == pytest.approx(0.8)
    assert res["miou"] == pytest.approx(0.775)
    assert res["pixel_accuracy"] == pytest.approx(7 / 8)
    # fixed threshold 0.3 -> foreground = the four right pixels = the mask -> 1
    assert miou([_MAP], [_MASK], threshold=0.3)["miou"] == pytest.approx(1.0)
    # scaling the map does not matter (max-normalised)
    assert miou([5 * _MAP], [_MASK])["miou"] == pytest.approx(0.775)


def test_miou_dataset_vs_image_reduction():
    # image 2: map all zero -> no foreground; mask = top-left pixel of a 2x2
    z = np.zeros((2, 4))
    g2 = np.zeros((2, 4), bool)
    g2[0, 0] = True
    # image 2 alone: fg 0 / 1 = 0; bg 7 / 8 -> mIoU 0.4375
    # dataset: fg (3 + 0) / (4 + 1) = 0.6; bg (4 + 7) / (5 + 8) = 11/13 -> (0.6 + 11/13) / 2
    res = miou([_MAP, z], [_MASK, g2])
    np.testing.assert_allclose(res["per_image"], [0.775, 0.4375])
    assert res["miou"] == pytest.approx((0.6 + 11 / 13) / 2)
    res = miou([_MAP, z], [_MASK, g2], reduction="image")
    assert res["iou_fg"] == pytest.approx(0.375) and res["iou_bg"] == pytest.approx((0.8 + 7 / 8) / 2)
    assert res["miou"] == pytest.approx((0.775 + 0.4375) / 2)
    # both empty: prediction and truth agree -> IoU_fg = 1
    assert miou([z], [np.zeros((2, 4), bool)], reduction="image")["iou_fg"] == 1.0


def test_otsu_bimodal_by_hand():
    # values: 0 (x3), 0.1 (x1), 0.9 (x2), 1.0 (x2); n = 8
    # split after 0:   w0 = 3/8, μ0 = 0,     w1 = 5/8, μ1 = 3.9/5 = 0.78
    #                  σ² = 3/8 · 5/8 · 0.78²  = 0.142594
    # split after 0.1: w0 = 1/2, μ0 = 0.025, w1 = 1/2, μ1 = 3.8/4 = 0.95
    #                  σ² = 1/4 · 0.925²       = 0.213906   <- largest
    # split after 0.9: w0 = 3/4, μ0 = 1.9/6,  w1 = 1/4, μ1 = 1
    #                  σ² = 3/16 · (0.683333)² = 0.087552
    v = np.array([[0.0, 0.0, 0.0, 0.1], [0.9, 0.9, 1.0, 1.0]])
    assert otsu_threshold(v) == pytest.approx(0.1)
    mask, t = binarize_map(v, "otsu")
    assert t == pytest.approx(0.1)
    np.testing.assert_array_equal(mask, [[0, 0, 0, 0], [1, 1, 1, 1]])
    assert miou([v], [mask], threshold="otsu")["miou"] == 1.0
    assert otsu_threshold(np.full(5, 0.3)) == pytest.approx(0.3)


def test_otsu_agrees_with_fine_histogram():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.2, 0.05, 500), rng.normal(0.7, 0.08, 300)])
    t = otsu_threshold(v)
    # brute force over candidate thresholds
    best, arg = -1.0, None
    for c in np.unique(v)[:-1]:
        lo, hi = v[v <= c], v[v > c]
        s = lo.size * hi.size / v.size**2 * (lo.mean() - hi.mean()) ** 2
        if s > best:
            best, arg = s, c
    assert t == arg
    assert 0.3 < t < 0.55


def test_miou_validation():
    with pytest.raises(ValueError, match="threshold"):
        miou([_MAP], [_MASK], threshold="median")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        miou([_MAP], [_MASK], threshold=2.0)
    with pytest.raises(ValueError, match="reduction"):
        miou([_MAP], [_MASK], reduction="class")
    with pytest.raises(ValueError, match="shape"):
        miou([_MAP], [_MASK[:, :3]])


def test_conservation_report():
    total = np.array([2.0, -4.0, 0.0])
    sums = {"layer3": np.array([2.0, -4.0, 0.0]), "layer2": np.array([2.2, -3.0, 0.0])}
    rel = np.arange(24.0).reshape(3, 2, 4)  # per-sample sums 28, 92, 156
    rep = conservation_report({**sums, "input": rel}, total)
    assert list(rep) == ["layer3", "layer2", "input"]
    np.testing.assert_allclose(rep["layer3"], [0.0, 0.0, 0.0])
    # (2.2 - 2) / 2 = 0.1; (-3 - -4) / 4 = 0.25; 0 vs 0 -> 0
    np.testing.assert_allclose(rep["layer2"], [0.1, 0.25, 0.0])
    # (28 - 2) / 2 = 13; (92 + 4) / 4 = 24; 156 vs total 0 -> +inf
    np.testing.assert_allclose(rep["input"], [13.0, 24.0, np.inf])
    with pytest.raises(ValueError, match="leading axes"):
        conservation_report({"x": np.zeros(2)}, total)
