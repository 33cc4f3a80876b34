"""Figures of attribution maps (matplotlib) that explain themselves, and image files (Pillow).

Figures (each returns a :class:`matplotlib.figure.Figure`; no ``pyplot``, nothing is shown):

* :func:`overlay_figure` — one map over its image: title (method, model, class, score), colour bar.
* :func:`layer_figure` — a map per layer (Attention Backpropagation's ``res.layer_maps``), one
  panel per layer titled with its name and shape.
* :func:`grid_figure` — methods × images, each map scaled to its own range (or one colour scale
  per method row, ``scale="row"``); weak maps labelled as such.
* :func:`show` — an :class:`~xattr_jax.Attribution` over its input in one call (also ``xa.show``).
* :func:`save` — write a figure as PNG, JPEG, PDF or SVG (by the extension).

Conventions (:mod:`xattr_jax.viz.maps`): signed maps (:func:`is_signed`) on a diverging colour
map centred at 0 with symmetric limits, unsigned maps on a sequential one, both clipped at the
99.5th percentile of ``|map|``; maps drawn over a greyscale copy of the image; an all-zero or
non-finite map gets a visible warning in its panel and an :class:`EmptyMapWarning`.

A normalised model input back to a picture: :func:`to_image`. Image files and the resizer:
:mod:`xattr_jax.viz.imageio` (re-exported here).

Example:
  >>> import xattr_jax as xa
  >>> from xattr_jax import viz
  >>> res = xa.explain(model, variables, x, jnp.array([3]), method="attention_backprop")
  >>> image = viz.to_image(x[0])
  >>> viz.save(viz.layer_figure(image, res.layer_maps, model="vgg16", class_name="cat"), "ab.png")
  >>> viz.save(viz.overlay_figure(image, res.map[0], method="attention_backprop"), "ab_map.pdf")
"""

from . import maps
from .imageio import read_image, resize, write_image
from .figures import (
    SCORE_NAME,
    WEAK,
    as_rgb,
    grey,
    grid_figure,
    layer_figure,
    overlay_figure,
    save,
    title_for,
    to_image,
)
from .maps import (
    PERCENTILE,
    SIGNED_METHODS,
    UNSIGNED_METHODS,
    EmptyMapWarning,
    check_map,
    clip_limit,
    is_signed,
    map_norm,
)
from .result import show

__all__ = [
    "overlay_figure",
    "layer_figure",
    "grid_figure",
    "show",
    "save",
    "title_for",
    "SCORE_NAME",
    "WEAK",
    "is_signed",
    "map_norm",
    "clip_limit",
    "check_map",
    "EmptyMapWarning",
    "SIGNED_METHODS",
    "UNSIGNED_METHODS",
    "PERCENTILE",
    "as_rgb",
    "grey",
    "to_image",
    "read_image",
    "write_image",
    "resize",
    "maps",
]
