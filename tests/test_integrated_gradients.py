"""Integrated gradients and GNL-IG: quadrature, completeness, step-by-step references, flat memory."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax import nn as xnn
from xattr_jax.methods.ig import quadrature
from _nets import random_variables


def test_quadrature_rules():
    a, w = quadrature(4, "right")
    np.testing.assert_allclose(a, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(w, [0.25] * 4)
    a, w = quadrature(4, "left")
    np.testing.assert_allclose(a, [0.0, 0.25, 0.5, 0.75])
    a, w = quadrature(4, "middle")
    np.testing.assert_allclose(a, [0.125, 0.375, 0.625, 0.875])
    a, w = quadrature(4, "trapezoid")
    np.testing.assert_allclose(a, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(w, [0.125, 0.25, 0.25, 0.25, 0.125])
    for rule in ("right", "left", "middle", "trapezoid"):
        assert abs(quadrature(7, rule)[1].sum() - 1.0) < 1e-12, f"{rule} weights must sum to 1"


def test_ig_completeness_with_many_steps(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([1, 2, 3])
    res = xa.explain(model, v, x, t, method="integrated_gradients", signal="logit", baseline="zeros",
                     steps=256, rule="trapezoid", chunk=32)
    diff = model.apply(v, x)[jnp.arange(3), t] - model.apply(v, jnp.zeros_like(x))[jnp.arange(3), t]
    total = res.relevance.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(total), np.asarray(diff), rtol=1e-2, atol=5e-3,
                               err_msg="IG completeness: sum of attributions = F(x) - F(x') (1e-2 rel: the quadrature error at ReLU/max-pool kinks is O(1/steps))")


def _path_loop(model, v, x, t, rules_method, steps, base):
    """Step by step: (x - x') * mean_k g(x' + k/m (x - x')), right Riemann sum, Python loop."""
    acc = jnp.zeros_like(x)
    for k in range(1, steps + 1):
        pt = base + (k / steps) * (x - base)
        acc = acc + xa.explain(model, v, pt, t, method=rules_method, signal="prob").relevance
    return (x - base) * acc / steps


def test_gnl_ig_equals_the_path_average_of_the_gnl_gradient(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([0, 4, 2])
    steps = 5
    base = jnp.full_like(x, -0.3)
    res = xa.explain(model, v, x, t, method="gnl_integrated_gradients", baseline=-0.3, steps=steps, chunk=2)
    ref = _path_loop(model, v, x, t, "gnl_gradient", steps, base)
    err = float(jnp.max(jnp.abs(res.relevance - ref)))
    assert err <= 1e-5 * float(jnp.max(jnp.abs(ref))), f"GNL-IG vs step-by-step loop: {err:.3g} (1e-5 relative)"
    # and it is not plain IG on this ReLU/max-pool network
    plain = xa.explain(model, v, x, t, method="integrated_gradients", baseline=-0.3, steps=steps, chunk=2)
    assert float(jnp.max(jnp.abs(plain.relevance - res.relevance))) > 1e-3


def test_gnl_gradient_is_the_guided_gradient_with_positive_pool_routing(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([0, 4, 2])
    g = xa.explain(model, v, x, t, method="gnl_gradient", signal="logit").relevance
    gb = xa.explain(model, v, x, t, method="guided_backprop").relevance
    # every max-pool in TinyNet feeds a ReLU's backward, so the pool clamp is redundant (docs/methods.md#gnl-integrated-gradients)
    np.testing.assert_allclose(np.asarray(g), np.asarray(gb), rtol=0, atol=1e-6)


_POOL_A = dict(window_shape=(2, 2), strides=(2, 2))  # non-overlapping, fed by a conv (no ReLU)
_POOL_B = dict(window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # overlapping, after a ReLU


def _pool_net_forward(params, x, relu, pool_a, pool_b):
    """conv → max-pool → conv → ReLU → overlapping max-pool → dense, with pluggable relu / pools."""
    def conv(p, h):
        y = jax.lax.conv_general_dilated(h, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + p["bias"].reshape(1, 1, 1, -1)

    h = conv(params["c1"], x)
    h = pool_a(h)  # its gradient goes straight to a conv, not through a ReLU
    h = relu(conv(params["c2"], h))
    h = pool_b(h)
    h = h.reshape(h.shape[0], -1)
    return h @ params["fc"]["kernel"] + params["fc"]["bias"].reshape(1, -1)


class _PoolNet(nn.Module):
    """The same network as a Flax user writes it (``nn.max_pool``, ``nn.relu``)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(5, (3, 3), padding="SAME", name="c1")(x)
        x = nn.max_pool(x, **_POOL_A)
        x = nn.relu(nn.Conv(6, (3, 3), padding="SAME", name="c2")(x))
        x = nn.max_pool(x, **_POOL_B)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(4, name="fc")(x)


@jax.custom_vjp
def _guided_relu(z):
    return jnp.maximum(z, 0)


def _guided_relu_fwd(z):
    return jnp.maximum(z, 0), z


def _guided_relu_bwd(z, g):
    return (g * (z > 0) * (g > 0),)  # forward mask AND positive-gradient mask (docs/methods.md#gnl-integrated-gradients)


_guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def _positive_pool(kw):
    """A max-pool whose backward routes only max(g, 0) to the argmax (jax.vjp of the pool)."""
    pool = lambda h: nn.max_pool(h, **kw)  # noqa: E731

    @jax.custom_vjp
    def f(h):
        return pool(h)

    def fwd(h):
        return pool(h), h

    def bwd(h, g):
        return jax.vjp(pool, h)[1](jnp.maximum(g, 0))

    f.defvjp(fwd, bwd)
    return f


def test_gnl_gradient_clamps_max_pool_gradients_that_no_relu_clamps():
    """gnl_gradient = jax.grad of a reference built from a custom_vjp guided ReLU and positive max-pool.

    On TinyNet every max-pool's gradient next passes a guided ReLU, which clamps it anyway. Here one
    pool is fed by a conv (its gradient reaches no ReLU) and one overlaps (3x3/2 after a ReLU: an
    input that is the argmax of two windows sums their gradients before the ReLU clamps), so the
    positive-only routing changes the result and a missing max-pool rule would be seen.
    """
    model = _PoolNet()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = random_variables(model, x, seed=4)
    t = jnp.array([1, 3])
    p = v["params"]
    plain_a = lambda h: nn.max_pool(h, **_POOL_A)  # noqa: E731
    plain_b = lambda h: nn.max_pool(h, **_POOL_B)  # noqa: E731
    pos_a, pos_b = _positive_pool(_POOL_A), _positive_pool(_POOL_B)

    def ref_grad(relu, pool_a, pool_b):
        def f(xx):
            out = _pool_net_forward(p, xx, relu, pool_a, pool_b)
            return jnp.sum(out[jnp.arange(2), t])
        return jax.grad(f)(x)

    logits = _pool_net_forward(p, x, jax.nn.relu, plain_a, plain_b)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(model.apply(v, x)), rtol=1e-5, atol=1e-5,
                               err_msg="the reference network is the Flax model (1e-5)")
    ref = ref_grad(_guided_relu, pos_a, pos_b)
    scale = float(jnp.max(jnp.abs(ref)))
    assert scale > 1e-3, f"reference GNL gradient is (near) zero: {scale:.3g}"
    # the max-pool rule matters here, on each pool: leaving it off either one changes the gradient
    for what, a, b in (("guided-ReLU only", plain_a, plain_b), ("no clamp on the conv-fed pool", plain_a, pos_b),
                       ("no clamp on the overlapping pool", pos_a, plain_b)):
        gap = float(jnp.max(jnp.abs(ref - ref_grad(_guided_relu, a, b))))
        assert gap > 0.1 * scale, f"test set-up: {what} differs from GNL by {gap:.3g} <= 0.1 x max {scale:.3g}"
    g = xa.explain(model, v, x, t, method="gnl_gradient", signal="logit").relevance
    err = float(jnp.max(jnp.abs(g - ref)))
    assert err <= 1e-5 * scale, f"gnl_gradient vs custom_vjp reference: {err:.3g} > 1e-5 x max|ref| ({scale:.3g})"


class Smooth(nn.Module):
    """No rectifier, max-pool or other activation (a tanh is an ``activation``, where GNL's guided
    rule applies, METHODS Decision 8): GNL-IG must equal plain IG."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name="conv1")(x)
        x = xnn.AvgPool(2, name="pool")(x)
        x = xnn.Flatten(name="flatten")(x)
        return nn.Dense(3, name="fc")(x)


def test_gnl_ig_equals_plain_ig_without_activations_or_maxpool():
    m = Smooth()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3))
    v = m.init(jax.random.PRNGKey(1), x)
    t = jnp.array([0, 2])
    a = xa.explain(m, v, x, t, method="gnl_integrated_gradients", steps=7, chunk=3)
    b = xa.explain(m, v, x, t, method="integrated_gradients", steps=7, chunk=3)
    np.testing.assert_allclose(np.asarray(a.relevance), np.asarray(b.relevance), rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", ["integrated_gradients", "gnl_integrated_gradients", "smoothgrad"])
def test_peak_memory_does_not_grow_with_steps(tiny_net, method):
    model, v, x = tiny_net
    t = jnp.array([1, 2, 3])
    key = "samples" if method == "smoothgrad" else "steps"
    temps = {}
    for steps in (8, 64):
        fn = xa.attributor(model, method, chunk=4, **{key: steps})
        mem = fn.lower(v, x, t, key=jax.random.key(0)).compile().memory_analysis()
        temps[steps] = mem.temp_size_in_bytes
    assert temps[64] <= temps[8] * 1.05, (
        f"{method}: XLA temp memory grew from {temps[8]} B (8 steps) to {temps[64]} B (64 steps)"
    )


@pytest.mark.parametrize("method,opts", [
    ("integrated_gradients", {"steps": 10, "chunk": 4, "rule": "trapezoid"}),  # 11 points: a padded last chunk
    ("gnl_integrated_gradients", {"steps": 6, "chunk": 2}),
    ("smoothgrad", {"samples": 9, "chunk": 4, "variant": "var"}),
])
def test_chunk_by_chunk_equals_the_one_program_scan(tiny_net, method, opts):
    """Eager calls run one compiled program per chunk from a Python loop; traced calls one lax.scan."""
    model, v, x = tiny_net
    fn = xa.attributor(model, method, **opts)
    t = jnp.array([1, 2, 3])
    key = jax.random.key(0) if method == "smoothgrad" else None  # the others take none
    eager = fn(v, x, t, key=key)
    scan = fn.program(v, x, t, key)
    traced = jax.jit(fn)(v, x, t, key=key)
    scale = float(jnp.max(jnp.abs(scan.relevance)))
    for other, name in ((eager, "chunk by chunk"), (traced, "inside jax.jit")):
        np.testing.assert_allclose(np.asarray(other.relevance), np.asarray(scan.relevance), rtol=0, atol=1e-6 * scale,
                                   err_msg=f"{method}: {name} vs the lax.scan program (1e-6 x max)")
        np.testing.assert_array_equal(np.asarray(other.logits), np.asarray(scan.logits))
    fn(v, x, jnp.array([0, 4, 2]), key=key)
    assert fn.trace_count() == 1, "the chunk program is compiled once for all chunks and targets"


def test_an_eager_call_traces_the_model_once_at_its_batch(tiny_net):
    """The chunk program traces the model at x's batch (and at its points' batch); the program that
    finishes the map does not trace it, its first chunk having given the logits."""
    model, v, x = tiny_net
    batches = []

    def f(variables, xx):
        batches.append(xx.shape[0])
        return model.apply(variables, xx)

    fn = xa.attributor(f, "integrated_gradients", steps=4, chunk=2)
    res = fn(v, x, jnp.array([1, 2, 3]))
    n = x.shape[0]
    assert sorted(batches) == [n, n, 2 * n], (
        f"traced at batches {batches}; expected the target check's shape evaluation and the chunk "
        f"program at {n}, its points at {2 * n}")
    np.testing.assert_array_equal(np.asarray(res.logits), np.asarray(model.apply(v, x)))


def test_chunk_program_memory_does_not_grow_with_steps(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([1, 2, 3])
    temps = {}
    for steps in (8, 64):
        fn = xa.attributor(model, "integrated_gradients", chunk=4, steps=steps)
        temps[steps] = fn.chunk_program.lower(v, x, t, None, np.int32(0)).compile().memory_analysis().temp_size_in_bytes
    assert temps[64] <= temps[8] * 1.05, f"chunk program temp memory grew: {temps}"


def test_the_chunk_and_finish_programs_make_the_eager_call(tiny_net):
    """An eager call is ``chunk_program`` over its chunks (each also giving the logits at ``x``),
    summed, then ``finish_program``: the same map as the call, bit for bit."""
    model, v, x = tiny_net
    t = jnp.array([1, 2, 3])
    fn = xa.attributor(model, "integrated_gradients", chunk=2, steps=5)
    key = jax.random.key(0)
    sums, logits, count = fn.chunk_program(v, x, t, key, np.int32(0))
    assert count.shape[0] == 3, f"5 points in chunks of 2 are 3 chunks, got {count.shape[0]}"
    for i in (1, 2):
        part, logits_i, _ = fn.chunk_program(v, x, t, key, np.int32(i))
        np.testing.assert_array_equal(np.asarray(logits_i), np.asarray(logits), err_msg=f"chunk {i}'s logits")
        sums = jax.tree_util.tree_map(jnp.add, sums, part)
    res = fn.finish_program(x, t, key, logits, sums)
    want = fn(v, x, t, key=key)
    np.testing.assert_array_equal(np.asarray(res.map), np.asarray(want.map))
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(model.apply(v, x)))
    assert xa.attributor(model, "gradient").finish_program is None, "only path methods finish a path"
