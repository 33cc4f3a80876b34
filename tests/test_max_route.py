"""The fast max-pool backward routes exactly as XLA's select_and_scatter (jax.vjp of reduce_window_max).

Routing is compared exactly in float64 with integer cotangents (so sums of several windows'
cotangents are exact whatever their order), on random inputs and on inputs full of ties (values
rounded to halves after a ReLU, so whole windows are zero), for every pool shape in the zoo.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from xattr_jax.nn import _pool_padding
from xattr_jax.program.max_route import max_pool, route_to_max

# (input spatial size, kernel, stride, padding, ceil_mode) of the zoo's pools
ZOO_POOLS = {
    "vgg/small_vgg 2x2/2": (16, 2, 2, 0, False),
    "resnet 3x3/2 pad 1": (16, 3, 2, 1, False),
    "resnet 3x3/2 pad 1, odd": (15, 3, 2, 1, False),
    "alexnet 3x3/2": (13, 3, 2, 0, False),
    "alexnet 3x3/2, even": (12, 3, 2, 0, False),
    "ceil mode 2x2/2, odd": (7, 2, 2, 0, True),
    "3x3/1 pad 1": (9, 3, 1, 1, False),
}


def _pool_args(size, k, s, p, ceil):
    pads = _pool_padding((size, size), (k, k), (s, s), (p, p), ceil)
    return (1, k, k, 1), (1, s, s, 1), ((0, 0), *map(tuple, pads), (0, 0))


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", sorted(ZOO_POOLS))
@pytest.mark.parametrize("ties", [False, True])
def test_routing_equals_select_and_scatter(name, ties):
    size, k, s, p, ceil = ZOO_POOLS[name]
    window, strides, padding = _pool_args(size, k, s, p, ceil)
    rng = np.random.default_rng(size * 10 + k)
    x = rng.standard_normal((2, size, size, 3))
    if ties:
        x = np.maximum(np.round(2 * x) / 2, 0)
        assert (x == 0).mean() > 0.4
    x = jnp.asarray(x, jnp.float64)

    def plain(a):
        return lax.reduce_window(a, -jnp.inf, lax.max, window, strides, padding)

    y, ref_vjp = jax.vjp(plain, x)
    y2, vjp = jax.vjp(lambda a: max_pool(a, window, strides, padding), x)
    np.testing.assert_array_equal(np.asarray(y2), np.asarray(y), err_msg=f"{name}: forward")
    g = jnp.asarray(rng.integers(-8, 9, y.shape), jnp.float64)
    (ref,) = ref_vjp(g)
    (got,) = vjp(g)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref), err_msg=f"{name} (ties={ties}): routing")
    assert float(jnp.sum(jnp.abs(ref))) > 0


@pytest.mark.usefixtures("x64")
def test_the_backward_differentiates_again():
    """Linear in the cotangent, piecewise constant in x: d/dg <route(x, g), w> = route's transpose."""
    window, strides, padding = _pool_args(9, 3, 2, 1, False)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 9, 9, 2)))
    y = lax.reduce_window(x, -jnp.inf, lax.max, window, strides, padding)
    w = jnp.asarray(rng.standard_normal(x.shape))
    f = lambda g: jnp.sum(route_to_max(x, g, window, strides, padding) * w)  # noqa: E731
    # the transpose of routing gathers w at each window's argmax
    (ref,) = jax.vjp(lambda a: lax.reduce_window(a, -jnp.inf, lax.max, window, strides, padding), x)[1](
        jnp.ones(y.shape))
    grad = jax.grad(f)(jnp.zeros(y.shape))
    # compare with select_and_gather: the value of w at each window's first maximum
    sel = jax.jvp(lambda a: lax.reduce_window(a, -jnp.inf, lax.max, window, strides, padding), (x,), (w,))[1]
    np.testing.assert_allclose(np.asarray(grad), np.asarray(sel), rtol=0, atol=1e-12)
    assert float(jnp.sum(ref)) == y.size
    gx = jax.grad(lambda a: jnp.sum(route_to_max(a, jnp.ones(y.shape), window, strides, padding) * w))(x)
    assert float(jnp.max(jnp.abs(gx))) == 0.0, "no derivative through the choice of the maximum"
