"""Channels-last 1×1 convolutions differentiate as the matrix products they are
(``xattr_jax.program.pointwise``): the same values as the convolution, and the same derivatives
(float64, relative 1e-12) for every kernel layout, spatial rank and stride, in reverse and forward
mode and to second order; the engine's backward passes use them (no convolution in a 1×1 layer's
transpose)."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import xattr_jax as xa
from xattr_jax.program.ir import Op
from xattr_jax.program.pointwise import is_pointwise, pointwise_conv

from _jaxprs import primitive_counts

LAYOUTS = [("NHWC", "HWIO", "NHWC"), ("NHWC", "OIHW", "NHWC"), ("NWC", "WIO", "NWC"), ("NDHWC", "DHWIO", "NDHWC")]
SIZES = {"N": 2, "D": 3, "H": 5, "W": 6, "C": 3, "I": 3, "O": 4}
RTOL = 1e-12


def _case(layout, strides, seed=0):
    rng = np.random.default_rng(seed)
    lhs, rhs, _ = layout
    x = jnp.asarray(rng.normal(size=[SIZES[c] for c in lhs]))
    w = jnp.asarray(rng.normal(size=[1 if c in "DHW" else SIZES[c] for c in rhs]))
    strides = strides[:len(lhs) - 2] + (1,) * max(0, len(lhs) - 2 - len(strides))

    def conv(x, w):
        return lax.conv_general_dilated(x, w, strides, "VALID", dimension_numbers=layout)

    eqn = jax.make_jaxpr(conv)(x, w).eqns[0]
    op = Op(eqn.primitive, eqn.params, (), (), "", "", contextlib.nullcontext())
    return conv, (lambda x, w: pointwise_conv(op, x, w)), x, w, rng


def _close(got, want, what):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        err = float(np.max(np.abs(np.asarray(g) - np.asarray(w))) / np.max(np.abs(np.asarray(w))))
        assert err <= RTOL, f"{what}: relative error {err:.3g} > {RTOL}"


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: "-".join(l))
@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (2, 1)])
def test_values_and_derivatives_are_the_convolutions(layout, strides):
    conv, pw, x, w, rng = _case(layout, strides)
    assert is_pointwise(jax.make_jaxpr(conv)(x, w).eqns[0].params, w.shape)
    y = conv(x, w)
    assert np.array_equal(pw(x, w), y), "the forward must be the convolution's values exactly"
    ct = jnp.asarray(rng.normal(size=y.shape))
    _close(jax.vjp(pw, x, w)[1](ct), jax.vjp(conv, x, w)[1](ct), "vjp in (x, w)")
    tx, tw = jnp.asarray(rng.normal(size=x.shape)), jnp.asarray(rng.normal(size=w.shape))
    _close(jax.jvp(pw, (x, w), (tx, tw)), jax.jvp(conv, (x, w), (tx, tw)), "jvp")

    def second(f):  # d/dw of |d/dx Σ f(x, w)²|², reverse over reverse; and its jvp in x
        inner = lambda w, x: jnp.sum(jax.grad(lambda x: jnp.sum(f(x, w) ** 2))(x) ** 2)  # noqa: E731
        return jax.grad(inner)(w, x), jax.jvp(lambda x: jax.grad(inner)(w, x), (x,), (tx,))[1]

    _close(second(pw), second(conv), "second order")


def test_only_unpadded_ungrouped_channels_last_1x1_convolutions_are_pointwise():
    """Features first (NCHW, the torch route) the product would transpose every activation: such
    convolutions keep the convolution's derivative."""

    def params(k, padding=((0, 0), (0, 0)), groups=1, lhs_dilation=(1, 1), layout=("NHWC", "HWIO", "NHWC")):
        w = jnp.zeros((k, k, 4 // groups, 8))
        x = jnp.zeros((1, 6, 6, 4) if layout[0] == "NHWC" else (1, 4, 6, 6))
        f = lambda x: lax.conv_general_dilated(x, w, (1, 1), padding, lhs_dilation=lhs_dilation,  # noqa: E731
                                               dimension_numbers=layout, feature_group_count=groups)
        return jax.make_jaxpr(f)(x).eqns[0].params, w.shape

    assert is_pointwise(*params(1))
    assert not is_pointwise(*params(1, layout=("NCHW", "HWIO", "NCHW")))
    assert not is_pointwise(*params(1, layout=("NHWC", "HWIO", "NCHW")))
    assert not is_pointwise(*params(3))
    assert not is_pointwise(*params(1, padding=((1, 1), (1, 1))))
    assert not is_pointwise(*params(1, groups=2))
    assert not is_pointwise(*params(1, lhs_dilation=(2, 2)))


def test_the_engines_backward_of_a_1x1_layer_is_a_matrix_product():
    """A plain-function network (1×1 conv, ReLU, 3×3 conv, mean, dense): its gradient program has
    three convolutions (two forward, the 3×3 one's transpose) and the 1×1 one's transpose is a
    matrix product; the map is jax.grad's (float32, relative 1e-5)."""
    rng = np.random.default_rng(1)
    v = {"a": jnp.asarray(rng.normal(size=(1, 1, 3, 8)), jnp.float32),
         "b": jnp.asarray(rng.normal(size=(3, 3, 8, 8)), jnp.float32),
         "fc": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)}

    def model(v, x):
        dn = ("NHWC", "HWIO", "NHWC")
        h = jax.nn.relu(lax.conv_general_dilated(x, v["a"], (1, 1), "VALID", dimension_numbers=dn))
        h = jax.nn.relu(lax.conv_general_dilated(h, v["b"], (1, 1), "SAME", dimension_numbers=dn))
        return jnp.mean(h, axis=(1, 2)) @ v["fc"]

    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    t = jnp.array([1, 3])
    fn = xa.attributor(model, "gradient")
    counts = primitive_counts(jax.make_jaxpr(fn.program)(v, x, t).jaxpr, ("conv_general_dilated", "dot_general"))
    # convolutions: the two forwards (the 1×1 one inside its custom_jvp), the 3×3 transpose;
    # products: the dense layer's forward and transpose, the 1×1 transpose (as a convolution: 4, 2)
    assert dict(counts) == {"conv_general_dilated": 3, "dot_general": 3}, counts
    got = fn(v, x, t).relevance
    want = jax.grad(lambda x: jnp.sum(model(v, x)[jnp.arange(2), t]))(x)
    err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
    assert err <= 1e-5, f"gradient map against jax.grad: relative error {err:.3g} > 1e-5"
