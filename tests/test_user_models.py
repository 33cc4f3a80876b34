"""Users' own models: the engine works on the traced program, not on our module classes.

The same ResNet18 and VGG16, loaded with the same torchvision weights, written five ways (the zoo;
idiomatic Flax linen; Flax NNX; Equinox, channels-first and vmapped; a plain function of a
parameter dict, see ``user_models.py``) give the zoo model's map for every method with its default
layer and options. Linen, NNX and the plain function run the same operations as the zoo, so they
are compared in float32; Equinox holds its activations channels-first and normalises as
``(y − μ)/√(σ² + ε)``, so it is compared in float64, where rounding cannot flip a ReLU
pre-activation that sits within rounding of zero.

Then models written the way the Flax docs write them (``nn.relu``, ``nn.avg_pool``, ``x + y``,
``jnp.mean``) with no module of ours: guided backprop against a ``custom_vjp`` guided-ReLU
reference, conservation of EB, LRP z⁺ and ε on bias-free models, and RSP's and AB's totals.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import user_models as U
import xattr_jax as xa

REL = 1e-5  # max |map − zoo map| / max |zoo map|
# cheap options for the path methods; every other method runs with its defaults
OPTIONS = {
    "smoothgrad": dict(samples=2, chunk=2),
    "integrated_gradients": dict(steps=3, chunk=3),
    "gnl_integrated_gradients": dict(steps=3, chunk=3),
}
SIZE = {"resnet18": 64, "vgg16": 224}  # VGG16 at 224: its adaptive pool is the identity, as users write it


@pytest.fixture(scope="module")
def forms(torch_pair):
    cache = {}

    def get(arch):
        if arch not in cache:
            tm, zoo, zv64 = torch_pair(arch)
            zv = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), zv64)
            build = {"resnet18": (U.linen_resnet18, U.nnx_resnet18, U.plain_resnet18, U.eqx_resnet18),
                     "vgg16": (U.linen_vgg16, U.nnx_vgg16, U.plain_vgg16, U.eqx_vgg16)}[arch]
            f32 = {"zoo": (zoo, zv)}
            for name, make in zip(("linen", "nnx", "plain"), build[:3]):
                f32[name] = make(zv)
            with jax.enable_x64(True):
                f64 = {"zoo": (zoo, zv64), "equinox": build[3](tm, np.float64)}
            x = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (1, SIZE[arch], SIZE[arch], 3)), np.float64)
            cache[arch] = (f32, f64, x)
        return cache[arch]

    return get


# The one (method, network) pair that must be refused, and the phrase every form's refusal must carry:
# VGG16's head is adaptive-pool -> flatten -> dense, not a global average pool.
REFUSED = {("cam", "vgg16"): "has no global average pool there. Use grad_cam instead."}


def _maps(forms, method, x, target, refusal=None):
    out = {}
    for name, (model, variables) in forms.items():
        call = lambda: xa.explain(model, variables, jnp.asarray(x), target, method=method,  # noqa: E731
                                  key=jax.random.key(0), **OPTIONS.get(method, {}))
        if refusal is None:
            out[name] = np.asarray(call().map)
            continue
        with pytest.raises(ValueError) as err:
            call()
        assert refusal in str(err.value), f"{method}/{name}: refused with {err.value}, expected {refusal!r}"
    return out


def _check(maps, what):
    if not maps:  # every form refused, as checked in _maps
        return
    ref = maps["zoo"]
    for name, m in maps.items():
        assert m.shape == ref.shape, f"{what}/{name}: map shape {m.shape} vs zoo {ref.shape}"
        scale = max(float(np.max(np.abs(ref))), 1e-30)
        err = float(np.max(np.abs(m - ref)))
        assert err <= REL * scale, f"{what}/{name}: max |map − zoo| = {err:.3g} > {REL} × {scale:.3g}"
        assert scale > 1e-12 or what.startswith("cam"), f"{what}: the zoo map is all zero"


@pytest.mark.parametrize("arch", ["resnet18", "vgg16"])
def test_forms_have_the_zoo_logits(forms, arch):
    f32, f64, x = forms(arch)
    ref = np.asarray(xa.program.call_model(f32["zoo"][0])(f32["zoo"][1], jnp.asarray(x, jnp.float32)))
    for name, (model, v) in f32.items():
        out = np.asarray(xa.program.call_model(model)(v, jnp.asarray(x, jnp.float32)))
        np.testing.assert_array_equal(out, ref, err_msg=f"{arch}/{name}: float32 logits differ from the zoo's")
    with jax.enable_x64(True):
        ref = np.asarray(xa.program.call_model(f64["zoo"][0])(f64["zoo"][1], jnp.asarray(x)))
        out = np.asarray(f64["equinox"][0](f64["equinox"][1], jnp.asarray(x)))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10 * np.abs(ref).max(), err_msg=f"{arch}/equinox")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg16"])
@pytest.mark.parametrize("method", xa.methods_available())
def test_every_form_gives_the_zoo_map(forms, arch, method):
    f32, f64, x = forms(arch)
    t = jnp.array([7])
    refusal = REFUSED.get((method, arch))
    _check(_maps(f32, method, x.astype(np.float32), t, refusal), f"{method} {arch} float32")
    with jax.enable_x64(True):
        _check(_maps(f64, method, x, t, refusal), f"{method} {arch} float64")


def test_default_layers_are_the_same_place_in_every_form(forms):
    """EB's ``layer3``, c-EB's contrast layer, Grad-CAM's/RSP's/AB's last conv ReLU and CAM's global
    pool come from each form's own layer table; same shapes, same place."""
    from xattr_jax.methods import get_method
    from xattr_jax.methods.cam import last_conv_relu
    from xattr_jax.methods.excitation import default_contrast_layer, default_saliency_layer

    cam_layer = get_method("cam").default_layer

    f32, f64, x = forms("resnet18")
    xx = jnp.asarray(x, jnp.float32)
    picks = {}
    for name, (model, v) in f32.items():
        layers = xa.layers(model, v, xx)
        by = {l.name: l for l in layers}
        picks[name] = [by[f(layers)].shape for f in (default_saliency_layer, default_contrast_layer,
                                                      last_conv_relu, cam_layer)]
        picks[name] += [by[default_contrast_layer(layers)].kind]
    assert picks["zoo"] == [(1, 4, 4, 256), (1, 1, 1, 512), (1, 2, 2, 512), (1, 2, 2, 512), "avgpool"]
    for name, p in picks.items():
        assert p[:1] + p[2:4] == picks["zoo"][:1] + picks["zoo"][2:4], f"{name}: {p} vs zoo {picks['zoo']}"
        assert p[-1] == "avgpool", f"{name}: c-EB's contrast layer should be the global pool, got {p}"
    layers = xa.layers(*f32["plain"], xx)
    assert default_saliency_layer(layers) == "layer3", "a weight path with layer3/layer4 gives the container"
    layers = xa.layers(*f32["linen"], xx)
    assert default_saliency_layer(layers) == "block2_1.relu_1", "no layer3: the last layer at 1/16 resolution"


def test_layer_table_names_kinds_and_source_lines(forms):
    f32, _, x = forms("resnet18")
    layers = xa.layers(*f32["nnx"], jnp.asarray(x, jnp.float32))
    by = {l.name: l for l in layers}
    assert by["conv1"].kind == "conv" and by["bn1"].kind == "batchnorm" and by["fc"].kind == "dense"
    assert by["layer1.0.conv1"].shape == (1, 16, 16, 64)
    assert by["layer1.0.add_0"].kind == "add" and by["layer1.0.relu_1"].kind == "relu"
    assert by["layer3"].kind is None and by["layer3"].output == by["layer3.1.relu_1"].output
    assert "user_models.py" in by["layer1.0.relu_0"].source, by["layer1.0.relu_0"].source
    assert not [l for l in layers if l.kind == "other"], "ResNet18 has nothing without a rule"


# ----------------------------------------------------------------------------------------------
# idiomatic models with no module of ours


class AvgPoolCNN(nn.Module):
    """As the Flax docs write a CNN, bias-free, with average pooling and a ``jnp.mean`` head."""

    bias: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), use_bias=self.bias)(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(16, (3, 3), use_bias=self.bias)(x)
        x = jax.nn.relu(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(16, (3, 3), use_bias=self.bias)(x)
        x = jnp.maximum(x, 0)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(10, use_bias=self.bias)(x)


class ResidualCNN(nn.Module):
    bias: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), use_bias=self.bias)(x))
        y = nn.relu(nn.Conv(8, (3, 3), use_bias=self.bias)(x))
        y = nn.Conv(8, (3, 3), use_bias=self.bias)(y)
        x = nn.relu(x + y)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(16, use_bias=self.bias)(x))
        return nn.Dense(10, use_bias=self.bias)(x)


@jax.custom_vjp
def _guided_relu(x):
    return jnp.maximum(x, 0)


_guided_relu.defvjp(lambda x: (jnp.maximum(x, 0), x), lambda x, g: (g * (x > 0) * (g > 0),))


class GuidedRef(nn.Module):
    """``AvgPoolCNN`` with every ReLU replaced by a ``custom_vjp`` guided ReLU (the reference)."""

    @nn.compact
    def __call__(self, x):
        x = _guided_relu(nn.Conv(8, (3, 3), use_bias=True)(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = _guided_relu(nn.Conv(16, (3, 3), use_bias=True)(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = _guided_relu(nn.Conv(16, (3, 3), use_bias=True)(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(10, use_bias=True)(x)


def _init(model, x, seed=0):
    v = model.init(jax.random.PRNGKey(seed), x)
    # non-zero biases, so a rule that drops or keeps them shows
    return jax.tree_util.tree_map(lambda a: a + 0.05 * jax.random.normal(jax.random.PRNGKey(9), a.shape), v)


def test_guided_backprop_equals_a_custom_vjp_guided_relu_reference():
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 3))
    v = _init(AvgPoolCNN(bias=True), x)
    t = jnp.array([1, 4, 7])
    res = xa.explain(AvgPoolCNN(bias=True), v, x, t, method="guided_backprop")
    ref = jax.grad(lambda x: jnp.sum(GuidedRef().apply(v, x)[jnp.arange(3), t]))(x)
    plain = jax.grad(lambda x: jnp.sum(AvgPoolCNN(bias=True).apply(v, x)[jnp.arange(3), t]))(x)
    scale = float(jnp.max(jnp.abs(ref)))
    err = float(jnp.max(jnp.abs(res.relevance - ref)))
    assert err <= 1e-6 * scale, f"guided backprop vs custom_vjp reference: {err:.3g} (1e-6 × {scale:.3g})"
    assert float(jnp.max(jnp.abs(plain - ref))) > 0.1 * scale, "the reference must differ from the gradient"


@pytest.mark.parametrize("net", [AvgPoolCNN, ResidualCNN])
@pytest.mark.parametrize("method,opts", [("excitation_backprop", {}),
                                          ("lrp", {"composite": "epsilon_plus"}),
                                          ("lrp", {"composite": xa.composites.composite(
                                              (xa.composites.kind("conv", "dense"), xa.rules.epsilon(1e-9)),
                                              (xa.composites.kind("relu"), xa.rules.pass_rule()),
                                              (xa.composites.kind("add", "avgpool"), xa.rules.norm(1e-9)))})])
def test_bias_free_idiomatic_models_conserve_the_seed(net, method, opts):
    """EB, LRP z⁺ (epsilon_plus) and LRP-ε: the total at the input equals the seed (1, one-hot)."""
    x = jax.random.uniform(jax.random.PRNGKey(2), (2, 16, 16, 3))  # pixels >= 0: z⁺ needs x >= 0
    model = net()
    v = _init(model, x)
    res = xa.explain(model, v, x, jnp.array([2, 5]), method=method, layer="input", **opts)
    total = np.asarray(res.relevance).reshape(2, -1).sum(axis=1)
    np.testing.assert_allclose(total, 1.0, rtol=1e-4, err_msg=f"{method} {opts}: input total vs the seed 1")


def test_rsp_and_attention_backprop_keep_their_totals_on_idiomatic_models():
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 16, 3))
    model = ResidualCNN(bias=True)
    v = _init(model, x)
    t = jnp.array([0, 3])
    ab = xa.explain(model, v, x, t, method="attention_backprop")
    rsp = xa.explain(model, v, x, t, method="rsp", conservation=True)
    names = [l.name for l in xa.layers(model, v, x)]
    assert names[:7] == ["Conv_0", "relu_0", "Conv_1", "relu_1", "Conv_2", "add_0", "relu_2"], names
    cuts = ["input", "Conv_0", "relu_0", "add_0", "relu_2"]  # not inside the residual branch
    for name in cuts:
        np.testing.assert_allclose(np.asarray(ab.conservation[name]), 1.0, rtol=1e-4, err_msg=f"AB total at {name}")
        np.testing.assert_allclose(np.asarray(rsp.conservation[name]), np.asarray(rsp.conservation["relu_2"]),
                                   rtol=1e-4, err_msg=f"RSP total at {name} vs its seed at relu_2")
