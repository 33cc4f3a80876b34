""":func:`show`: an :class:`~xattr_jax.Attribution` drawn over its input in one call."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .figures import grid_figure, overlay_figure, title_for, to_image

__all__ = ["show"]


def _image(xi) -> np.ndarray:
    """A model input ``[H, W, 3]`` for display: as is when it is uint8 or in [0, 1], else taken as
    ImageNet-normalised and mapped back (:func:`~xattr_jax.viz.to_image`)."""
    a = np.asarray(xi)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    finite = a[np.isfinite(a)]
    if finite.size and finite.min() >= -0.01 and finite.max() <= 1.01:
        return a
    return to_image(a)


def show(res, x, target=None, *, class_names: Optional[Sequence[str]] = None, model: Optional[str] = None,
         **kwargs):  # fmt: skip
    """A figure of ``res.map`` over the images ``x``: one overlay for one map, else one row of panels
    (every example, and every target of ``[N, K]`` targets), titled with the method and its layer.

    In a notebook the returned figure displays itself; write it with :func:`xattr_jax.viz.save`.

    Args:
      res: an :class:`~xattr_jax.Attribution` (``res.map`` ``[N, h, w]`` or ``[N, K, h, w]``).
      x: the ``[N, H, W, 3]`` input it explains: the model input (ImageNet-normalised values are
        mapped back) or the images (uint8, or float in [0, 1]).
      target: the ``[N]`` (``[N, K]``) classes explained; each panel then names its class and
        softmax probability (from ``res.logits``).
      class_names: names of the classes, indexed by ``target``.
      model: shown in the title.
      **kwargs: passed to :func:`~xattr_jax.viz.overlay_figure` (one map) or
        :func:`~xattr_jax.viz.grid_figure`.

    Returns:
      the ``matplotlib`` ``Figure``.

    Example:
      >>> res = xa.explain(model, variables, x, t, method="grad_cam")
      >>> xa.show(res, x, t)
    """
    maps = np.asarray(res.map, np.float64)
    x = np.asarray(x)
    if maps.ndim not in (3, 4) or x.ndim != 4 or x.shape[0] != maps.shape[0]:
        raise ValueError(f"show needs res.map [N, h, w] or [N, K, h, w] and x [N, H, W, 3] with the same N, "
                         f"got map {maps.shape} and x {x.shape}")  # fmt: skip
    n, k = maps.shape[0], (maps.shape[1] if maps.ndim == 4 else 1)
    maps = maps.reshape(n * k, *maps.shape[-2:])
    images = [_image(x[i]) for i in range(n) for _ in range(k)]
    labels = scores = None
    if target is not None:
        t = np.asarray(target).reshape(n * k)
        z = np.asarray(res.logits, np.float64).reshape(n, -1)
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        scores = [float(p[i // k, c]) for i, c in enumerate(t)]
        labels = [class_names[c] if class_names is not None else int(c) for c in t]
    method = res.method or "map"
    title = f"{method} at {res.layer}" if res.layer else method
    if n * k == 1:
        label, score = (None, None) if target is None else (labels[0], scores[0])
        kwargs.setdefault("title", title_for(title, model, label, score))
        return overlay_figure(images[0], maps[0], method=method, **kwargs)
    kwargs.setdefault("title", title_for(title, model))
    return grid_figure(images, {method: list(maps)}, model=model, class_names=labels, scores=scores, **kwargs)
