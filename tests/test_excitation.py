"""Excitation Backprop and contrastive EB: parity with TorchRay, residual options, contrast checks,
the fully-convolutional canonizer.

Parity runs ours in float32 against TorchRay in float64 on the same weights and input (the suite's
``torch_pair``; the inputs hold float32 values): measured in float32, TorchRay's own ResNet50 EB map
at ``layer3`` moves by 3.5e-4 x max between float32 and float64 on one 224x224 input (near-cancelling
residual sums divide), while ours stays within 3e-7 of the float64 result. Measured here, ours in
float32 against TorchRay in float64, worst over the three layers of each net (VGG16, ResNet50): EB
map 2.5e-7, 3.2e-7; EB signal 9.7e-7, 1.2e-6; c-EB map 1.0e-7, 1.1e-7; c-EB signal 1.1e-7, 1.0e-6
(tolerance 1e-4). TorchRay is called once per network and method with ``debug=True``, which records
the signal at every module, so the three compared layers share one reference pass.

Inputs are 112x112 to keep the suite fast on two cores (224x224 costs ~4x more; the
report of the 224 run is in the commit history). TorchRay's benchmark ResNet pools layer4 with
``AvgPool2d(7, stride=1)``, the whole 7x7 map at 224; at 112 the map is 4x4 and the same recipe is
``AvgPool2d(4, stride=1)``, which is what the reference uses (ours: the global adaptive pool —
the same numbers).
"""

from __future__ import annotations

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax import nn as xnn
from xattr_jax.program import interpret
from xattr_jax.methods.excitation import default_contrast_layer, default_saliency_layer
from xattr_jax.models.fully_conv import fully_convolutional

TOL = 1e-4
SIZE = 112
TARGETS = [3, 7]
LAYERS = {
    "vgg16": ("features.23", "features.16", "features.29"),
    "resnet50": ("layer3", "layer2", "layer4"),
}
CONTRAST = {"vgg16": "classifier.4", "resnet50": "avgpool"}


def _err(ours, ref, scale):
    return float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64)))) / scale


def _float32(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float32)), tree)


@pytest.fixture(scope="module")
def image_batch():
    """2 seeded 112x112 inputs holding float32 values, as float64: (NCHW, NHWC)."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, SIZE, SIZE, generator=g, dtype=torch.float64).float().double()
    with jax.enable_x64(True):
        xj = jnp.asarray(x.permute(0, 2, 3, 1).numpy())
    return x, xj


@pytest.fixture(scope="module")
def torchray_refs(torch_pair, image_batch):
    """``get(arch) -> {method: {layer: TorchRay signal [N, h, w, C]}}`` (float64, one pass per method)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchray")
    from torchray.attribution import excitation_backprop as ebm

    xt, _ = image_batch
    cache = {}

    def get(arch):
        if arch in cache:
            return cache[arch]
        tm, _, _ = torch_pair(arch)
        tm = copy.deepcopy(tm)  # the shared model stays untouched
        if arch.startswith("resnet"):
            ebm.update_resnet(tm)
            tm.avgpool = torch.nn.AvgPool2d(SIZE // 32 + (SIZE % 32 > 0), stride=1)
        layers = LAYERS[arch]
        out = {}
        _, probes = ebm.excitation_backprop(tm, xt.clone(), TARGETS, saliency_layer=layers[0], resize=False,
                                            debug=True)
        out["eb"] = {l: probes[l].data[0].grad.permute(0, 2, 3, 1).numpy() for l in layers}
        _, probes = ebm.contrastive_excitation_backprop(tm, xt.clone(), TARGETS, saliency_layer=layers[0],
                                                        contrast_layer=CONTRAST[arch], resize=False, debug=True)
        out["ceb"] = {l: probes[l].data[0].grad.permute(0, 2, 3, 1).numpy() for l in layers}
        cache[arch] = out
        return out

    return get


@pytest.mark.parametrize("arch", ["vgg16", "resnet50"])
def test_eb_and_contrastive_eb_equal_torchray(torch_pair, image_batch, torchray_refs, arch):
    _, model, v = torch_pair(arch)
    _, xj = image_batch
    v, xj = _float32(v), _float32(xj)  # ours in float32, TorchRay's references in float64
    refs = torchray_refs(arch)
    layers = xa.layers(model, v, xj)
    assert default_saliency_layer(layers) == LAYERS[arch][0], "TorchRay's benchmark saliency layer"
    assert default_contrast_layer(layers) == CONTRAST[arch], "TorchRay's benchmark contrast layer"
    t = jnp.asarray(TARGETS)
    errs = {}  # what -> max abs error / scale, all measured before any assert
    for layer in LAYERS[arch]:
        eb = xa.explain(model, v, xj, t, method="excitation_backprop", layer=layer)
        ref = refs["eb"][layer]
        ref_map = ref.sum(-1)
        scale = float(np.max(np.abs(ref_map)))
        errs[f"EB map at {layer} (x max|ref map|)"] = _err(eb.map, ref_map, scale)
        errs[f"EB signal at {layer} (x max|ref signal|)"] = _err(eb.relevance, ref, float(np.max(np.abs(ref))))
        ceb = xa.explain(model, v, xj, t, method="contrastive_excitation_backprop", layer=layer,
                         contrast_layer=CONTRAST[arch])
        rc = refs["ceb"][layer]
        rc_map = np.maximum(rc.sum(-1), 0)
        assert np.any(rc_map > 0), "the reference c-EB map is not all zero"
        errs[f"c-EB map at {layer} (x max|EB ref map|)"] = _err(ceb.map, rc_map, scale)
        errs[f"c-EB signal at {layer} (x max|EB ref signal|)"] = _err(ceb.relevance, rc, float(np.max(np.abs(ref))))
        assert np.all(np.asarray(ceb.map) >= 0), "the c-EB map is clamped at 0"
    for what, err in errs.items():
        print(f"parity {arch} {what} vs TorchRay: {err:.3g}")  # shown with pytest -s / -rP
    bad = {w: f"{e:.3g}" for w, e in errs.items() if not e <= TOL}
    assert not bad, f"ours (float32) vs TorchRay (float64) on {arch}, max abs error / scale > {TOL}: {bad}"


# ------------------------------------------------------------------------------------------------
# small networks: residual options, contrast-layer checks, cost structure


class _ResNetish(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name="conv1")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn1")(x)
        x = xnn.ReLU(name="relu1")(x)
        y = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(x)
        y = xnn.ReLU(name="relu2")(y)
        x = xnn.Add(name="add")(y, x)
        x = xnn.ReLU(name="relu3")(x)
        x = xnn.MaxPool(2, 2, name="pool")(x)
        x = xnn.AdaptiveAvgPool(1, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        x = xnn.Dropout(name="drop")(x)
        return nn.Dense(5, name="fc")(x)


@pytest.fixture(scope="module")
def small():
    model = _ResNetish()
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(0), x)
    return model, v, x


def test_residual_options_split_the_sum_as_documented(small):
    model, v, x = small
    t = jnp.array([1, 4])
    _, acts = interpret(model, v, x, capture=["relu2", "relu1"])
    res = {}
    for opt in ("proportional", "skip_ignored"):
        r = [xa.explain(model, v, x, t, method="excitation_backprop", layer=l, residual=opt).relevance
             for l in ("relu3", "relu2")]
        top = xa.explain(model, v, x, t, method="excitation_backprop", layer="add", residual=opt).relevance
        res[opt] = (r, top)
    (r3, r2), top = res["proportional"]
    y, s = acts["relu2"], acts["relu1"]
    expect = jnp.where(y + s != 0, y / jnp.where(y + s != 0, y + s, 1), 0) * top
    np.testing.assert_allclose(r2, expect, rtol=1e-5, atol=1e-7 * float(jnp.max(jnp.abs(expect))),
                               err_msg="proportional: R_branch = y/(y+skip) * R (tolerance 1e-5 rel)")
    (r3, r2), top = res["skip_ignored"]
    np.testing.assert_allclose(r2, top, rtol=1e-6, err_msg="skip_ignored: all of R goes to the branch")
    # proportional conserves across the block: total at its input = total at the sum
    cons = xa.explain(model, v, x, t, method="excitation_backprop", layer="relu3", conservation=True).conservation
    np.testing.assert_allclose(cons["relu1"], cons["add"], rtol=1e-4,
                               err_msg="proportional: total at the block input = total at the sum (1e-4)")
    with pytest.raises(ValueError, match="residual"):
        xa.explain(model, v, x, t, method="excitation_backprop", residual="bogus")


def test_contrast_layer_must_sit_directly_below_the_classifier(small):
    model, v, x = small
    t = jnp.array([0, 1])
    layers = xa.layers(model, v, x)
    assert default_contrast_layer(layers) == "avgpool", "the flatten (a shape operation) is looked through"
    # the flatten is a shape operation and the inference dropout no operation at all: not layers
    assert not {"flatten", "drop"} & {l.name for l in layers}
    xa.explain(model, v, x, t, method="contrastive_excitation_backprop", layer="relu1", contrast_layer="avgpool")
    with pytest.raises(ValueError, match="directly below the classifier 'fc'.*valid contrast layers"):
        xa.explain(model, v, x, t, method="contrastive_excitation_backprop", layer="relu1", contrast_layer="pool")
    with pytest.raises(ValueError, match="below the contrast layer"):
        xa.explain(model, v, x, t, method="contrastive_excitation_backprop", layer="avgpool",
                   contrast_layer="avgpool")


def test_contrastive_eb_is_eb_difference_of_the_classifier_and_its_negation(small):
    """Δ = EB(W) − EB(−W) through the whole network below the classifier (EB is linear in p)."""
    model, v, x = small
    t = jnp.array([2, 3])
    neg = jax.tree_util.tree_map(lambda a: a, v)
    neg["params"]["fc"] = dict(neg["params"]["fc"], kernel=-v["params"]["fc"]["kernel"])
    p = xa.explain(model, v, x, t, method="excitation_backprop", layer="relu1").relevance
    pbar = xa.explain(model, neg, x, t, method="excitation_backprop", layer="relu1").relevance
    c = xa.explain(model, v, x, t, method="contrastive_excitation_backprop", layer="relu1")
    scale = float(jnp.max(jnp.abs(p)))
    np.testing.assert_allclose(c.relevance, p - pbar, atol=1e-5 * scale,
                               err_msg="c-EB relevance = p - p̄ (tolerance 1e-5 x max|p|)")
    np.testing.assert_allclose(c.map, jnp.maximum(jnp.sum(p - pbar, -1), 0), atol=1e-5 * scale)


def test_contrastive_eb_costs_one_forward_and_one_backward(small):
    """The compiled c-EB program has as many convolutions as EB's (no second pass)."""
    model, v, x = small
    t = jnp.array([0, 1])

    def n_convs(method):
        fn = xa.attributor(model, method, layer="relu1")
        txt = jax.jit(fn).lower(v, x, t).as_text()
        return txt.count("stablehlo.convolution")

    assert n_convs("contrastive_excitation_backprop") == n_convs("excitation_backprop")


# ------------------------------------------------------------------------------------------------
# fully-convolutional canonizer


def test_fully_convolutional_vgg_same_logits_and_score_maps():
    from xattr_jax.models import vgg11

    model = vgg11(num_classes=10)  # the rewrite is the same for every VGG depth
    xj = jax.random.normal(jax.random.PRNGKey(5), (1, 224, 224, 3))
    v = _random_variables(model, xj[:, :64, :64])
    fm, fv = fully_convolutional(model, v)
    ref = jax.jit(model.apply)(v, xj)
    out = jax.jit(fm.apply)(fv, xj)
    assert out.shape == ref.shape[:1] + (1, 1) + ref.shape[1:]
    err = float(jnp.max(jnp.abs(out[:, 0, 0] - ref))) / float(jnp.max(jnp.abs(ref)))
    assert err <= 1e-4, f"fully-convolutional VGG logits at 224: relative error {err:.3g} > 1e-4"
    names = {l.name for l in xa.layers(fm, fv, xj)}
    assert {"features.15", "classifier.0", "classifier.4", "classifier.6"} <= names, "layer names kept"
    # a larger input gives a score map; each position is the dense head on a 7x7 window of pool5
    xl = jnp.concatenate([xj, xj[:, :64]], axis=1)  # [1, 288, 224, 3]
    scores, acts = jax.jit(lambda v, x: interpret(fm, v, x, capture=["features.20"]))(fv, xl)
    assert scores.shape == (1, 3, 1, 10), f"score map shape {scores.shape}"
    feat = acts["features.20"]
    p = v["params"]["classifier"]
    for i in range(3):
        h = feat[:, i:i + 7, :7].reshape(1, -1)
        h = jnp.maximum(h @ p["0"]["kernel"] + p["0"]["bias"][None], 0)
        h = jnp.maximum(h @ p["3"]["kernel"] + p["3"]["bias"][None], 0)
        h = h @ p["6"]["kernel"] + p["6"]["bias"][None]
        err = float(jnp.max(jnp.abs(scores[:, i, 0] - h))) / float(jnp.max(jnp.abs(h)))
        assert err <= 1e-4, f"score map row {i} vs the dense head on its window: {err:.3g} > 1e-4"
    # c-EB with the pointing signal on the score map (default layers: pool4, classifier.4)
    res = xa.explain(fm, fv, xl, jnp.array([5]), method="contrastive_excitation_backprop", signal="pointing")
    assert res.map.shape == (1, 18, 14) and bool(jnp.all(jnp.isfinite(res.map)))


def _random_variables(model, x, seed=0):
    """Variables of ``model`` filled with seeded random numbers (cheaper than compiling ``init``)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)

    def fill(path, leaf):
        if any(getattr(k, "key", None) == "var" for k in path):
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
        fan = max(int(np.prod(leaf.shape[:-1])), 1)
        return jnp.asarray(rng.standard_normal(leaf.shape, dtype=np.float32) / np.float32(np.sqrt(fan)), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_fully_convolutional_resnet_and_alexnet_same_logits():
    from xattr_jax.models import alexnet, resnet18

    x = jax.random.normal(jax.random.PRNGKey(3), (1, 224, 224, 3))
    for make in (resnet18, alexnet):
        m = make(num_classes=7)
        v = _random_variables(m, x[:, :64, :64])
        fm, fv = fully_convolutional(m, v)
        ref = jax.jit(m.apply)(v, x)
        out = jax.jit(fm.apply)(fv, x)
        err = float(jnp.max(jnp.abs(out[:, 0, 0] - ref))) / float(jnp.max(jnp.abs(ref)))
        assert err <= 1e-4, f"fully-convolutional {make.__name__} logits at 224: relative error {err:.3g} > 1e-4"
        big = jax.eval_shape(fm.apply, fv, jax.ShapeDtypeStruct((1, 320, 256, 3), jnp.float32))
        assert big.shape[1:3] != (1, 1) and big.shape[-1] == 7, f"{make.__name__}: score map {big.shape}"
    with pytest.raises(TypeError, match="VGG, ResNet and AlexNet"):
        fully_convolutional(_ResNetish(), {"params": {}})


def test_layer_input_reads_eb_at_the_image(small):
    """``layer="input"``: EB's signal at the image, the EB conv rule applied once more below ``conv1``.

    By hand: ``P_in = x ⊙ W⁺ᵀ(P_conv1 ⊘ W⁺x)`` (no bias, 0 where ``W⁺x = 0``), with ``P_conv1`` EB's
    signal at conv1's output (batch-norm passes it unchanged).
    """
    model, v, x = small
    t = jnp.array([2, 0])
    p1 = xa.explain(model, v, x, t, method="excitation_backprop", layer="conv1").relevance
    res = xa.explain(model, v, x, t, method="excitation_backprop", layer="input")
    wp = jnp.maximum(v["params"]["conv1"]["kernel"], 0)

    def conv(a):
        return jax.lax.conv_general_dilated(a, wp, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    z, vjp = jax.vjp(conv, x)
    (g,) = vjp(jnp.where(z != 0, p1 / jnp.where(z != 0, z, 1), 0))
    expect = x * g
    assert res.relevance.shape == x.shape
    np.testing.assert_allclose(res.relevance, expect, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(expect))),
                               err_msg="EB at the input = x * W+^T(P / W+x) (tolerance 1e-5 rel)")
    np.testing.assert_allclose(res.map, jnp.sum(expect, -1), rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(expect))))
    default = xa.explain(model, v, x, t, method="excitation_backprop")
    assert default.relevance.shape != x.shape, "without layer=, EB keeps its hidden default layer"
    g_in = xa.explain(model, v, x, t, method="gradient", layer="input").relevance
    np.testing.assert_array_equal(g_in, xa.explain(model, v, x, t, method="gradient").relevance)
    with pytest.raises(ValueError, match="grad_cam needs a hidden spatial layer.*not the input.*'relu1'"):
        xa.explain(model, v, x, t, method="grad_cam", layer="input")
