"""CAM (docs/methods.md#cam) against its definition, computed here with numpy.

``M_c(u) = Σ_k w_kc A_k(u)``: ``A`` the activations at the last ReLU before the global average pool
(captured with :func:`xattr_jax.program.interpret`), ``w`` the dense layer's kernel. Checked on a
network written the way a Flax user writes it (``nn.relu``, ``jnp.mean``), on the suite's
``tiny_net`` (our addressable modules, batch norm folded, a residual add before the pool) and on the
shipped ``small_resnet`` (a zoo-style model with trained weights).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import xattr_jax as xa
from xattr_jax.program import interpret
from _nets import random_variables

REL = 1e-5  # float32: Σ_k (h·w)·(w_kc/(h·w))·A_k vs Σ_k w_kc A_k differ by rounding only


class _UserCamNet(nn.Module):
    """conv → ReLU → conv → ReLU → global average pool (``jnp.mean`` over H, W) → dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3), padding="SAME")(x)
        x = nn.relu(x)
        x = nn.Conv(8, (3, 3), padding="SAME")(x)
        x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(4)(x)


def _last_relu_before_gap(layers):
    """The name of the last ReLU before the first global average pool, read off the layer table."""
    names = [l.name for l in layers]
    gap = next(i for i, l in enumerate(layers)
               if l.kind == "avgpool" and (len(l.shape) == 2 or tuple(l.shape[1:3]) == (1, 1)))
    return [names[i] for i in range(gap) if layers[i].kind == "relu"][-1]


def _check_cam(model, variables, x, target, head, expect_layer):
    """Compare xa.explain(method="cam") with Σ_k w_kc A_k(u) computed in float64 numpy.

    ``head``: the dense layer's params (``kernel`` [K, classes], ``bias``).
    """
    layers = xa.layers(model, variables, x)
    name = _last_relu_before_gap(layers)
    assert name == expect_layer, f"the last ReLU before the global pool is {name!r}, expected {expect_layer!r}"
    logits, acts = interpret(model, variables, x, capture=[name])
    a = np.asarray(acts[name], np.float64)  # [N, h, w, K]
    w = np.asarray(head["kernel"], np.float64)  # [K, classes]
    assert a.ndim == 4 and w.shape[0] == a.shape[-1], f"activations {a.shape} vs dense kernel {w.shape}"
    t = np.asarray(target)
    ref = np.einsum("nhwk,kn->nhw", a, w[:, t])  # M_c(u) = Σ_k w_kc A_k(u), per sample's class
    # the reference is a non-trivial map that varies over positions (else agreement would prove little)
    scale = float(np.max(np.abs(ref)))
    assert scale > 1e-3, f"reference CAM is (near) zero: max |M| = {scale:.3g}"
    spread = float(np.min(np.ptp(ref.reshape(len(t), -1), axis=1)))
    assert spread > 0.05 * scale, f"reference CAM is (nearly) flat in some sample: spread {spread:.3g}"
    # the right A and w were taken: the logit is the spatial mean of the map plus the bias
    b = np.asarray(head["bias"], np.float64)[t]
    np.testing.assert_allclose(np.asarray(logits, np.float64)[np.arange(len(t)), t], ref.mean(axis=(1, 2)) + b,
                               rtol=1e-5, atol=1e-5, err_msg="logit_c = mean_u M_c(u) + b_c (1e-5)")
    for kw in ({"layer": name}, {}):  # explicit layer, and the method's default layer
        res = xa.explain(model, variables, x, jnp.asarray(t), method="cam", **kw)
        got = np.asarray(res.map, np.float64)
        assert got.shape == ref.shape, f"cam map shape {got.shape} vs reference {ref.shape} ({kw})"
        err = float(np.max(np.abs(got - ref)))
        assert err <= REL * scale, (
            f"cam {kw}: max |map − Σ_k w_kc A_k| = {err:.3g} > {REL} × max|ref| ({scale:.3g})"
        )


def test_cam_equals_the_weighted_channel_sum_on_a_user_linen_model():
    model = _UserCamNet()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 9, 3))
    v = random_variables(model, x, seed=1)
    _check_cam(model, v, x, np.array([1, 3]), v["params"]["Dense_0"], "relu_1")


def test_cam_equals_the_weighted_channel_sum_on_tiny_net(tiny_net):
    model, v, x = tiny_net
    # relu3 follows a residual add and a folded batch norm upstream; the head is avgpool → flatten → fc
    _check_cam(model, v, x, np.array([0, 4, 2]), v["params"]["fc"], "relu3")


def test_cam_equals_the_weighted_channel_sum_on_the_shipped_small_resnet():
    from xattr_jax.models import load_embedded

    model, v = load_embedded("small_resnet")
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 32, 32, 3))
    _check_cam(model, v, x, np.array([5, 11]), v["params"]["fc"], "layer4.0.relu")
