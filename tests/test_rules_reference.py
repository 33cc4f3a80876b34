"""Every linear-layer rule equals a naive dense-matrix reference, in float64, atol 1e-8.

The reference builds each layer's dense matrix ``M`` (``z = x M + b``) from a loop-based numpy
convolution, then evaluates each rule's textbook formula with plain numpy on that matrix. Nothing
here calls the library's engine except the rule under test.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from xattr_jax import nn as xnn
from xattr_jax import rules as R
from xattr_jax.program import layer_call, trace

from _jaxprs import primitive_counts

ATOL = 1e-8

# ------------------------------------------------------------------------------------------------
# naive layer matrices


def naive_conv(x, w, stride, pad, groups=1):
    """x [H, W, Ci], w [kh, kw, Ci/groups, Co] -> [Ho, Wo, Co] by explicit loops (zero padding;
    output feature o reads the input features of its group, o // (Co/groups))."""
    h, wd, ci = x.shape
    kh, kw, cg, co = w.shape
    xp = np.zeros((h + 2 * pad, wd + 2 * pad, ci))
    xp[pad:pad + h, pad:pad + wd] = x
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            patch = xp[i * stride:i * stride + kh, j * stride:j * stride + kw]
            for o in range(co):
                g = o // (co // groups)
                out[i, j, o] = np.sum(patch[..., g * cg:(g + 1) * cg] * w[..., o])
    return out


def layer_matrix(apply_linear, in_shape):
    """Dense matrix M [n_in, n_out] of a linear map given as a function of one sample."""
    n_in = int(np.prod(in_shape))
    cols = []
    for k in range(n_in):
        e = np.zeros(n_in)
        e[k] = 1.0
        cols.append(apply_linear(e.reshape(in_shape)).reshape(-1))
    return np.stack(cols)  # [n_in, n_out]


LAYERS = {
    # name: (kind, input shape, kernel shape or dense dims, stride, pad, bias)
    "dense": ("dense", (7,), (7, 5), 1, 0, True),
    "dense_nobias": ("dense", (7,), (7, 5), 1, 0, False),
    "conv1x1": ("conv", (4, 4, 3), (1, 1, 3, 2), 1, 0, True),
    "conv3x3": ("conv", (5, 5, 2), (3, 3, 2, 3), 1, 0, True),
    "conv3x3_pad": ("conv", (5, 5, 2), (3, 3, 2, 3), 1, 1, True),
    "conv3x3_stride2_pad": ("conv", (6, 6, 2), (3, 3, 2, 2), 2, 1, False),
    # feature groups (kernel [kh, kw, Ci/groups, Co]): two groups, and depthwise (MobileNet)
    "conv3x3_groups2": ("conv", (5, 5, 4), (3, 3, 2, 6), 1, 1, True),
    "depthwise3x3": ("conv", (5, 5, 3), (3, 3, 1, 3), 1, 1, True),
}


def groups_of(in_shape, kshape):
    return in_shape[-1] // kshape[2]


def make_layer(name, seed):
    kind, in_shape, kshape, stride, pad, bias = LAYERS[name]
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=kshape)
    b = rng.normal(size=kshape[-1]) if bias else None
    x = rng.normal(size=(2,) + in_shape)
    if kind == "dense":
        mod = nn.Dense(kshape[-1], use_bias=bias, param_dtype=jnp.float64)
        matrix = kernel
        out_shape = (kshape[-1],)
    else:
        groups = groups_of(in_shape, kshape)
        mod = nn.Conv(kshape[-1], kshape[:2], strides=stride, padding=((pad, pad), (pad, pad)),
                      feature_group_count=groups, use_bias=bias, param_dtype=jnp.float64)
        matrix = layer_matrix(lambda e: naive_conv(e, kernel, stride, pad, groups), in_shape)
        out_shape = naive_conv(x[0], kernel, stride, pad, groups).shape
    params = {"kernel": kernel}
    if bias:
        params["bias"] = b
    bias_flat = np.zeros(int(np.prod(out_shape))) if b is None else np.tile(b, int(np.prod(out_shape)) // len(b))
    ones_matrix = (layer_matrix(lambda e: naive_conv(e, np.ones_like(kernel), stride, pad, groups), in_shape)
                   if kind == "conv" else np.ones_like(kernel))
    return mod, params, x, matrix, bias_flat, out_shape, ones_matrix


def describe(mod, variables, *xs):
    """``(fn, params)`` of the one layer the engine finds in a single-module model."""
    model = lambda v, x: mod.apply(v, *x)  # noqa: E731
    xs = tuple(jnp.asarray(a) for a in xs)
    prog = trace(model, variables, xs)
    (leaf,) = [l for l in prog.layers if l.kind is not None]
    call = layer_call(prog, variables, xs, leaf.name)
    return call.fn, call.params


def run_rule(rule, mod, params, x, r):
    fn, p = describe(mod, {"params": jax.tree_util.tree_map(jnp.asarray, params)}, x)
    xj = jnp.asarray(x)
    _, vjp = jax.vjp(lambda a: R.apply_rule(rule, fn, p, a), xj)
    return np.asarray(vjp(jnp.asarray(r))[0])


def stab(z, eps=1e-6):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def safe_div(a, b):
    return np.where(b != 0, a / np.where(b != 0, b, 1.0), 0.0)


# ------------------------------------------------------------------------------------------------
# textbook formulas on the dense matrix (per sample: x [n_in], r [n_out])


def ref_epsilon(x, M, b, r, eps=1e-6, **_):
    z = x @ M + b
    return x * (M @ (r / stab(z, eps)))


def ref_zero(x, M, b, r, **_):
    z = x @ M + b
    return x * (M @ safe_div(r, z))


def ref_zplus(x, M, b, r, **_):
    xp, xn, Mp, Mn = np.maximum(x, 0), np.minimum(x, 0), np.maximum(M, 0), np.minimum(M, 0)
    z = xp @ Mp + xn @ Mn + np.maximum(b, 0)
    s = r / stab(z)
    return xp * (Mp @ s) + xn * (Mn @ s)


def ref_alpha_beta(x, M, b, r, alpha=2.0, beta=1.0, **_):
    xp, xn, Mp, Mn = np.maximum(x, 0), np.minimum(x, 0), np.maximum(M, 0), np.minimum(M, 0)
    zp = xp @ Mp + xn @ Mn + np.maximum(b, 0)
    zn = xp @ Mn + xn @ Mp + np.minimum(b, 0)
    sp, sn = r / stab(zp), r / stab(zn)
    return alpha * (xp * (Mp @ sp) + xn * (Mn @ sp)) - beta * (xp * (Mn @ sn) + xn * (Mp @ sn))


def ref_gamma(x, M, b, r, g=0.25, **_):
    xp, xn, Mp, Mn = np.maximum(x, 0), np.minimum(x, 0), np.maximum(M, 0), np.minimum(M, 0)
    up, dn = M + g * Mp, M + g * Mn
    bp, bd = b + g * np.maximum(b, 0), b + g * np.minimum(b, 0)
    z = x @ M + b
    zpos = xp @ up + xn @ dn + bp
    zneg = xp @ dn + xn @ up + bd
    sp = (z > 0) * r / stab(zpos)
    sn = (z < 0) * r / stab(zneg)
    return xp * (up @ sp) + xn * (dn @ sp) + xp * (dn @ sn) + xn * (up @ sn)


def ref_zbox(x, M, b, r, low=-1.0, high=2.0, **_):
    Mp, Mn = np.maximum(M, 0), np.minimum(M, 0)
    lo, hi = np.full_like(x, low), np.full_like(x, high)
    z = (x @ M + b) - (lo @ Mp + np.maximum(b, 0)) - (hi @ Mn + np.minimum(b, 0))
    s = r / stab(z)
    return x * (M @ s) - lo * (Mp @ s) - hi * (Mn @ s)


def ref_flat(x, M, b, r, ones=None, **_):
    z = np.ones_like(x) @ ones
    return ones @ (r / stab(z))


def ref_wsquare(x, M, b, r, **_):
    z = np.ones_like(x) @ (M * M) + b * b
    return (M * M) @ (r / stab(z))


def ref_excitation(x, M, b, r, **_):
    Mp = np.maximum(M, 0)
    z = x @ Mp
    return x * (Mp @ safe_div(r, z))


CASES = {
    "epsilon": (lambda: R.epsilon(1e-6), ref_epsilon),
    "epsilon_large": (lambda: R.epsilon(0.25), lambda *a, **k: ref_epsilon(*a, eps=0.25, **k)),
    "zero": (R.zero, ref_zero),
    "zplus": (R.zplus, ref_zplus),
    "alpha2_beta1": (lambda: R.alpha_beta(2, 1), ref_alpha_beta),
    "alpha1_beta0": (lambda: R.alpha_beta(1, 0), lambda *a, **k: ref_alpha_beta(*a, alpha=1.0, beta=0.0, **k)),
    "gamma": (lambda: R.gamma(0.25), ref_gamma),
    "zbox": (lambda: R.zbox(-1.0, 2.0), ref_zbox),
    "flat": (R.flat, ref_flat),
    "wsquare": (R.wsquare, ref_wsquare),
    "excitation": (R.excitation, ref_excitation),
}


@pytest.mark.parametrize("layer,rule,seed", list(itertools.product(LAYERS, CASES, [0, 1, 2])))
def test_linear_rule_equals_dense_reference(layer, rule, seed):
    with jax.enable_x64(True):
        mod, params, x, M, b, out_shape, ones = make_layer(layer, seed)
        if rule == "excitation":
            x = np.abs(x)  # EB's inputs are post-ReLU
        r = np.random.default_rng(100 + seed).normal(size=(2,) + tuple(out_shape))
        make, ref = CASES[rule]
        got = run_rule(make(), mod, params, x, r)
        assert got.dtype == np.float64
        for n in range(2):
            want = ref(x[n].reshape(-1), M, b, r[n].reshape(-1), ones=ones)
            err = np.max(np.abs(got[n].reshape(-1) - want))
            assert err <= ATOL, f"{rule} on {layer} (seed {seed}): max abs error {err:.3g} > atol {ATOL}"


@pytest.mark.parametrize("seed", [0, 1])
def test_norm_rule_on_average_pool_equals_dense_reference(seed):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(1, 6, 6, 2))
        r = rng.normal(size=(1, 3, 3, 2))

        def naive_pool(e):
            out = np.zeros((3, 3, 2))
            for i in range(3):
                for j in range(3):
                    out[i, j] = e[2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(0, 1))
            return out

        M = layer_matrix(naive_pool, (6, 6, 2))
        fn, p = describe(xnn.AvgPool(2), {}, x)
        _, vjp = jax.vjp(lambda a: R.apply_rule(R.norm(), fn, p, a), jnp.asarray(x))
        got = np.asarray(vjp(jnp.asarray(r))[0]).reshape(-1)
        want = ref_epsilon(x.reshape(-1), M, np.zeros(M.shape[1]), r.reshape(-1))
        err = np.max(np.abs(got - want))
        assert err <= ATOL, f"norm on avg-pool: max abs error {err:.3g} > {ATOL}"


def test_norm_rule_on_residual_sum_splits_proportionally():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        a, b = np.abs(rng.normal(size=(1, 3, 3, 2))), rng.normal(size=(1, 3, 3, 2))
        r = rng.normal(size=(1, 3, 3, 2))
        fn, params = describe(xnn.Add(), {}, a, b)
        _, vjp = jax.vjp(lambda p, q: R.apply_rule(R.norm(), fn, params, p, q), jnp.asarray(a), jnp.asarray(b))
        ra, rb = (np.asarray(t) for t in vjp(jnp.asarray(r)))
        s = r / stab(a + b)
        assert np.max(np.abs(ra - a * s)) <= ATOL, "residual split (branch) must be a·R/(a+b), atol 1e-8"
        assert np.max(np.abs(rb - b * s)) <= ATOL, "residual split (skip) must be b·R/(a+b), atol 1e-8"


def test_elementwise_rules_follow_their_definitions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    g = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    fn, p = describe(xnn.ReLU(), {}, x)

    def back(rule):
        _, vjp = jax.vjp(lambda a: R.apply_rule(rule, fn, p, a), jnp.asarray(x))
        return np.asarray(vjp(jnp.asarray(g))[0])

    np.testing.assert_array_equal(back(R.guided_relu()), g * (x > 0) * (g > 0))
    np.testing.assert_array_equal(back(R.deconvnet_relu()), np.maximum(g, 0))
    np.testing.assert_array_equal(back(R.pass_rule()), g)


def test_positive_maxpool_routes_only_positive_gradients_to_the_argmax():
    x = jnp.asarray([[[[1.0], [3.0]], [[2.0], [0.0]]]])  # one 2x2 window, max 3 at (0, 1)
    fn, p = describe(xnn.MaxPool(2), {}, x)
    for g, want in [(2.5, 2.5), (-1.5, 0.0)]:
        _, vjp = jax.vjp(lambda a: R.apply_rule(R.positive_maxpool(), fn, p, a), x)
        got = np.asarray(vjp(jnp.full((1, 1, 1, 1), g))[0])[0, :, :, 0]
        np.testing.assert_array_equal(got, [[0.0, want], [0.0, 0.0]])


def test_rules_are_twice_differentiable_with_explicit_parameters():
    """Gradient of an LRP map w.r.t. the input: second order through the custom_vjp."""
    with jax.enable_x64(True):
        mod, params, x, M, b, out_shape, _ = make_layer("conv3x3_pad", 0)
        fn, p = describe(mod, {"params": jax.tree_util.tree_map(jnp.asarray, params)}, x[:1])
        r = jnp.ones((1,) + tuple(out_shape))

        def relevance_sum_sq(xx):
            _, vjp = jax.vjp(lambda a: R.apply_rule(R.epsilon(0.1), fn, p, a), xx)
            return jnp.sum(vjp(r)[0] ** 2)

        x0 = jnp.asarray(x[:1])
        g = jax.grad(relevance_sum_sq)(x0)
        # central finite differences on three coordinates
        for idx in [(0, 1, 1, 0), (0, 2, 3, 1), (0, 4, 0, 0)]:
            e = np.zeros(x0.shape)
            e[idx] = 1e-6
            fd = (relevance_sum_sq(x0 + e) - relevance_sum_sq(x0 - e)) / 2e-6
            assert abs(float(g[idx]) - float(fd)) <= 1e-5 * max(1.0, abs(float(fd))), (
                f"second-order gradient at {idx}: {float(g[idx])} vs finite difference {float(fd)} (rel 1e-5)"
            )


NONNEGATIVE = ["zplus", "alpha2_beta1", "alpha1_beta0", "gamma"]


def test_rules_with_a_nonnegative_backward_are_those_with_negative_input_terms():
    have = {name for name, (make, _) in CASES.items() if make().nonnegative is not None}
    assert have == set(NONNEGATIVE)


@pytest.mark.parametrize("layer,rule,seed", list(itertools.product(LAYERS, NONNEGATIVE, [0, 1])))
def test_nonnegative_backward_equals_dense_reference_on_relu_outputs(layer, rule, seed):
    """The cheaper backward the interpreter uses after a ReLU (x⁻ terms left out) is the same rule."""
    with jax.enable_x64(True):
        mod, params, x, M, b, out_shape, ones = make_layer(layer, seed)
        x = np.maximum(x, 0)  # a ReLU's output: about half the entries exactly 0
        r = np.random.default_rng(200 + seed).normal(size=(2,) + tuple(out_shape))
        make, ref = CASES[rule]
        rule_ = make()
        got = run_rule(rule_.on_nonnegative(), mod, params, x, r)
        for n in range(2):
            want = ref(x[n].reshape(-1), M, b, r[n].reshape(-1), ones=ones)
            err = np.max(np.abs(got[n].reshape(-1) - want))
            assert err <= ATOL, f"{rule} (nonnegative) on {layer}: max abs error {err:.3g} > atol {ATOL}"


@pytest.mark.parametrize("layer,want", [("conv3x3_pad", 3), ("conv1x1", 3), ("conv3x3_groups2", 5),
                                        ("depthwise3x3", 5)])
def test_zplus_on_signed_inputs_is_one_convolution_each_way(layer, want):
    """z⁺'s two terms (x⁺W⁺ and x⁻W⁻) run as one convolution over [x⁺ | x⁻] (``LayerFn.stacked``):
    the layer's forward, z and its transpose are 3 products (convolutions, or for a 1×1 one the
    matrix product its transpose is), not 5. Not with feature groups (stacked, a depthwise
    convolution would become a grouped one, far slower on XLA:CPU). The values: the dense
    reference above."""
    with jax.enable_x64(True):
        mod, params, x, *_ = make_layer(layer, 0)
        fn, p = describe(mod, {"params": jax.tree_util.tree_map(jnp.asarray, params)}, x)
        assert (fn.stacked is not None) == (want == 3)
        xj = jnp.asarray(x)

        def backward(a, r):
            return jax.vjp(lambda b: R.apply_rule(R.zplus(), fn, p, b), a)[1](r)[0]

        jaxpr = jax.make_jaxpr(backward)(xj, jnp.ones_like(fn(p, xj))).jaxpr

    n = sum(primitive_counts(jaxpr, ("conv_general_dilated", "dot_general")).values())
    assert n == want, f"z+ on signed inputs of {layer}: {n} products, expected {want}"
