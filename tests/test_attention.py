"""Attention Backpropagation (our interpretation, docs/methods.md#attention-backprop): one map per layer in network order,
AB-I equals Excitation Backprop at every layer, AB-II's seed equals Grad-CAM's positive channel
contributions, conservation per layer, and the whole-inference-process figure.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax import nn as xnn
from xattr_jax import viz
from xattr_jax.program import interpret
from xattr_jax.models import BasicBlock, vgg11

from test_viz import _map_image, _panels
from _nets import random_variables  # noqa: E402


class _VGGish(nn.Module):
    @nn.compact
    def __call__(self, x):
        for i, f in enumerate((16, 24)):
            x = nn.Conv(f, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{i}a")(x)
            x = xnn.ReLU(name=f"relu{i}a")(x)
            x = nn.Conv(f, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{i}b")(x)
            x = xnn.ReLU(name=f"relu{i}b")(x)
            x = xnn.MaxPool(2, 2, name=f"pool{i}")(x)
        x = xnn.AdaptiveAvgPool(2, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        x = nn.Dense(32, name="fc0")(x)
        x = xnn.ReLU(name="fc_relu")(x)
        x = xnn.Dropout(name="drop")(x)
        return nn.Dense(6, name="fc")(x)


class _ResNetish(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv1")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn1")(x)
        x = xnn.ReLU(name="relu")(x)
        x = BasicBlock(features=16, name="layer1")(x)
        x = BasicBlock(features=24, stride=2, downsample=True, name="layer2")(x)
        x = xnn.AdaptiveAvgPool(1, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        return nn.Dense(6, name="fc")(x)




@pytest.fixture(scope="module")
def nets():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    return {name: (m, random_variables(m, x), x) for name, m in (("vgg", _VGGish()), ("resnet", _ResNetish()))}


def _spatial_leaves(model, v, x, upto=None):
    names = []
    for l in xa.layers(model, v, x):
        if l.kind is not None and l.calls == 1 and len(l.shape) == 4:
            names.append(l.name)
            if l.name == upto:
                break
    return ["input"] + names


def test_one_map_per_layer_in_network_order_on_vgg11():
    model = vgg11(num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 32, 32, 3))
    v = random_variables(model, x)
    res = xa.explain(model, v, x, jnp.array([3]), method="attention_backprop")
    expect = _spatial_leaves(model, v, x, upto="features.19")  # the last conv ReLU seeds AB-II
    assert list(res.layer_maps) == expect, "AB-II: input, then every spatial layer up to the seed, in order"
    assert expect[1:4] == ["features.0", "features.1", "features.2"]
    for name, m in res.layer_maps.items():
        assert m.ndim == 3 and m.shape[0] == 1, f"{name}: map [N, h, w], got {m.shape}"
    res = xa.explain(model, v, x, jnp.array([3]), method="attention_backprop", seed="logit")
    assert list(res.layer_maps) == _spatial_leaves(model, v, x), "AB-I: every spatial layer (avgpool too)"
    assert list(res.layer_maps)[-2:] == ["features.20", "avgpool"]


@pytest.mark.parametrize("net", ["vgg", "resnet"])
def test_logit_seed_equals_excitation_backprop_at_every_layer(nets, net):
    model, v, x = nets[net]
    t = jnp.array([1, 4])
    ab = xa.explain(model, v, x, t, method="attention_backprop", seed="logit")
    layers = ["relu0b", "pool0", "conv1a", "pool1"] if net == "vgg" else ["relu", "layer1.add", "layer2.relu1",
                                                                         "layer2"]
    for layer in layers:
        eb = xa.explain(model, v, x, t, method="excitation_backprop", layer=layer)
        key = layer if layer in ab.layer_maps else "layer2.relu"  # the container's map is its last leaf's
        scale = float(jnp.max(jnp.abs(eb.map)))
        np.testing.assert_allclose(ab.layer_maps[key], eb.map, atol=1e-5 * scale,
                                   err_msg=f"{net}: AB(seed=logit) at {layer} = EB at {layer} (1e-5 x max)")


@pytest.mark.parametrize("net", ["vgg", "resnet"])
def test_gradcam_seed_is_grad_cams_positive_channel_contributions(nets, net):
    model, v, x = nets[net]
    seed_layer = "relu1b" if net == "vgg" else "layer2.relu"
    t = jnp.array([0, 5])
    _, acts = interpret(model, v, x, capture=[seed_layer])
    g = xa.explain(model, v, x, t, method="grad_cam", layer=seed_layer).relevance
    c = jnp.maximum(acts[seed_layer] * jnp.mean(g, axis=(1, 2), keepdims=True), 0)
    ref = c / jnp.sum(c, axis=(1, 2, 3), keepdims=True)
    res = xa.explain(model, v, x, t, method="attention_backprop", layer=seed_layer)
    np.testing.assert_allclose(res.relevance, ref, atol=1e-6 * float(jnp.max(ref)),
                               err_msg="AB-II seed = ReLU(α_k A_k) / Σ (tolerance 1e-6 x max)")
    ref_map = jnp.sum(ref, -1)  # a channel sum: float32 rounding scales with the map, not with ref
    np.testing.assert_allclose(res.layer_maps[seed_layer], ref_map, atol=1e-6 * float(jnp.max(ref_map)),
                               err_msg="AB-II seed layer map = Σ_k seed (tolerance 1e-6 x max)")
    # Grad-CAM's map is the channel sum before the ReLU; the seed keeps only positive contributions
    cam = xa.explain(model, v, x, t, method="grad_cam", layer=seed_layer).map
    assert bool(jnp.all(jnp.sum(c, -1) >= cam - 1e-6)), "Σ_k ReLU(α_k A_k) >= ReLU(Σ_k α_k A_k)"


@pytest.mark.parametrize("net", ["vgg", "resnet"])
@pytest.mark.parametrize("seed", ["gradcam", "logit"])
def test_conservation_per_layer(nets, net, seed):
    model, v, x = nets[net]
    res = xa.explain(model, v, x, jnp.array([2, 3]), method="attention_backprop", seed=seed)
    cons = {k: np.asarray(a) for k, a in res.conservation.items()}
    assert list(cons) == list(res.layer_maps)
    top = cons[list(cons)[-1]]
    if seed == "gradcam":
        np.testing.assert_allclose(top, 1.0, rtol=1e-5, err_msg="the AB-II seed sums to 1")
    # cuts through the network: every layer of the VGG-like net; block outputs of the ResNet-like one
    cuts = [n for n in cons if net == "vgg" or "." not in n or n.endswith(".relu") or n.endswith(".add")]
    for n in cuts:
        np.testing.assert_allclose(cons[n], top, rtol=1e-4,
                                   err_msg=f"{net}/{seed}: total attention at {n} = at the top (1e-4 relative)")
        np.testing.assert_allclose(np.asarray(res.layer_maps[n]).sum((1, 2)), cons[n], rtol=1e-4)


def test_alpha2beta1_rule_and_option_errors(nets):
    model, v, x = nets["vgg"]
    t = jnp.array([1, 2])
    res = xa.explain(model, v, x, t, method="attention_backprop", rule="alpha2beta1")
    m = np.asarray(res.layer_maps["input"])
    assert np.isfinite(m).all() and (m < 0).any() and (m > 0).any(), "α2β1 attention is signed"
    zp = xa.explain(model, v, x, t, method="attention_backprop")
    assert not np.allclose(np.asarray(zp.layer_maps["conv0b"]), np.asarray(res.layer_maps["conv0b"]))
    with pytest.raises(ValueError, match="seed"):
        xa.explain(model, v, x, t, method="attention_backprop", seed="bogus")
    with pytest.raises(ValueError, match="rule"):
        xa.explain(model, v, x, t, method="attention_backprop", rule="bogus")
    with pytest.raises(ValueError, match="above the seed"):
        xa.explain(model, v, x, t, method="attention_backprop", layer="fc0")


def test_whole_inference_process_figure(nets):
    model, v, x = nets["resnet"]
    res = xa.explain(model, v, x, jnp.array([1, 4]), method="attention_backprop")
    img = viz.to_image(np.asarray(x[1]))
    fig = viz.layer_figure(img, res.layer_maps, sample=1, cols=6, layers=xa.layers(model, v, x))
    panels = _panels(fig)
    assert [ax.get_title().split()[0] for ax in panels] == list(res.layer_maps), "one panel per layer, in network order"
    first = np.asarray(res.layer_maps["input"][1])  # at the image's size: drawn as it is, over its own limit
    np.testing.assert_allclose(_map_image(panels[0]).get_array(), first / viz.clip_limit(first), rtol=1e-5,
                               err_msg="panel 1 is the input attention of sample 1")  # fmt: skip
