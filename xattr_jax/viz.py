"""Heatmaps for saliency maps: normalisation, colour maps, overlays and per-layer figures (PNG).

Everything here is NumPy; PNG files are written by a small encoder of our own (``zlib`` and
``struct``), so the core library needs neither matplotlib nor Pillow.

* :func:`normalize` — ``"max"`` (``max(m, 0)/max m``, [0, 1]; the display convention of
  Grad-CAM/EB), ``"abs"`` (``m/max|m|``, [−1, 1]; for signed maps such as RSP's), ``"minmax"``.
* :func:`resize` — bilinear, ``align_corners=False`` (half-pixel centres, as PyTorch's
  ``interpolate(mode="bilinear")``), any size up or down.
* :func:`colormap` — ``"jet"`` (values in [0, 1]), ``"seismic"`` (blue–white–red, values in
  [−1, 1], RSP's display), ``"gray"``.
* :func:`overlay` — blend a heatmap over an image.
* :func:`layer_grid` / :func:`save_layer_figure` — the whole-inference-process figure of
  Attention Backpropagation: one panel per layer map, in network order, each upsampled to the
  image size and drawn over the image. The panel names and the grid layout are stored in the PNG's
  ``tEXt`` chunks (``panels``, ``layout``).
* :func:`encode_png` / :func:`write_png` — 8-bit RGB (or grey) PNG.

Example:
  >>> res = xa.explain(model, variables, x, jnp.array([3]), method="attention_backprop")
  >>> from xattr_jax import viz
  >>> viz.save_layer_figure("ab.png", viz.to_image(x[0]), res.layer_maps)
"""

from __future__ import annotations

import struct
import zlib
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "normalize",
    "resize",
    "colormap",
    "overlay",
    "to_image",
    "layer_grid",
    "save_layer_figure",
    "encode_png",
    "write_png",
    "COLORMAPS",
]

# Piecewise-linear colour maps: (position, (r, g, b)) control points, values in [0, 1].
_CMAPS = {
    "jet": (
        (0.0, (0.0, 0.0, 0.5)),
        (0.11, (0.0, 0.0, 1.0)),
        (0.125, (0.0, 0.0, 1.0)),
        (0.34, (0.0, 0.86, 1.0)),
        (0.35, (0.0, 0.9, 0.97)),
        (0.64, (1.0, 1.0, 0.0)),
        (0.65, (1.0, 0.96, 0.0)),
        (0.89, (1.0, 0.0, 0.0)),
        (1.0, (0.5, 0.0, 0.0)),
    ),
    "seismic": (
        (0.0, (0.0, 0.0, 0.3)),
        (0.25, (0.0, 0.0, 1.0)),
        (0.5, (1.0, 1.0, 1.0)),
        (0.75, (1.0, 0.0, 0.0)),
        (1.0, (0.5, 0.0, 0.0)),
    ),
    "gray": ((0.0, (0.0, 0.0, 0.0)), (1.0, (1.0, 1.0, 1.0))),
}
COLORMAPS = tuple(_CMAPS)
_SIGNED = {"seismic"}
_MODES = ("max", "abs", "minmax")


def normalize(m, mode: str = "max", eps: float = 1e-12) -> np.ndarray:
    """Normalise each 2-D map (the last two axes) for display.

    Args:
      m: ``[..., h, w]`` map(s).
      mode: ``"max"``: ``max(m, 0) / max(m)`` in [0, 1] (0 where the map has no positive value);
        ``"abs"``: ``m / max|m|`` in [−1, 1]; ``"minmax"``: ``(m − min)/(max − min)`` in [0, 1].
      eps: maps whose scale is below ``eps`` become 0.

    Returns:
      float32 array of the same shape.
    """
    if mode not in _MODES:
        raise ValueError(f"unknown normalisation {mode!r}; valid: {list(_MODES)}")
    m = np.asarray(m, dtype=np.float64)
    if m.ndim < 2:
        raise ValueError(f"normalize needs maps [..., h, w], got shape {m.shape}")
    ax = (-2, -1)
    if mode == "max":
        p = np.maximum(m, 0)
        s = p.max(axis=ax, keepdims=True)
        out = np.where(s > eps, p / np.where(s > eps, s, 1), 0)
    elif mode == "abs":
        s = np.abs(m).max(axis=ax, keepdims=True)
        out = np.where(s > eps, m / np.where(s > eps, s, 1), 0)
    else:
        lo, hi = m.min(axis=ax, keepdims=True), m.max(axis=ax, keepdims=True)
        s = hi - lo
        out = np.where(s > eps, (m - lo) / np.where(s > eps, s, 1), 0)
    return out.astype(np.float32)


def _axis_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` bilinear interpolation matrix with half-pixel centres (align_corners=False)."""
    scale = n_in / n_out
    src = (np.arange(n_out) + 0.5) * scale - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    w = np.zeros((n_out, n_in))
    w[np.arange(n_out), lo] += 1 - frac
    w[np.arange(n_out), hi] += frac
    return w


def resize(m, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of ``[..., h, w]`` maps to ``size = (H, W)`` (``align_corners=False``)."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim < 2:
        raise ValueError(f"resize needs maps [..., h, w], got shape {m.shape}")
    H, W = (int(s) for s in size)
    if H < 1 or W < 1:
        raise ValueError(f"size must be positive, got {tuple(size)}")
    wh = _axis_weights(m.shape[-2], H)
    ww = _axis_weights(m.shape[-1], W)
    return np.einsum("Hh,...hw,Ww->...HW", wh, m, ww).astype(np.float32)


def colormap(v, name: str = "jet") -> np.ndarray:
    """Colour values with a named map; ``uint8 [..., 3]``.

    ``"jet"`` and ``"gray"`` take values in [0, 1]; ``"seismic"`` takes [−1, 1] (0 is white).
    Values outside the range are clipped.
    """
    if name not in _CMAPS:
        raise ValueError(f"unknown colormap {name!r}; valid: {list(COLORMAPS)}")
    v = np.asarray(v, dtype=np.float64)
    if name in _SIGNED:
        v = (v + 1) / 2
    v = np.clip(v, 0, 1)
    pts = _CMAPS[name]
    xs = np.array([p for p, _ in pts])
    rgb = np.stack([np.interp(v, xs, np.array([c[i] for _, c in pts])) for i in range(3)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def to_image(x, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> np.ndarray:
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


def overlay(image, heat, alpha: float = 0.5, cmap: str = "jet", mode: str | None = None) -> np.ndarray:
    """Draw a map over an image: ``(1 − alpha)·image + alpha·colormap(map)``; ``uint8 [H, W, 3]``.

    Args:
      image: ``uint8 [H, W, 3]`` (see :func:`to_image`).
      heat: a 2-D map of any size (resized bilinearly to the image), or an already coloured
        ``uint8 [H, W, 3]`` heatmap.
      alpha: the heatmap's weight in [0, 1].
      cmap: colour map for a 2-D map.
      mode: normalisation for a 2-D map (default ``"abs"`` for signed colour maps, else ``"max"``).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"overlay needs an RGB image [H, W, 3], got shape {image.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = np.asarray(heat)
    if heat.ndim == 2:
        mode = mode or ("abs" if cmap in _SIGNED else "max")
        heat = colormap(normalize(resize(heat, image.shape[:2]), mode), cmap)
    if heat.shape != image.shape:
        raise ValueError(f"heatmap {heat.shape} does not match the image {image.shape}")
    out = (1 - alpha) * image.astype(np.float64) + alpha * heat.astype(np.float64)
    return np.round(out).astype(np.uint8)


def layer_grid(image, layer_maps: Mapping[str, object], *, sample: int = 0, column: int = 0,
               cols: int | None = None, pad: int = 2, alpha: float = 0.5, cmap: str = "jet",
               mode: str | None = None):
    """One panel per layer map, in the mapping's order, each over the image; ``(uint8 grid, names)``.

    Args:
      image: ``uint8 [H, W, 3]`` (the panel size).
      layer_maps: ``{name: map}``, each map ``[h, w]``, ``[N, h, w]`` or ``[N, K, h, w]``
        (``Attribution.layer_maps``); ``sample`` and ``column`` pick the map to draw.
      cols: panels per row (default ``ceil(sqrt(n))``).
      pad: white pixels between panels.
      alpha, cmap, mode: see :func:`overlay`.

    Returns:
      ``(grid, names)``: the figure ``uint8 [rows·(H+pad)−pad, cols·(W+pad)−pad, 3]`` and the panel
      names in row-major order.
    """
    names = list(layer_maps)
    if not names:
        raise ValueError("layer_maps is empty")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"layer_grid needs a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n = len(names)
    cols = int(np.ceil(np.sqrt(n))) if cols is None else int(cols)
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    rows = -(-n // cols)
    H, W = image.shape[:2]
    grid = np.full((rows * (H + pad) - pad, cols * (W + pad) - pad, 3), 255, np.uint8)
    for i, name in enumerate(names):
        m = np.asarray(layer_maps[name], dtype=np.float64)
        if m.ndim == 4:
            m = m[sample, column]
        elif m.ndim == 3:
            m = m[sample]
        elif m.ndim != 2:
            raise ValueError(f"map {name!r} has shape {m.shape}; expected [h, w], [N, h, w] or [N, K, h, w]")
        r, c = divmod(i, cols)
        grid[r * (H + pad): r * (H + pad) + H, c * (W + pad): c * (W + pad) + W] = overlay(
            image, m, alpha=alpha, cmap=cmap, mode=mode
        )
    return grid, names


def save_layer_figure(path, image, layer_maps: Mapping[str, object], **kwargs) -> list:
    """Write :func:`layer_grid`'s figure as a PNG; returns the panel names (network order).

    The PNG carries ``tEXt`` chunks ``panels`` (the names, comma-separated, row-major) and ``layout``
    (``"rows=R cols=C panel=HxW pad=P"``).
    """
    grid, names = layer_grid(image, layer_maps, **kwargs)
    H, W = np.asarray(image).shape[:2]
    pad = kwargs.get("pad", 2)
    cols = (grid.shape[1] + pad) // (W + pad)
    rows = (grid.shape[0] + pad) // (H + pad)
    write_png(path, grid, text={"panels": ",".join(names),
                                "layout": f"rows={rows} cols={cols} panel={H}x{W} pad={pad}"})
    return names


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels, text: Mapping[str, str] | None = None, level: int = 6) -> bytes:
    """8-bit PNG bytes of ``uint8 [H, W, 3]`` (RGB) or ``[H, W]`` (grey) pixels; filter 0 per row.

    ``text`` adds Latin-1 ``tEXt`` chunks (key ≤ 79 characters).
    """
    px = np.asarray(pixels)
    if px.dtype != np.uint8:
        raise TypeError(f"encode_png needs uint8 pixels, got {px.dtype}")
    if px.ndim == 2:
        color = 0
        px = px[:, :, None]
    elif px.ndim == 3 and px.shape[-1] == 3:
        color = 2
    else:
        raise ValueError(f"encode_png needs [H, W] or [H, W, 3] pixels, got shape {px.shape}")
    h, w = px.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"empty image {px.shape}")
    raw = np.concatenate([np.zeros((h, 1), np.uint8), px.reshape(h, -1)], axis=1).tobytes()
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))]
    for k, v in (text or {}).items():
        if not 1 <= len(k) <= 79:
            raise ValueError(f"PNG text key must have 1-79 characters, got {k!r}")
        out.append(_chunk(b"tEXt", k.encode("latin-1") + b"\x00" + str(v).encode("latin-1")))
    out.append(_chunk(b"IDAT", zlib.compress(raw, level)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def write_png(path, pixels, text: Mapping[str, str] | None = None) -> None:
    """Write ``pixels`` (see :func:`encode_png`) to ``path``."""
    data = encode_png(pixels, text)
    with open(path, "wb") as f:
        f.write(data)
