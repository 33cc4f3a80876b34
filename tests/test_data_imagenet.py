"""ILSVRC2012 val reader and `xattr eval --dataset imagenet` on fake trees written here.

Images are written as PNG bytes (the reader matches files by name; decoding sniffs the content), so
``.JPEG`` / ``.jpg`` names need no JPEG encoder.
"""

import json

import numpy as np
import pytest

from xattr_jax.app.cli import main
from xattr_jax.data import load_imagenet, read_synsets
from xattr_jax.data.samples import imagenet_samples

# class order of the fake synsets file: tench 0, goldfish 1, great white shark 2, tiger shark 3
SYNSETS = ["n01440764", "n01443537", "n01484850", "n01491361"]
MAPPING = "".join(
    f"{w} {name}\n"
    for w, name in zip(SYNSETS, ["tench, Tinca tinca", "goldfish, Carassius auratus",
                                 "great white shark", "tiger shark, Galeocerdo cuvieri"])
)  # fmt: skip
ID1, ID2 = "ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"


def _xml(stem, w, h, objects):
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return (
        f"<annotation><folder>val</folder><filename>{stem}</filename><source><database>ILSVRC_2012"
        f"</database></source><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objs}</annotation>"
    )


# stem: (width, height, [(wnid, (xmin, ymin, xmax, ymax))])
SPECS = {
    # 12x10: two goldfish; the second box's xmax 13 is clipped to W - 1 = 11
    ID1: (12, 10, [("n01443537", (2, 3, 5, 6)), ("n01443537", (8, 0, 13, 9))]),
    # 8x6: a tiger shark at the top left and a tench at the bottom right
    ID2: (8, 6, [("n01491361", (0, 0, 3, 2)), ("n01440764", (4, 2, 7, 5))]),
}


def write_png(path, img):
    """PNG bytes (lossless) whatever the name says: readers go by the content, not the extension."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path, format="PNG")


def _tree(root, folders=None, names=None, specs=SPECS):
    """ROOT/annotations/val/*.xml and ROOT/images/ (flat, or in ``folders[stem]``)."""
    names = names or {ID1: f"{ID1}.JPEG", ID2: f"{ID2}.png"}
    for stem, (w, h, objs) in specs.items():
        (root / "annotations" / "val").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "val" / f"{stem}.xml").write_text(_xml(stem, w, h, objs))
        sub = root / "images" / (folders[stem] if folders else "")
        img = np.full((h, w, 3), 0.5, np.float32)
        x0, y0, x1, y1 = objs[0][1]
        img[y0 : y1 + 1, x0 : x1 + 1] = (0.9, 0.1, 0.1)
        write_png(sub / names[stem], img)
    return root


def test_flat_layout_with_a_synsets_file(tmp_path):
    _tree(tmp_path)
    (tmp_path / "synsets.txt").write_text(MAPPING)
    recs = load_imagenet(tmp_path)
    assert [r.image_id for r in recs] == [ID1, ID2]
    r1, r2 = recs
    assert (r1.width, r1.height, r2.width, r2.height) == (12, 10, 8, 6)
    assert r1.path == tmp_path / "images" / f"{ID1}.JPEG" and r2.path.name == f"{ID2}.png"
    assert r1.difficult_flags is None and r2.difficult_flags is None
    # 0-based inclusive, kept as they are; xmax 13 clipped to 11
    assert [(o.class_id, o.wnid, o.box) for o in r1.objects] == [
        (1, "n01443537", (2, 3, 5, 6)),
        (1, "n01443537", (8, 0, 11, 9)),
    ]
    assert [(o.class_id, o.box) for o in r2.objects] == [(3, (0, 0, 3, 2)), (0, (4, 2, 7, 5))]
    assert r1.class_ids == (1,) and r2.class_ids == (0, 3)
    # goldfish mask: cols 2..5 x rows 3..6 (16 px) + cols 8..11 x rows 0..9 (40 px)
    want = np.zeros((10, 12), bool)
    want[3:7, 2:6] = True
    want[:, 8:12] = True
    np.testing.assert_array_equal(r1.class_mask(1), want)
    assert r1.class_mask(1).sum() == 56
    assert not r1.class_mask(0).any()
    # 8x6 image: tiger shark = top-left 4x3 block, tench = bottom-right 4x4 block
    shark = np.zeros((6, 8), bool)
    shark[0:3, 0:4] = True
    tench = np.zeros((6, 8), bool)
    tench[2:6, 4:8] = True
    np.testing.assert_array_equal(r2.class_mask(3), shark)
    np.testing.assert_array_equal(r2.class_mask(0), tench)
    img = r1.load()
    assert img.shape == (10, 12, 3) and img[3, 2, 0] == pytest.approx(0.9, abs=1 / 255)


def test_class_order_files(tmp_path):
    _tree(tmp_path)
    # LOC_synset_mapping.txt is the fallback default
    (tmp_path / "LOC_synset_mapping.txt").write_text(MAPPING)
    assert [o.class_id for o in load_imagenet(tmp_path)[1].objects] == [3, 0]
    # an explicit plain wnid list (blank lines skipped) wins: reversed order
    plain = tmp_path / "order.txt"
    plain.write_text("\n".join(SYNSETS[::-1]) + "\n\n")
    assert read_synsets(plain) == tuple(SYNSETS[::-1])
    recs = load_imagenet(tmp_path, synsets=plain)
    assert [o.class_id for o in recs[1].objects] == [0, 3] and recs[0].class_ids == (2,)
    # images= and annotations= without a root
    recs = load_imagenet(None, images=tmp_path / "images", annotations=tmp_path / "annotations",
                         synsets=plain)  # fmt: skip
    assert [r.image_id for r in recs] == [ID1, ID2]


def test_synset_folders_give_the_sorted_class_order(tmp_path):
    # torchvision's ImageFolder layout: 1000 folders n00000000 .. n00000999 -> class k = folder k
    wnids = [f"n{k:08d}" for k in range(1000)]
    specs = {
        ID1: (12, 10, [("n00000417", (2, 3, 5, 6))]),
        ID2: (8, 6, [("n00000003", (0, 0, 3, 2)), ("n00000999", (4, 2, 7, 5))]),
    }
    for w in wnids[::-1]:  # creation order does not matter
        (tmp_path / "images" / w).mkdir(parents=True)
    _tree(tmp_path, folders={ID1: "n00000417", ID2: "n00000003"},
          names={ID1: f"{ID1}.jpeg", ID2: f"{ID2}.jpg"}, specs=specs)  # fmt: skip
    r1, r2 = load_imagenet(tmp_path)
    assert r1.path == tmp_path / "images" / "n00000417" / f"{ID1}.jpeg"
    assert r1.class_ids == (417,) and r2.class_ids == (3, 999)
    assert [o.box for o in r2.objects] == [(0, 0, 3, 2), (4, 2, 7, 5)]
    # a synsets file still takes precedence over the folders
    (tmp_path / "synsets.txt").write_text("\n".join(["n00000999", "n00000417", "n00000003"]))
    r1, r2 = load_imagenet(tmp_path)
    assert r1.class_ids == (1,) and r2.class_ids == (0, 2)


def test_class_order_errors(tmp_path):
    _tree(tmp_path)
    with pytest.raises(ValueError, match="no class order") as e:
        load_imagenet(tmp_path)
    assert "--synsets" in str(e.value) and "sub-folder per synset" in str(e.value)
    sub = tmp_path / "sub"
    _tree(sub, folders={ID1: "n01443537", ID2: "n01491361"})
    (sub / "images" / "n01440764").mkdir()
    with pytest.raises(ValueError, match="has 3 sub-folders") as e:
        load_imagenet(sub)
    assert "exactly 1000" in str(e.value) and "--synsets" in str(e.value)
    (tmp_path / "synsets.txt").write_text("n01443537\n")
    with pytest.raises(ValueError, match=f"{ID2}.xml.*'n01491361'.*not in the class list"):
        load_imagenet(tmp_path)
    (tmp_path / "synsets.txt").write_text("n01443537 goldfish\n\nn01443537 again\n")
    with pytest.raises(ValueError, match=r"synsets.txt:3: synset 'n01443537' already listed on line 1"):
        load_imagenet(tmp_path)
    (tmp_path / "synsets.txt").write_text("\n")
    with pytest.raises(ValueError, match="no synset"):
        load_imagenet(tmp_path)
    with pytest.raises(FileNotFoundError, match="synsets file not found"):
        load_imagenet(tmp_path, synsets=tmp_path / "missing.txt")


def test_layout_errors(tmp_path):
    (tmp_path / "synsets.txt").write_text(MAPPING)
    with pytest.raises(ValueError, match="root"):
        load_imagenet(None, images=tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder not found.*--images"):
        load_imagenet(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="annotation folder not found.*bbox_val_v3"):
        load_imagenet(tmp_path)
    (tmp_path / "annotations").mkdir()
    with pytest.raises(ValueError, match=r"no \*\.xml annotation file under"):
        load_imagenet(tmp_path)
    _tree(tmp_path)
    (tmp_path / "images" / f"{ID2}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"{ID2}.xml: no image {ID2}.JPEG"):
        load_imagenet(tmp_path)
    write_png(tmp_path / "images" / f"{ID2}.png", np.zeros((5, 8, 3)))  # the XML says 8x6
    assert len(load_imagenet(tmp_path)) == 2  # sizes are checked when the pixels are read
    with pytest.raises(ValueError, match=f"{ID2}.png: image is 8x5, the XML says 8x6"):
        [s.read() for s in imagenet_samples(tmp_path)]
    write_png(tmp_path / "images" / "n01440764" / f"{ID2}.JPEG", np.zeros((6, 8, 3)))
    with pytest.raises(ValueError, match=f"two images named '{ID2}'"):
        load_imagenet(tmp_path)
    (tmp_path / "annotations" / "val" / f"{ID1}.xml").write_text(
        _xml(ID1, 12, 10, [("n01443537", (5, 3, 2, 6))]))
    (tmp_path / "images" / f"{ID2}.png").unlink()
    with pytest.raises(ValueError, match="inverted box"):
        load_imagenet(tmp_path)
    (tmp_path / "annotations" / "val" / f"{ID1}.xml").write_text(_xml(ID1, 12, 10, []))
    (tmp_path / "annotations" / "val" / f"{ID2}.xml").unlink()
    with pytest.raises(ValueError, match="none of the 1 ImageNet annotations read has an <object> box"):
        imagenet_samples(tmp_path)


def test_imagenet_samples(tmp_path):
    _tree(tmp_path)
    (tmp_path / "synsets.txt").write_text(MAPPING)
    samples = imagenet_samples(tmp_path)
    assert [s.key for s in samples] == [ID1, ID2]
    s1, s2 = samples
    assert s1.read().shape == (10, 12, 3) and s1.orig_size == (10, 12) and s2.orig_size == (6, 8)
    assert [t.class_id for t in s1.trials] == [1] and [t.class_id for t in s2.trials] == [0, 3]
    assert all(t.difficult is None for s in samples for t in s.trials)
    np.testing.assert_array_equal(s1.trials[0].boxes, [[2, 3, 5, 6], [8, 0, 11, 9]])
    assert s1.trials[0].mask.sum() == 56
    np.testing.assert_array_equal(s2.trials[1].boxes, [[0, 0, 3, 2]])
    assert [s.key for s in imagenet_samples(tmp_path, limit=1)] == [ID1]


def test_eval_imagenet_command(tmp_path, capsys):
    _tree(tmp_path)
    (tmp_path / "synsets.txt").write_text(MAPPING)  # 4 synsets: indices fit small_vgg's 20 outputs
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", "imagenet", "--root", str(tmp_path), "--checkpoint",
               "embedded:small_vgg", "--preprocess", "embedded", "--methods", "gradient",
               "--deletion-images", "1", "--deletion-steps", "4", "--no-progress",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["dataset"] == "imagenet" and res["num_images"] == 2 and res["num_trials"] == 3
    assert res["score"] == "softmax"  # the per-dataset default
    assert res["difficult_flags"] is False and res["tolerance_px"] == 15.0
    g = res["methods"]["gradient"]
    assert 0 <= g["pointing_all"] <= 1 and g["pointing_difficult"] is None
    assert 0 <= res["center"]["pointing_all"] <= 1
    assert 0 <= g["deletion_auc"] <= 1 and 0 <= g["insertion_auc"] <= 1
    # an explicit --score wins
    rc = main(["eval", "--dataset", "imagenet", "--images", str(tmp_path / "images"),
               "--annotations", str(tmp_path / "annotations"), "--synsets",
               str(tmp_path / "synsets.txt"), "--checkpoint", "embedded:small_vgg",
               "--methods", "grad_cam", "--score", "sigmoid", "--deletion-images", "0",
               "--no-progress", "--out", str(out / "sigmoid")])  # fmt: skip
    assert rc == 0 and json.loads((out / "sigmoid" / "eval.json").read_text())["score"] == "sigmoid"
    capsys.readouterr()
    assert main(["eval", "--dataset", "imagenet", "--out", str(out)]) == 2
    assert "imagenet needs its files: --root ROOT with ROOT/annotations/" in capsys.readouterr().err
    assert main(["eval", "--dataset", "imagenet", "--root", str(tmp_path), "--difficult",
                 str(tmp_path / "synsets.txt"), "--out", str(out)]) == 2  # fmt: skip
    assert "no difficult list" in capsys.readouterr().err
    (tmp_path / "synsets.txt").unlink()
    assert main(["eval", "--dataset", "imagenet", "--root", str(tmp_path), "--out", str(out)]) == 2
    assert "no class order" in capsys.readouterr().err
