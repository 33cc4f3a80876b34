"""`xattr explain` on small image files, and the PNG/PPM codec it reads them with."""

import sys

import numpy as np
import pytest

from xattr_jax.cli import main
from xattr_jax.viz_overlay import read_image, read_png, read_ppm, write_png


def _picture(h=48, w=56):
    img = np.full((h, w, 3), 0.45, np.float32)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 20) ** 2 + (xx - 30) ** 2 < 100] = (0.86, 0.12, 0.12)  # a red disk
    return img


def test_png_roundtrip_and_ppm(tmp_path):
    img = _picture()
    p = write_png(tmp_path / "a.png", img)
    np.testing.assert_allclose(read_png(p), np.round(img * 255) / 255, atol=1e-6)
    q = tmp_path / "a.ppm"
    u8 = np.round(img * 255).astype(np.uint8)
    q.write_bytes(b"P6\n# comment\n56 48\n255\n" + u8.tobytes())
    np.testing.assert_allclose(read_ppm(q), u8 / 255.0, atol=1e-6)


def test_png_decoder_matches_pillow_on_every_filter(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    img = (rng.random((23, 31, 3)) * 255).astype(np.uint8)
    img[5:15] = np.linspace(0, 255, 31, dtype=np.uint8)[None, :, None]  # smooth rows: Sub/Paeth
    for mode, arr in (("RGB", img), ("RGBA", np.dstack([img, img[..., :1]])), ("L", img[..., 0])):
        path = tmp_path / f"{mode}.png"
        PIL.fromarray(arr, mode).save(path, optimize=True)
        ref = np.asarray(PIL.open(path).convert("RGB"), np.float32) / 255
        np.testing.assert_allclose(read_png(path), ref, atol=1e-6)


def test_explain_embedded_on_a_png(tmp_path, capsys):
    src = write_png(tmp_path / "shape.png", _picture())
    out = tmp_path / "out.png"
    rc = main(["explain", str(src), "--checkpoint", "embedded:small_vgg", "--method", "grad_cam",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    fig = read_png(out)
    assert fig.shape[0] >= 64 and fig.shape[1] > fig.shape[0]  # input | overlay side by side
    text = capsys.readouterr().out
    assert "predicted class" in text and "grad_cam" in text


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
    assert "class 3 (yellow disk)" in capsys.readouterr().out
    # bad input: exit code 2 and one line, not a traceback
    assert main(["explain", str(src), "--checkpoint", str(ckpt), "--target", "99",
                 "--out", str(out)]) == 2  # fmt: skip
    assert "out of range" in capsys.readouterr().err
    assert main(["explain", str(src), "--checkpoint", str(ckpt), "--layer", "nope",
                 "--out", str(out)]) == 2  # fmt: skip
    assert main(["explain", str(tmp_path / "missing.png"), "--checkpoint", str(ckpt),
                 "--out", str(out)]) == 2  # fmt: skip


def test_jpeg_without_pillow_is_a_clear_error(tmp_path, monkeypatch, capsys):
    jpg = tmp_path / "x.jpg"
    jpg.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL -> ImportError
    with pytest.raises(ImportError, match="pip install pillow"):
        read_image(jpg)
    rc = main(["explain", str(jpg), "--checkpoint", "embedded:small_vgg", "--out",
               str(tmp_path / "o.png")])  # fmt: skip
    assert rc == 2 and "Pillow" in capsys.readouterr().err
