"""Composites (first match wins, globs, first linear layer), BN folding, and conservation."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax import nn as xnn
from xattr_jax import rules as R
from xattr_jax.composites import composite, first_linear, kind, path, resolve
from xattr_jax.program import folded_batchnorms, interpret, layer_call, trace


def test_first_match_wins_and_globs_select_by_path(tiny_net):
    model, v, x = tiny_net
    eps, zp, flat = R.epsilon(0.5), R.zplus(), R.flat()
    comp = composite((first_linear(), flat), (path("conv2"), eps), (kind("conv", "dense"), zp), (kind("relu"), R.pass_rule()))
    rules = resolve(comp, model, v, x)
    assert rules["conv1"] is flat and rules["conv2"] is eps and rules["fc"] is zp
    assert {"relu1", "relu2", "relu3"} <= set(rules) and "pool1" not in rules and "bn1" not in rules
    with pytest.raises(TypeError):
        rules["conv1"] = eps  # resolved maps are frozen


def test_layers_are_traced_in_network_order(tiny_net):
    model, v, x = tiny_net
    names = [l.name for l in xa.layers(model, v, x)]
    # flatten and the inference-mode dropout are shape operations / no operations: not layers
    assert names == ["conv1", "bn1", "relu1", "pool1", "conv2", "relu2", "add", "relu3", "avgpool", "fc"]


def test_fold_batchnorm_preserves_the_output(tiny_net):
    model, v, x = tiny_net
    prog = trace(model, v, x)
    assert folded_batchnorms(prog) == ("bn1",)
    _, caps = interpret(model, v, x, capture=["bn1"])
    conv = layer_call(prog, v, x, "conv1", fold=True)
    assert set(conv.rule_params) == {"kernel", "bias"}
    merged = conv.fn(conv.rule_params, x)
    ref = np.asarray(caps["bn1"])
    err = float(np.max(np.abs(np.asarray(merged) - ref)))
    assert err <= 1e-5 * float(np.max(np.abs(ref))), f"BN(conv(x)) vs folded conv: {err:.3g} (1e-5 relative)"


def test_lrp_with_folding_keeps_the_logits_exactly(tiny_net):
    model, v, x = tiny_net
    res = xa.explain(model, v, x, jnp.array([0, 1, 2]), method="lrp", composite="epsilon_plus")
    np.testing.assert_array_equal(np.asarray(res.logits), np.asarray(jax.jit(model.apply)(v, x)))


class BiasFree(nn.Module):
    """Conv/ReLU/pool/dense without biases: LRP-0 and ε conserve exactly up to the stabiliser."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv1")(x)
        x = xnn.ReLU(name="relu1")(x)
        x = xnn.MaxPool(2, name="pool")(x)
        y = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv2")(x)
        y = xnn.ReLU(name="relu2")(y)
        x = xnn.Add(name="add")(y, x)
        x = xnn.AvgPool(2, name="avg")(x)
        x = xnn.Flatten(name="flatten")(x)
        x = nn.Dense(16, use_bias=False, name="fc1")(x)
        x = xnn.ReLU(name="relu3")(x)
        return nn.Dense(4, use_bias=False, name="fc2")(x)


@pytest.fixture(scope="module")
def bias_free():
    m = BiasFree()
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, 8, 8, 3))  # positive inputs: z⁺ needs x ≥ 0
    v = m.init(jax.random.PRNGKey(4), x)
    return m, v, x


@pytest.mark.parametrize("rule", ["zero", "epsilon", "zplus"])
def test_conservation_at_every_layer(bias_free, rule):
    m, v, x = bias_free
    make = {"zero": R.zero, "epsilon": lambda: R.epsilon(1e-9), "zplus": R.zplus}[rule]
    comp = composite((kind("conv", "dense"), make()), (kind("relu"), R.pass_rule()), (kind("add", "avgpool"), R.norm(1e-9)))
    # seed: the logit times the one-hot (the pulled-back signal z·sg(z) gives exactly that); the
    # max-pool keeps its gradient (winner takes all), which conserves
    logits = m.apply(v, x)
    t = jnp.array([1, 3])
    res = xa.explain(m, v, x, t, method="lrp", composite=comp, conservation=True,
                     signal=lambda z: z * jax.lax.stop_gradient(z))
    total = np.asarray(logits[jnp.arange(2), t])
    names = set(res.conservation)
    assert {"input", "conv1", "relu1", "pool", "conv2", "add", "avg", "fc1", "fc2"} <= names
    for name, s in res.conservation.items():
        if name in ("conv2", "relu2"):  # one branch of the residual sum carries only part
            continue
        s = np.asarray(s)
        err = np.max(np.abs(s - total) / np.abs(total))
        assert err <= 1e-5, f"{rule}: total relevance at {name} = {s} vs seeded {total} (1e-5 relative)"
    np.testing.assert_allclose(np.asarray(res.map).sum(axis=(1, 2)), total, rtol=1e-5)


def test_interpreter_drops_the_negative_input_terms_after_relus(tiny_net):
    """z⁺ after a ReLU (conv2 via the max-pool, fc via the average pool) runs without its x⁻ term.

    With both terms kept, fc has two matrix products more (x⁻W⁻ and its transpose) and conv2 the
    same number of convolutions (its two terms are one convolution over ``[x⁺ | x⁻]``,
    ``LayerFn.stacked``) over twice the input features: more FLOPs. The map equals the one with
    both terms kept (float64).
    """
    model, v, x = tiny_net
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v)
        x64 = jnp.asarray(x, jnp.float64)
        t = jnp.array([0, 2, 4])
        zp = R.zplus()
        full = dataclasses.replace(zp, nonnegative=None)
        assert full != zp
        counts, maps = {}, {}
        for label, rule in (("skip", zp), ("full", full)):
            comp = composite((kind("conv", "dense"), rule), (kind("relu"), R.pass_rule()),
                             (kind("add", "avgpool"), R.norm(1e-9)))
            fn = xa.attributor(model, "lrp", composite=comp, canonize=False)
            lowered = fn.lower(v64, x64, t)
            text = lowered.as_text()
            cost = lowered.compile().cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            counts[label] = (text.count("stablehlo.convolution"), text.count("stablehlo.dot_general"),
                             float(cost["flops"]))
            maps[label] = np.asarray(fn(v64, x64, t).relevance)
    assert counts["full"][0] == counts["skip"][0], counts
    assert counts["full"][1] - counts["skip"][1] == 2, counts
    assert counts["full"][2] > counts["skip"][2], counts
    err = np.max(np.abs(maps["skip"] - maps["full"]))
    assert err <= 1e-12 * np.max(np.abs(maps["full"])), f"max abs error {err:.3g} (1e-12 x max)"


def test_equal_composites_compile_once(tiny_net):
    """Rules, matchers and composites are values: ``explain(..., composite=c)`` with a composite
    built anew each call reuses the compiled program (counted with JAX's compile events)."""
    import jax.monitoring

    model, v, x = tiny_net
    t = jnp.array([0, 1, 2])

    def make():
        return composite((first_linear() & kind("conv"), R.flat()), (path("conv*") | kind("dense"), R.epsilon(0.01)),
                         (~kind("conv", "dense", "add", "avgpool", "maxpool"), R.pass_rule()), name="mine")

    assert make() == make() and hash(make()) == hash(make())
    assert make() != composite(*make().entries[:2], name="mine")
    assert R.epsilon(0.01) != R.epsilon(0.02) and R.flat() != R.flat(1e-3)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *a, **k: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
    )
    first = xa.explain(model, v, x, t, method="lrp", composite=make())
    after_first = len(compiles)
    for _ in range(3):
        again = xa.explain(model, v, x, t, method="lrp", composite=make())
    assert after_first >= 1, "the first call compiles"
    assert len(compiles) == after_first, f"equal composites recompiled: {len(compiles) - after_first} more compiles"
    np.testing.assert_array_equal(np.asarray(first.map), np.asarray(again.map))


def test_matchers_combine_and_select_by_place(tiny_net):
    from xattr_jax.composites import above, below

    model, v, x = tiny_net
    layers = xa.layers(model, v, x)
    pick = lambda m: [l.name for l in layers if l.kind is not None and m.test(l, layers)]  # noqa: E731
    assert pick(below("pool1")) == ["conv1", "bn1", "relu1", "pool1"]
    assert pick(above("pool1")) == ["conv2", "relu2", "add", "relu3", "avgpool", "fc"]
    assert pick(below("add") & kind("relu")) == ["relu1", "relu2"]
    assert pick(kind("conv") | path("fc")) == ["conv1", "conv2", "fc"]
    assert pick(~kind("relu", "conv") & below("relu2")) == ["bn1", "pool1"]
    assert pick(first_linear() & above("pool1")) == []
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        pick(below("nope"))
