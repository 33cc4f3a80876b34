"""``xattr_jax.viz``: the figures' matplotlib objects (titles, colour bars, norms, panels, warnings)
and ``to_image``. Agg only; nothing is shown."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import TwoSlopeNorm

import xattr_jax as xa
from xattr_jax import viz

RNG = np.random.default_rng(0)
IMG = RNG.random((32, 24, 3))


def _colorbars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _panels(fig):
    """The axes that draw a map (a map image over the grey image), in order."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and len(ax.images) == 2]


def _map_image(ax):
    return ax.images[-1]


def test_every_method_is_classified_signed_or_unsigned():
    for m in xa.methods_available():
        assert (m in viz.SIGNED_METHODS) != (m in viz.UNSIGNED_METHODS), f"{m} needs exactly one class"
    for m in ("lrp", "integrated_gradients", "input_x_gradient", "rsp", "gnl_integrated_gradients"):
        assert viz.is_signed(m)
    for m in ("excitation_backprop", "grad_cam", "gradient", "smoothgrad", "guided_backprop"):
        assert not viz.is_signed(m)
    pos = RNG.random((4, 4))
    assert viz.is_signed(None, pos - 0.5), "negative values make a map signed"
    assert viz.is_signed("attention_backprop", pos - 0.5), "whatever the method's usual sign"
    assert not viz.is_signed(None, pos) and not viz.is_signed("grad_cam", pos)
    noise = pos.copy()
    noise[0, 0] = -1e-9 * pos.max()
    assert not viz.is_signed(None, noise), "rounding noise is not a sign"
    noise[0, 0] = -1e-3 * pos.max()
    assert viz.is_signed(None, noise)
    with pytest.raises(ValueError, match="unknown method"):
        viz.is_signed("my_method")


def test_signed_overlay_is_centred_with_title_and_colorbar():
    m = RNG.standard_normal((8, 6)) + 0.3
    fig = viz.overlay_figure(IMG, m, method="lrp", model="vgg16", class_name="tabby cat", score=0.873)
    title = fig.get_suptitle()
    for part in ("lrp", "vgg16", "tabby cat", "0.873"):
        assert part in title, (part, title)
    assert len(_colorbars(fig)) == 1
    (ax,) = _panels(fig)
    im = _map_image(ax)
    norm = im.norm
    assert isinstance(norm, TwoSlopeNorm) and norm.vcenter == 0
    assert norm.vmin == -norm.vmax, "symmetric limits"
    assert norm.vmax == pytest.approx(np.percentile(np.abs(m), 99.5)), "clipped at the 99.5th pct"
    assert im.cmap.name == "RdBu_r"
    assert im.get_array().shape == IMG.shape[:2], "the map is resized to the image"
    base = ax.images[0].get_array()
    np.testing.assert_allclose(base, IMG @ [0.299, 0.587, 0.114], err_msg="drawn over a grey copy")
    assert 0 < im.get_alpha() < 1


def test_unsigned_overlay_is_sequential_from_zero_and_clips_outliers():
    m = RNG.random((16, 16))
    m[0, 0] = 1000.0  # one outlier
    fig = viz.overlay_figure(IMG, m, method="grad_cam", class_name=3, score=2.5)
    assert "class 3" in fig.get_suptitle() and "2.5" in fig.get_suptitle()
    im = _map_image(_panels(fig)[0])
    assert not isinstance(im.norm, TwoSlopeNorm) and im.norm.vmin == 0
    assert im.norm.vmax == pytest.approx(np.percentile(m, 99.5)) and im.norm.vmax < 10
    assert im.cmap.name == "inferno"
    assert _colorbars(fig)[0]._colorbar.extend == "max", "the colour bar shows the clipping"
    full = viz.overlay_figure(IMG, m, method="grad_cam", percentile=100)
    assert _map_image(_panels(full)[0]).norm.vmax == pytest.approx(1000.0)
    with pytest.raises(ValueError, match="2-D"):
        viz.overlay_figure(IMG, RNG.random((2, 4, 4)), method="grad_cam")
    with pytest.raises(ValueError, match="normalisation"):
        viz.overlay_figure(IMG * 4 - 2, m, method="grad_cam")


def test_layer_figure_one_titled_panel_per_layer():
    from types import SimpleNamespace

    maps = {"input": RNG.random((2, 32, 24)), "features.0": RNG.random((2, 16, 12)),
            "features.3": RNG.random((2, 8, 6)), "layer4": RNG.random((2, 4, 3)),
            "top": RNG.random((2, 2, 2))}  # fmt: skip
    table = [SimpleNamespace(name="features.3", kind="maxpool", shape=(2, 8, 6, 64))]
    fig = viz.layer_figure(IMG, maps, sample=1, model="small_vgg", class_name="disk", score=0.5,
                           layers=table)  # fmt: skip
    panels = _panels(fig)
    assert len(panels) == len(maps), "one panel per layer"
    titles = [ax.get_title() for ax in panels]
    for (name, m), t in zip(maps.items(), titles):
        assert t.startswith(name), (name, t)
    assert "16×12" in titles[1] and "8×6×64" in titles[2] and "maxpool" in titles[2]
    assert len(_colorbars(fig)) == 1
    assert "attention_backprop" in fig.get_suptitle() and "disk" in fig.get_suptitle()
    # each panel scaled by its own limit onto one shared [0, 1] scale
    for ax in panels:
        assert (_map_image(ax).norm.vmin, _map_image(ax).norm.vmax) == (0.0, 1.0)
    m = maps["input"][1]  # at the image's size: drawn without resizing
    np.testing.assert_allclose(_map_image(panels[0]).get_array(), m / np.percentile(m, 99.5), rtol=1e-5)
    signed = viz.layer_figure(IMG, {"a": RNG.standard_normal((4, 4)), "b": RNG.random((4, 4))})
    assert all(isinstance(_map_image(ax).norm, TwoSlopeNorm) for ax in _panels(signed))
    with pytest.raises(ValueError, match="empty"):
        viz.layer_figure(IMG, {})


def test_grid_shares_one_norm_per_method_row():
    images = [RNG.random((16, 16, 3)) for _ in range(3)]
    maps = {"lrp": [RNG.standard_normal((8, 8)) * (k + 1) for k in range(3)],
            "grad_cam": [RNG.random((4, 4)) for _ in range(3)]}  # fmt: skip
    fig = viz.grid_figure(images, maps, model="m", class_names=["a", "b", "c"], scores=[0.1, 0.2, 0.3],
                          scale="row")  # fmt: skip
    panels = _panels(fig)
    assert len(panels) == 6
    rows = [panels[:3], panels[3:]]
    for (method, ms), row in zip(maps.items(), rows):
        norms = {id(_map_image(ax).norm) for ax in row}
        assert len(norms) == 1, f"{method}: one norm for the row"
        norm = _map_image(row[0]).norm
        assert norm.vmax == pytest.approx(viz.clip_limit(ms)), "limit over all of the row's maps"
        assert row[0].get_ylabel() == method
    assert isinstance(_map_image(rows[0][0]).norm, TwoSlopeNorm)
    assert not isinstance(_map_image(rows[1][0]).norm, TwoSlopeNorm)
    assert len(_colorbars(fig)) == 2, "one colour bar per method row"
    heads = [fig.axes[j].get_title() for j in range(3)]
    assert heads[1] == "b\nsoftmax p 0.2", "the score is named as the softmax probability"
    assert all("row" in cb.get_ylabel() for cb in _colorbars(fig)), "the colour bar names the scaling"
    with pytest.raises(ValueError, match="one map per image"):
        viz.grid_figure(images, {"lrp": maps["lrp"][:2]})
    with pytest.raises(ValueError, match="scale must be 'image'"):
        viz.grid_figure(images, maps, scale="shared")


def _weak_labels(fig):
    return [ax.xaxis.label.get_text() for ax in _panels(fig) if ax.xaxis.label.get_gid() == viz.figures.WEAK_GID]


def test_grid_scales_each_map_by_default_and_labels_weak_maps():
    images = [RNG.random((16, 16, 3)) for _ in range(3)]
    strong = RNG.random((16, 16))  # the image's size: drawn without resampling
    ms = [strong, 0.1 * RNG.random((16, 16)), np.zeros((16, 16))]
    with pytest.warns(viz.EmptyMapWarning, match="all-zero"):
        fig = viz.grid_figure(images, {"grad_cam": ms}, show_inputs=False)
    panels = _panels(fig)
    for ax, m in zip(panels[:2], ms):
        drawn = np.asarray(_map_image(ax).get_array(), np.float64)
        want = m / np.percentile(m, 99.5)
        err = float(np.max(np.abs(drawn - want)))
        assert err <= 1e-6, f"panel shows map ÷ its own 99.5th pct: max error {err:.3g} > 1e-6"
        assert _map_image(ax).norm.vmax == 1.0, "per-image maps share the unit scale"
    (weak,) = _weak_labels(fig)  # the all-zero map has its own warning, not a weak label
    ratio = np.percentile(ms[1], 99.5) / np.percentile(strong, 99.5)
    assert f"{100 * ratio:.2g} %" in weak, f"weak label {weak!r} states the fraction {ratio:.3f}"
    (cb,) = _colorbars(fig)
    assert "own" in cb.get_ylabel(), "the colour bar says each map has its own scale"
    with pytest.warns(viz.EmptyMapWarning):
        row = viz.grid_figure(images, {"grad_cam": ms}, show_inputs=False, scale="row")
    assert _weak_labels(row) == [weak], "a weak map is labelled in the shared scale too"


def _warning_texts(ax):
    return [t for t in ax.texts if t.get_visible() and "WARNING" in t.get_text()]


def test_empty_and_nonfinite_maps_warn_and_say_so_in_the_panel():
    with pytest.warns(viz.EmptyMapWarning, match="all-zero"):
        fig = viz.overlay_figure(IMG, np.zeros((4, 4)), method="grad_cam")
    (ax,) = _panels(fig)
    (text,) = _warning_texts(ax)
    assert "all-zero" in text.get_text()

    bad = RNG.random((4, 4))
    bad[1, 2] = np.nan
    with pytest.warns(viz.EmptyMapWarning, match="non-finite"):
        fig = viz.grid_figure([IMG, IMG], {"gradient": [RNG.random((4, 4)), bad]})
    first, second = _panels(fig)
    assert not _warning_texts(first) and _warning_texts(second)
    assert np.ma.getmaskarray(_map_image(second).get_array()).any(), "NaN pixels are left blank"

    with pytest.warns(viz.EmptyMapWarning, match="layer 'b'"):
        viz.layer_figure(IMG, {"a": RNG.random((4, 4)), "b": np.zeros((4, 4))})


def test_save_writes_each_format(tmp_path):
    fig = viz.overlay_figure(IMG, RNG.random((4, 4)), method="gradient")
    assert viz.save(fig, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert viz.save(fig, tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    assert viz.save(fig, tmp_path / "f.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert b"<svg" in viz.save(fig, tmp_path / "f.svg").read_bytes()[:2000]
    px = viz.read_image(tmp_path / "f.png")
    assert px.shape[0] > 100 and px.std() > 0.05, "a rendered figure, not a blank page"


def test_to_image_undoes_the_imagenet_normalisation():
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    pix = RNG.integers(0, 256, (4, 4, 3))
    np.testing.assert_array_equal(viz.to_image((pix / 255.0 - mean) / std), pix.astype(np.uint8))
    ramp = np.linspace(-3, 5, 48).reshape(4, 4, 3)
    out = viz.to_image(ramp, mean=None)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255, "mean=None stretches min/max"
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        viz.to_image(np.zeros((2, 4, 4, 3)))
