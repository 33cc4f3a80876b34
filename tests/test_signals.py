"""The top signal ``signal="pointing"`` (docs/methods.md#top-signal, docs/evaluation.md#pointing-game) against a seed built here by hand.

For a fully-convolutional model whose output is a class-score map ``s: [N, h, w, C]`` the seed is
the one-hot of the target class weighted by the spatial softmax of that class's score map,
``exp(s_c(u)) / Σ_u exp(s_c(u))``, with the weights held constant. With ``method="gradient"`` and
``layer="input"`` the relevance is then ``vjp(model)(seed)``, computed here with ``jax.vjp``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import xattr_jax as xa
from _nets import random_variables

REL = 1e-5  # float32; same operations, different fusion


class _ScoreMapNet(nn.Module):
    """conv → ReLU → max-pool → conv → tanh → 1×1 conv: a class-score map ``[N, h, w, 4]``.

    The tanh makes the input gradient depend smoothly on x, so gradients *of* the relevance are
    not zero and can tell constant seed weights from weights differentiated through.
    """

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3), padding="SAME")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(8, (3, 3), padding="SAME")(x)
        x = jnp.tanh(x)
        return nn.Conv(4, (1, 1))(x)


def _setup():
    model = _ScoreMapNet()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 10, 3))
    # seeded He-scaled weights, times 3: larger scores make the spatial softmax clearly non-uniform
    v = jax.tree_util.tree_map(lambda a: 3.0 * a, random_variables(model, x, seed=1))
    return model, v, x, jnp.array([1, 3])


def _pointing_seed(s, target, stop):
    """one-hot(target) · softmax_u(s_target(u)), per sample; ``stop``: weights as constants."""
    n, h, w, c = s.shape
    sc = s[jnp.arange(n), :, :, target]  # [N, h, w]
    if stop:
        sc = jax.lax.stop_gradient(sc)
    wts = jnp.exp(sc - jnp.max(sc, axis=(1, 2), keepdims=True))
    wts = wts / jnp.sum(wts, axis=(1, 2), keepdims=True)
    onehot = jax.nn.one_hot(target, c, dtype=s.dtype)[:, None, None, :]  # [N, 1, 1, C]
    return wts[..., None] * onehot


def _reference(model, v, x, target, stop=True):
    """The input gradient of the pointing-weighted class score, by hand: vjp(model)(seed)."""
    s, vjp = jax.vjp(lambda xx: model.apply(v, xx), x)
    (g,) = vjp(_pointing_seed(s, target, stop))
    return g


def _close(got, ref, what):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} vs reference {ref.shape}"
    scale = float(np.max(np.abs(ref)))
    assert scale > 1e-6, f"{what}: the reference is (near) zero, max |ref| = {scale:.3g}"
    err = float(np.max(np.abs(got - ref)))
    assert err <= REL * scale, f"{what}: max |got − ref| = {err:.3g} > {REL} × max|ref| ({scale:.3g})"


def test_pointing_seed_is_the_spatial_softmax_of_the_target_score_map():
    model, v, x, t = _setup()
    s = model.apply(v, x)
    assert s.shape == (2, 4, 5, 4), f"score map shape {s.shape}"
    ref = _reference(model, v, x, t)
    # the softmax weights matter here: uniform weights 1/(h·w) give a clearly different gradient
    n, h, w, c = s.shape
    _, vjp = jax.vjp(lambda xx: model.apply(v, xx), x)
    (uniform,) = vjp(jax.nn.one_hot(t, c)[:, None, None, :] * jnp.ones((n, h, w, 1)) / (h * w))
    gap = float(jnp.max(jnp.abs(uniform - ref))) / float(jnp.max(jnp.abs(ref)))
    assert gap > 0.1, f"test set-up: softmax-weighted vs uniform seed differ by only {gap:.3g} x max"
    res = xa.explain(model, v, x, t, method="gradient", layer="input", signal="pointing")
    _close(res.relevance, ref, "pointing gradient vs jax.vjp of the hand-made seed (1e-5 x max)")


def test_pointing_weights_are_constants_for_gradients_of_the_relevance():
    model, v, x, t = _setup()
    r = jax.random.normal(jax.random.PRNGKey(2), x.shape)
    fn = xa.attributor(model, "gradient", layer="input", signal="pointing")
    got = jax.grad(lambda xx: jnp.sum(fn(v, xx, t).relevance * r))(x)
    ref = jax.grad(lambda xx: jnp.sum(_reference(model, v, xx, t, stop=True) * r))(x)
    live = jax.grad(lambda xx: jnp.sum(_reference(model, v, xx, t, stop=False) * r))(x)
    gap = float(jnp.max(jnp.abs(live - ref))) / float(jnp.max(jnp.abs(ref)))
    assert gap > 0.1, f"test set-up: constant vs differentiated weights differ by only {gap:.3g} x max"
    _close(got, ref, "d/dx Σ r·relevance with constant pointing weights (1e-5 x max)")


def test_pointing_on_a_non_spatial_output_is_the_logit_gradient(tiny_net):
    """Logits ``[N, C]``: the pointing weight is 1, so the relevance is d logit_c / dx."""
    model, v, x = tiny_net
    t = jnp.array([0, 4, 2])
    res = xa.explain(model, v, x, t, method="gradient", layer="input", signal="pointing")
    ref = jax.grad(lambda xx: jnp.sum(model.apply(v, xx)[jnp.arange(3), t]))(x)
    _close(res.relevance, ref, "pointing on [N, C] logits vs jax.grad of the target logit (1e-5 x max)")
