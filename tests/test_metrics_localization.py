"""Localisation boxes, IoU and MaxBoxAcc on hand-made maps; the labeller against scipy."""

import numpy as np
import pytest

from xattr_jax.metrics import (
    box_from_map,
    box_iou,
    connected_components,
    label_components,
    localization_accuracy,
    max_box_acc,
)


def _two_blobs():
    m = np.zeros((8, 10))
    # component A: 3 pixels of value 1.0, rows 1-2, cols 1-2
    m[1, 1] = m[1, 2] = m[2, 1] = 1.0
    # component B: 5 pixels of value 0.5, rows 4-6, cols 5-8 (the pixel (6, 8) touches (5, 7)
    # only diagonally: one component under 8-connectivity, two under 4)
    m[4, 5] = m[4, 6] = m[5, 6] = m[5, 7] = m[6, 8] = 0.5
    # a faint pixel below every threshold used here: 0.1 < 0.15 * 1.0
    m[7, 0] = 0.1
    return m


def test_box_from_map_two_components():
    m = _two_blobs()
    # threshold 0.15 -> level 0.15: A (3 px) and B (5 px) are in; B is larger
    # B spans cols 5..8 and rows 4..6 -> (x0, y0, x1, y1) = (5, 4, 8, 6), inclusive
    np.testing.assert_array_equal(box_from_map(m, 0.15), [5, 4, 8, 6])
    # threshold 0.6 -> level 0.6: only A -> cols 1..2, rows 1..2
    np.testing.assert_array_equal(box_from_map(m, 0.6), [1, 1, 2, 2])
    # 4-connectivity splits B into 4 px {(4,5),(4,6),(5,6),(5,7)} and 1 px (6,8): A (3 px) < 4 px
    np.testing.assert_array_equal(box_from_map(m, 0.15, connectivity=4), [5, 4, 7, 5])
    # threshold 0 -> level 0: every pixel >= 0 is in, one component = the whole map
    np.testing.assert_array_equal(box_from_map(m, 0.0), [0, 0, 9, 7])
    # equal sizes: the component whose first pixel comes first in raster order wins
    t = np.zeros((5, 5))
    t[0, 3] = t[4, 0] = 1.0
    np.testing.assert_array_equal(box_from_map(t), [3, 0, 3, 0])
    # no positive value -> no box
    assert box_from_map(-np.ones((3, 3))) is None


def test_box_from_map_minmax():
    m = _two_blobs() + 10.0  # a constant offset defeats "fraction of max" (everything >= 1.5)
    np.testing.assert_array_equal(box_from_map(m, 0.15), [0, 0, 9, 7])
    # min-max normalised: (m - 10) / 1 -> same as the original map
    np.testing.assert_array_equal(box_from_map(m, 0.15, normalize="minmax"), [5, 4, 8, 6])


def test_box_iou_by_hand():
    a = np.array([0, 0, 3, 3])  # 4 x 4 = 16 pixels
    b = np.array([2, 2, 5, 5])  # 16 pixels; overlap cols 2..3 x rows 2..3 = 4 pixels
    assert float(box_iou(a, b)) == pytest.approx(4 / (16 + 16 - 4))
    assert float(box_iou(a, a)) == 1.0
    assert float(box_iou(a, [4, 0, 6, 3])) == 0.0  # touching edges, no shared pixel
    # one shared pixel: (3, 3); areas 16 and 1 -> 1 / 16
    assert float(box_iou(a, [3, 3, 3, 3])) == pytest.approx(1 / 16)
    # broadcasting [2, 4] against [4]
    np.testing.assert_allclose(box_iou(np.stack([a, b]), a), [1.0, 4 / 28])
    with pytest.raises(ValueError, match="x1 < x0"):
        box_iou([3, 0, 1, 1], a)
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        box_iou([0, 0, 1], a)


def test_localization_accuracy_by_hand():
    m = _two_blobs()
    # map 0 -> box (5, 4, 8, 6) (12 px); GT exactly it -> IoU 1 -> correct
    # map 1 -> same box; GT (5, 4, 8, 8) has 20 px, IoU = 12 / 20 = 0.6 -> correct
    # map 2 -> same box; GT (0, 0, 3, 3), disjoint -> IoU 0, wrong
    gts = [[5, 4, 8, 6], [[0, 0, 1, 1], [5, 4, 8, 8]], [0, 0, 3, 3]]
    res = localization_accuracy([m, m, m], gts)
    np.testing.assert_allclose(res["iou"], [1.0, 0.6, 0.0])
    np.testing.assert_array_equal(res["correct"], [True, True, False])
    assert res["accuracy"] == pytest.approx(2 / 3)
    # IoU 0.6 fails a 0.7 criterion
    assert localization_accuracy([m, m, m], gts, iou=0.7)["accuracy"] == pytest.approx(1 / 3)
    # a wrong class guess makes a trial wrong
    res = localization_accuracy([m, m, m], gts, class_correct=[True, False, True])
    assert res["accuracy"] == pytest.approx(1 / 3)


def test_max_box_acc_by_hand():
    a = _two_blobs()  # box (5,4,8,6) for t <= 0.5, (1,1,2,2) for 0.5 < t <= 1
    b = np.zeros((6, 6))
    b[0:2, 0:2] = 1.0  # 4 px at 1.0
    b[3:6, 3:6] = 0.3  # 9 px at 0.3 -> larger while t <= 0.3
    gts = [[1, 1, 2, 2], [0, 0, 1, 1]]
    # thresholds 0.1: a -> B box (IoU 0 with A's GT), b -> 0.3 block at (3,3,5,5) (IoU 0) : acc 0
    # thresholds 0.4: a -> B box (IoU 0), b -> (0,0,1,1) (IoU 1) : acc 1/2
    # thresholds 0.7: a -> A box (IoU 1), b -> (0,0,1,1) (IoU 1) : acc 1
    res = max_box_acc([a, b], gts, thresholds=[0.1, 0.4, 0.7, 0.9])
    np.testing.assert_allclose(res["curve"], [0.0, 0.5, 1.0, 1.0])
    assert res["accuracy"] == 1.0 and res["threshold"] == pytest.approx(0.7)  # first best
    # the default sweep 0, 0.01, ..., 0.99 has 100 points; the first one above 0.5 is 0.51
    res = max_box_acc([a, b], gts)
    assert res["curve"].shape == (100,)
    assert res["threshold"] == pytest.approx(0.51)


def test_labeller_matches_a_flood_fill():
    """Labels, sizes and boxes against a breadth-first flood fill written here."""
    from collections import deque

    def flood(m, conn):
        lab, k = np.zeros(m.shape, np.int32), 0
        steps = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if conn == 8 else [])
        for r0, c0 in zip(*np.nonzero(m)):  # raster order: components numbered by first pixel
            if lab[r0, c0]:
                continue
            k += 1
            lab[r0, c0] = k
            q = deque([(r0, c0)])
            while q:
                r, c = q.popleft()
                for dr, dc in steps:
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < m.shape[0] and 0 <= cc < m.shape[1] and m[rr, cc] and not lab[rr, cc]:
                        lab[rr, cc] = k
                        q.append((rr, cc))
        return lab, k

    rng = np.random.default_rng(1)
    for _ in range(100):
        h, w = rng.integers(1, 25, size=2)
        m = rng.random((h, w)) < rng.random()
        for conn in (8, 4):
            ref, k = flood(m, conn)
            lab, kk = label_components(m, conn)
            assert kk == k
            np.testing.assert_array_equal(lab, ref)
            comp = connected_components(m, conn)
            np.testing.assert_array_equal(comp.sizes, np.bincount(ref.ravel(), minlength=k + 1)[1:])
            for j in range(k):
                rr, cc = np.nonzero(ref == j + 1)
                np.testing.assert_array_equal(comp.boxes[j], [cc.min(), rr.min(), cc.max(), rr.max()])


def test_localization_validation():
    with pytest.raises(ValueError, match="one entry per map"):
        localization_accuracy(np.zeros((2, 4, 4)), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        box_from_map(np.ones((3, 3)), 1.5)
    with pytest.raises(ValueError, match="normalize"):
        box_from_map(np.ones((3, 3)), normalize="sum")
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(np.ones((3, 3), bool), 6)
