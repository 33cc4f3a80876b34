"""Max-pooling with a fast, exactly routed backward pass.

``jax.vjp`` of ``reduce_window_max`` is XLA's ``select_and_scatter``, which XLA:CPU runs 4-37x
slower than PyTorch's max-pool backward. :func:`max_pool` computes the same forward and routes the
cotangent with elementwise operations instead:

* over the ``K`` window offsets ``k`` in row-major order, ``idx = k`` where the offset's strided
  view of the (``-inf``-padded) input is strictly greater than the running maximum — the *first*
  maximum in window order wins, as ``select_and_scatter`` with ``ge`` selects (ties included);
* ``g_in = Σ_k scatter_k(g ⊙ [idx = k])``: each offset's share placed back at its strided
  positions, summed per residue class (offset mod stride) at the output's resolution and
  interleaved once; non-overlapping tilings (stride = window, no padding) are one reshape instead;
* windows over several axes are routed one axis at a time (the first maximum in row-major order
  is the first maximum of the first row holding the window's maximum).

The routing is identical to ``select_and_scatter``'s; where windows overlap, an input that is the
maximum of several windows sums their cotangents, possibly in another order (float rounding).
The backward is made of ordinary JAX operations, so it differentiates again (gradients of maps):
it is linear in the cotangent and piecewise constant in ``x`` (``x`` only enters comparisons, so
its derivative there is exactly 0 and ``x`` is read through ``stop_gradient``).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["max_pool", "route_to_max", "reshape_batch"]


def _argmax_offsets(views):
    """Index of the first maximum over ``views`` (one array per window offset, in window order)."""
    best, idx = views[0], jnp.zeros(views[0].shape, jnp.int32)
    for j, v in enumerate(views[1:], start=1):
        upd = v > best
        best = jnp.where(upd, v, best)
        idx = jnp.where(upd, j, idx)
    return idx


def reshape_batch(a, shape):
    """``a [N, ...]`` reshaped to ``shape`` (``[N, ...]``, the batch axis unchanged); a batch axis
    sharded over an explicit mesh stays sharded (JAX does not infer the sharding of such a reshape)."""
    spec = getattr(jax.typeof(a).sharding, "spec", None)
    if spec and spec[0] is not None:
        return lax.reshape(a, tuple(shape), out_sharding=jax.sharding.PartitionSpec(spec[0]))
    return a.reshape(shape)


def _is_tiling(in_shape, out_shape, window, strides, padding) -> bool:
    """Windows that tile the input exactly: stride = window, no padding, nothing left over."""
    return (all(s == w for s, w in zip(strides, window)) and all(tuple(p) == (0, 0) for p in padding)
            and all(o * w == n for o, w, n in zip(out_shape, window, in_shape)))


def route_to_max(x, g, window, strides, padding):
    """``g`` (shaped like the pool's output) routed to the first maximum of each window of ``x``.

    A window over several axes is routed one axis at a time, outermost first: the first maximum in
    row-major order lies in the first row whose maximum is the window's, at that row's first
    maximum, so the separable routing is the same and each pass has ``w`` offsets, not ``Π w``.
    """
    x = lax.stop_gradient(x)  # x only picks the route: d(route)/dx = 0 almost everywhere
    nd = x.ndim
    axes = [d for d in range(nd) if (window[d], strides[d], tuple(padding[d])) != (1, 1, (0, 0))]
    if len(axes) < 2 or _is_tiling(x.shape, g.shape, window, strides, padding):
        return _route(x, g, window, strides, padding)

    def along(d):
        one = lambda v, dflt: tuple(v[k] if k == d else dflt for k in range(nd))  # noqa: E731
        return one(window, 1), one(strides, 1), one(padding, (0, 0))

    inputs = [x]  # the input of each 1-D stage, innermost axis first
    for d in reversed(axes[1:]):
        inputs.append(_reduce_max(inputs[-1], *along(d)))
    for d, inp in zip(axes, reversed(inputs)):
        g = _route(inp, g, *along(d))
    return g


def _route(x, g, window, strides, padding):
    nd = x.ndim
    out = g.shape
    offsets = list(itertools.product(*[range(w) for w in window]))
    zero = jnp.zeros((), g.dtype)
    if _is_tiling(x.shape, out, window, strides, padding):
        # only windowed axes are split (o, w): the batch axis stays whole, so a sharded batch stays put
        wa = [d for d in range(nd) if window[d] > 1]
        tiles = reshape_batch(x, [e for d in range(nd) for e in ((out[d], window[d]) if d in wa else (out[d],))])
        views = [tiles[tuple(i for d in range(nd) for i in ((slice(None), k[d]) if d in wa else (slice(None),)))]
                 for k in offsets]
        idx = _argmax_offsets(views)
        parts = jnp.stack([jnp.where(idx == j, g, zero) for j in range(len(offsets))], axis=-1)
        parts = parts.reshape(out + tuple(window[d] for d in wa))
        order = [a for d in range(nd) for a in ((d, nd + wa.index(d)) if d in wa else (d,))]
        return reshape_batch(parts.transpose(order), x.shape)
    xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(lo, hi, 0) for lo, hi in padding])

    def view(k):
        return lax.slice(xp, k, [k[d] + (out[d] - 1) * strides[d] + 1 for d in range(nd)], strides)

    idx = _argmax_offsets([view(k) for k in offsets])
    # offset k lands on padded positions o·s + k: residue class r = k mod s, shifted by q = k // s;
    # sum each class at the output's resolution, then interleave the s_0·s_1·… classes
    length = [-(-xp.shape[d] // strides[d]) for d in range(nd)]
    classes = {}
    for j, k in enumerate(offsets):
        r = tuple(k[d] % strides[d] for d in range(nd))
        q = [k[d] // strides[d] for d in range(nd)]
        part = lax.pad(jnp.where(idx == j, g, zero), zero, [(q[d], length[d] - out[d] - q[d], 0) for d in range(nd)])
        classes[r] = part if r not in classes else classes[r] + part
    grid = list(itertools.product(*[range(s) for s in strides]))
    stacked = jnp.stack([classes.get(r, jnp.zeros(length, g.dtype)) for r in grid])
    stacked = stacked.reshape(tuple(strides) + tuple(length))
    inter = stacked.transpose([a for d in range(nd) for a in (nd + d, d)]).reshape(
        [length[d] * strides[d] for d in range(nd)])
    return lax.slice(inter, [lo for lo, _ in padding], [lo + n for (lo, _), n in zip(padding, x.shape)])


def _reduce_max(x, window, strides, padding):
    """``reduce_window_max`` itself (``lax.reduce_window`` with a traced ``-inf`` would be the
    generic reduction, which has no derivative)."""
    return lax.reduce_window_max_p.bind(x, window_dimensions=tuple(window), window_strides=tuple(strides),
                                        padding=tuple(tuple(p) for p in padding),
                                        base_dilation=(1,) * x.ndim, window_dilation=(1,) * x.ndim)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x, window, strides, padding):
    """``reduce_window_max(x)`` (``-inf`` padding) whose VJP is :func:`route_to_max`."""
    return _reduce_max(x, window, strides, padding)


def _fwd(x, window, strides, padding):
    return max_pool(x, window, strides, padding), x


def _bwd(window, strides, padding, x, g):
    return (route_to_max(x, g, window, strides, padding),)


max_pool.defvjp(_fwd, _bwd)


def is_plain(params) -> bool:
    """A ``reduce_window_max`` without dilations (what :func:`max_pool` computes)."""
    return all(d == 1 for d in np.ravel(params["base_dilation"])) and all(
        d == 1 for d in np.ravel(params["window_dilation"]))
