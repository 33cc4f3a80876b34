"""Pointing game and map resizing: hand-made maps whose answers are worked out here."""

import numpy as np
import pytest

from xattr_jax.metrics import argmax_point, point_hit, pointing_game, resize_map


def _peak_map(shape, r, c):
    m = np.zeros(shape, np.float32)
    m[r, c] = 1.0
    return m


def _dot_mask(shape, pixels):
    g = np.zeros(shape, bool)
    for r, c in pixels:
        g[r, c] = True
    return g


def test_argmax_first_max_in_row_major_order():
    m = np.zeros((4, 5))
    m[2, 1] = m[1, 3] = m[3, 0] = 7.0  # three equal maxima; (1, 3) comes first row-major
    assert argmax_point(m) == (1, 3)


def test_tolerance_is_strict():
    shape = (40, 40)
    point = (20, 5)
    # GT pixel 15 columns away: d² = 0² + 15² = 225, and 225 < 15² = 225 is false -> miss
    at_15 = _dot_mask(shape, [(20, 20)])
    assert not point_hit(point, at_15, 15)
    # a tolerance just above 15 catches it: 225 < 15.01² = 225.3001
    assert point_hit(point, at_15, 15.01)
    # GT pixel at (30, 16): d² = 10² + 11² = 221, d ≈ 14.866
    at_1487 = _dot_mask(shape, [(30, 16)])
    assert point_hit(point, at_1487, 15)  # 221 < 225
    assert point_hit(point, at_1487, 14.9)  # 221 < 222.01
    assert not point_hit(point, at_1487, 14.8)  # 221 < 219.04 is false
    # the same through pointing_game
    res = pointing_game([_peak_map(shape, *point)] * 2, [at_15, at_1487], [0, 0], tolerance=15)
    np.testing.assert_array_equal(res["hits"], [False, True])
    assert res["all"] == 0.5
    np.testing.assert_array_equal(res["points"], [[20, 5], [20, 5]])


def test_tolerance_zero_needs_the_point_on_the_mask():
    shape = (6, 6)
    on = _dot_mask(shape, [(2, 3)])
    beside = _dot_mask(shape, [(2, 4)])  # distance 1
    assert point_hit((2, 3), on, 0)
    assert not point_hit((2, 3), beside, 0)
    assert point_hit((2, 3), beside, 1.5)  # 1 < 2.25
    assert not point_hit((2, 3), beside, 1)  # 1 < 1 is false: tolerance 1 is also "on the mask"
    res = pointing_game(
        np.stack([_peak_map(shape, 2, 3)] * 2), np.stack([on, beside]), [4, 4], tolerance=0
    )
    assert res["all"] == 0.5


def test_per_class_mean_with_unequal_counts_and_difficult_subset():
    shape = (30, 30)
    m = _peak_map(shape, 5, 5)
    near = _dot_mask(shape, [(5, 10)])  # d = 5 -> hit
    far = _dot_mask(shape, [(25, 25)])  # d² = 800 -> miss
    masks = [near, near, far, far, near]
    classes = [3, 3, 3, 7, 9]
    difficult = [False, True, True, True, False]
    res = pointing_game([m] * 5, masks, classes, difficult=difficult)
    # class 3: hits 1,1,0 -> 2/3; class 7: 0/1 -> 0; class 9: 1/1 -> 1
    assert res["per_class"] == pytest.approx({3: 2 / 3, 7: 0.0, 9: 1.0})
    assert res["counts"] == {3: (2, 3), 7: (0, 1), 9: (1, 1)}
    # mean over classes (2/3 + 0 + 1) / 3 = 5/9, not the pooled 3/5
    assert res["all"] == pytest.approx(5 / 9, abs=1e-12)
    # difficult trials: #1 (class 3, hit), #2 (class 3, miss), #3 (class 7, miss)
    # class 3: 1/2, class 7: 0 -> (0.5 + 0) / 2 = 0.25; class 9 has no difficult trial
    assert res["per_class_difficult"] == pytest.approx({3: 0.5, 7: 0.0})
    assert res["difficult"] == pytest.approx(0.25, abs=1e-12)
    assert res["num_difficult"] == 3 and res["num_trials"] == 5
    # without flags there is no difficult score
    res2 = pointing_game([m] * 5, masks, classes)
    assert res2["difficult"] is None and res2["num_difficult"] is None


def test_lists_of_differently_sized_maps():
    maps = [_peak_map((10, 12), 9, 11), _peak_map((50, 20), 0, 0), _peak_map((7, 7), 3, 3)]
    masks = [
        _dot_mask((10, 12), [(0, 0)]),  # d² = 81 + 121 = 202 < 225 -> hit
        _dot_mask((50, 20), [(49, 19)]),  # d² = 2401 + 361 -> miss
        np.zeros((7, 7), bool),  # empty mask -> miss
    ]
    res = pointing_game(maps, masks, np.array([1, 1, 2]))
    np.testing.assert_array_equal(res["hits"], [True, False, False])
    assert res["per_class"] == {1: 0.5, 2: 0.0}
    assert res["all"] == pytest.approx(0.25)


def test_pointing_validation_messages():
    m = np.zeros((2, 5, 5))
    g = np.zeros((2, 5, 5), bool)
    with pytest.raises(ValueError, match="same length"):
        pointing_game(m, g[:1], [0, 0])
    with pytest.raises(ValueError, match="resize the map"):
        pointing_game(m, np.zeros((2, 6, 5), bool), [0, 0])
    with pytest.raises(ValueError, match="class_ids"):
        pointing_game(m, g, [0, 0, 0])
    bad = m.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(bad, g, [0, 0])
    with pytest.raises(ValueError, match="2-D"):
        pointing_game([np.zeros((5, 5, 1))], [np.zeros((5, 5), bool)], [0])
    with pytest.raises(ValueError, match="0 and 1"):
        pointing_game(m, np.full((2, 5, 5), 2), [0, 0])
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(m, g, [0, 0], tolerance=-1)
    with pytest.raises(ValueError, match="difficult"):
        pointing_game(m, g, [0, 0], difficult=[True])


# ---------------------------------------------------------------------------------------------
# resize_map


def test_resize_by_hand():
    # 1x2 -> 1x4, scale 0.5: src = (d + 0.5) * 0.5 - 0.5 = -0.25, 0.25, 0.75, 1.25
    # clamp -0.25 -> 0; values 0 + λ·(10 - 0) with i1 clamped at the last pixel:
    # d=0: 0; d=1: 2.5; d=2: 7.5; d=3: i0 = 1 -> 10
    out = resize_map(np.array([[0.0, 10.0]]), (1, 4))
    np.testing.assert_allclose(np.asarray(out), [[0.0, 2.5, 7.5, 10.0]], atol=1e-6)
    # downsampling 4 -> 2 without antialias: src = (d + 0.5) * 2 - 0.5 = 0.5, 2.5
    out = resize_map(np.array([[0.0, 1.0, 2.0, 3.0]]), (1, 2))
    np.testing.assert_allclose(np.asarray(out), [[0.5, 2.5]], atol=1e-6)


@pytest.mark.parametrize(
    "shape,size",
    [
        ((7, 9), (224, 224)),
        ((14, 14), (375, 500)),
        ((50, 40), (13, 17)),
        ((1, 5), (3, 8)),
        ((28, 28), (28, 28)),
    ],
)
def test_resize_matches_torch(shape, size):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2,) + shape).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x)[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0].numpy()
    out = np.asarray(resize_map(x, size))
    assert out.shape == (2,) + size and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(resize_map(x[0], size)), ref[0], rtol=1e-5, atol=1e-5)


def test_resize_jits_and_validates():
    import jax

    x = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    f = jax.jit(lambda m: resize_map(m, (6, 8)))
    np.testing.assert_allclose(np.asarray(f(x)), np.asarray(resize_map(x, (6, 8))), atol=0)
    with pytest.raises(ValueError, match="at least 2"):
        resize_map(np.zeros(5), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        resize_map(x, (0, 3))
