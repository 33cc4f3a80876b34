"""Bilinear resizing of saliency maps with PyTorch's ``align_corners=False`` arithmetic."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

__all__ = ["resize_map"]


def resize_map(map, size: Sequence[int]):
    """Resize maps bilinearly to ``size = (H_out, W_out)`` as ``F.interpolate(..., align_corners=False)``.

    For each output pixel ``d`` along an axis of input length ``n_in`` and output length ``n_out``
    the source coordinate is ``s = max((d + 0.5) * n_in / n_out - 0.5, 0)``; with ``i0 = floor(s)``,
    ``i1 = min(i0 + 1, n_in - 1)`` and ``λ = s - i0`` the value is ``(1-λ) x[i0] + λ x[i1]``, applied
    separably along H and W. Downsampling takes no anti-aliasing (PyTorch's default
    ``antialias=False``), so it samples the input rather than averaging it. This is
    ``jax.image.resize(..., "bilinear", antialias=False)``, which computes the same weights.

    Args:
      map: array ``[..., H, W]`` (a single map or a batch of maps); jit-able when ``size`` is static.
      size: ``(H_out, W_out)``, positive ints.

    Returns:
      ``[..., H_out, W_out]`` array, float32 (or the input's floating dtype).

    Raises:
      ValueError: the map has fewer than 2 dimensions or ``size`` is not two positive ints.
    """
    try:
        h_out, w_out = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (H_out, W_out) of ints, got {size!r}") from None
    if h_out <= 0 or w_out <= 0:
        raise ValueError(f"size must be positive, got {(h_out, w_out)}")
    x = jnp.asarray(map)
    if x.ndim < 2:
        raise ValueError(f"map must have at least 2 dimensions [..., H, W], got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    h_in, w_in = x.shape[-2:]
    if h_in == 0 or w_in == 0:
        raise ValueError(f"cannot resize an empty map of shape {x.shape}")
    if (h_in, w_in) == (h_out, w_out):
        return x
    return jax.image.resize(x, x.shape[:-2] + (h_out, w_out), method="bilinear", antialias=False)
