"""Class activation maps: Grad-CAM (Selvaraju et al., ICCV 2017) and CAM (Zhou et al., CVPR 2016).

* ``grad_cam``: ``α_k = mean_u ∂y_c/∂A_{k,u}``, ``L = ReLU(Σ_k α_k A_k)`` at ``layer`` (default:
  :func:`last_feature_map`, the feature map the global pool reads — ResNet ``layer4``, an inception
  block's concatenation; without a global pool the last ReLU after the last conv, VGG ``features.29``).
* ``cam``: ``M_c(u) = Σ_k w_kc A_k(u)`` for a conv → global-average-pool → dense head. Computed as
  ``Σ_k (h·w) ∂y_c/∂A_{k,u} A_{k,u}``, which is exactly ``Σ_k w_kc A_k(u)`` for such a head; a
  network without a global average pool after ``layer`` is refused.

``relevance`` is the gradient at the layer output; ``map`` stays at the layer's resolution
(upsample with ``xattr_jax.metrics.resize_map``).
"""

from __future__ import annotations

import jax.numpy as jnp

from ..passes import modified_pass
from ..types import Attribution
from ..rules.core import upcast
from .base import Method, _t, register

__all__ = ["GRAD_CAM", "CAM", "last_conv_relu", "last_feature_map", "grad_cam_channels"]


def last_conv_relu(layers):
    """The first spatial ReLU (or other activation) after the last conv layer."""
    convs = [i for i, l in enumerate(layers) if l.kind == "conv"]
    if not convs:
        return None
    cands = [l.name for l in layers[convs[-1]:] if l.kind in ("relu", "activation") and len(l.shape) == 4]
    return cands[0] if cands else None


def last_feature_map(layers):
    """The last spatial feature map before the global pool (METHODS Decision 8): the input of the
    last global average pool, named by the outermost module that returns it (the last stage or
    block; for an inception or dense block its concatenation, never one branch). Without a global
    pool: the last ReLU after the last conv; on a ViT, the last block's patch tokens (Grad-CAM reads
    them on the patch grid, the class token dropped)."""
    gaps = [l for l in layers if _is_global_pool(l) and l.inputs]
    if gaps:
        same = [l for l in layers if l.output == gaps[-1].inputs[0] and len(l.shape) == 4]
        if same:
            mods = [l for l in same if l.kind is None]
            return (min(mods, key=lambda l: l.name.count(".")) if mods else same[-1]).name
    relu = last_conv_relu(layers)
    if relu is None:  # a ViT: the last block's tokens
        blocks = [l for l in layers if l.kind is None and patch_grid(l.shape) is not None]
        if blocks:
            top = min(l.name.count(".") for l in blocks)
            return [l for l in blocks if l.name.count(".") == top][-1].name
    return relu


def _spatial(ctx, method):
    if ctx.layer is None:
        raise ValueError(f"{method} needs a hidden spatial layer [N, h, w, C] (default: the feature map before "
                         f"the global pool, or the last ReLU after the last conv), not the input; give layer= one "
                         f"of {[l.name for l in ctx.layers if l.shape and len(l.shape) == 4]}")
    info = ctx.info(ctx.layer)
    if len(info.shape) != 4:
        raise ValueError(
            f"{method} needs a spatial layer [N, h, w, C]; {ctx.layer!r} has output shape {info.shape}"
        )


def patch_grid(shape):
    """``(first patch token, h, w)`` when a token sequence ``[N, T, C]`` is a square patch grid, with
    or without a leading class token; else None."""
    if len(shape) != 3:
        return None
    for skip in (1, 0):
        side = int(round((shape[1] - skip) ** 0.5))
        if side > 1 and side * side == shape[1] - skip:
            return skip, side, side
    return None


def _to_grid(a, grid, lead):
    """Tokens ``[..., T, C]`` -> ``[..., h, w, C]`` on the patch grid (class token dropped)."""
    skip, h, w = grid
    a = a[(slice(None),) * (lead + 1) + (slice(skip, None),)]
    return a.reshape(a.shape[:lead + 1] + (h, w, a.shape[-1]))


def grad_cam_channels(g, a):
    """Grad-CAM's channel map ``α_k A_k`` (signed, not summed over the channels ``k``).

    ``α_k`` is the mean of the gradient ``g [..., N, h, w, C]`` over the spatial axes; ``a
    [N, h, w, C]`` are the activations, broadcast over ``g``'s leading axes (targets, seeds).
    """
    alpha = jnp.mean(g, axis=(-3, -2), keepdims=True)
    return alpha * a.reshape((1,) * (g.ndim - a.ndim) + a.shape)


def _grad_cam(ctx, x, target):
    grid = patch_grid(ctx.info(ctx.layer).shape) if ctx.layer is not None else None
    if grid is None:
        _spatial(ctx, "grad_cam")
    p = modified_pass(ctx, x, target, at=[ctx.layer], input=False, capture=[ctx.layer])
    g, a = upcast(p.at[ctx.layer]), upcast(p.acts[ctx.layer])  # [K, N, h, w, C], [N, h, w, C]
    if grid is not None:  # a ViT's patch tokens on the patch grid
        g, a = _to_grid(g, grid, 1), _to_grid(a, grid, 0)
    cam = jnp.maximum(jnp.sum(grad_cam_channels(g, a), axis=-1), 0)
    return Attribution(_t(cam), _t(g), p.logits)


def _is_global_pool(l):
    """An average pool to one value per channel: ``[N, C]`` or ``[N, 1, 1, C]``."""
    return l.kind == "avgpool" and (len(l.shape) == 2 or (len(l.shape) == 4 and l.shape[1:3] == (1, 1)))




def _cam(ctx, x, target):
    _spatial(ctx, "cam")
    names = [l.name for l in ctx.layers]
    i = names.index(ctx.layer)
    info = ctx.info(ctx.layer)
    gap = [l for l in ctx.layers[i + 1:] if _is_global_pool(l)]
    if not gap:
        raise ValueError(
            f"cam needs conv -> global average pool -> dense after {ctx.layer!r}; this network has no "
            "global average pool there. Use grad_cam instead."
        )
    p = modified_pass(ctx, x, target, at=[ctx.layer], input=False, capture=[ctx.layer])
    g, a = upcast(p.at[ctx.layer]), upcast(p.acts[ctx.layer])
    hw = info.shape[1] * info.shape[2]
    cam = jnp.sum(g * hw * a[None], axis=-1)
    return Attribution(_t(cam), _t(g), p.logits)


GRAD_CAM = register(Method("grad_cam", _grad_cam, {}, default_layer=last_feature_map))
def _cam_layer(layers):
    """Grad-CAM's layer where a global average pool reads it (CAM needs that head)."""
    return last_feature_map(layers) if any(_is_global_pool(l) for l in layers) else last_conv_relu(layers)


CAM = register(Method("cam", _cam, {}, default_layer=_cam_layer))
