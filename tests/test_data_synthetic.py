"""The synthetic localisation benchmark: determinism, consistency of labels, masks and flags."""

import time

import numpy as np
import pytest

from xattr_jax.data import synthetic as syn


@pytest.fixture(scope="module")
def ds():
    return syn.make_dataset(60, size=64, seed=0)


def test_classes():
    assert syn.NUM_CLASSES == 20 and len(set(syn.CLASS_NAMES)) == 20
    assert syn.CLASS_NAMES[0] == "red disk" and syn.CLASS_NAMES[19] == "yellow cross"
    assert syn.CLASS_NAMES[4 * syn.SHAPES.index("ring") + syn.COLOURS.index("blue")] == "blue ring"


def test_same_seed_same_data_other_seed_differs(ds):
    again = syn.make_dataset(60, size=64, seed=0)
    for f in (
        "images",
        "labels",
        "segmentation",
        "instances",
        "trial_image",
        "trial_class",
        "trial_masks",
        "difficult",
    ):
        np.testing.assert_array_equal(getattr(ds, f), getattr(again, f), err_msg=f)
    other = syn.make_dataset(60, size=64, seed=1)
    assert not np.array_equal(ds.images, other.images)
    # prefix-stable: the first 10 images do not depend on n
    head = syn.make_dataset(10, size=64, seed=0)
    np.testing.assert_array_equal(head.images, ds.images[:10])


def test_shapes_ranges_and_consistency(ds):
    n = 60
    assert ds.images.shape == (n, 64, 64, 3) and ds.images.dtype == np.float32
    assert ds.images.min() >= 0 and ds.images.max() <= 1
    assert ds.labels.shape == (n, 20) and set(np.unique(ds.labels)) <= {0.0, 1.0}
    assert np.all(ds.labels.sum(1) >= 1) and np.all(ds.labels.sum(1) <= 3)
    assert len(ds) == n and len(ds.objects) == n
    t = ds.trial_image.size
    assert (
        ds.trial_class.shape == (t,)
        and ds.trial_masks.shape == (t, 64, 64)
        and ds.difficult.shape == (t,)
    )
    # one trial per (image, class present)
    assert t == int(ds.labels.sum())
    np.testing.assert_array_equal(ds.labels[ds.trial_image, ds.trial_class], 1.0)
    for k in range(t):
        i, c = ds.trial_image[k], ds.trial_class[k]
        union = np.zeros((64, 64), bool)
        boxes = np.zeros((64, 64), bool)
        for o in ds.objects[i]:
            if o.class_id == c:
                union |= o.mask
                x0, y0, x1, y1 = o.box
                boxes[y0 : y1 + 1, x0 : x1 + 1] = True
        np.testing.assert_array_equal(ds.trial_masks[k], union)
        np.testing.assert_array_equal(ds.class_mask(i, c), union)
        assert union.any()
        # difficult: boxes cover < 1/4 of the image and another class is present
        assert ds.difficult[k] == (boxes.sum() < 64 * 64 / 4 and ds.labels[i].sum() > 1)
    # objects: masks are disjoint (visible pixels), boxes are the masks' tight boxes
    for i in range(n):
        for k, o in enumerate(ds.objects[i]):
            np.testing.assert_array_equal(o.mask, ds.instances[i] == k + 1)
            rows, cols = np.nonzero(o.mask)
            assert o.box == (cols.min(), rows.min(), cols.max(), rows.max())
    # both kinds of trial occur
    assert 0 < ds.difficult.mean() < 1


def test_generation_is_fast():
    t0 = time.perf_counter()
    syn.make_dataset(500, size=64, seed=5)
    assert time.perf_counter() - t0 < 5.0  # ~0.6 s on two cores


def test_iterate_batches_and_normalize(ds):
    batches = list(syn.iterate_batches(ds, 16))
    assert [b["image"].shape[0] for b in batches] == [16, 16, 16, 12]
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), np.arange(60))
    np.testing.assert_allclose(batches[0]["image"], syn.normalize(ds.images[:16]))
    np.testing.assert_allclose(
        batches[0]["image"][..., 0], (ds.images[:16, ..., 0] - 0.485) / 0.229, rtol=1e-6
    )
    shuffled = list(syn.iterate_batches(ds, 16, shuffle=True, seed=3, drop_last=True, normalized=False))
    assert len(shuffled) == 3
    idx = np.concatenate([b["index"] for b in shuffled])
    assert len(set(idx.tolist())) == 48 and not np.array_equal(idx, np.arange(48))
    np.testing.assert_array_equal(shuffled[1]["image"], ds.images[shuffled[1]["index"]])
    np.testing.assert_array_equal(shuffled[1]["label"], ds.labels[shuffled[1]["index"]])


def test_validation():
    with pytest.raises(ValueError, match="positive"):
        syn.make_dataset(0)
    with pytest.raises(ValueError, match="size"):
        syn.make_dataset(2, size=16)
    with pytest.raises(ValueError, match="channels"):
        syn.normalize(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="batch_size"):
        next(syn.iterate_batches(syn.make_dataset(2), 0))
