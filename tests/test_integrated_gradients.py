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
    # every max-pool in TinyNet feeds a ReLU's backward, so the pool clamp is redundant (METHODS §4.4)
    np.testing.assert_allclose(np.asarray(g), np.asarray(gb), rtol=0, atol=1e-6)


class Smooth(nn.Module):
    """No ReLU, no max-pool: GNL-IG must equal plain IG."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name="conv1")(x)
        x = jnp.tanh(x)
        x = xnn.AvgPool(2, name="pool")(x)
        x = xnn.Flatten(name="flatten")(x)
        return nn.Dense(3, name="fc")(x)


def test_gnl_ig_equals_plain_ig_without_relu_or_maxpool():
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
        mem = fn.jitted.lower(v, x, t).compile().memory_analysis()
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
    eager = fn(v, x, t)
    scan = fn.jitted(v, x, t)
    traced = jax.jit(fn)(v, x, t)
    scale = float(jnp.max(jnp.abs(scan.relevance)))
    for other, name in ((eager, "chunk by chunk"), (traced, "inside jax.jit")):
        np.testing.assert_allclose(np.asarray(other.relevance), np.asarray(scan.relevance), rtol=0, atol=1e-6 * scale,
                                   err_msg=f"{method}: {name} vs the lax.scan program (1e-6 x max)")
        np.testing.assert_array_equal(np.asarray(other.logits), np.asarray(scan.logits))
    fn(v, x, jnp.array([0, 4, 2]))
    assert fn.trace_count() == 1, "the chunk program is compiled once for all chunks and targets"


def test_chunk_program_memory_does_not_grow_with_steps(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([1, 2, 3])
    temps = {}
    for steps in (8, 64):
        fn = xa.attributor(model, "integrated_gradients", chunk=4, steps=steps)
        temps[steps] = fn.jitted_chunk.lower(v, x, t, np.int32(0)).compile().memory_analysis().temp_size_in_bytes
    assert temps[64] <= temps[8] * 1.05, f"chunk program temp memory grew: {temps}"
