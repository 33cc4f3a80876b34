"""The gradient family: gradient, gradient × input, guided backprop, deconvnet, SmoothGrad.

* ``gradient`` (Simonyan et al. 2014): ``∂S_t/∂x``; map ``max_c |·|``.
* ``input_x_gradient`` (Shrikumar et al. 2016): ``x ⊙ ∂S_t/∂x``; map ``Σ_c``.
* ``guided_backprop`` (Springenberg et al. 2015): activation backward ``f'(x)·max(g, 0)`` (ReLU:
  ``g·[x>0]·[g>0]``, ReLU6: ``[0<x<6]``); map ``max_c |·|``.
* ``deconvnet`` (Zeiler & Fergus 2014): activation backward ``max(g, 0)``; map ``max_c |·|``.
* ``smoothgrad`` (Smilkov et al. 2017): ``(1/n) Σ_k ∂S_t/∂x (x + ε_k)``, ``ε_k ~ N(0, σ²)``,
  ``σ = noise · (max x − min x)`` per sample; variants ``"square"`` (mean of squares, PAIR's
  magnitude) and ``"var"`` (VarGrad: variance); map ``max_c |·|``. The noise comes from the
  call's ``key=`` (see :func:`xattr_jax.attributor`): example ``i``'s draw ``k`` is
  ``normal(fold_in(key_i, k))`` with ``key_i`` its own key, so a batch and a ``vmap`` over its
  examples with the same keys agree.

Read at a layer, the same rules give the signal at that layer's output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..composites.core import composite, kind
from ..rules import library as R
from ..rules.core import compute_dtype
from ..types import Attribution, PathPlan
from .base import REDUCTIONS, Method, _t, options, register, single_pass
from .option_types import Option, anything, choice, integer, real

__all__ = ["GUIDED", "DECONV", "GRADIENT", "INPUT_X_GRADIENT", "GUIDED_BACKPROP", "DECONVNET", "SMOOTHGRAD"]


def _gradient(ctx, x, target):
    return single_pass(ctx, x, target, reduce="max_abs")


def _input_x_gradient(ctx, x, target):
    return single_pass(ctx, x, target, reduce="sum", times_input=True)


#: guided backprop's and deconvnet's rules: every activation (``relu`` and ``activation`` kinds)
GUIDED = composite((kind("relu", "activation"), R.guided_relu()), name="guided_backprop")
DECONV = composite((kind("relu", "activation"), R.deconvnet_relu()), name="deconvnet")


def _guided(ctx, x, target):
    return single_pass(ctx, x, target, composite=GUIDED, reduce="max_abs")


def _deconvnet(ctx, x, target):
    return single_pass(ctx, x, target, composite=DECONV, reduce="max_abs")


GRADIENT = register(Method("gradient", _gradient, {}))
INPUT_X_GRADIENT = register(Method("input_x_gradient", _input_x_gradient, {}))
GUIDED_BACKPROP = register(Method("guided_backprop", _guided, {}))
DECONVNET = register(Method("deconvnet", _deconvnet, {}))

_VARIANTS = ("plain", "square", "var")


def _smoothgrad(ctx, x, target):
    o = options(ctx, SMOOTHGRAD)
    n = o["samples"]
    if ctx.layer is not None:
        raise ValueError("smoothgrad is read at the input; pass layer=None")
    axes = tuple(range(1, x.ndim))
    sigma = o["noise"] * (jnp.max(x, axis=axes, keepdims=True) - jnp.min(x, axis=axes, keepdims=True))
    if o["draws"] is not None:  # explicit standard-normal draws [samples, *x.shape]
        params = jnp.asarray(o["draws"], x.dtype)
        if params.shape != (n,) + x.shape:
            raise ValueError(f"smoothgrad draws must have shape {(n,) + x.shape}, got {params.shape}")

        def points(e):  # [c, N, ...] draws
            return x[None] + sigma[None] * e
    else:  # draw k of example i from fold_in(key_i, k), made inside the loop: memory flat in n
        keys = ctx.key  # [N] per-example keys
        if keys is None:
            raise ValueError("smoothgrad draws noise: pass key=jax.random.key(seed) to the call")
        params = jnp.arange(n, dtype=jnp.int32)
        size = int(np.prod(x.shape[1:]))

        def points(ks):  # [c] draw indices -> [c, N, ...]
            chunk_keys = jax.vmap(lambda k: jax.vmap(lambda ki: jax.random.fold_in(ki, k))(keys))(ks)
            # one flat draw per key (threefry: the same numbers as drawing x.shape[1:]): XLA:CPU compiled the
            # draw [c, N, H, W, C] under vmap in 5x the time (MobileNetV2 input: 1.0 s against 0.2 s);
            # drawn in (at least) float32, so half-precision inputs get the same noise as float32
            draw = lambda ki: jax.random.normal(ki, (size,), compute_dtype(x.dtype))  # noqa: E731
            e = jax.vmap(draw)(chunk_keys.reshape(-1)).reshape(ks.shape + x.shape)
            return x[None] + sigma[None] * e.astype(x.dtype)

    moments = 2 if o["variant"] == "var" else 1

    def stat(g):
        if o["variant"] == "plain":
            return (g,)
        if o["variant"] == "square":
            return (g * g,)
        return (g, g * g)

    def finish(logits, sums):
        rel = _t(sums[0] if o["variant"] != "var" else sums[1] - sums[0] * sums[0])
        return Attribution(REDUCTIONS["max_abs"](rel), rel, logits)

    return PathPlan(points, params, jnp.full((n,), 1.0 / n, x.dtype), finish, stat=stat, n_stats=moments,
                    chunk=o["chunk"])


SMOOTHGRAD = register(
    Method(
        "smoothgrad",
        _smoothgrad,
        {
            "noise": Option(0.15, real(0.0), "noise std as a fraction of each image's value range"),
            "samples": Option(25, integer(1), "noisy copies averaged"),
            "variant": Option("plain", choice(*_VARIANTS), "mean gradient, mean square (PAIR) or variance (VarGrad)"),
            "chunk": Option(8, integer(1), "copies per vectorised step (memory grows with it, not with samples)"),
            "draws": Option(None, anything(), "standard-normal draws [samples, *x.shape] instead of key="),
        },
        path=True,
        random=True,
    )
)
