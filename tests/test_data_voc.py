"""VOC07 reader on a fake VOCdevkit tree written here."""

import numpy as np
import pytest

from xattr_jax.data import VOC_CLASSES, load_voc, read_difficult_list, voc_pointing_trials
from xattr_jax.metrics import pointing_game


def _xml(filename, w, h, objects):
    objs = "".join(
        f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, d, b in objects
    )
    return (
        f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )


@pytest.fixture()
def voc(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2007"
    (base / "Annotations").mkdir(parents=True)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "JPEGImages").mkdir()
    (base / "ImageSets" / "Main" / "test.txt").write_text("000001\n000004\n000007\n")
    # 000001: 10x8 image; two dogs (one difficult) and a difficult-only cat
    (base / "Annotations" / "000001.xml").write_text(
        _xml(
            "000001.jpg",
            10,
            8,
            [
                ("dog", 0, (2, 2, 4, 3)),  # 0-based (1, 1, 3, 2)
                ("dog", 1, (7, 6, 10, 8)),  # 0-based (6, 5, 9, 7)
                ("cat", 1, (1, 1, 2, 2)),  # all cat boxes difficult -> no cat trial
            ],
        )
    )
    # 000004: 6x5 image; one person box covering the right half
    (base / "Annotations" / "000004.xml").write_text(
        _xml("000004.jpg", 6, 5, [("person", 0, (4, 1, 6, 5))])
    )
    # 000007: 4x4, aeroplane + tvmonitor
    (base / "Annotations" / "000007.xml").write_text(
        _xml("000007.jpg", 4, 4, [("aeroplane", 0, (1, 1, 1, 1)), ("tvmonitor", 0, (3, 3, 4, 4))])
    )
    flags = {"000001": {11}, "000004": set(), "000007": {0, 19}}  # dog = 11
    lines = [k + "\t" + "\t".join("1" if c in v else "0" for c in range(20)) for k, v in flags.items()]
    (tmp_path / "difficult.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_class_list():
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[11] == "dog" and VOC_CLASSES[14] == "person"
    assert list(VOC_CLASSES) == sorted(VOC_CLASSES)


def test_parse_tree(voc):
    recs = load_voc(voc)  # the folder holding VOCdevkit
    assert [r.image_id for r in recs] == ["000001", "000004", "000007"]
    r = recs[0]
    assert (r.width, r.height) == (10, 8)
    assert r.path.name == "000001.jpg" and r.path.parent.name == "JPEGImages"
    assert [(o.name, o.class_id, o.box, o.difficult) for o in r.objects] == [
        ("dog", 11, (1, 1, 3, 2), False),
        ("dog", 11, (6, 5, 9, 7), True),
        ("cat", 7, (0, 0, 1, 1), True),
    ]
    assert r.class_ids == (7, 11)
    assert r.all_difficult(7) and not r.all_difficult(11) and not r.all_difficult(3)
    assert r.pointing_class_ids() == (11,)
    # dog mask = union of cols 1..3 x rows 1..2 (6 px) and cols 6..9 x rows 5..7 (12 px)
    m = r.class_mask(11)
    assert m.shape == (8, 10) and m.sum() == 6 + 12
    assert m[1, 1] and m[2, 3] and not m[3, 3] and m[7, 9] and not m[4, 6]
    assert r.class_mask(11, include_difficult=False).sum() == 6
    # person: xmin 4..6 -> cols 3..5, ymin 1..5 -> rows 0..4: the right half of a 6x5 image
    pm = recs[1].class_mask(14)
    np.testing.assert_array_equal(pm, np.tile([0, 0, 0, 1, 1, 1], (5, 1)).astype(bool))
    # also accepts the VOC2007 folder itself
    assert [r.image_id for r in load_voc(voc / "VOCdevkit" / "VOC2007")] == [
        "000001",
        "000004",
        "000007",
    ]


def test_difficult_list_and_trials(voc):
    flags = read_difficult_list(voc / "difficult.txt", 20)
    assert flags["000001"].dtype == bool and flags["000001"].sum() == 1 and flags["000001"][11]
    recs = load_voc(voc, difficult_file=voc / "difficult.txt")
    trials = voc_pointing_trials(recs)
    # the all-difficult cat of 000001 is skipped
    assert trials == [(0, 11, True), (1, 14, False), (2, 0, True), (2, 19, True)]
    assert voc_pointing_trials(load_voc(voc))[0] == (0, 11, None)
    # end to end: points at each trial's first mask pixel -> all hits
    masks = [recs[i].class_mask(c) for i, c, _ in trials]
    maps = [m.astype(np.float32) for m in masks]
    res = pointing_game(maps, masks, [c for _, c, _ in trials], difficult=[d for *_, d in trials])
    assert res["all"] == 1.0 and res["num_difficult"] == 3


def test_shipped_difficult_list_format():
    # the EB / TorchRay list ships with the torchray package: 4952 images x 20 flags
    torchray = pytest.importorskip("torchray")
    from pathlib import Path

    path = Path(torchray.__file__).parent / "benchmark" / "pointing_game_ebp_voc07_difficult.txt"
    if not path.is_file():
        pytest.skip("torchray without its benchmark files")
    flags = read_difficult_list(path, 20)
    assert len(flags) == 4952
    assert sum(int(v.sum()) for v in flags.values()) == 2230  # docs/evaluation.md#difficult-subset
    assert sum(bool(v.any()) for v in flags.values()) == 1467


def test_errors(voc, tmp_path):
    with pytest.raises(FileNotFoundError, match="no VOC2007 tree"):
        load_voc(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="image list"):
        load_voc(voc, split="val")
    bad = voc / "VOCdevkit" / "VOC2007" / "Annotations" / "000009.xml"
    bad.write_text(_xml("000009.jpg", 4, 4, [("unicorn", 0, (1, 1, 2, 2))]))
    with pytest.raises(ValueError, match="unknown class 'unicorn'"):
        load_voc(voc, image_ids=["000009"])
    bad.write_text(_xml("000009.jpg", 4, 4, [("dog", 0, (3, 1, 2, 2))]))
    with pytest.raises(ValueError, match="inverted"):
        load_voc(voc, image_ids=["000009"])
    (tmp_path / "short.txt").write_text("000001\t0\t1\n")
    with pytest.raises(ValueError, match="20 flags"):
        read_difficult_list(tmp_path / "short.txt", 20)
    (tmp_path / "partial.txt").write_text("000001" + "\t0" * 20 + "\n")
    with pytest.raises(KeyError, match="000004"):
        load_voc(voc, difficult_file=tmp_path / "partial.txt")
    with pytest.raises(FileNotFoundError, match="image file"):
        load_voc(voc)[0].load()
