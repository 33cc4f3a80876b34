"""`xattr eval` and its harness: synthetic, fake VOC07 and COCO14 trees, map post-processing.

``test_harness_numbers_worked_by_hand`` runs the harness on a fake VOC tree with a linear model
whose gradient map for each class is a single pixel chosen in the test, so every hit, the centre
baseline and the box accuracies are worked out by hand below.
"""

import json

import numpy as np
import pytest
from PIL import Image

from xattr_jax.app.cli import main
from xattr_jax.app.eval_cli import SYNTHETIC_TOLERANCE
from xattr_jax.data import VOC_CLASSES
from xattr_jax.data.preprocess import preprocess
from xattr_jax.data.samples import synthetic_samples, voc_samples
from xattr_jax.harness import evaluate, markdown_table
from xattr_jax.harness.protocols import gaussian_smooth, pointing_map

from _processes import run_on_two_processes


def write_png(path, img):
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)

FAST = ["--methods", "gradient,grad_cam", "--deletion-images", "2",
        "--deletion-steps", "4", "--batch-size", "4", "--no-progress"]  # fmt: skip


def test_gaussian_smooth_properties():
    assert np.allclose(gaussian_smooth(np.full((9, 7), 3.0), 1.5), 3.0, atol=1e-6)  # replicate pad
    delta = np.zeros((41, 41))
    delta[20, 20] = 1
    out = gaussian_smooth(delta, 2.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-6)  # nothing reaches the border
    np.testing.assert_allclose(out, out.T, atol=1e-7)
    assert np.count_nonzero(out[20] > 0) == 2 * 8 + 1  # half-width ceil(4 sigma) = 8
    assert out[20, 21] / out[20, 20] == pytest.approx(np.exp(-1 / 8), rel=1e-5)
    np.testing.assert_array_equal(gaussian_smooth(delta, 0), delta)


def test_pointing_map_smooths_only_the_gradient_family_and_resizes():
    m = np.zeros((16, 16), np.float32)
    m[3, 3] = 1
    a = pointing_map(m, "gradient", (16, 16), (32, 48))
    b = pointing_map(m, "grad_cam", (16, 16), (32, 48))
    assert a.shape == b.shape == (32, 48)
    assert np.count_nonzero(a > 1e-6) > np.count_nonzero(b > 1e-6)


def test_preprocess_conventions():
    img = np.random.default_rng(0).random((30, 45, 3)).astype(np.float32)
    x, r = preprocess(img, "imagenet")
    assert x.shape == (224, 336, 3) and r.shape == (224, 336, 3)  # shorter side 224, aspect kept
    x, r = preprocess(img, "embedded")
    assert x.shape == (64, 64, 3)
    assert abs(float(x.mean())) < 3
    big = np.random.default_rng(1).random((300, 400, 3)).astype(np.float32)
    x, r = preprocess(big, "torchvision")  # 256 on the shorter side, centre 224 crop
    assert x.shape == (224, 224, 3)
    ref = np.asarray(Image.fromarray(big[..., 0], mode="F").resize((341, 256), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(r[..., 0], np.clip(ref[16:240, 58:282], 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="'embedded', 'imagenet', 'torchvision'"):
        preprocess(img, "nope")


def test_harness_on_synthetic_reports_failures_and_writes_a_table():
    from xattr_jax.models import load_embedded

    model, variables = load_embedded("small_vgg")
    samples = synthetic_samples(4)
    res = evaluate(model, variables, samples, ["grad_cam", "no_such_method"], batch_size=4, preprocess="embedded",
                   tolerance=SYNTHETIC_TOLERANCE, deletion_images=2, deletion_steps=4,
                   progress=False, log=lambda s: None)  # fmt: skip
    e = res["methods"]["grad_cam"]
    assert 0 <= e["pointing_all"] <= 1 and 0 <= e["box_acc"] <= 1 and 0 <= e["max_box_acc"] <= 1
    assert 0 <= e["deletion_auc"] <= 1 and 0 <= e["insertion_auc"] <= 1
    assert "error" in res["methods"]["no_such_method"]
    assert res["num_trials"] == sum(len(s.trials) for s in samples)
    md = markdown_table(res)
    assert "| grad_cam |" in md and "center (baseline)" in md


def test_eval_synthetic_command(tmp_path):
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", "synthetic", "--num-images", "4", "--checkpoint",
               "embedded:small_resnet", "--out", str(out), *FAST])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["arch"] == "small_resnet" and res["tolerance_px"] == pytest.approx(SYNTHETIC_TOLERANCE)
    assert set(res["methods"]) == {"gradient", "grad_cam"}
    for m, e in res["methods"].items():  # each method ran: no error entry, scores in range
        assert "error" not in e, f"{m}: {e}"
        assert 0 <= e["pointing_all"] <= 1 and 0 <= e["deletion_auc"] <= 1, f"{m}: {e}"
    assert (out / "eval.md").read_text().startswith("### synthetic")


def _image(h, w, box, colour=(0.9, 0.1, 0.1)):
    img = np.full((h, w, 3), 0.5, np.float32)
    x0, y0, x1, y1 = box
    img[y0 : y1 + 1, x0 : x1 + 1] = colour
    return img


def _voc_tree(root):
    base = root / "VOCdevkit" / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / d).mkdir(parents=True)
    specs = {  # id: (w, h, [(class, box 1-based, difficult)])
        "000001": (48, 40, [("cat", (5, 6, 20, 22), 0), ("dog", (25, 10, 45, 38), 0)]),
        "000002": (36, 50, [("car", (3, 3, 30, 20), 0), ("person", (10, 30, 20, 45), 1)]),
        "000003": (40, 40, [("bird", (5, 5, 15, 15), 1)]),  # all difficult: no trial
    }
    for iid, (w, h, objs) in specs.items():
        xml = [f"<annotation><filename>{iid}.png</filename>",
               f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]  # fmt: skip
        for name, (a, b, c, d), diff in objs:
            xml.append(f"<object><name>{name}</name><difficult>{diff}</difficult><bndbox>"
                       f"<xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
                       "</bndbox></object>")  # fmt: skip
        xml.append("</annotation>")
        (base / "Annotations" / f"{iid}.xml").write_text("".join(xml))
        write_png(base / "JPEGImages" / f"{iid}.png", _image(h, w, (objs[0][1][0] - 1, objs[0][1][1] - 1,
                                                                  objs[0][1][2] - 1, objs[0][1][3] - 1)))
    (base / "ImageSets/Main/test.txt").write_text("\n".join(specs) + "\n")
    flags = {"000001": {"cat"}, "000002": set(), "000003": {"bird"}}
    lines = [iid + " " + " ".join("1" if c in flags[iid] else "0" for c in VOC_CLASSES) for iid in specs]
    (root / "difficult.txt").write_text("\n".join(lines) + "\n")
    return base


def test_eval_voc07_fake_tree(tmp_path):
    base = _voc_tree(tmp_path)
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", "voc07", "--root", str(tmp_path / "VOCdevkit"), "--checkpoint",
               "embedded:small_vgg", "--difficult", str(tmp_path / "difficult.txt"),
               "--out", str(out), *FAST])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "eval.json").read_text())
    # 000001: cat, dog; 000002: car, person (not all its boxes... it has one difficult box: skipped)
    assert res["num_images"] == 2 and res["num_trials"] == 3
    assert res["num_difficult"] == 1 and res["difficult_flags"] is True
    g = res["methods"]["grad_cam"]
    assert g["pointing_difficult"] is not None and 0 <= g["pointing_all"] <= 1
    assert res["tolerance_px"] == 15.0 and res["preprocess"] == "embedded"
    assert base.is_dir()


def _coco_tree(root):
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    images = [
        {"id": 1, "file_name": "COCO_val2014_000000000001.png", "width": 50, "height": 40},
        {"id": 2, "file_name": "COCO_val2014_000000000002.png", "width": 40, "height": 60},
        {"id": 3, "file_name": "COCO_val2014_000000000003.png", "width": 30, "height": 30},
    ]
    anns = [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 15, 12],
         "segmentation": [[5, 5, 20, 5, 20, 17, 5, 17]]},
        {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [28, 10, 16, 20],
         "segmentation": [[28, 10, 44, 10, 36, 30]]},
        {"id": 12, "image_id": 2, "category_id": 2, "iscrowd": 0, "bbox": [10, 20, 20, 30],
         "segmentation": [[10, 20, 30, 20, 30, 50, 10, 50]]},
    ]  # image 3 has no annotation: left out
    cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"}]
    (root / "annotations" / "instances_val2014.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    for im in images:
        write_png(root / "val2014" / im["file_name"], _image(im["height"], im["width"], (5, 5, 19, 16)))
    (root / "coco_difficult.txt").write_text(
        "COCO_val2014_000000000001 0 0 1\nCOCO_val2014_000000000002 0 0 0\n"
        "COCO_val2014_000000000003 0 0 0\n")


def test_eval_coco14_fake_tree_with_a_checkpoint_directory(tmp_path):
    from xattr_jax.checkpoint import save_checkpoint
    from xattr_jax.models import load_embedded

    _coco_tree(tmp_path)
    _, variables = load_embedded("small_resnet")
    ckpt = save_checkpoint(tmp_path / "ckpt", "small_resnet", variables, num_classes=20)
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", "coco14", "--root", str(tmp_path), "--checkpoint", str(ckpt),
               "--preprocess", "imagenet", "--difficult", str(tmp_path / "coco_difficult.txt"),
               "--out", str(out), "--methods", "gradient", "--deletion-images", "0",
               "--batch-size", "2", "--no-progress"])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["num_images"] == 2 and res["num_trials"] == 3 and res["num_difficult"] == 1
    assert res["preprocess"] == "imagenet"
    g = res["methods"]["gradient"]
    assert 0 <= g["pointing_all"] <= 1 and g["pointing_difficult"] is not None
    assert g["deletion_auc"] is None  # --deletion-images 0


def test_eval_reports_bad_input(tmp_path, capsys):
    assert main(["eval", "--dataset", "voc07", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "voc07 needs its files: --root ROOT with ROOT/VOCdevkit/VOC2007/" in err and err.count("\n") == 1
    assert main(["eval", "--dataset", "coco14", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "dataset root not found" in err and "annotations/instances_val2014.json" in err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,message", [
    ("--batch-size", "0", "must be an int >= 1, got 0"),
    ("--deletion-steps", "0", "must be an int >= 1, got 0"),
    ("--num-images", "-3", "must be an int >= 1, got -3"),
    ("--deletion-images", "-1", "must be an int >= 0, got -1"),
    ("--limit", "2.5", "must be an int >= 1, got '2.5'"),
    ("--tolerance", "-1", "must be a finite number >= 0, got -1"),
])
def test_eval_refuses_bad_numbers_at_parse_time_with_exit_code_2(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--dataset", "synthetic", "--out", str(tmp_path), flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {message}" in err, err


def test_eval_exit_status_reports_unknown_and_failed_methods(tmp_path, capsys, monkeypatch):
    args = ["eval", "--dataset", "synthetic", "--num-images", "2", "--out", str(tmp_path), "--batch-size", "2",
            "--deletion-images", "0", "--no-progress"]
    assert main([*args, "--methods", "gradient,no_such_method"]) == 2
    assert "unknown method(s) ['no_such_method']" in capsys.readouterr().err

    import xattr_jax as xa

    real = xa.attributor

    def crashing(model, method, *a, **k):
        if method == "deconvnet":
            raise RuntimeError("simulated crash")
        return real(model, method, *a, **k)

    monkeypatch.setattr(xa, "attributor", crashing)
    assert main([*args, "--methods", "gradient,deconvnet"]) == 1, "a failed method makes the run fail"
    err = capsys.readouterr().err
    assert "method deconvnet failed: RuntimeError: simulated crash" in err
    res = json.loads((tmp_path / "eval.json").read_text())  # the report is still written
    assert "error" in res["methods"]["deconvnet"] and 0 <= res["methods"]["gradient"]["pointing_all"] <= 1


def _hand_tree(root):
    """Three 64x64 VOC images; boxes in VOC's 1-based inclusive pixels."""
    base = root / "VOCdevkit" / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / d).mkdir(parents=True)
    specs = {
        "000001": [("cat", (5, 6, 20, 22), 0), ("dog", (33, 19, 37, 23), 0)],
        "000002": [("car", (3, 3, 30, 20), 0), ("person", (10, 30, 20, 45), 1)],
        "000003": [("cat", (40, 40, 60, 60), 0)],
    }
    for iid, objs in specs.items():
        xml = [f"<annotation><filename>{iid}.png</filename>"
               "<size><width>64</width><height>64</height><depth>3</depth></size>"]  # fmt: skip
        for name, (a, b, c, d), diff in objs:
            xml.append(f"<object><name>{name}</name><difficult>{diff}</difficult><bndbox>"
                       f"<xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
                       "</bndbox></object>")  # fmt: skip
        (base / "Annotations" / f"{iid}.xml").write_text("".join(xml) + "</annotation>")
        write_png(base / "JPEGImages" / f"{iid}.png", np.full((64, 64, 3), 0.5))
    (base / "ImageSets/Main/test.txt").write_text("\n".join(specs) + "\n")
    lines = [iid + " " + " ".join("1" if (iid, c) == ("000001", "cat") else "0" for c in VOC_CLASSES)
             for iid in specs]  # fmt: skip
    (root / "difficult.txt").write_text("\n".join(lines) + "\n")


def test_harness_numbers_worked_by_hand(tmp_path):
    """Linear model ``logit_c = <W_c, x>``: the gradient map of class c is 1 at ``PEAK[c]``, 0 elsewhere.

    Trials (0-based inclusive boxes, rows y, cols x): 000001 cat y5..21 x4..19 (difficult), dog
    y18..22 x32..36; 000002 car y2..19 x2..29 (person: all boxes difficult, no trial); 000003 cat
    y39..59 x39..59. Tolerance 15 px (a hit: a GT pixel at distance < 15).

    Pointing, peaks cat (12, 12), dog (20, 34), car (40, 50):
      cat: 000001 inside -> hit; 000003 nearest (39, 39) at 38.2 -> miss: 1/2
      dog: inside -> hit: 1/1;  car: nearest (19, 29) at 29.7 -> miss: 0/1
      all = (1/2 + 1 + 0) / 3 = 1/2; difficult = cat on 000001 only = 1.
    Centre (32, 32): cat 000001 nearest (21, 19) at 17.0 -> miss, cat 000003 (39, 39) at 9.9 -> hit,
      dog (22, 32) at 10 -> hit, car (19, 29) at 13.3 -> hit: all = (1/2 + 1 + 1) / 3 = 5/6;
      difficult = 0.
    Boxes: the smoothed map is exp(-d^2 / 2 s^2), s = 0.02 * 64 = 1.28, so the pixels at >= 15 % of
      the maximum are those with d^2 <= 2 s^2 ln(1/0.15) = 6.2: a 5x5 box around the peak. Only the
      dog's GT box is that box (IoU 1); the others are far larger (IoU <= 25/272): box acc = 1/4.
      MaxBoxAcc: the dog's box is 5x5 at t = 0.1 (d^2 <= 7.5) and 0.2 (d^2 <= 5.3), 3x3 (IoU 0.36)
      from t = 0.3 (d^2 <= 3.95): MaxBoxAcc = 1/4 at the first threshold, 0.1.
    """
    import jax.numpy as jnp

    _hand_tree(tmp_path)
    cls = {n: i for i, n in enumerate(VOC_CLASSES)}
    peaks = {"cat": (12, 12), "dog": (20, 34), "car": (40, 50)}
    w = np.zeros((20, 64, 64, 3), np.float32)
    for name, (r, c) in peaks.items():
        w[cls[name], r, c, 0] = 1.0

    def model(v, x):  # a plain function: the engine needs no module of ours
        return jnp.einsum("nhwc,khwc->nk", x, v["w"])

    samples = voc_samples(tmp_path / "VOCdevkit", difficult_file=tmp_path / "difficult.txt")
    assert [s.key for s in samples] == ["000001", "000002", "000003"]
    res = evaluate(model, {"w": jnp.asarray(w)}, samples, ["gradient"], preprocess="embedded",
                   tolerance=15, deletion_images=0, batch_size=2, progress=False)  # fmt: skip
    g = res["methods"]["gradient"]
    assert res["num_trials"] == 4 and res["num_difficult"] == 1
    assert g["pointing_all"] == pytest.approx(1 / 2) and g["pointing_difficult"] == pytest.approx(1.0)
    assert res["center"]["pointing_all"] == pytest.approx(5 / 6)
    assert res["center"]["pointing_difficult"] == pytest.approx(0.0)
    assert g["box_acc"] == pytest.approx(1 / 4)
    assert g["max_box_acc"] == pytest.approx(1 / 4) and g["max_box_acc_threshold"] == pytest.approx(0.1)
    assert g["deletion_auc"] is None


def test_eval_resumes_from_its_records_and_records_an_unreadable_image(tmp_path, capsys):
    _hand_tree(tmp_path)
    bad = tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000003.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    out = tmp_path / "out"
    args = ["eval", "--dataset", "voc07", "--root", str(tmp_path / "VOCdevkit"), "--checkpoint",
            "embedded:small_vgg", "--out", str(out), *FAST]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "000003 skipped: unreadable" in err
    first = json.loads((out / "eval.json").read_text())
    lines = (out / "records.jsonl").read_text().splitlines()
    # 000001: 2 trials + deletion, 000002: 1 trial + deletion; 000003 unreadable: once per method
    assert len(lines) == 2 * (3 + 2 + 1)
    assert main(args) == 0  # the rerun tries only the unreadable image again and reports the same
    assert sorted((out / "records.jsonl").read_text().splitlines()) == sorted(lines)
    assert "2 (image, method) pair(s) unreadable before or changed since: done again" in capsys.readouterr().err
    again = json.loads((out / "eval.json").read_text())
    for m in ("gradient", "grad_cam"):
        for k in ("pointing_all", "box_acc", "max_box_acc", "deletion_auc", "insertion_auc"):
            assert again["methods"][m][k] == first["methods"][m][k], (m, k)
    assert first["unreadable"] and first["unreadable"][0][0] == "000003"


def test_eval_split_over_two_processes_reports_the_whole_dataset(tmp_path):
    """``jax.distributed`` with two local processes: each evaluates half, process 0 reports all."""
    import os
    import subprocess
    import sys

    base = [sys.executable, "-m", "xattr_jax.app.cli", "eval", "--dataset", "synthetic", "--num-images", "8",
            "--methods", "gradient,grad_cam", "--deletion-images", "4", "--deletion-steps", "4",
            "--batch-size", "4", "--no-progress"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    one = subprocess.run([*base, "--out", str(tmp_path / "one")], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    run_on_two_processes(base, tmp_path / "two", env)
    a = json.loads((tmp_path / "one" / "eval.json").read_text())
    b = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert b["num_trials"] == a["num_trials"]
    for m in ("gradient", "grad_cam"):
        for k in ("pointing_all", "pointing_difficult", "box_acc", "max_box_acc", "deletion_auc"):
            assert b["methods"][m][k] == pytest.approx(a["methods"][m][k], abs=1e-9), (m, k)
