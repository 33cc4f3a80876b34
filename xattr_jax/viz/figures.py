"""Figures that explain themselves: overlays, per-layer maps and methods × images grids (matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` built directly (no ``pyplot``: no global
state, nothing is shown, any backend); write it with :func:`save` (PNG, JPEG, PDF or SVG, by the
file's extension). Conventions (:mod:`xattr_jax.viz.maps`):

* the map is drawn over a **greyscale copy** of the image, with transparency ``alpha``, so the map's
  colours are not confused with the image's; the map is resized to the image with
  :func:`xattr_jax.viz.imageio.resize` (antialiased bilinear);
* **signed** maps (:func:`~xattr_jax.viz.maps.is_signed`) on a diverging colour map centred at 0
  with symmetric limits, **unsigned** maps on a sequential one, both clipped at the 99.5th
  percentile of ``|map|`` (``percentile=``) and with a **colour bar** saying so;
* **titles** name the method, the model, the class and its score, the class's softmax
  probability (``softmax p``: the score everywhere in the library: ``xattr explain``, the demo,
  ``records.jsonl``'s ``prob``);
* grids scale **each map by its own** clipping limit by default (``scale="image"``), so a weak map
  is not drawn blank; ``scale="row"`` shares one limit per method row instead. Either way a map
  whose clipping limit is under :data:`WEAK` of its row's strongest is labelled ``weak`` in its
  panel, and the colour bar's label says which scaling was used;
* a map that is all zero or not finite gets a visible warning in its panel and an
  :class:`~xattr_jax.viz.maps.EmptyMapWarning`.

Example:
  >>> from xattr_jax import viz
  >>> res = xa.explain(model, variables, x, jnp.array([3]), method="lrp")
  >>> fig = viz.overlay_figure(image, res.map[0], method="lrp", model="vgg16",
  ...                          class_name="cat", score=float(res.logits[0, 3]))
  >>> viz.save(fig, "lrp_cat.png")
"""

from __future__ import annotations

import math
import textwrap
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from .._constants import IMAGENET_MEAN, IMAGENET_STD
from .imageio import resize, write_image
from .maps import (
    PERCENTILE,
    SIGNED_CMAP,
    UNSIGNED_CMAP,
    as_map,
    check_map,
    clip_limit,
    is_signed,
    map_norm,
    pick_map,
)

__all__ = ["overlay_figure", "layer_figure", "grid_figure", "save", "title_for", "as_rgb", "grey", "to_image",
           "SCORE_NAME", "WEAK", "WEAK_GID"]

_WARN_STYLE = dict(
    ha="center", va="center", fontsize=7, color="black", wrap=True,
    bbox=dict(boxstyle="round", facecolor="#ffe066", edgecolor="#c00000", alpha=0.9),
)  # fmt: skip
WARNING_GID = "empty-map-warning"  # the gid of the warning text drawn in an empty panel
WEAK_GID = "weak-map-label"  # the gid of the label under a weak map's panel
#: A map is labelled weak when its clipping limit is under this fraction of its row's largest.
WEAK = 0.25
#: What a figure's score is: the class's softmax probability.
SCORE_NAME = "softmax p"


def as_rgb(image) -> np.ndarray:
    """An image for display: float RGB ``[H, W, 3]`` in [0, 1] from uint8 or float, RGB or grey.

    Raises:
      ValueError: not an image, or float values well outside [0, 1] (a normalised model input:
        pass the image before normalisation, or :func:`to_image` of it).
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"image must be [H, W, 3] (or grey [H, W]), got shape {np.shape(image)}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    a = a.astype(np.float64)
    finite = a[np.isfinite(a)]
    if finite.size and (finite.min() < -0.01 or finite.max() > 1.01):
        raise ValueError(f"image values must lie in [0, 1] (or be uint8), got [{finite.min():.3g}, "
                         f"{finite.max():.3g}]; pass the image before normalisation, or "
                         "viz.to_image(x) for a normalised model input")  # fmt: skip
    return np.clip(np.nan_to_num(a), 0, 1)


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


def grey(image) -> np.ndarray:
    """The greyscale copy an overlay is drawn on: ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``."""
    return as_rgb(image) @ np.array([0.299, 0.587, 0.114])


def title_for(method: Optional[str] = None, model: Optional[str] = None, class_name=None,
              score=None) -> str:  # fmt: skip
    """``"method · model"`` over ``"class · softmax p s"`` (the parts that are given; ``score`` is the
    class's softmax probability, :data:`SCORE_NAME`, or a text shown as given)."""
    top = " · ".join(str(v) for v in (method, model) if v)
    bottom = []
    if class_name is not None:
        bottom.append(f"class {class_name}" if isinstance(class_name, (int, np.integer)) else str(class_name))
    if score is not None:
        bottom.append(score if isinstance(score, str) else _score(score))
    return "\n".join(p for p in (top, " · ".join(bottom)) if p)


def _score(p) -> str:
    return f"{SCORE_NAME} {float(p):.3g}"


def _unit_norm(signed: bool):
    """The norm of maps divided by their own clipping limit: ``[−1, 1]`` centred at 0, or ``[0, 1]``."""
    from matplotlib.colors import Normalize, TwoSlopeNorm

    return TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0) if signed else Normalize(0.0, 1.0)


def _cmap(signed: bool, cmap):
    return cmap if cmap is not None else (SIGNED_CMAP if signed else UNSIGNED_CMAP)


def _colorbar(fig, norm, cmap, axes, signed: bool, maps, percentile: float, label: Optional[str] = None,
              **kw):  # fmt: skip
    """A colour bar with full (opaque) colours; arrows where values were clipped."""
    from matplotlib.cm import ScalarMappable

    lim = norm.vmax
    vals = [np.asarray(m, np.float64) for m in maps]
    vals = np.concatenate([v[np.isfinite(v)].ravel() for v in vals]) if vals else np.zeros(0)
    over = vals.size > 0 and vals.max() > lim * (1 + 1e-9)
    under = signed and vals.size > 0 and vals.min() < -lim * (1 + 1e-9)
    extend = {(True, True): "both", (True, False): "max", (False, True): "min"}.get((over, under), "neither")
    sm = ScalarMappable(norm=norm, cmap=cmap)
    if label is None:
        label = (f"signed; ±{lim:.3g} = {percentile:g}th pct of |map|" if signed
                 else f"{lim:.3g} = {percentile:g}th pct of |map|")  # fmt: skip
    cb = fig.colorbar(sm, ax=axes, extend=extend, **kw)
    cb.set_label(label, fontsize=7)
    cb.ax.tick_params(labelsize=7)
    if signed:
        cb.set_ticks([-lim, 0.0, lim], labels=[f"{-lim:.3g}", "0", f"{lim:.3g}"])
    return cb


def _panel(ax, image, m, norm, cmap, alpha: float, label: str):
    """Draw ``m`` over the grey copy of ``image`` (or alone when ``image`` is None) in ``ax``."""
    problem = check_map(m, label, stacklevel=4)
    finite = np.isfinite(m)
    vals = np.where(finite, m, 0.0)
    if image is not None:
        g = grey(image)
        size = g.shape
        ax.imshow(g, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        a = alpha
    else:
        size, a = m.shape, 1.0
    up = resize(vals, size)
    if not finite.all():
        up = np.ma.masked_array(up, resize((~finite).astype(np.float32), size) > 0)
    im = ax.imshow(up, cmap=cmap, norm=norm, alpha=a, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if problem is not None:
        t = ax.text(0.5, 0.5, "WARNING\n" + textwrap.fill(problem, 22), transform=ax.transAxes,
                    **_WARN_STYLE)  # fmt: skip
        t.set_gid(WARNING_GID)
    return im


def overlay_figure(
    image,
    map,
    *,
    method: Optional[str] = None,
    model: Optional[str] = None,
    class_name=None,
    score=None,
    signed: Optional[bool] = None,
    percentile: float = PERCENTILE,
    alpha: float = 0.5,
    cmap=None,
    show_input: bool = True,
    title: Optional[str] = None,
    size: float = 3.0,
    dpi: float = 100,
):
    """One map over its image, with a title and a colour bar.

    Args:
      image: ``[H, W, 3]`` (uint8, or float in [0, 1]) or ``None`` to draw the map alone.
      map: ``[h, w]`` (any size; resized to the image).
      method, model, class_name, score: the title (:func:`title_for`).
      signed: force the colour scale; default :func:`~xattr_jax.viz.maps.is_signed` (method, map).
      percentile: clipping percentile of ``|map|``.
      alpha: the map's opacity over the grey image.
      cmap: colour map name (default ``RdBu_r`` for signed, ``inferno`` for unsigned).
      show_input: a first panel with the image in colour.
      title: replaces the generated title.
      size: panel size in inches.

    Returns:
      the ``Figure`` (its ``get_suptitle()`` is the title).
    """
    from matplotlib.figure import Figure

    m = as_map(map)
    signed = is_signed(method, m) if signed is None else bool(signed)
    norm = map_norm(m, signed, percentile)
    cm = _cmap(signed, cmap)
    with_input = show_input and image is not None
    fig = Figure(figsize=(size * (2.35 if with_input else 1.35), size + 0.6), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, 2 if with_input else 1, squeeze=False)[0]
    if with_input:
        axes[0].imshow(as_rgb(image), interpolation="nearest")
        axes[0].set_title("input", fontsize=8)
        axes[0].set_xticks([])
        axes[0].set_yticks([])
    ax = axes[-1]
    _panel(ax, image, m, norm, cm, alpha, title_for(method, model, class_name, score) or "map")
    ax.set_title(f"{'signed' if signed else 'unsigned'} map over the grey image" if image is not None
                 else f"{'signed' if signed else 'unsigned'} map", fontsize=8)  # fmt: skip
    _colorbar(fig, norm, cm, ax, signed, [m], percentile, shrink=0.9)
    fig.suptitle(title if title is not None else title_for(method, model, class_name, score) or "map",
                 fontsize=9)  # fmt: skip
    return fig


def layer_figure(
    image,
    layer_maps: Mapping[str, object],
    *,
    sample: int = 0,
    column: int = 0,
    cols: Optional[int] = None,
    method: str = "attention_backprop",
    model: Optional[str] = None,
    class_name=None,
    score=None,
    layers: Optional[Sequence] = None,
    signed: Optional[bool] = None,
    percentile: float = PERCENTILE,
    alpha: float = 0.5,
    panel_size: float = 1.9,
    dpi: float = 100,
):
    """One labelled panel per layer map, in the mapping's (network) order, each over the image.

    Made for Attention Backpropagation's ``res.layer_maps`` (the map at every layer, "the whole
    inference process"), and usable with any ``{name: map}``. Panel titles: the layer's name and
    its map's shape ``h×w`` (``h×w×C`` and the layer's kind when ``layers`` is given).

    Normalisation: the layers' maps differ in resolution (a 7×7 map spreads the same total over
    fewer pixels than a 224×224 one), so each panel is divided by its own clipping limit
    (``percentile`` of its ``|map|``) and all panels share one colour scale, ``[0, 1]`` (or
    ``[−1, 1]`` when signed) in those units; one colour bar says so. Signed if the method or any
    layer's map is (:func:`~xattr_jax.viz.maps.is_signed`).

    Args:
      image: ``[H, W, 3]`` (uint8 or float in [0, 1]), or ``None`` for the maps alone.
      layer_maps: ``{name: map}``, each ``[h, w]``, ``[N, h, w]`` or ``[N, K, h, w]``;
        ``sample`` and ``column`` pick the map.
      cols: panels per row (default ``ceil(sqrt(n))``).
      method, model, class_name, score: the figure's title.
      layers: the layer table (``xa.layers(model, variables, x)``) for kinds and channel counts.

    Returns:
      the ``Figure``: ``len(layer_maps)`` map panels (the axes holding images) and a colour bar.
    """
    from matplotlib.figure import Figure

    names = list(layer_maps)
    if not names:
        raise ValueError("layer_maps is empty: nothing to draw (was the method run with layer maps, "
                         "e.g. method='attention_backprop'?)")  # fmt: skip
    maps = [pick_map(layer_maps[n], n, sample, column) for n in names]
    n = len(names)
    cols = int(math.ceil(math.sqrt(n))) if cols is None else int(cols)
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    rows = -(-n // cols)
    signed = is_signed(method, maps) if signed is None else bool(signed)
    norm = _unit_norm(signed)
    cm = SIGNED_CMAP if signed else UNSIGNED_CMAP
    info = {l.name: l for l in (layers or ())}
    fig = Figure(figsize=(cols * panel_size + 0.9, rows * (panel_size + 0.35) + 0.7), dpi=dpi,
                 layout="constrained")  # fmt: skip
    axes = []
    scaled = []
    for i, (name, m) in enumerate(zip(names, maps)):
        ax = fig.add_subplot(rows, cols, i + 1)
        lim = clip_limit(m, percentile)
        s = m / lim
        scaled.append(s)
        _panel(ax, image, s, norm, cm, alpha, f"{method} layer {name!r}")
        shape = "×".join(str(v) for v in m.shape)
        l = info.get(name)
        if l is not None and len(getattr(l, "shape", ())) == 4:
            shape = "×".join(str(v) for v in l.shape[1:])
        head = f"{name} ({l.kind})" if l is not None and getattr(l, "kind", None) else name
        ax.set_title(f"{head}\n{shape}", fontsize=7)
        axes.append(ax)
    _colorbar(fig, norm, cm, axes, signed, scaled, percentile, shrink=0.6,
              label=f"map ÷ its layer's {percentile:g}th pct of |map|")  # fmt: skip
    head = title_for(method, model, class_name, score)
    fig.suptitle(f"{head}\nper-layer maps in network order, input first", fontsize=9)
    return fig


def grid_figure(
    images: Sequence,
    maps: Mapping[str, Sequence],
    *,
    model: Optional[str] = None,
    class_names: Optional[Sequence] = None,
    scores: Union[None, Sequence, Mapping[str, Sequence]] = None,
    signed: Optional[Mapping[str, bool]] = None,
    scale: str = "image",
    percentile: float = PERCENTILE,
    alpha: float = 0.5,
    show_inputs: bool = True,
    title: Optional[str] = None,
    panel_size: float = 1.6,
    dpi: float = 100,
):
    """Methods × images: one row per method, one column per image, over the images in grey.

    **Scaling** (``scale``): ``"image"`` (default) divides each map by its own clipping limit (the
    ``percentile`` of its ``|map|``), so every panel uses the whole colour range and one colour bar
    per row reads in those units; ``"row"`` gives the row's maps one shared limit (over all of the
    row's maps), so their strengths can be compared within a method. Methods have different units,
    so rows are never compared. In both, a map whose limit is under :data:`WEAK` of the row's
    largest is labelled ``weak`` (with its fraction) under its panel, instead of looking blank.

    Args:
      images: ``[H, W, 3]`` images (uint8 or float in [0, 1]), one per column.
      maps: ``{method: [map per image]}`` (a sequence of ``[h, w]`` or an array ``[N, h, w]``).
      model: shown in the title.
      class_names: the class explained in each column (shown above the column).
      scores: the class's score per image (``[N]``, shown with the class), or per method
        (``{method: [N]}``, shown in each panel).
      signed: ``{method: bool}`` to override :func:`~xattr_jax.viz.maps.is_signed`.
      scale: ``"image"`` (each map its own limit) or ``"row"`` (one limit per method row).
      show_inputs: a first row with the images in colour.

    Returns:
      the ``Figure``; each row's panels share one norm object.
    """
    from matplotlib.figure import Figure

    if scale not in ("image", "row"):
        raise ValueError(f"scale must be 'image' (each map its own limit) or 'row' (one per method row), "
                         f"got {scale!r}")  # fmt: skip
    images = list(images)
    n = len(images)
    if n == 0 or not (maps or show_inputs):
        raise ValueError("grid_figure needs at least one image, and one method or show_inputs=True")
    rows_maps = {}
    for method, ms in maps.items():
        ms = [as_map(m, f"{method} map") for m in (list(ms) if not isinstance(ms, np.ndarray) else ms)]
        if len(ms) != n:
            raise ValueError(f"{method}: {len(ms)} maps for {n} images; give one map per image")
        rows_maps[method] = ms
    if class_names is not None and len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} images")
    per_method_scores = isinstance(scores, Mapping)
    nrows = len(rows_maps) + int(show_inputs)
    fig = Figure(figsize=(n * panel_size + 1.6, nrows * (panel_size + 0.25) + 0.6), dpi=dpi,
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(nrows, n, squeeze=False)

    def head(j):
        parts = []
        if class_names is not None:
            c = class_names[j]
            parts.append(f"class {c}" if isinstance(c, (int, np.integer)) else str(c))
        if scores is not None and not per_method_scores:
            parts.append(_score(scores[j]))
        return "\n".join(parts)

    r0 = 0
    if show_inputs:
        for j, img in enumerate(images):
            ax = axes[0, j]
            ax.imshow(as_rgb(img), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(head(j), fontsize=7)
        axes[0, 0].set_ylabel("input", fontsize=8)
        r0 = 1
    for r, (method, ms) in enumerate(rows_maps.items(), start=r0):
        sg = (signed or {}).get(method)
        sg = is_signed(method, ms) if sg is None else bool(sg)
        cm = _cmap(sg, None)
        limits = [clip_limit(m, percentile) for m in ms]
        if scale == "image":
            ms = [m / lim for m, lim in zip(ms, limits)]
            norm = _unit_norm(sg)
            label = f"each map ÷ its own {percentile:g} pct"
        else:
            norm = map_norm(ms, sg, percentile)
            label = f"one scale per row: {percentile:g} pct"
        strength = [lim if np.any(np.isfinite(m) & (m != 0)) else 0.0 for m, lim in zip(ms, limits)]
        top = max(strength)
        for j, (img, m) in enumerate(zip(images, ms)):
            ax = axes[r, j]
            _panel(ax, img, m, norm, cm, alpha, f"{method}, image {j}")
            if 0 < strength[j] < WEAK * top:
                ax.set_xlabel(f"weak: {100 * strength[j] / top:.2g} % of the row's strongest", fontsize=6,
                              color="#c00000", gid=WEAK_GID)  # fmt: skip
            t = []
            if r == 0 and not show_inputs:
                t.append(head(j))
            if per_method_scores and method in scores:
                t.append(_score(scores[method][j]))
            if t:
                ax.set_title("\n".join(p for p in t if p), fontsize=7)
        axes[r, 0].set_ylabel(method, fontsize=8)
        _colorbar(fig, norm, cm, list(axes[r]), sg, ms, percentile, shrink=0.9, aspect=10, label=label)
    default = "attribution maps" if rows_maps else "images"
    fig.suptitle(title if title is not None else
                 " · ".join(p for p in (default, model, _SCALES[scale] if rows_maps else None) if p),
                 fontsize=9)  # fmt: skip
    return fig


_SCALES = {"image": "each map scaled to its own range", "row": "one colour scale per method row"}


def save(fig, path, **kwargs):
    """Write a figure (or an image array) to ``path``; the format follows the extension
    (:func:`xattr_jax.viz.imageio.write_image`: ``.png``, ``.jpg``, ``.pdf``, ``.svg``). Returns the path."""
    return write_image(path, fig, **kwargs)
