"""Conformance suite every method passes (DESIGN.md style rule 6).

jit == eager; vmap == a Python loop; batch == per-sample; the forward output under interception
equals the plain forward exactly; a new target value causes no retrace; dtype and shape kept.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax.composites import kind, resolve
from xattr_jax.program import interpret
from xattr_jax.methods import available, get_method

# Options that make each method cheap and deterministic on the tiny net.
OPTIONS = {
    "smoothgrad": dict(samples=4, chunk=3),
    "integrated_gradients": dict(steps=5, chunk=2),
    "gnl_integrated_gradients": dict(steps=5, chunk=2),
    "lrp": dict(composite="epsilon_plus_flat"),
}
REL = 1e-5  # float32 programs fused differently agree to this fraction of the map's scale

METHODS = [m for m in available()]


def _opts(method, x=None):
    o = dict(OPTIONS.get(method, {}))
    if method == "smoothgrad" and x is not None:
        o["draws"] = jax.random.normal(jax.random.PRNGKey(7), (o["samples"],) + x.shape, x.dtype)
    return o


def _close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    scale = float(np.max(np.abs(b)))
    assert scale > 0 and np.all(np.isfinite(b)), f"{what}: the reference is all zero or not finite ({scale})"
    err = float(np.max(np.abs(a - b)))
    assert err <= REL * scale, f"{what}: max abs error {err:.3g} > {REL} x max|ref| ({scale:.3g})"


def test_every_design_method_is_registered():
    design = {"gradient", "input_x_gradient", "guided_backprop", "deconvnet", "smoothgrad",
              "integrated_gradients", "gnl_integrated_gradients", "lrp", "grad_cam", "cam"}
    missing = design - set(available())
    assert not missing, f"methods named in DESIGN.md but not registered: {sorted(missing)}"


@pytest.mark.parametrize("method", METHODS)
def test_jit_equals_eager(tiny_net, method):
    model, v, x = tiny_net
    t = jnp.array([0, 3, 4])
    fn = xa.attributor(model, method, **_opts(method, x))
    res = fn(v, x, t)
    with jax.disable_jit():
        eager = fn(v, x, t)
    _close(res.map, eager.map, f"{method}: jit vs eager map")
    _close(res.relevance, eager.relevance, f"{method}: jit vs eager relevance")


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_per_sample_and_vmap_equals_loop(tiny_net, method):
    model, v, x = tiny_net
    t = jnp.array([1, 2, 0])
    res = xa.attributor(model, method, **_opts(method, x))(v, x, t)
    loop, vm_in = [], []
    for i in range(x.shape[0]):
        o = _opts(method, x)
        if method == "smoothgrad":
            o["draws"] = o["draws"][:, i:i + 1]
        fn_i = xa.attributor(model, method, **o)
        loop.append(fn_i(v, x[i:i + 1], t[i:i + 1]).map[0])
        vm_in.append(o)
    _close(jnp.stack(loop), res.map, f"{method}: batch vs per-sample")
    if method == "smoothgrad":
        return  # per-sample noise draws are options, not a vmapped argument
    fn1 = xa.attributor(model, method, **_opts(method))
    vm = jax.vmap(lambda xi, ti: fn1(v, xi[None], ti[None]).map[0])(x, t)
    _close(vm, jnp.stack(loop), f"{method}: vmap vs Python loop")


@pytest.mark.parametrize("method", METHODS)
def test_new_target_does_not_retrace_and_shapes_dtypes_are_kept(tiny_net, method):
    model, v, x = tiny_net
    fn = xa.attributor(model, method, **_opts(method, x))
    a = fn(v, x, jnp.array([0, 2, 4]))
    b = fn(v, x, jnp.array([4, 3, 2]))
    assert fn.trace_count() == 1, f"{method}: a new target value retraced ({fn.trace_count()} traces)"
    assert not np.allclose(np.asarray(a.map[0]), np.asarray(b.map[0])), f"{method}: target ignored"
    assert a.map.dtype == jnp.float32 and a.relevance.dtype == jnp.float32
    assert a.logits.shape == (3, 5)
    assert a.map.shape[0] == 3 and a.map.ndim == 3, f"{method}: map shape {a.map.shape}"
    assert a.relevance.shape[:3] == (3,) + a.map.shape[1:3]
    k = fn(v, x, jnp.array([[0, 1], [2, 3], [4, 0]]))
    assert k.map.shape == (3, 2) + a.map.shape[1:], f"{method}: [N, K] target gives {k.map.shape}"
    _close(k.map[:, 0], a.map, f"{method}: K-target column 0 vs single target")


@pytest.mark.parametrize("method", METHODS)
def test_logits_under_interception_equal_the_plain_forward(tiny_net, method):
    model, v, x = tiny_net
    res = xa.attributor(model, method, **_opts(method, x))(v, x, jnp.array([0, 1, 2]))
    plain = jax.jit(model.apply)(v, x)
    np.testing.assert_allclose(np.asarray(res.logits), np.asarray(plain), rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(plain))),
                               err_msg=f"{method}: logits inside the attributor (tolerance 1e-6 x max)")


@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box",
                                       "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat"])
def test_forward_is_bit_exact_under_every_rule(tiny_net, composite):
    model, v, x = tiny_net
    from xattr_jax.methods.lrp import lrp_composite

    comp = lrp_composite({"composite": composite, "low": -3.0, "high": 3.0})
    rules = dict(resolve(comp, model, v, x))
    rules["pool1"] = xa.rules.positive_maxpool()
    assert {"conv1", "conv2", "relu1", "add", "fc"} <= set(rules)
    eager, _ = interpret(model, v, x, rules=rules)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(model.apply(v, x)))
    jit_rules = jax.jit(lambda v, x: interpret(model, v, x, rules=rules)[0])(v, x)
    np.testing.assert_array_equal(np.asarray(jit_rules), np.asarray(jax.jit(model.apply)(v, x)))


def test_gradient_method_equals_jax_grad(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([2, 0, 4])
    res = xa.explain(model, v, x, t, method="gradient")
    g = jax.grad(lambda x: jnp.sum(model.apply(v, x)[jnp.arange(3), t]))(x)
    np.testing.assert_allclose(np.asarray(res.relevance), np.asarray(g), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(res.map), np.max(np.abs(np.asarray(g)), axis=-1), rtol=0, atol=1e-6)


def test_signals_seed_the_pulled_back_output(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([2, 0, 4])
    for signal, f in [("prob", lambda z: jax.nn.softmax(z, -1)), ("log_prob", lambda z: jax.nn.log_softmax(z, -1)),
                      (lambda z: 3.0 * z, lambda z: 3.0 * z)]:
        res = xa.explain(model, v, x, t, method="gradient", signal=signal)
        g = jax.grad(lambda x: jnp.sum(f(model.apply(v, x))[jnp.arange(3), t]))(x)
        np.testing.assert_allclose(np.asarray(res.relevance), np.asarray(g), rtol=0, atol=1e-6,
                                   err_msg=f"signal {signal}")


def test_relevance_at_a_layer_is_the_signal_at_its_output(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([2, 0, 4])
    res = xa.explain(model, v, x, t, method="gradient", layer="relu2")
    # d logit / d relu2-output, through a zero perturbation added to that output
    from xattr_jax.program import interpret as run

    def f(p):
        out, _ = run(model, v, x, probes={"relu2": p})
        return jnp.sum(out[jnp.arange(3), t])

    g = jax.grad(f)(jnp.zeros((3, 6, 6, 6)))
    np.testing.assert_allclose(np.asarray(res.relevance), np.asarray(g), rtol=0, atol=1e-6)


def test_the_network_above_a_layer_reads_the_values_below_it():
    """``run_above`` (a seed's ordinary gradient without the backward below the seed): the output
    as a function of ``relu_1``'s output, where a skip connection from below (``relu_0``) joins
    above it. Its value is the model's, and its gradient the gradient at ``relu_1`` through a
    probe of a whole run (atol 1e-6); the part below does not run again."""
    from xattr_jax.program import run, run_above, trace

    class Skip(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = nn.relu(nn.Conv(4, (3, 3))(x))
            b = nn.relu(nn.Conv(4, (3, 3))(a))
            return nn.Dense(3)((a + b).reshape(x.shape[0], -1))

    m = Skip()
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3))
    v = m.init(jax.random.key(1), x)
    prog = trace(m.apply, v, x)
    out, acts, values = run(prog, v, x, capture=["relu_1"], keep=True)
    a = acts["relu_1"]
    ct = jax.random.normal(jax.random.key(2), out.shape)
    np.testing.assert_allclose(np.asarray(run_above(prog, values, "relu_1", a)), np.asarray(m.apply(v, x)),
                               rtol=0, atol=1e-6)
    g_above = jax.vjp(lambda a: run_above(prog, values, "relu_1", a), a)[1](ct)[0]
    g_probe = jax.vjp(lambda p: run(prog, v, x, probes={"relu_1": p})[0], jnp.zeros_like(a))[1](ct)[0]
    np.testing.assert_allclose(np.asarray(g_above), np.asarray(g_probe), rtol=0, atol=1e-6)
    jaxpr = jax.make_jaxpr(lambda a: run_above(prog, values, "relu_1", a))(a)
    assert not any(e.primitive.name == "conv_general_dilated" for e in jaxpr.eqns), "the convs below ran again"


def test_attribution_maps_are_differentiable(tiny_net):
    """Gradients *of* attribution maps: d/dx sum(LRP map²) through the jitted attributor.

    Checked per sample at the input coordinate where the sample's gradient is largest, against a
    central difference (float32, h = 1e-2, 1 %); a single direction through every coordinate
    crosses ReLU/max-pool kinks within h in float32, one coordinate does not.
    """
    model, v, x = tiny_net
    fn = xa.attributor(model, "lrp", composite="epsilon_plus")
    t = jnp.array([1, 2, 3])
    f = lambda xx: jnp.sum(fn(v, xx, t).map ** 2)  # noqa: E731
    peaks = np.max(np.abs(np.asarray(fn(v, x, t).map)), axis=(1, 2))
    assert np.all(peaks > 1e-3), f"every sample's map must be non-trivial, max |map| per sample {peaks}"
    g = np.asarray(jax.grad(f)(x))
    assert np.all(np.isfinite(g)), "the gradient of the map is finite"
    h = 1e-2
    f0 = float(f(x))
    floor = 100 * float(np.finfo(np.float32).eps) * abs(f0) / h  # 100x the difference's rounding error
    for i in range(x.shape[0]):
        at = (i,) + np.unravel_index(int(np.argmax(np.abs(g[i]))), g[i].shape)
        assert abs(g[at]) > floor, (
            f"sample {i}: largest |d Σ map² / dx| = {abs(g[at]):.3g} is within 100x float32 rounding "
            f"({floor:.3g}) of the difference; the check would prove nothing"
        )
        e = jnp.zeros_like(x).at[at].set(h)
        fd = float((f(x + e) - f(x - e)) / (2 * h))
        assert abs(float(g[at]) - fd) <= 0.01 * abs(fd), (
            f"sample {i} at {at}: gradient of the map {float(g[at]):.6g} vs central difference {fd:.6g} (1 %)"
        )


def test_method_registry_lookup(tiny_net):
    assert get_method("gradient").name == "gradient"
    model, v, x = tiny_net
    layers = xa.layers(model, v, x)
    conv = [l.name for l in layers if kind("conv").test(l, layers)]
    assert conv == ["conv1", "conv2"], f"kind('conv') selects exactly TinyNet's convs, got {conv}"
    pools = [l.name for l in layers if kind("maxpool", "avgpool").test(l, layers)]
    assert pools == ["pool1", "avgpool"], f"kind('maxpool', 'avgpool') selects both pools, got {pools}"
