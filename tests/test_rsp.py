"""Relative Sectional Propagation: the conv rule against a naive float64 reference, invariance to the
layer's weights, conservation layer by layer, batch == per-sample, the multi-class "hostile" seed
against steps 1-7 of docs/methods.md#rsp-hostile-seed computed by hand, and a signed map.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import xattr_jax as xa
from xattr_jax import nn as xnn
from xattr_jax.program import interpret
from xattr_jax.models import Bottleneck
from xattr_jax.rules import library as R
from _nets import random_variables  # noqa: E402

# ------------------------------------------------------------------------------------------------
# the conv rule


def _conv_fn(params, x, *, stride, pad):
    y = lax.conv_general_dilated(x, params["kernel"], (stride, stride), [(pad, pad), (pad, pad)],
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if "bias" in params:
        y = y + params["bias"].reshape(1, 1, 1, -1)
    return y


def _naive_rsp_conv(x, r, k, stride, pad, groups=1):
    """docs/methods.md#rsp-conv-rule with explicit loops, float64, one sample at a time; with
    ``groups`` feature groups each group's kernels see its own inputs and outputs only."""
    x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
    n, H, W, cin = x.shape
    _, h, w, cout = r.shape
    ci, co = cin // groups, cout // groups
    out = np.zeros_like(x)
    for s in range(n):
        xp = np.maximum(x[s], 0)
        xpad = np.zeros((H + 2 * pad, W + 2 * pad, cin))
        xpad[pad:pad + H, pad:pad + W] = xp

        def half(rh, f):
            xg, rg = xpad[:, :, f * ci:(f + 1) * ci], rh[:, :, f * co:(f + 1) * co]
            g = np.zeros((k, k, ci, co))
            for a in range(h):
                for b in range(w):
                    win = xg[a * stride:a * stride + k, b * stride:b * stride + k]  # [k, k, ci]
                    g += win[:, :, :, None] * rg[a, b][None, None, None, :]
            z = np.zeros((h, w, co))
            for a in range(h):
                for b in range(w):
                    win = xg[a * stride:a * stride + k, b * stride:b * stride + k]
                    z[a, b] = np.einsum("uvi,uvio->o", win, g)
            sdiv = np.where(z != 0, rg / np.where(z != 0, z, 1), 0)
            cpad = np.zeros_like(xg)
            for a in range(h):
                for b in range(w):
                    cpad[a * stride:a * stride + k, b * stride:b * stride + k] += np.einsum("uvio,o->uvi", g, sdiv[a, b])
            return xp[:, :, f * ci:(f + 1) * ci] * cpad[pad:pad + H, pad:pad + W]

        c = np.concatenate([half(np.maximum(r[s], 0), f) - half(np.maximum(-r[s], 0), f)
                            for f in range(groups)], axis=-1)
        if k > 1:
            c = 2 * c
            t = r[s].sum()
            nz = c != 0
            c = c - np.where(nz, t / max(nz.sum(), 1), 0)
        out[s] = c
    return out


GEOMETRIES = [(3, 1, 1), (3, 2, 1), (1, 1, 0), (2, 2, 0)]  # (kernel, stride, padding)


def _case(k, stride, pad, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((2, 7, 6, 3)), 0)
    x[0, 0, :, :] = 0  # a row of zeros: some receptive fields see no input
    fn = functools.partial(_conv_fn, stride=stride, pad=pad)
    params = {"kernel": jnp.asarray(rng.standard_normal((k, k, 3, 4)), dtype),
              "bias": jnp.asarray(rng.standard_normal(4), dtype)}
    xj = jnp.asarray(x, dtype)
    y = fn(params, xj)
    r = jnp.asarray(rng.standard_normal(y.shape), dtype)
    return fn, params, xj, y, r


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv_rule_equals_naive_float64_reference(geom):
    k, stride, pad = geom
    fn, params, x, y, r = _case(k, stride, pad, dtype=jnp.float64)
    (got,) = R.rsp_conv().backward(fn, params, (x,), y, r)
    ref = _naive_rsp_conv(x, r, k, stride, pad)
    err = float(np.max(np.abs(np.asarray(got) - ref))) / float(np.max(np.abs(ref)))
    assert err <= 1e-10, f"rsp_conv {geom} vs naive float64 loops: relative error {err:.3g} > 1e-10"
    # conservation, where every output's receptive field sees some input (else that R is lost; the
    # shift of k > 1 kernels then spreads the deficit, for 1x1 kernels it is simply gone)
    seen = np.asarray(fn({"kernel": jnp.ones_like(params["kernel"])}, (x > 0).astype(x.dtype))) > 0
    tot, ref_tot = np.asarray(got).sum(axis=(1, 2, 3)), np.asarray(r).sum(axis=(1, 2, 3))
    for i in range(2):
        if seen[i].all():
            np.testing.assert_allclose(tot[i], ref_tot[i], rtol=1e-10,
                                       err_msg=f"rsp_conv {geom} conserves ΣR of sample {i} (1e-10)")
        elif k == 1:
            kept = np.asarray(r)[i][seen[i]].sum()
            np.testing.assert_allclose(tot[i], kept, rtol=1e-10, err_msg="1x1: R over empty fields is dropped")


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv_rule_float32_close_and_ignores_the_weights(geom):
    k, stride, pad = geom
    fn, params, x, y, r = _case(k, stride, pad, seed=1)
    rule = R.rsp_conv()
    (a,) = rule.backward(fn, params, (x,), y, r)
    other = {"kernel": -3.0 * params["kernel"] + 1.0, "bias": params["bias"] + 5.0}
    (b,) = rule.backward(fn, other, (x,), y, r)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg="rsp_conv does not use W or b")
    ref = _naive_rsp_conv(x, r, k, stride, pad)
    err = float(np.max(np.abs(np.asarray(a, np.float64) - ref))) / float(np.max(np.abs(ref)))
    assert err <= 1e-4, f"float32 rsp_conv {geom} vs float64 reference: {err:.3g} > 1e-4"
    # batch == per sample: the surrogate kernels are built per sample
    (one,) = rule.backward(fn, params, (x[1:],), y[1:], r[1:])
    np.testing.assert_allclose(one[0], a[1], rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(a))),
                               err_msg="rsp_conv on a batch equals it on each sample (1e-5)")


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("groups,cin,cout", [(1, 3, 4), (3, 6, 6), (4, 4, 8)])  # plain, grouped, depthwise x2
@pytest.mark.parametrize("geom", [(3, 1, 1), (3, 2, 1), (1, 1, 0)])
@pytest.mark.parametrize("n,small_maps", [(1, True), (1, False), (2, True)])
def test_conv_rule_on_a_traced_layer_equals_naive_float64(layout, groups, cin, cout, geom, n, small_maps,
                                                          monkeypatch):
    """The rule on a traced convolution (the engine's receptive-field form, ``LayerFn.patches``),
    channels-last and channels-first, with feature groups: with one example ``z`` and ``C1 − C2``
    are the layer's own convolution and its transpose with the kernels ``[G⁺ | ±G⁻]`` (a
    depthwise layer's kernels a convolution too, or, with ``small_maps=False``, all of it matrix
    products and the fold, as on maps over ``DEPTHWISE_CONV_POSITIONS``), with two they are matrix
    products and the patches' transpose. All equal the naive float64 loops (1e-10 relative), and the
    engine really took that form (the layer has patches)."""
    from xattr_jax.program import layer_call, trace

    k, stride, pad = geom
    rng = np.random.default_rng(hash((layout, groups, geom, n)) % 2**32)
    w = jnp.asarray(rng.standard_normal((k, k, cin // groups, cout)))  # HWIO

    def conv(x, kernel, dn):
        return lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad)] * 2,
                                        dimension_numbers=dn, feature_group_count=groups)

    def model(p, x):  # NHWC outside; the layer in the layout under test
        if layout == "NHWC":
            return jnp.mean(conv(x, p["w"], ("NHWC", "HWIO", "NHWC")), axis=(1, 2))
        return jnp.mean(conv(x.transpose(0, 3, 1, 2), p["w"], ("NCHW", "OIHW", "NCHW")), axis=(2, 3))

    p = {"w": w if layout == "NHWC" else w.transpose(3, 2, 0, 1)}
    x = np.maximum(rng.standard_normal((n, 7, 6, cin)), 0)
    x[0, 0] = 0  # a row of zeros: some receptive fields see no input
    prog = trace(model, p, jnp.asarray(x))
    name = next(l.name for l in prog.layers if l.kind == "conv")
    call = layer_call(prog, p, jnp.asarray(x), name)
    assert call.fn.patches is not None, "the layer has the receptive-field form"
    assert (call.fn.patches.kernels is not None) == (cin == groups), "depthwise layers have the kernels' convolution"
    if not small_maps:
        monkeypatch.setattr(R, "DEPTHWISE_CONV_POSITIONS", 0)
    (xin,) = call.inputs
    y = call.fn(call.params, xin)
    r = jnp.asarray(rng.standard_normal(y.shape))
    (got,) = jax.jit(lambda xx, yy, rr: R.rsp_conv().backward(call.fn, call.params, (xx,), yy, rr))(xin, y, r)
    nhwc = (lambda a: a) if layout == "NHWC" else (lambda a: np.asarray(a).transpose(0, 2, 3, 1))
    ref = _naive_rsp_conv(nhwc(xin), nhwc(r), k, stride, pad, groups)
    err = float(np.max(np.abs(nhwc(got) - ref))) / float(np.max(np.abs(ref)))
    assert err <= 1e-10, (f"rsp_conv {layout} groups={groups} {geom} N={n} small_maps={small_maps} "
                          f"vs naive float64: {err:.3g} > 1e-10")


def test_purge_options():
    fn, params, x, y, r = _case(3, 1, 1, seed=2)
    s = jnp.sum(r, axis=-1, keepdims=True)
    keep = ((r > 0) & (s > 0)) | ((r < 0) & (s < 0))
    (a,) = R.rsp_conv("sign_consistent").backward(fn, params, (x,), y, r)
    (b,) = R.rsp_conv("none").backward(fn, params, (x,), y, jnp.where(keep, r, 0.0))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg="sign_consistent = rule on the purged R")
    (c,) = R.rsp_conv("uniform_spread").backward(fn, params, (x,), y, r)
    (d,) = R.rsp_conv("none").backward(fn, params, (x,), y, jnp.broadcast_to(s / r.shape[-1], r.shape))
    np.testing.assert_allclose(c, d, rtol=1e-6, atol=1e-7, err_msg="uniform_spread = rule on the spread R")
    np.testing.assert_allclose(c.sum((1, 2, 3)), r.sum((1, 2, 3)), rtol=1e-4,
                               err_msg="uniform_spread conserves the total (1e-4)")
    with pytest.raises(ValueError, match="purge"):
        R.rsp_conv("bogus")
    with pytest.raises(ValueError, match="factor"):
        R.rsp_conv(factor=0)


def test_zbox_global_and_add_rules():
    rng = np.random.default_rng(3)
    fn = functools.partial(_conv_fn, stride=1, pad=1)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, 3)), jnp.float32)
    params = {"kernel": jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32), "bias": jnp.ones(4)}
    y = fn(params, x)
    r = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    (got,) = R.zbox_global().backward(fn, params, (x,), y, r)
    # by hand: per-sample global bounds, no bias
    lo = jnp.min(x, axis=(1, 2, 3), keepdims=True) * jnp.ones_like(x)
    hi = jnp.max(x, axis=(1, 2, 3), keepdims=True) * jnp.ones_like(x)
    w = params["kernel"]
    f = lambda k, a: fn({"kernel": k}, a)  # noqa: E731
    za = f(w, x) - f(jnp.maximum(w, 0), lo) - f(jnp.minimum(w, 0), hi)
    s = jnp.where(za != 0, r / za, 0)
    g = lambda k, a: jax.vjp(lambda t: f(k, t), a)[1](s)[0]  # noqa: E731
    ref = x * g(w, x) - lo * g(jnp.maximum(w, 0), lo) - hi * g(jnp.minimum(w, 0), hi)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(ref))),
                               err_msg="zbox_global by hand (1e-5)")
    a, b = x[:, :, :, :1], -x[:, :, :, 1:2]
    (ra, rb) = R.rsp_add().backward(lambda p, u, v: u + v, {}, (a, b), a + b, r[..., :1])
    ap, bp = jnp.maximum(a, 0) + 1e-9, jnp.maximum(b, 0) + 1e-9
    np.testing.assert_allclose(ra, ap * r[..., :1] / (ap + bp), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ra + rb, r[..., :1], rtol=1e-5, atol=1e-7, err_msg="rsp_add conserves")


# ------------------------------------------------------------------------------------------------
# the method on small VGG-like and ResNet-like networks


class _VGGish(nn.Module):
    @nn.compact
    def __call__(self, x):
        for i, f in enumerate((6, 8)):
            x = nn.Conv(f, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{i}a")(x)
            x = xnn.ReLU(name=f"relu{i}a")(x)
            x = nn.Conv(f, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{i}b")(x)
            x = xnn.ReLU(name=f"relu{i}b")(x)
            x = xnn.MaxPool(2, 2, name=f"pool{i}")(x)
        x = nn.Conv(8, (1, 1), name="conv_last")(x)
        x = xnn.ReLU(name="relu_last")(x)
        x = xnn.AdaptiveAvgPool(2, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        x = nn.Dense(16, name="fc0")(x)
        x = xnn.ReLU(name="fc_relu")(x)
        return nn.Dense(6, name="fc")(x)


class _ResNetish(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv1")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn1")(x)
        x = xnn.ReLU(name="relu")(x)
        x = xnn.MaxPool(2, 2, name="maxpool")(x)
        # wide enough that no position has all channels at 0 (RSP drops R over empty receptive fields)
        x = Bottleneck(features=16, stride=1, downsample=True, name="layer1")(x)
        x = Bottleneck(features=16, stride=1, downsample=False, name="layer2")(x)
        x = Bottleneck(features=16, stride=2, downsample=True, name="layer3")(x)
        x = xnn.AdaptiveAvgPool(1, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        return nn.Dense(6, name="fc")(x)




@pytest.fixture(scope="module")
def nets():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    out = {}
    for name, m in (("vgg", _VGGish()), ("resnet", _ResNetish())):
        out[name] = (m, random_variables(m, x), x)
    return out


def test_conservation_layer_by_layer_vgg(nets):
    model, v, x = nets["vgg"]
    res = xa.explain(model, v, x, jnp.array([1, 4]), method="rsp", conservation=True)
    c = {k: np.asarray(a) for k, a in res.conservation.items()}
    layers = [l.name for l in xa.layers(model, v, x) if l.kind is not None]
    below = layers[: layers.index("relu_last") + 1]
    # the seed sits at the last conv ReLU: exactly it, the layers below it and the input are reported,
    # nothing above (avgpool, fc0, fc_relu, fc)
    assert set(c) == set(below) | {"input"}, (
        f"RSP reports the seed layer relu_last and everything below it; extra {sorted(set(c) - set(below) - {'input'})}, "
        f"missing {sorted(set(below) | {'input'} - set(c))}"
    )
    seed = c["relu_last"]
    assert np.all(np.abs(seed) > 1e-3), f"the seed totals must be non-zero for conservation to mean much: {seed}"
    for name in below + ["input"]:
        np.testing.assert_allclose(c[name], seed, rtol=1e-4,
                                   err_msg=f"RSP total relevance at {name} equals the seed's (1e-4 relative)")
    np.testing.assert_allclose(res.map.sum((1, 2)), seed, rtol=1e-4, err_msg="map total = seed total")


def test_conservation_at_resnet_cuts(nets):
    model, v, x = nets["resnet"]
    res = xa.explain(model, v, x, jnp.array([0, 5]), method="rsp", conservation=True)
    c = {k: np.asarray(a) for k, a in res.conservation.items()}
    seed = c["layer3.relu"]
    for name in ("layer3.add", "layer2.relu", "layer2.add", "layer1.relu", "layer1.add", "maxpool", "relu",
                 "bn1", "conv1", "input"):
        np.testing.assert_allclose(c[name], seed, rtol=1e-4,
                                   err_msg=f"RSP (ResNet extension) total at the cut {name} (1e-4 relative)")
    # inside a block with a projection, the branch and the skip share the total
    for blk in ("layer1", "layer3"):
        np.testing.assert_allclose(c[f"{blk}.bn3"] + c[f"{blk}.downsample.1"], seed, rtol=1e-4,
                                   err_msg=f"{blk}: branch + skip = block total (1e-4)")


@pytest.mark.parametrize("net", ["vgg", "resnet"])
def test_batch_equals_per_sample_and_signed_map(nets, net):
    model, v, x = nets[net]
    t = jnp.array([2, 3])
    res = xa.explain(model, v, x, t, method="rsp")
    for i in range(2):
        one = xa.explain(model, v, x[i:i + 1], t[i:i + 1], method="rsp")
        scale = float(jnp.max(jnp.abs(res.map[i])))
        np.testing.assert_allclose(one.map[0], res.map[i], atol=1e-5 * scale,
                                   err_msg=f"{net}: RSP batch == per sample (1e-5 x max)")
    m = np.asarray(res.map)
    assert (m > 0).any() and (m < 0).any(), f"{net}: the RSP map is bipolar (both signs present)"
    assert res.map.shape == (2, 16, 16) and res.relevance.shape == (2, 16, 16, 3)


def _hand_seed(g, a, target, hostile):
    """Steps 1-7 of docs/methods.md#rsp-hostile-seed in float64 numpy for one sample."""
    def cam(c):
        m = a * g[c].mean(axis=(0, 1), keepdims=True)
        return m / (m.max() + 1e-9)

    def sdiv(p, q):
        return p / q if q != 0 else np.zeros_like(p)

    hostile = [h for h in hostile if h != target]
    if not hostile:
        return cam(target)
    t = len(hostile) * cam(target) - sum(cam(h) for h in hostile)
    p = np.maximum(t, 0)
    p = sdiv(p, p.sum())
    q = np.minimum(t, 0)
    q = sdiv(q, q.min())
    q = sdiv(q, q.sum()) * p.sum()
    t2 = p - q
    s = t2.sum(-1)
    pos = np.where(s > 0, s, 0)
    pos = sdiv(pos, pos.sum()) * 2
    neg = np.where(s <= 0, s, 0)
    neg = sdiv(neg, neg.sum())
    r = pos - neg
    return np.broadcast_to((r / a.shape[-1])[..., None], a.shape)


def test_hostile_seed_matches_steps_1_to_7_by_hand(nets):
    model, v, x = nets["vgg"]
    seed_layer = "relu_last"
    _, acts = interpret(model, v, x, capture=[seed_layer])
    a = np.asarray(acts[seed_layer], np.float64)
    grads = {c: np.asarray(xa.explain(model, v, x, jnp.array([c, c]), method="grad_cam",
                                      layer=seed_layer).relevance, np.float64) for c in range(6)}
    target = [1, 4]
    hostile = ((2, 5, 1), (4,))  # sample 0: two hostile classes (the target 1 is skipped); sample 1: none
    res = xa.explain(model, v, x, jnp.asarray(target), method="rsp", layer=seed_layer, hostile=hostile)
    for i in range(2):
        g = {c: grads[c][i] for c in range(6)}
        ref = _hand_seed(g, a[i], target[i], hostile[i])
        got = np.asarray(res.relevance[i], np.float64)
        err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
        assert err <= 1e-4, f"hostile seed of sample {i} vs steps 1-7 by hand: {err:.3g} > 1e-4"
    np.testing.assert_allclose(np.asarray(res.relevance[0]).sum(), 1.0, rtol=1e-4, err_msg="the seed sums to 1")
    # "predicted": the other classes with sigmoid >= 0.5 (at most max_hostile, highest first)
    logits = np.asarray(model.apply(v, x))
    res = xa.explain(model, v, x, jnp.asarray(target), method="rsp", layer=seed_layer, hostile="predicted",
                     max_hostile=2)
    for i in range(2):
        order = [int(c) for c in np.argsort(-logits[i]) if c != target[i] and logits[i, c] >= 0]
        g = {c: grads[c][i] for c in range(6)}
        ref = _hand_seed(g, a[i], target[i], order[:2])
        err = np.max(np.abs(np.asarray(res.relevance[i], np.float64) - ref)) / np.max(np.abs(ref))
        assert err <= 1e-4, f"'predicted' hostile seed of sample {i} ({order[:2]}): {err:.3g} > 1e-4"
    with pytest.raises(ValueError, match="one per sample"):
        xa.explain(model, v, x, jnp.asarray(target), method="rsp", hostile=((1,),))
    with pytest.raises(ValueError, match="hostile"):
        xa.explain(model, v, x, jnp.asarray(target), method="rsp", hostile="everything")


def test_plain_seed_is_the_max_normalised_channel_map(nets):
    model, v, x = nets["resnet"]
    seed_layer = "layer3.relu"
    _, acts = interpret(model, v, x, capture=[seed_layer])
    t = jnp.array([3, 0])
    g = xa.explain(model, v, x, t, method="grad_cam", layer=seed_layer).relevance
    cam = acts[seed_layer] * jnp.mean(g, axis=(1, 2), keepdims=True)
    ref = cam / (jnp.max(cam, axis=(1, 2, 3), keepdims=True) + 1e-9)
    res = xa.explain(model, v, x, t, method="rsp", layer=seed_layer)
    np.testing.assert_allclose(res.relevance, ref, atol=1e-6, err_msg="R0 = A·α / (max + 1e-9), signed")
    assert bool(jnp.any(ref < 0)), "the seed is signed"


def test_eager_calls_compile_one_batch_1_program_whatever_the_batch(nets):
    """RSP's per-example kernels unroll over the batch; eager calls run a batch-1 program per example."""
    model, v, x = nets["resnet"]
    fn = xa.attributor(model, "rsp")
    x4 = jnp.concatenate([x, x[::-1]])
    t = jnp.array([2, 3, 1, 0])
    a = fn(v, x4, t)
    b = fn(v, x4[:3], t[:3])
    assert fn.trace_count() == 1, f"batches 4 and 3 share one batch-1 program, got {fn.trace_count()} traces"
    whole = fn.program(v, x4, t)  # the whole batch as one program, as under the caller's jit
    scale = float(jnp.max(jnp.abs(whole.map)))
    np.testing.assert_allclose(np.asarray(a.map), np.asarray(whole.map), rtol=0, atol=1e-5 * scale,
                               err_msg="per-example programs vs the batched program (1e-5 x max)")
    np.testing.assert_allclose(np.asarray(b.map), np.asarray(a.map[:3]), rtol=0, atol=1e-6 * scale)
    hostile = xa.attributor(model, "rsp", hostile=[[1], [2], [0], [3]])(v, x4, t)  # per-example lists: batched
    assert hostile.map.shape == a.map.shape and np.all(np.isfinite(np.asarray(hostile.map)))


@pytest.mark.parametrize("batch", [None, "map"])
def test_under_the_callers_jit_one_program_whatever_the_batch(nets, batch):
    """``batch="batched"`` (the default: per-example kernels as batched matrix products over the
    receptive fields) and ``batch="map"`` (a ``lax.map``): under the caller's ``jit`` the compiled
    program holds the same convolutions at batch 2 and 6, where ``"unroll"`` holds one set per
    example; all three give the same maps (1e-5 x max), as does the per-example eager call."""
    model, v, x = nets["resnet"]
    x6 = jnp.concatenate([x, x[::-1], 0.5 * x])
    t = jnp.array([2, 3, 1, 0, 4, 2])[: x6.shape[0]]
    opts = {} if batch is None else {"batch": batch}  # None: the default, "batched"
    fn, unrolled = xa.attributor(model, "rsp", **opts), xa.attributor(model, "rsp", batch="unroll")

    def convs(f, n):
        hlo = jax.jit(lambda xx, tt: f(v, xx, tt).map).lower(x6[:n], t[:n]).as_text()
        return hlo.count("stablehlo.convolution")

    assert convs(fn, 2) == convs(fn, x6.shape[0]), f"batch={batch!r}: the program must not grow with the batch"
    assert convs(unrolled, x6.shape[0]) > convs(unrolled, 2), "the unrolled form grows (the check can fail)"
    a = jax.jit(lambda xx, tt: fn(v, xx, tt).map)(x6, t)
    b = jax.jit(lambda xx, tt: unrolled(v, xx, tt).map)(x6, t)
    eager = xa.attributor(model, "rsp")(v, x6, t).map  # one batch-1 program per example
    scale = float(jnp.max(jnp.abs(b)))
    assert scale > 0
    for got, what in ((a, f"batch={batch!r}"), (eager, "the eager per-example call")):
        np.testing.assert_allclose(np.asarray(got), np.asarray(b), rtol=0, atol=1e-5 * scale,
                                   err_msg=f"{what} vs the unrolled batch under jit (1e-5 x max)")

