"""`xattr explain IMAGE --out FIGURE`: several methods in one process, option flags, top-k with class
names, the figure format from the extension, and every bad input answered with exit code 2 and one
line on stderr (no traceback)."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from xattr_jax.app.cli import main


def _picture(h=48, w=56):
    img = np.full((h, w, 3), 0.45, np.float32)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 20) ** 2 + (xx - 30) ** 2 < 100] = (0.86, 0.12, 0.12)  # a red disk
    return img


@pytest.fixture()
def png(tmp_path):
    p = tmp_path / "shape.png"
    Image.fromarray(np.round(_picture() * 255).astype(np.uint8)).save(p)
    return p


def test_explain_several_methods_with_options_into_each_format(png, tmp_path, capsys):
    out = tmp_path / "fig.png"
    rc = main(["explain", str(png), "--checkpoint", "embedded:small_vgg", "--method",
               "grad_cam,integrated_gradients", "--steps", "4", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "top 5:" in text and "embedded preprocessing" in text
    # the shipped model's classes have names: the top-1 line names its class and probability
    top1 = text.split("top 5: ", 1)[1].split(",")[0]
    from xattr_jax.data import CLASS_NAMES

    c = int(top1.split()[0])
    assert CLASS_NAMES[c] in top1 and "grad_cam (8x8)" in text and "integrated_gradients (64x64)" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for ext, magic in ((".jpg", b"\xff\xd8"), (".pdf", b"%PDF")):
        p = tmp_path / f"fig{ext}"
        assert main(["explain", str(png), "--checkpoint", "embedded:small_vgg", "--out", str(p)]) == 0
        assert p.read_bytes().startswith(magic)
    svg = tmp_path / "fig.svg"
    assert main(["explain", str(png), "--checkpoint", "embedded:small_vgg", "--top-k", "2", "--out", str(svg)]) == 0
    assert ET.parse(svg).getroot().tag.endswith("svg")
    with Image.open(tmp_path / "fig.jpg") as im:
        assert im.format == "JPEG"


def test_explain_with_target_layer_and_checkpoint_dir(tmp_path, capsys):
    from xattr_jax.checkpoint import save_checkpoint
    from xattr_jax.models import load_embedded

    _, variables = load_embedded("small_resnet")
    ckpt = save_checkpoint(tmp_path / "ckpt", "small_resnet", variables, num_classes=20)
    src = tmp_path / "shape.ppm"
    u8 = np.round(_picture(40, 40) * 255).astype(np.uint8)
    src.write_bytes(b"P6 40 40 255\n" + u8.tobytes())
    out = tmp_path / "o.png"
    rc = main(["explain", str(src), "--checkpoint", str(ckpt), "--method", "gradient", "--target",
               "3", "--layer", "layer3", "--out", str(out)])  # fmt: skip
    assert rc == 0 and out.is_file()
    assert "explained class 3 (yellow disk)" in capsys.readouterr().out


def _bad_inputs(tmp_path, png):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.read_bytes()[:60])
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "weights.bin").write_bytes(b"\0" * 16)
    folder_png = tmp_path / "figs.png"
    folder_png.mkdir()
    ok = ["--checkpoint", "embedded:small_vgg"]
    return {
        "missing image": ([str(tmp_path / "missing.png"), *ok, "--out", str(tmp_path / "o.png")], "not found"),
        "empty image": ([str(empty), *ok, "--out", str(tmp_path / "o.png")], "empty"),
        "truncated image": ([str(truncated), *ok, "--out", str(tmp_path / "o.png")], "truncated"),
        "text named .png": ([str(text), *ok, "--out", str(tmp_path / "o.png")], "not an image"),
        "missing checkpoint": ([str(png), "--checkpoint", str(tmp_path / "nockpt"), "--out",
                                str(tmp_path / "o.png")], "no checkpoint at"),  # fmt: skip
        "foreign checkpoint": ([str(png), "--checkpoint", str(foreign), "--out", str(tmp_path / "o.png")],
                               "xattr convert"),  # fmt: skip
        "unknown embedded": ([str(png), "--checkpoint", "embedded:nope", "--out", str(tmp_path / "o.png")],
                             "unknown embedded model"),  # fmt: skip
        "out is a folder": ([str(png), *ok, "--out", str(folder_png)], "is a folder"),
        "unknown method": ([str(png), *ok, "--method", "nope", "--out", str(tmp_path / "o.png")],
                           "unknown method(s) ['nope']"),  # fmt: skip
        "option of another method": ([str(png), *ok, "--method", "gradient", "--steps", "3", "--out",
                                      str(tmp_path / "o.png")], "none of the chosen methods"),  # fmt: skip
        "bad option value": ([str(png), *ok, "--method", "lrp", "--composite", "nope", "--out",
                              str(tmp_path / "o.png")], "composite"),  # fmt: skip
        "target out of range": ([str(png), *ok, "--target", "99", "--out", str(tmp_path / "o.png")],
                                "out of range"),  # fmt: skip
        "unknown layer": ([str(png), *ok, "--layer", "nope", "--out", str(tmp_path / "o.png")], "unknown layer"),
        "two images, one figure": ([str(png), str(png), *ok, "--out", str(tmp_path / "o.png")], "shows one image"),
        "unsupported figure format": ([str(png), *ok, "--out", str(tmp_path / "o.tiff")], ".png, .jpg"),
    }


def test_every_bad_input_exits_2_with_one_line(png, tmp_path, capsys):
    for what, (args, needle) in _bad_inputs(tmp_path, png).items():
        rc = main(["explain", *args])
        err = capsys.readouterr().err
        assert rc == 2, (what, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("xattr explain: error: "), (what, err)
        assert "Traceback" not in err and needle in lines[0], (what, lines[0])


def test_bad_numbers_and_unknown_flags_are_refused_by_the_parser(png, tmp_path, capsys):
    for args in (["--top-k", "0"], ["--batch-size", "-1"], ["--target", "x"], ["--no-such-flag"]):
        with pytest.raises(SystemExit) as exc:
            main(["explain", str(png), "--checkpoint", "embedded:small_vgg", "--out", str(tmp_path / "o.png"), *args])
        assert exc.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_help_states_the_preprocessing_and_the_method_options(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "resized to 256 (antialiased), centre crop 224x224" in text and "torchvision = " in text and "shorter side resized to 224" in text
    assert "--composite" in text and "--steps" in text and "--noise" in text
