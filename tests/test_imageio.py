"""``xattr_jax.viz.imageio``: reading every pixel mode as Pillow decodes it, writing by extension,
one-line errors for bad paths and files, and the antialiased resizer."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from xattr_jax.viz.imageio import PathIsFolderError, read_image, resize, write_image

RNG = np.random.default_rng(0)


def _open(p):
    """A decoded copy of the file as Pillow reads it (the file closed again)."""
    with Image.open(p) as im:
        im.load()
        return im.copy()


def _rgb8(h=9, w=7):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check(got, want, atol=1e-6):
    assert got.dtype == np.float32 and got.shape == want.shape[:2] + (3,), (got.dtype, got.shape)
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)


def test_8bit_rgb_equals_pillows_decode(tmp_path):
    p = tmp_path / "rgb.png"
    Image.fromarray(_rgb8()).save(p)
    _check(read_image(p), np.asarray(_open(p).convert("RGB")) / 255.0)


def test_16bit_grey_is_scaled_by_65535_not_255(tmp_path):
    raw = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
    raw[0, 0] = 1000  # 1000/65535 ≈ 0.015: read as 1000/255 it would clip to white
    p = tmp_path / "g16.png"
    Image.fromarray(raw).save(p)
    assert _open(p).mode.startswith("I"), _open(p).mode
    got = read_image(p)
    _check(got, np.repeat((raw / 65535.0)[..., None], 3, axis=-1))
    assert got[0, 0, 0] < 0.02


def test_16bit_big_endian_mode(tmp_path):
    raw = RNG.integers(0, 65536, (4, 3), dtype=np.uint16)
    im = Image.frombytes("I;16B", (3, 4), raw.astype(">u2").tobytes())
    p = tmp_path / "g16b.png"
    im.save(p)
    _check(read_image(p), np.repeat((raw / 65535.0)[..., None], 3, axis=-1))


def test_grey_one_bit_and_palette(tmp_path):
    g = RNG.integers(0, 256, (5, 8), dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "l.png")
    _check(read_image(tmp_path / "l.png"), np.repeat((g / 255.0)[..., None], 3, axis=-1))

    bits = RNG.random((5, 8)) > 0.5
    Image.fromarray(bits).save(tmp_path / "one.png")
    _check(read_image(tmp_path / "one.png"), np.repeat(bits[..., None].astype(float), 3, axis=-1))

    pal = Image.fromarray(_rgb8(10, 10)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    assert _open(tmp_path / "p.png").mode == "P"
    _check(read_image(tmp_path / "p.png"), np.asarray(_open(tmp_path / "p.png").convert("RGB")) / 255.0)


def test_alpha_is_composited_over_white(tmp_path):
    rgba = RNG.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # fully transparent: white
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    a = rgba[..., 3:] / 255.0
    want = rgba[..., :3] / 255.0 * a + (1 - a)
    got = read_image(tmp_path / "rgba.png")
    _check(got, want)
    np.testing.assert_allclose(got[0, 0], [1, 1, 1])

    la = RNG.integers(0, 256, (4, 5, 2), dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    g = la[..., :1] / 255.0 * (la[..., 1:] / 255.0) + (1 - la[..., 1:] / 255.0)
    _check(read_image(tmp_path / "la.png"), np.repeat(g, 3, axis=-1))

    pal = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    ref = np.asarray(_open(tmp_path / "pt.png").convert("RGBA")) / 255.0
    _check(read_image(tmp_path / "pt.png"), ref[..., :3] * ref[..., 3:] + (1 - ref[..., 3:]))


def test_cmyk_and_exif_orientation(tmp_path):
    cmyk = Image.fromarray(_rgb8()).convert("CMYK")
    cmyk.save(tmp_path / "c.tiff")
    _check(read_image(tmp_path / "c.tiff"), np.asarray(cmyk.convert("RGB")) / 255.0)

    px = _rgb8(4, 6)
    im = Image.fromarray(px)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    im.save(tmp_path / "o.png", exif=exif)
    got = read_image(tmp_path / "o.png")
    assert got.shape == (6, 4, 3), "the EXIF orientation is applied"
    _check(got, np.rot90(px, k=-1) / 255.0)


def _one_line(err):
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300, msg
    return msg


def test_read_errors_are_one_line_and_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        read_image(tmp_path / "nope.png")
    assert "nope.png" in _one_line(e) and "not found" in _one_line(e)

    with pytest.raises(IsADirectoryError) as e:
        read_image(tmp_path)
    assert isinstance(e.value, ValueError) and "folder" in _one_line(e)

    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty") as e:
        read_image(tmp_path / "empty.png")
    _one_line(e)

    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated|damaged") as e:
        read_image(tmp_path / "cut.png")
    assert "cut.png" in _one_line(e)

    (tmp_path / "notes.png").write_text("this is text, not a picture\n")
    with pytest.raises(ValueError, match="not an image") as e:
        read_image(tmp_path / "notes.png")
    _one_line(e)


def test_write_formats_by_extension(tmp_path):
    from matplotlib.figure import Figure

    px = _rgb8(12, 10)
    p = write_image(tmp_path / "sub" / "dir" / "a.png", px, metadata={"panels": "a,b"})
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "parent folders are created"
    np.testing.assert_array_equal(np.asarray(_open(p)), px)
    assert _open(p).info["panels"] == "a,b"
    np.testing.assert_allclose(read_image(p), px / 255.0, atol=1e-6)

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    for obj in (px, fig, px.astype(np.float32) / 255):
        for ext in ("jpg", "jpeg"):
            assert write_image(tmp_path / f"x.{ext}", obj).read_bytes()[:2] == b"\xff\xd8"
        assert write_image(tmp_path / "x.pdf", obj).read_bytes()[:4] == b"%PDF"
        root = ET.parse(write_image(tmp_path / "x.svg", obj)).getroot()
        assert root.tag.endswith("svg"), root.tag
        assert write_image(tmp_path / "x.PNG", obj).read_bytes()[:4] == b"\x89PNG"
    rgba = np.concatenate([px, np.zeros((12, 10, 1), np.uint8)], axis=-1)  # transparent
    write_image(tmp_path / "t.jpg", rgba)
    assert np.asarray(_open(tmp_path / "t.jpg")).min() > 240, "JPEG: alpha over white"


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.png.*\.jpg.*\.pdf.*\.svg") as e:
        write_image(tmp_path / "a.bmp", _rgb8())
    _one_line(e)
    with pytest.raises(ValueError, match="no extension"):
        write_image(tmp_path / "a", _rgb8())
    (tmp_path / "out.png").mkdir()
    with pytest.raises(PathIsFolderError, match="folder") as e:
        write_image(tmp_path / "out.png", _rgb8())
    assert isinstance(e.value, ValueError) and "out.png/figure.png" in _one_line(e)
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "b.png", np.zeros((2, 2, 5)))


def test_resize_bilinear_up_antialiased_down():
    from xattr_jax.metrics import resize_map

    m = RNG.standard_normal((7, 5)).astype(np.float32)
    up = resize(m, (28, 20))
    np.testing.assert_allclose(up, np.asarray(resize_map(m, (28, 20))), atol=1e-5,
                               err_msg="enlarging is bilinear with half-pixel centres")  # fmt: skip
    np.testing.assert_allclose(resize(m, (28, 20), antialias=False), up, atol=1e-5)
    checker = (np.indices((63, 63)).sum(0) % 2).astype(np.float32)  # reduced 3x: samples on pixels
    aliased = resize(checker, (21, 21), antialias=False)
    assert np.ptp(aliased) == 1.0, "without antialiasing the checkerboard survives, aliased"
    smooth = resize(checker, (21, 21))
    np.testing.assert_allclose(smooth, 0.5, atol=0.1, err_msg="reducing averages neighbours")
    rgb = RNG.random((16, 12, 3))
    out = resize(rgb, (5, 4))
    assert out.shape == (5, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 1], resize(rgb[..., 1], (5, 4)))
    with pytest.raises(ValueError, match="positive"):
        resize(m, (0, 3))
