"""Deletion and insertion curves (Petsiuk et al., RISE, BMVC 2018; docs/evaluation.md#deletion-and-insertion)."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["CurveResult", "gaussian_kernel", "gaussian_blur", "curve_auc", "deletion", "insertion"]

Predict = Callable[[Any], Any]


class CurveResult(NamedTuple):
    """Result of :func:`deletion` / :func:`insertion`.

    Attributes:
      auc: ``[N]`` float64 area under each curve (trapezoid rule on x ∈ [0, 1]).
      curve: ``[N, n + 1]`` float64 target-class probability after 0, step, 2·step, ... pixels.
      target: ``[N]`` int class whose probability is tracked.
    """

    auc: np.ndarray
    curve: np.ndarray
    target: np.ndarray


def gaussian_kernel(klen: int = 11, sigma: float = 5.0) -> np.ndarray:
    """Normalised, sampled 2-D Gaussian ``k[i, j] ∝ exp(-((i-c)² + (j-c)²) / (2σ²))``, ``c = klen // 2``.

    Note: RISE builds its kernel by Gaussian-filtering a centred delta (scipy, reflecting borders);
    that kernel is not exactly this sampled one. We use the textbook sampled Gaussian with unit sum.

    Args:
      klen: odd kernel size (RISE: 11).
      sigma: standard deviation in pixels (RISE: 5).

    Returns:
      float64 ``[klen, klen]`` kernel summing to 1.

    Raises:
      ValueError: even or non-positive ``klen``, non-positive ``sigma``.
    """
    if int(klen) != klen or klen < 1 or klen % 2 == 0:
        raise ValueError(f"klen must be a positive odd int, got {klen!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    d = np.arange(klen, dtype=np.float64) - klen // 2
    g = np.exp(-(d * d) / (2.0 * sigma * sigma))
    k = np.outer(g, g)
    return k / k.sum()


def gaussian_blur(x: Any, klen: int = 11, sigma: float = 5.0) -> jax.Array:
    """Per-channel Gaussian blur with zero padding ``klen // 2`` (the RISE insertion start image).

    ``y[n, h, w, c] = Σ_ij k[i, j] · x̃[n, h + i - p, w + j - p, c]`` with ``p = klen // 2`` and
    ``x̃`` the image padded with zeros, so the output has the input's size and its border darkens
    towards 0 (the mean colour in normalised space).

    Args:
      x: images ``[N, H, W, C]`` (normalised space).
      klen, sigma: as in :func:`gaussian_kernel`.

    Returns:
      ``[N, H, W, C]`` blurred images (float32 unless ``x`` is another floating dtype).

    Raises:
      ValueError: ``x`` is not 4-D.
    """
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be [N, H, W, C] images, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    c = x.shape[-1]
    k = jnp.asarray(gaussian_kernel(klen, sigma), x.dtype)
    kernel = jnp.tile(k[:, :, None, None], (1, 1, 1, c))  # HWIO, one filter per channel
    p = klen // 2
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1, 1),
        padding=((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
        precision=lax.Precision.HIGHEST,
    )


def curve_auc(curve: Any) -> np.ndarray:
    """Trapezoid area under curves sampled at ``n + 1`` equally spaced points of [0, 1].

    ``AUC = (Σ_{i=0..n} s_i − s_0/2 − s_n/2) / n``.

    Args:
      curve: ``[..., n + 1]`` with ``n ≥ 1``.

    Returns:
      float64 ``[...]``.

    Raises:
      ValueError: fewer than two points.
    """
    s = np.asarray(curve, np.float64)
    if s.ndim < 1 or s.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points on its last axis, got shape {s.shape}")
    n = s.shape[-1] - 1
    return (s.sum(-1) - s[..., 0] / 2 - s[..., -1] / 2) / n


@jax.jit
def _compose(rank, start, finish, k):
    """Image with the pixels of rank < k taken from ``finish``, the others from ``start``."""
    take = rank < k[:, None, None]
    return jnp.where(take[..., None], finish, start)


def _validate(x, maps, step, batch_size):
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be images [N, H, W, C], got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be floating point (normalised images), got dtype {x.dtype}")
    m = np.asarray(maps)
    if m.ndim != 3 or m.shape != x.shape[:3]:
        raise ValueError(
            f"maps must be [N, H, W] = {tuple(x.shape[:3])} to match x; got shape {m.shape} "
            "(resize maps to the input size first with xattr_jax.metrics.resize_map)"
        )
    if not np.all(np.isfinite(m)):
        raise ValueError("maps contain NaN or infinite values")
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a positive int (pixels per step), got {step!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return x, m.astype(np.float64)


def _scores(predict: Predict, images: jax.Array, expect_b: int) -> np.ndarray:
    p = np.asarray(predict(images), np.float64)
    if p.ndim != 2 or p.shape[0] != expect_b:
        raise ValueError(
            f"predict must map [B, H, W, C] images to [B, num_classes]; got output shape {p.shape} for B={expect_b}"
        )
    if not np.all(np.isfinite(p)):
        raise ValueError("predict returned NaN or infinite values")
    return p


def _top1(predict: Predict, x: jax.Array, batch_size: int) -> np.ndarray:
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        out.append(np.argmax(_scores(predict, xb, xb.shape[0]), axis=1))
    return np.concatenate(out)


def _substrate(kind: Union[str, Any], x: jax.Array, what: str) -> jax.Array:
    if isinstance(kind, str):
        if kind == "zero":
            return jnp.zeros_like(x)
        if kind == "blur":
            return gaussian_blur(x).astype(x.dtype)
        raise ValueError(f"substrate must be 'zero', 'blur' or an array shaped like x, got {kind!r}")
    s = jnp.asarray(kind, x.dtype)
    if s.shape != x.shape:
        raise ValueError(f"{what} substrate array must have x's shape {tuple(x.shape)}, got {s.shape}")
    return s


def _curve(predict, x, maps, target, step, batch_size, start, finish) -> CurveResult:
    n_img, h, w, _ = x.shape
    hw = h * w
    n = math.ceil(hw / step)
    # rank[p] = position of pixel p when pixels are sorted by decreasing saliency (stable: ties
    # keep row-major index order)
    flat = maps.reshape(n_img, hw)
    order = np.argsort(-flat, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(hw)[None].repeat(n_img, 0), axis=1)
    rank = jnp.asarray(rank.reshape(n_img, h, w).astype(np.int32))

    if target is None:
        tgt = _top1(predict, x, batch_size)
    else:
        tgt = np.asarray(target)
        if tgt.ndim == 0:
            tgt = np.full((n_img,), tgt)
        if tgt.shape != (n_img,) or not np.issubdtype(tgt.dtype, np.integer):
            raise ValueError(f"target must be ints of shape [{n_img}], got {tgt.dtype} {tgt.shape}")

    img_idx = np.repeat(np.arange(n_img), n + 1)
    k_all = np.minimum(np.tile(np.arange(n + 1), n_img) * step, hw).astype(np.int32)
    total = img_idx.size
    curve = np.zeros(total)
    for a in range(0, total, batch_size):
        b = min(a + batch_size, total)
        sel = np.arange(a, a + batch_size)
        sel = np.minimum(sel, total - 1)  # pad the last batch so a jitted predict sees one shape
        ii = jnp.asarray(img_idx[sel])
        imgs = _compose(rank[ii], start[ii], finish[ii], jnp.asarray(k_all[sel]))
        p = _scores(predict, imgs, batch_size)
        if tgt.size and (tgt.min() < 0 or tgt.max() >= p.shape[1]):
            raise ValueError(
                f"target must be in [0, {p.shape[1]}), got values in [{tgt.min()}, {tgt.max()}]"
            )
        curve[a:b] = p[np.arange(b - a), tgt[img_idx[a:b]]]
    curve = curve.reshape(n_img, n + 1)
    return CurveResult(curve_auc(curve), curve, tgt.astype(np.int64))


def deletion(
    predict: Predict,
    x: Any,
    maps: Any,
    target: Optional[Any] = None,
    step: int = 224,
    substrate: Union[str, Any] = "zero",
    batch_size: int = 64,
) -> CurveResult:
    """Deletion curve and AUC: remove the most salient pixels first. **Lower is better.**

    Pixels are sorted by decreasing saliency (stable: ties in row-major order). Image ``i`` of the
    curve (``i = 0..n``, ``n = ⌈HW / step⌉``) has its first ``min(i · step, HW)`` pixels (all
    channels) replaced by the substrate; ``s_i`` is the target's probability on it and
    ``AUC = (Σ s_i − s_0/2 − s_n/2) / n``. The ``N · (n + 1)`` images are built and scored
    ``batch_size`` at a time (the last batch is padded, so ``predict`` always sees ``batch_size``).

    Args:
      predict: maps images ``[B, H, W, C]`` to class probabilities ``[B, num_classes]`` (apply the
        softmax inside; RISE scores the softmax probability).
      x: images ``[N, H, W, C]`` in the model's (normalised) input space.
      maps: saliency ``[N, H, W]`` at the input resolution.
      target: ``[N]`` ints; None = the top-1 class of ``predict(x)`` (RISE).
      step: pixels removed per step (RISE: 224 at 224×224).
      substrate: ``"zero"`` (default: 0 in normalised space, the mean colour), ``"blur"``
        (:func:`gaussian_blur`) or an array shaped like ``x``.
      batch_size: images per ``predict`` call.

    Returns:
      :class:`CurveResult` ``(auc [N], curve [N, n+1], target [N])``.

    Raises:
      ValueError: shape mismatch, non-finite maps or scores, bad step/batch size/target.
    """
    x, m = _validate(x, maps, step, batch_size)
    return _curve(
        predict, x, m, target, int(step), int(batch_size), x, _substrate(substrate, x, "deletion")
    )


def insertion(
    predict: Predict,
    x: Any,
    maps: Any,
    target: Optional[Any] = None,
    step: int = 224,
    substrate: Union[str, Any] = "blur",
    batch_size: int = 64,
) -> CurveResult:
    """Insertion curve and AUC: reveal the most salient pixels first. **Higher is better.**

    Starts from the substrate (default the blurred image, :func:`gaussian_blur` with ``klen=11``,
    ``σ=5``, zero padding 5) and puts back the original pixels in order of decreasing saliency,
    ``min(i · step, HW)`` of them in image ``i = 0..n``; scoring and AUC as in :func:`deletion`.

    Args:
      predict, x, maps, target, step, batch_size: as in :func:`deletion`.
      substrate: ``"blur"`` (default), ``"zero"`` or an array shaped like ``x``: the start image.

    Returns:
      :class:`CurveResult` ``(auc [N], curve [N, n+1], target [N])``.

    Raises:
      ValueError: as :func:`deletion`.
    """
    x, m = _validate(x, maps, step, batch_size)
    return _curve(
        predict, x, m, target, int(step), int(batch_size), _substrate(substrate, x, "insertion"), x
    )
