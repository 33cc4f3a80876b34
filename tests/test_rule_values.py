"""Rules are values: equal by their hyperparameters (or by the identity of user callables), so equal
composites share one compiled program and different ones never do."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax import rules as R
from xattr_jax.composites import composite, kind

# constructor, arguments, arguments that differ in the 7th significant digit (or in one word)
NEAR = [
    (R.epsilon, (0.1234567,), (0.1234568,)),
    (R.norm, (1e-6,), (1.000001e-6,)),
    (R.zplus, (1e-6,), (1.000001e-6,)),
    (R.alpha_beta, (2.0, 1.0), (2.0000001, 1.0000001)),
    (R.gamma, (0.25,), (0.2500001,)),
    (R.zbox, (-1.0, (1.0, 2.0)), (-1.0, (1.0, 2.0000001))),
    (R.flat, (1e-6,), (1.000001e-6,)),
    (R.wsquare, (1e-6,), (1.000001e-6,)),
    (R.rsp_add, (1e-9,), (1.000001e-9,)),
    (R.rsp_conv, ("none", 2.0), ("none", 2.0000001)),
    (R.rsp_conv, ("none", 2.0), ("sign_consistent", 2.0)),
]
NO_ARGS = [R.zero, R.excitation, R.pass_rule, R.guided_relu, R.deconvnet_relu, R.positive_maxpool,
           R.contrastive_excitation, R.skip_ignored, R.zbox_global, R.rsp_batchnorm]


@pytest.mark.parametrize("make,args,near", NEAR, ids=lambda a: getattr(a, "__name__", None))
def test_rules_compare_by_their_full_precision_hyperparameters(make, args, near):
    a, b, c = make(*args), make(*args), make(*near)
    assert a == b and hash(a) == hash(b), f"{a!r} built twice must be equal"
    assert a != c, f"{a!r} and {c!r} differ in a hyperparameter but compare equal"
    assert repr(a) != repr(c), f"the printed forms must show the difference: {a!r} vs {c!r}"


def test_rules_without_arguments_are_equal_to_themselves_and_distinct_from_each_other():
    rules = [make() for make in NO_ARGS]
    assert rules == [make() for make in NO_ARGS]
    for a, b in itertools.combinations(rules, 2):
        assert a != b, f"{a!r} == {b!r}"
    assert len({hash(r) for r in rules}) == len(rules)


def test_user_rules_compare_by_the_identity_of_their_callables():
    def mapper(r, zs):
        return [r / R.stabilize(zs[0], 1e-6)]

    def reducer(ins, gs):
        return ins[0] * gs[0]

    plain = R.Term()
    a = R.linear_rule("mine", [plain], mapper, reducer)
    assert a == R.linear_rule("mine", [R.Term()], mapper, reducer), "the same callables: equal"
    assert hash(a) == hash(R.linear_rule("mine", [R.Term()], mapper, reducer))
    assert a != R.linear_rule("mine", [R.Term(input=jnp.abs)], mapper, reducer), "other terms: different"
    assert a != R.linear_rule("mine", [plain], lambda r, zs: mapper(r, zs), reducer), "a new lambda: different"
    assert a != R.linear_rule("yours", [plain], mapper, reducer)

    def clip(fn, params, xs, y, r):
        return (jnp.clip(r, -1, 1),)

    assert R.Rule("clip", clip, {"relu"}) == R.Rule("clip", clip, frozenset({"relu"}))
    assert R.Rule("clip", clip, {"relu"}) != R.Rule("clip", lambda *a: clip(*a), {"relu"})
    with pytest.raises(TypeError, match="hyper must be hashable"):
        R.Rule("clip", clip, {"relu"}, hyper=(("bounds", [-1, 1]),))


def _small_model():
    """conv → ReLU → global mean → dense with bias, a plain function of a parameter dict."""
    k = jax.random.split(jax.random.key(0), 4)

    def model(p, x):
        y = jax.lax.conv_general_dilated(x, p["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(jax.nn.relu(y), axis=(1, 2)) @ p["fc"] + p["b"][None]

    params = {"conv": jax.random.normal(k[0], (3, 3, 2, 3)), "fc": jax.random.normal(k[1], (3, 4)),
              "b": jax.random.normal(k[2], (4,))}
    return model, params, jax.random.normal(k[3], (2, 6, 6, 2))


def test_equal_composites_trace_once_and_different_ones_never_share_a_program():
    """``explain`` keeps one attributor per options value: an equal composite rebuilt on each call
    traces the model once; composites whose ε differ in the 7th digit, or whose same-named user
    rules have other terms, get programs of their own (each map equals a fresh attributor's)."""
    model, params, x = _small_model()
    calls = []

    def counted(p, x):
        calls.append(1)
        return model(p, x)

    def comp(rule, dense=None):
        return composite((kind("conv"), rule), (kind("dense"), dense or rule), (kind("relu"), R.pass_rule()),
                         (kind("avgpool"), R.norm()), name="mine")

    def mapper(r, zs):
        return [r / R.stabilize(zs[0], 1e-6)]

    def reducer(ins, gs):
        return ins[0] * gs[0]

    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64)
        t = jnp.array([0, 3])
        maps, traced = {}, {}
        cases = [
            ("eps_a", lambda: comp(R.zplus(), R.epsilon(0.1234567))),
            ("eps_a", lambda: comp(R.zplus(), R.epsilon(0.1234567))),  # equal, rebuilt
            ("eps_b", lambda: comp(R.zplus(), R.epsilon(0.1234568))),
            ("mine_a", lambda: comp(R.linear_rule("mine", [R.Term()], mapper, reducer))),
            ("mine_a", lambda: comp(R.linear_rule("mine", [R.Term()], mapper, reducer))),  # equal, rebuilt
            ("mine_b", lambda: comp(R.linear_rule("mine", [R.Term(input=jnp.abs)], mapper, reducer))),
        ]
        for label, make in cases:
            before = len(calls)
            res = xa.explain(counted, p64, x64, t, method="lrp", composite=make())
            traced.setdefault(label, []).append(len(calls) - before)
            if label not in maps:
                fresh = xa.attributor(counted, "lrp", composite=make())(p64, x64, t)
                np.testing.assert_array_equal(np.asarray(res.map), np.asarray(fresh.map),
                                              err_msg=f"{label}: explain's cached program is another composite's")
            maps[label] = np.asarray(res.map)
    for label, counts in traced.items():
        assert counts[0] >= 1, f"{label}: a new composite traces the model ({counts})"
        assert all(c == 0 for c in counts[1:]), f"{label}: an equal composite traced again ({counts})"
    for a, b in (("eps_a", "eps_b"), ("mine_a", "mine_b")):
        diff = np.max(np.abs(maps[a] - maps[b]))
        assert diff > 0, f"{a} and {b} gave the same float64 map: they shared a program"


def test_a_layers_kernel_window_travels_on_its_forward_value():
    """A channels-first 1×1 convolution (OIHW kernel [4, 3, 1, 1]): its forward value carries the
    window (1, 1), so RSP's conv rule takes the 1×1 branch (C1 − C2, no shift), as on the same
    layer written channels-last; read off the kernel's leading axes it would be (4, 3)."""
    from xattr_jax.program import layer_call, trace

    k = jax.random.split(jax.random.key(2), 3)
    w = jax.random.normal(k[0], (1, 1, 3, 4))  # HWIO

    def conv(x, kernel, layout):
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=layout)

    def model(p, x):  # NHWC outside, channels-first inside
        return jnp.mean(conv(x.transpose(0, 3, 1, 2), p["w"], ("NCHW", "OIHW", "NCHW")), axis=(2, 3))

    p = {"w": w.transpose(3, 2, 0, 1)}
    x = jax.nn.relu(jax.random.normal(k[1], (2, 5, 5, 3)))
    prog = trace(model, p, x)
    name = next(l.name for l in prog.layers if l.kind == "conv")
    call = layer_call(prog, p, x, name)
    assert isinstance(call.fn, R.LayerFn) and call.fn.kernel_window == (1, 1), call.fn
    (xin,) = call.inputs
    y = call.fn(call.params, xin)
    r = jax.random.normal(k[2], y.shape)
    (got,) = R.rsp_conv().backward(call.fn, call.params, (xin,), y, r)
    nhwc = lambda a: a.transpose(0, 2, 3, 1)  # noqa: E731
    hwio = lambda prm, a: conv(a, prm["kernel"], ("NHWC", "HWIO", "NHWC"))  # noqa: E731
    (want,) = R.rsp_conv().backward(hwio, {"kernel": w}, (nhwc(xin),), nhwc(y), nhwc(r))
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(nhwc(got), want, rtol=1e-5, atol=1e-6 * scale,
                               err_msg="1x1 OIHW conv = the same conv in HWIO under rsp_conv (1e-5)")
    (unknown,) = R.rsp_conv().backward(call.fn.forward, call.params, (xin,), y, r)  # window from the kernel
    assert np.max(np.abs(nhwc(unknown) - want)) > 1e-3 * scale, "the window matters for this layer"
