"""Pixel-level heatmaps: coloured maps, overlays and montages as arrays (no axes, no text).

For jobs that write many images at the images' own resolution (a whole dataset explained, a
pointing-game dump) and for checks that compare pixels. The conventions are the figures' own
(:mod:`xattr_jax.viz.maps`): diverging colour map centred at 0 for signed maps, sequential for
unsigned, clipped at the 99.5th percentile of ``|map|``, drawn over a greyscale copy of the image,
maps resized with :func:`xattr_jax.imageio.resize`, colours from matplotlib's colour maps. For a
figure with titles and a colour bar use :func:`xattr_jax.viz.overlay_figure` and friends.

* :func:`to_image` — a normalised model input back to ``uint8`` RGB.
* :func:`colorize` — a map to RGB.
* :func:`overlay` — a map over an image (uint8 in, uint8 out; float in, float out).
* :func:`tile`, :func:`upscale` — montages and integer nearest-neighbour enlargement.
* :func:`layer_grid` / :func:`save_layer_figure` — one overlay per layer map in a grid; the PNG
  carries the panel names and the layout in ``tEXt`` chunks (``panels``, ``layout``).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from .._constants import IMAGENET_MEAN, IMAGENET_STD
from ..imageio import resize, write_image
from .figures import as_rgb, grey
from .maps import PERCENTILE, SIGNED_CMAP, UNSIGNED_CMAP, as_map, check_map, is_signed, map_norm, pick_map

__all__ = ["to_image", "colorize", "overlay", "tile", "upscale", "layer_grid", "save_layer_figure"]


def to_image(x, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """An ``[H, W, 3]`` model input back to ``uint8`` RGB: ``x·std + mean``, clipped to [0, 1].

    Pass ``mean=None`` to stretch the image's own min/max to [0, 255] instead.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] not in (1, 3):
        raise ValueError(f"to_image needs one [H, W, 3] image, got shape {x.shape}")
    if mean is None:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    else:
        x = x * np.asarray(std) + np.asarray(mean)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def colorize(map, *, method: Optional[str] = None, signed: Optional[bool] = None,
             percentile: float = PERCENTILE, cmap=None, label: str = "map") -> np.ndarray:  # fmt: skip
    """float32 RGBA ``[h, w, 4]`` of a 2-D map; alpha 0 where the map is not finite.

    Signed (default :func:`~xattr_jax.viz.maps.is_signed` of ``method`` and the map): ``RdBu_r``
    over ``[−L, L]``; unsigned: ``inferno`` over ``[0, L]``; ``L`` the ``percentile`` of ``|map|``.
    """
    m = as_map(map)
    check_map(m, label, stacklevel=3)
    sg = is_signed(method, m) if signed is None else bool(signed)
    return _rgba(m, map_norm(m, sg, percentile), sg, cmap)


def _rgba(m, norm, signed: bool, cmap) -> np.ndarray:
    import matplotlib

    cm = matplotlib.colormaps[cmap if cmap is not None else (SIGNED_CMAP if signed else UNSIGNED_CMAP)]
    return cm(norm(np.ma.masked_invalid(m))).astype(np.float32)


def overlay(image, map, *, method: Optional[str] = None, signed: Optional[bool] = None,
            alpha: float = 0.5, percentile: float = PERCENTILE, cmap=None,
            in_grey: bool = True) -> np.ndarray:  # fmt: skip
    """``(1 − alpha)·grey(image) + alpha·colorize(map)`` at the image's size.

    Args:
      image: ``[H, W, 3]`` uint8, or float in [0, 1].
      map: ``[h, w]``, resized to the image (:func:`xattr_jax.imageio.resize`) before colouring.
      method, signed, percentile, cmap: the colour scale (see :func:`colorize`).
      alpha: the map's weight in [0, 1].
      in_grey: draw over a greyscale copy of the image (default) or over the colour image.

    Returns:
      ``[H, W, 3]``: uint8 for a uint8 image, else float32 in [0, 1]. Non-finite map pixels show
      the image alone.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = as_rgb(image)
    base = np.repeat(grey(rgb)[..., None], 3, axis=-1) if in_grey else rgb
    m = as_map(map)
    size = rgb.shape[:2]
    check_map(m, "map" if method is None else f"{method} map", stacklevel=3)
    sg = is_signed(method, m) if signed is None else bool(signed)
    finite = np.isfinite(m)
    up = resize(np.where(finite, m, 0.0), size)
    if not finite.all():
        up = np.where(resize((~finite).astype(np.float32), size) > 0, np.nan, up)
    heat = _rgba(up, map_norm(m, sg, percentile), sg, cmap)
    a = alpha * heat[..., 3:4]
    out = (1 - a) * base + a * heat[..., :3]
    if np.asarray(image).dtype == np.uint8:
        return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
    return out.astype(np.float32)


def upscale(image, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``[H, W, ...]`` by an integer factor (crisp pixels)."""
    f = int(factor)
    if f < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    a = np.asarray(image)
    return a if f == 1 else np.repeat(np.repeat(a, f, axis=0), f, axis=1)


def tile(images: Sequence, columns: Optional[int] = None, pad: int = 2, fill: float = 1.0) -> np.ndarray:
    """Equally sized ``[H, W, 3]`` images in a grid (row-major), ``pad`` pixels of ``fill`` apart.

    uint8 images give a uint8 montage (``fill`` scaled to 255); otherwise float32.
    """
    ims = [np.asarray(i) for i in images]
    if not ims:
        raise ValueError("tile needs at least one image")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    shapes = {i.shape for i in ims}
    if len(shapes) != 1:
        raise ValueError(f"tile needs images of one shape, got {sorted(shapes)}")
    as_u8 = all(i.dtype == np.uint8 for i in ims)
    h, w = ims[0].shape[:2]
    c = ims[0].shape[2] if ims[0].ndim == 3 else None
    cols = len(ims) if columns is None else max(1, int(columns))
    rows = -(-len(ims) // cols)
    shape = (rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad) + ((c,) if c else ())
    out = np.full(shape, round(fill * 255) if as_u8 else fill, np.uint8 if as_u8 else np.float32)
    for k, im in enumerate(ims):
        r, cc = divmod(k, cols)
        out[r * (h + pad): r * (h + pad) + h, cc * (w + pad): cc * (w + pad) + w] = im
    return out


def layer_grid(image, layer_maps: Mapping[str, object], *, sample: int = 0, column: int = 0,
               cols: Optional[int] = None, pad: int = 2, **overlay_kwargs):  # fmt: skip
    """One :func:`overlay` per layer map, in the mapping's order, in a grid; ``(grid, names)``.

    Args:
      image: ``[H, W, 3]`` (the panel size; uint8 gives a uint8 grid).
      layer_maps: ``{name: map}``, each ``[h, w]``, ``[N, h, w]`` or ``[N, K, h, w]``
        (``Attribution.layer_maps``); ``sample`` and ``column`` pick the map.
      cols: panels per row (default ``ceil(sqrt(n))``).
      pad: white pixels between panels.
      overlay_kwargs: passed to :func:`overlay` (each panel has its own colour scale).
    """
    names = list(layer_maps)
    if not names:
        raise ValueError("layer_maps is empty")
    n = len(names)
    cols = int(np.ceil(np.sqrt(n))) if cols is None else int(cols)
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    panels = [overlay(image, pick_map(layer_maps[k], k, sample, column), **overlay_kwargs) for k in names]
    return tile(panels, columns=cols, pad=pad), names


def save_layer_figure(path, image, layer_maps: Mapping[str, object], **kwargs) -> list:
    """Write :func:`layer_grid`'s montage as a PNG; returns the panel names (network order).

    The PNG carries ``tEXt`` chunks ``panels`` (the names, comma-separated, row-major) and
    ``layout`` (``"rows=R cols=C panel=HxW pad=P"``). For a labelled figure with a colour bar use
    :func:`xattr_jax.viz.layer_figure`.
    """
    grid, names = layer_grid(image, layer_maps, **kwargs)
    H, W = np.asarray(image).shape[:2]
    pad = kwargs.get("pad", 2)
    cols = (grid.shape[1] + pad) // (W + pad)
    rows = (grid.shape[0] + pad) // (H + pad)
    write_image(path, grid, metadata={"panels": ",".join(names),
                                      "layout": f"rows={rows} cols={cols} panel={H}x{W} pad={pad}"})
    return names
