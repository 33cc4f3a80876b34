"""COCO reader and mask rasterisation on a fake instances file written here."""

import json

import numpy as np
import pytest

from xattr_jax.data import annotation_mask, coco_pointing_trials, load_coco, polygon_mask, rle_decode


def _brute_even_odd(poly, h, w):
    """Pixel-by-pixel crossing test at pixel centres (independent of the vectorised rasteriser)."""
    xy = np.asarray(poly, float).reshape(-1, 2)
    out = np.zeros((h, w), bool)
    for r in range(h):
        for c in range(w):
            px, py = c + 0.5, r + 0.5
            inside = False
            for k in range(len(xy)):
                (x0, y0), (x1, y1) = xy[k], xy[(k + 1) % len(xy)]
                if min(y0, y1) <= py < max(y0, y1):
                    if x0 + (py - y0) * (x1 - x0) / (y1 - y0) <= px:
                        inside = not inside
            out[r, c] = inside
    return out


def test_polygon_by_hand():
    # rectangle x in [1, 4], y in [1, 3]: centres 1.5, 2.5, 3.5 (cols 1-3) and 1.5, 2.5 (rows 1-2)
    m = polygon_mask([[1, 1, 4, 1, 4, 3, 1, 3]], 5, 6)
    expect = np.zeros((5, 6), bool)
    expect[1:3, 1:4] = True
    np.testing.assert_array_equal(m, expect)
    # right triangle (0,0), (4,0), (0,4): centre (c+.5, r+.5) inside iff c + r + 1 < 4, i.e. c + r <= 2
    # (c + r = 3 puts the centre on the hypotenuse, which is a right edge -> outside)
    tri = polygon_mask([[0, 0, 4, 0, 0, 4]], 4, 4)
    r, c = np.indices((4, 4))
    np.testing.assert_array_equal(tri, r + c <= 2)
    # two polygons are unioned; a polygon partly outside the image is clipped
    m2 = polygon_mask([[0, 0, 1, 0, 1, 1, 0, 1], [3, 3, 9, 3, 9, 9, 3, 9]], 5, 5)
    assert m2.sum() == 1 + 4 and m2[0, 0] and m2[4, 4] and m2[3, 3]


def test_polygon_close_to_an_even_odd_reference():
    # a pentagram: even-odd leaves its central pentagon empty
    ang = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    star = np.stack([10 + 9 * np.cos(ang), 10 - 9 * np.sin(ang)], 1).ravel()
    m = polygon_mask([star], 20, 20)
    assert not m[10, 10] and m.sum() > 0
    rng = np.random.default_rng(0)
    for _ in range(20):  # pycocotools samples the polygon its own way: equal up to the edges
        poly = rng.uniform(1, 30, size=2 * rng.integers(3, 9))
        ours, ref = polygon_mask([poly], 32, 32), _brute_even_odd(poly, 32, 32)
        union = (ours | ref).sum()
        assert union == 0 or (ours & ref).sum() / union > 0.7


def test_rle_uncompressed_by_hand():
    # 2x3 mask, column-major pixels: (0,0) (1,0) (0,1) (1,1) (0,2) (1,2)
    # counts [1, 2, 3]: one 0, two 1s -> (1,0), (0,1), then three 0s
    m = rle_decode({"size": [2, 3], "counts": [1, 2, 3]})
    np.testing.assert_array_equal(m, [[0, 1, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="add up"):
        rle_decode({"size": [2, 3], "counts": [1, 2]})
    with pytest.raises(ValueError, match="malformed compressed RLE"):
        rle_decode({"size": [4, 4], "counts": "0"})


def test_rle_compressed_vs_pycocotools():
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(10):
        h, w = rng.integers(1, 40, size=2)
        m = rng.random((h, w)) < rng.random()
        if rng.random() < 0.5:  # blocky masks give long runs (multi-character numbers)
            m = np.kron(rng.random((h, w)) < 0.5, np.ones((7, 9), bool))
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        assert isinstance(rle["counts"], bytes)
        np.testing.assert_array_equal(rle_decode(rle), m)
        rle["counts"] = rle["counts"].decode()
        np.testing.assert_array_equal(rle_decode(rle), m)


@pytest.fixture()
def coco_file(tmp_path):
    data = {
        "images": [
            {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 6, "height": 4},
            {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 5, "height": 5},
            {
                "id": 99,
                "file_name": "COCO_val2014_000000000099.jpg",
                "width": 3,
                "height": 3,
            },  # no annotation
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            # image 42: two persons (a polygon and an uncompressed crowd RLE) and a dog
            {
                "id": 1,
                "image_id": 42,
                "category_id": 1,
                "bbox": [0, 0, 2, 2],
                "iscrowd": 0,
                "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]],
            },  # rows 0-1, cols 0-1
            {
                "id": 2,
                "image_id": 42,
                "category_id": 1,
                "bbox": [5, 3, 1, 1],
                "iscrowd": 1,
                # 4x6 column-major: 23 zeros then 1 one = pixel (3, 5)
                "segmentation": {"size": [4, 6], "counts": [23, 1]},
            },
            {
                "id": 3,
                "image_id": 42,
                "category_id": 18,
                "bbox": [3, 1, 2, 2],
                "iscrowd": 0,
                "segmentation": [[3, 1, 5, 1, 5, 3, 3, 3]],
            },  # rows 1-2, cols 3-4
            {
                "id": 4,
                "image_id": 7,
                "category_id": 3,
                "bbox": [1, 1, 3, 3],
                "iscrowd": 0,
                "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]],
            },  # rows 1-3, cols 1-3
        ],
    }
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(data))
    return path


def test_load_coco(coco_file, tmp_path):
    ds = load_coco(coco_file, image_dir=tmp_path / "val2014")
    # categories sorted by id: person (1) -> 0, car (3) -> 1, dog (18) -> 2
    assert ds.category_ids == (1, 3, 18) and ds.class_names == ("person", "car", "dog")
    assert ds.category_to_class == {1: 0, 3: 1, 18: 2}
    # images sorted by id, the unannotated one dropped
    assert [im.image_id for im in ds.images] == [7, 42] and len(ds) == 2
    assert len(load_coco(coco_file, only_annotated=False)) == 3
    im = ds.images[1]
    assert (im.height, im.width) == (4, 6) and im.class_ids == (0, 2)
    assert im.path == tmp_path / "val2014" / "COCO_val2014_000000000042.jpg"
    person = im.class_mask(0)
    expect = np.zeros((4, 6), bool)
    expect[0:2, 0:2] = True
    expect[3, 5] = True  # the crowd region
    np.testing.assert_array_equal(person, expect)
    assert im.class_mask(0, include_crowd=False).sum() == 4
    dog = np.zeros((4, 6), bool)
    dog[1:3, 3:5] = True
    np.testing.assert_array_equal(im.class_mask(2), dog)
    assert ds.images[0].class_mask(1).sum() == 9
    assert coco_pointing_trials(ds) == [(0, 1, None), (1, 0, None), (1, 2, None)]


def test_coco_difficult_list(coco_file, tmp_path):
    lines = ["COCO_val2014_000000000042\t1\t0\t0", "COCO_val2014_000000000007\t0\t0\t0"]
    (tmp_path / "diff.txt").write_text("\n".join(lines) + "\n")
    ds = load_coco(coco_file, difficult_file=tmp_path / "diff.txt")
    assert coco_pointing_trials(ds) == [(0, 1, False), (1, 0, True), (1, 2, False)]


def test_coco_errors(coco_file, tmp_path):
    bad = json.loads(coco_file.read_text())
    bad["annotations"][0]["category_id"] = 5
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="unknown category 5"):
        load_coco(p)
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="instances file"):
        load_coco(p)
    with pytest.raises(ValueError, match="RLE size"):
        annotation_mask({"size": [2, 2], "counts": [4]}, 3, 3)
    with pytest.raises(ValueError, match="at least 3"):
        polygon_mask([[0, 0, 1, 1]], 3, 3)
    with pytest.raises(ValueError, match="image folder"):
        load_coco(coco_file).images[0].load()
