"""Integrated gradients, plain and with guided non-linearity.

* ``integrated_gradients`` (Sundararajan et al., ICML 2017):
  ``IG_i = (x_i − x'_i) Σ_s w_s ∂S/∂x_i (x' + α_s (x − x'))``.
* ``gnl_integrated_gradients`` (Kwon, Koo & Cho, ICPR 2020; rules are our interpretation of the
  abstract, docs/methods.md#gnl-integrated-gradients): the same path sum with the guided-non-linearity gradient — ReLU
  backward ``g·[x>0]·[g>0]``, max-pool routes ``max(g, 0)`` to the argmax, other layers ordinary.
* ``gnl_gradient``: the single-step guided-non-linearity gradient at ``x``.

Quadrature (``rule=``) for ``steps = m``: ``"right"`` ``α = k/m, k=1..m`` (the paper's sum),
``"left"`` ``k=0..m−1``, ``"middle"`` ``(k+½)/m``, each weight ``1/m``; ``"trapezoid"``
``α = k/m, k=0..m`` with weights ``1/(2m), 1/m, …, 1/m, 1/(2m)`` (the original code's rule since
2019; m+1 gradients). Defaults: ``steps=50``, ``rule="right"``, baseline ``"black"`` (0 in pixel
space mapped through ``normalization``, ImageNet's by default), signal ``"prob"``.
Memory does not grow with ``steps``: gradients are summed ``chunk`` points at a time.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._constants import IMAGENET_MEAN, IMAGENET_STD
from ..composites.core import composite, kind, resolve_layers
from ..rules import library as R
from ..types import Attribution, PathPlan
from .base import REDUCTIONS, Method, _t, options, register, single_pass
from .option_types import Option, choice, integer

__all__ = ["INTEGRATED_GRADIENTS", "GNL_INTEGRATED_GRADIENTS", "GNL_GRADIENT", "IMAGENET_MEAN",
           "IMAGENET_STD", "quadrature", "gnl_composite"]

RIEMANN = ("right", "left", "middle", "trapezoid")


def quadrature(steps: int, rule: str):
    """``(alphas, weights)`` of the path integral ``∫₀¹ f(α) dα`` for ``rule``."""
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    k = np.arange(steps, dtype=np.float64)
    if rule == "right":
        return (k + 1) / steps, np.full(steps, 1.0 / steps)
    if rule == "left":
        return k / steps, np.full(steps, 1.0 / steps)
    if rule == "middle":
        return (k + 0.5) / steps, np.full(steps, 1.0 / steps)
    if rule == "trapezoid":
        w = np.full(steps + 1, 1.0 / steps)
        w[0] = w[-1] = 0.5 / steps
        return np.arange(steps + 1) / steps, w
    raise ValueError(f"unknown rule {rule!r}; valid: {list(RIEMANN)}")


def _baseline(o, x):
    b = o["baseline"]
    if isinstance(b, str):
        if b == "black":
            mean, std = (jnp.asarray(v, x.dtype) for v in o["normalization"])
            black = (0.0 - mean) / std
            if np.broadcast_shapes(black.shape, x.shape) != x.shape:
                raise ValueError(
                    f"baseline='black' is 0 pixels through normalization=(mean, std) of shape {black.shape}, "
                    f"which does not broadcast to the input {x.shape}; pass normalization=(mean, std) for "
                    "your channels, or baseline='zeros', a number or an array")
            return jnp.broadcast_to(black, x.shape)
        if b == "zeros":
            return jnp.zeros_like(x)
        raise ValueError(f"unknown baseline {b!r}; use 'black', 'zeros', a number or an array")
    b = jnp.asarray(b, x.dtype)
    try:
        return jnp.broadcast_to(b, x.shape)
    except ValueError:
        raise ValueError(f"baseline of shape {b.shape} does not broadcast to the input {x.shape}") from None


def gnl_composite():
    """Guided non-linearity: guided ReLU and positive-only max-pool routing."""
    return composite((kind("relu", "activation"), R.guided_relu()), (kind("maxpool"), R.positive_maxpool()), name="gnl")


def _path(method, rules_fn):
    def run(ctx, x, target):
        o = options(ctx, method)
        if ctx.layer is not None:
            raise ValueError(f"{method.name} is read at the input; pass layer=None")
        alphas, weights = quadrature(o["steps"], o["rule"])
        base = _baseline(o, x)
        delta = x - base
        rules = rules_fn(ctx)

        def finish(logits, sums):
            rel = _t(delta[None] * sums[0])
            return Attribution(REDUCTIONS["sum"](rel), rel, logits)

        def points(a):  # [c] path coefficients -> [c, *x.shape]
            return base[None] + a.reshape(a.shape + (1,) * x.ndim) * delta[None]

        return PathPlan(points, jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype),
                        finish, chunk=o["chunk"], rules=rules)

    return run


def _check_normalization(name, value):
    try:
        mean, std = value
        ok = np.all(np.isfinite(np.asarray(mean, float))) and np.all(np.asarray(std, float) > 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be (mean, std) per channel with std > 0, got {value!r}")


def _check_baseline(name, value):
    if isinstance(value, str):
        choice("black", "zeros")(name, value)
    elif not np.all(np.isfinite(np.asarray(value, float))):
        raise ValueError(f"{name} must be 'black', 'zeros', or a finite number or array, got {value!r}")


_IG_DEFAULTS = {
    "baseline": Option("black", _check_baseline,
                       "'black' (0 pixels through normalization), 'zeros', a number or an array like x"),
    "steps": Option(50, integer(1), "points on the path"),
    "rule": Option("right", choice(*RIEMANN), "quadrature rule"),
    "chunk": Option(8, integer(1), "points per vectorised step (memory grows with it, not with steps)"),
    "normalization": Option((IMAGENET_MEAN, IMAGENET_STD), _check_normalization,
                            "(mean, std) of the input normalisation, for the 'black' baseline"),
}

INTEGRATED_GRADIENTS = Method("integrated_gradients", None, _IG_DEFAULTS, default_signal="prob", path=True)
INTEGRATED_GRADIENTS = register(INTEGRATED_GRADIENTS._replace(run=_path(INTEGRATED_GRADIENTS, lambda ctx: None)))

GNL_INTEGRATED_GRADIENTS = Method("gnl_integrated_gradients", None, _IG_DEFAULTS, default_signal="prob", path=True)
GNL_INTEGRATED_GRADIENTS = register(GNL_INTEGRATED_GRADIENTS._replace(
    run=_path(GNL_INTEGRATED_GRADIENTS, lambda ctx: resolve_layers(gnl_composite(), ctx.layers))))


def _gnl_gradient(ctx, x, target):
    return single_pass(ctx, x, target, composite=gnl_composite(), reduce="sum")


GNL_GRADIENT = register(Method("gnl_gradient", _gnl_gradient, {}, default_signal="prob"))
