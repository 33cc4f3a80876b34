"""``xattr_jax.viz``: normalisation, bilinear resize, colour maps, overlays and the PNG writer.

The PNG is decoded here with ``zlib`` and ``struct`` only (chunk CRCs, IHDR, filter bytes, pixels).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from xattr_jax import viz


def decode_png(data: bytes):
    """``(pixels uint8 [H, W, C], {tEXt key: value})`` of an 8-bit, filter-0, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    pos, idat, text, ihdr = 8, b"", {}, None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"CRC of chunk {kind!r}"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"tEXt":
            k, v = body.split(b"\x00", 1)
            text[k.decode("latin-1")] = v.decode("latin-1")
        pos += 12 + n
    w, h, depth, color, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0
    ch = {0: 1, 2: 3}[color]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    assert np.all(raw[:, 0] == 0), "every row uses filter 0"
    return raw[:, 1:].reshape(h, w, ch), text


def test_png_round_trip_rgb_and_grey(tmp_path):
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    p = tmp_path / "a.png"
    viz.write_png(p, px, text={"hello": "world"})
    got, text = decode_png(p.read_bytes())
    np.testing.assert_array_equal(got, px, err_msg="RGB pixels survive the PNG round trip exactly")
    assert text == {"hello": "world"}
    grey = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    got, _ = decode_png(viz.encode_png(grey))
    np.testing.assert_array_equal(got[..., 0], grey)
    with pytest.raises(TypeError, match="uint8"):
        viz.encode_png(px.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        viz.encode_png(np.zeros((2, 2, 4), np.uint8))


def test_normalize_modes():
    m = np.array([[[-2.0, 0.0], [1.0, 4.0]]])
    np.testing.assert_allclose(viz.normalize(m, "max"), [[[0, 0], [0.25, 1]]])
    np.testing.assert_allclose(viz.normalize(m, "abs"), [[[-0.5, 0], [0.25, 1]]])
    np.testing.assert_allclose(viz.normalize(m, "minmax"), [[[0, 2 / 6], [3 / 6, 1]]])
    np.testing.assert_array_equal(viz.normalize(np.zeros((2, 2)), "max"), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="valid"):
        viz.normalize(m, "bogus")


def test_resize_matches_torch_bilinear_align_corners_false():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for (h, w), (H, W) in [((7, 5), (224, 160)), ((14, 14), (9, 20)), ((1, 3), (4, 4))]:
        m = rng.standard_normal((2, h, w))
        ref = torch.nn.functional.interpolate(torch.from_numpy(m)[:, None], size=(H, W), mode="bilinear",
                                              align_corners=False)[:, 0].numpy()
        got = viz.resize(m, (H, W))
        assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref)), (
            f"resize {h}x{w} -> {H}x{W} vs torch bilinear: tolerance 1e-5 x max")


def test_colormaps_and_overlay():
    jet = viz.colormap(np.array([0.0, 0.5, 1.0]), "jet")
    assert jet.dtype == np.uint8 and jet.shape == (3, 3)
    assert jet[0, 2] > 100 and jet[0, 0] == 0, "jet starts dark blue"
    assert jet[2, 0] > 100 and jet[2, 2] == 0, "jet ends dark red"
    sei = viz.colormap(np.array([-1.0, 0.0, 1.0]), "seismic")
    np.testing.assert_array_equal(sei[1], [255, 255, 255], err_msg="seismic is white at 0")
    assert sei[0, 2] > sei[0, 0] and sei[2, 0] > sei[2, 2]
    img = np.full((8, 8, 3), 100, np.uint8)
    out = viz.overlay(img, np.ones((2, 2)), alpha=0.0)
    np.testing.assert_array_equal(out, img, err_msg="alpha 0 keeps the image")
    out = viz.overlay(img, np.ones((2, 2)), alpha=1.0)
    np.testing.assert_array_equal(out, np.broadcast_to(viz.colormap(1.0, "jet"), img.shape))
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(img, np.ones((2, 2)), alpha=2)
    with pytest.raises(ValueError, match="colormap"):
        viz.colormap(0.5, "nope")


def test_to_image_inverts_the_normalisation():
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    pix = np.random.default_rng(2).integers(0, 256, (4, 4, 3))
    x = (pix / 255.0 - mean) / std
    np.testing.assert_array_equal(viz.to_image(x), pix.astype(np.uint8))


def test_layer_figure_has_one_panel_per_map_in_order(tmp_path):
    rng = np.random.default_rng(3)
    maps = {"input": rng.random((2, 16, 16)), "conv": rng.random((2, 8, 8)), "pool": rng.random((2, 4, 4)),
            "relu": rng.random((2, 4, 4)), "top": rng.random((2, 2, 2))}
    img = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
    p = tmp_path / "fig.png"
    names = viz.save_layer_figure(p, img, maps, sample=1, cols=3, pad=2)
    assert names == list(maps)
    px, text = decode_png(p.read_bytes())
    assert px.shape == (2 * 16 + 2, 3 * 12 + 4, 3), f"2x3 grid of 16x12 panels, got {px.shape}"
    assert text["panels"].split(",") == list(maps)
    assert text["layout"] == "rows=2 cols=3 panel=16x12 pad=2"
    second = px[0:16, 14:26]
    np.testing.assert_array_equal(second, viz.overlay(img, maps["conv"][1]), err_msg="panel 2 = 'conv', sample 1")
    assert np.all(px[18:, 2 * 14:] == 255), "the unused sixth cell stays white"
    with pytest.raises(ValueError, match="empty"):
        viz.layer_grid(img, {})
