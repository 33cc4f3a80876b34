"""Attribution inside the user's JAX program: every method under the user's ``jit`` (x closed over),
``vmap`` per example, ``grad`` w.r.t. parameters and input, and ``lax.scan`` over batches; what a
traced call does with bad values; SmoothGrad's explicit keys; option validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax.methods import available

# cheap options on the tiny net; every other method runs with its defaults
OPTIONS = {
    "smoothgrad": dict(samples=3, chunk=2),
    "integrated_gradients": dict(steps=4, chunk=2),
    "gnl_integrated_gradients": dict(steps=4, chunk=2),
}
METHODS = list(available())
KEY = jax.random.key(11)
REL = 1e-5  # float32 programs fused differently agree to this fraction of the map's scale
_FNS: dict = {}


def _fn(model, method):
    if (id(model), method) not in _FNS:
        _FNS[(id(model), method)] = xa.attributor(model, method, **OPTIONS.get(method, {}))
    return _FNS[(id(model), method)]


def _close(a, b, what, rel=REL):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), f"{what}: non-finite values"
    scale = max(float(np.max(np.abs(b))), 1e-30)
    assert scale > 1e-8, f"{what}: the reference map is all zero; the comparison would prove nothing"
    err = float(np.max(np.abs(a - b)))
    assert err <= rel * scale, f"{what}: max abs error {err:.3g} > {rel} x max|ref| ({scale:.3g})"


@pytest.mark.parametrize("method", METHODS)
def test_user_jit_with_x_and_variables_closed_over(tiny_net, method):
    """``jax.jit(lambda t: explain(model, v, X, t))``: only the target is traced."""
    model, v, x = tiny_net
    fn = _fn(model, method)
    t = jnp.array([0, 3, 4])
    eager = fn(v, x, t, key=KEY)
    traced = jax.jit(lambda tt: fn(v, x, tt, key=KEY))(t)
    # with x and the weights constants, XLA folds the forward at compile time (its own evaluator's
    # rounding); AB's input map, a sum of nearly cancelling terms, moves by 5.7e-5 of its scale
    rel = 2e-4 if method == "attention_backprop" else REL
    _close(traced.map, eager.map, f"{method}: user jit (x, variables closed over) vs the plain call", rel)
    via_explain = jax.jit(lambda tt: xa.explain(model, v, x, tt, method=method, key=KEY,
                                                **OPTIONS.get(method, {})).map)(t)
    _close(via_explain, eager.map, f"{method}: explain under the user's jit", rel)


@pytest.mark.parametrize("method", METHODS)
def test_vmap_per_example_equals_the_batch(tiny_net, method):
    """``vmap`` over single images (per-example keys for SmoothGrad) equals the batched call."""
    model, v, x = tiny_net
    fn = _fn(model, method)
    t = jnp.array([1, 2, 0])
    keys = jax.random.split(KEY, 3)
    batch = fn(v, x, t, key=keys)
    vm = jax.vmap(lambda xi, ti, ki: fn(v, xi[None], ti[None], key=ki).map[0])(x, t, keys)
    _close(vm, batch.map, f"{method}: vmap over examples vs the batch")


@pytest.mark.parametrize("method", METHODS)
def test_lax_scan_over_batches(tiny_net, method):
    model, v, x = tiny_net
    fn = _fn(model, method)
    xs = jnp.stack([x, x[::-1]])  # two batches of 3
    ts = jnp.array([[0, 1, 2], [3, 4, 0]])

    def body(carry, inp):
        xb, tb = inp
        return carry, fn(v, xb, tb, key=KEY).map

    _, maps = jax.lax.scan(body, 0, (xs, ts))
    for b in range(2):
        _close(maps[b], fn(v, xs[b], ts[b], key=KEY).map, f"{method}: lax.scan batch {b} vs a direct call")
    mapped = jax.lax.map(lambda inp: fn(v, inp[0], inp[1], key=KEY).map, (xs, ts))
    _close(mapped, maps, f"{method}: lax.map vs lax.scan")


# maps of gradients of a piecewise-linear network are piecewise constant in x: d/dx is exactly 0
CONSTANT_IN_X = {"gradient", "guided_backprop", "deconvnet", "smoothgrad"}


def _directional_fd(f, g_dot_d, point, d, what, h=1e-6, zero=False):
    """``<∇f, d>`` against ``(f(p + h d) − f(p − h d)) / 2h`` in float64, 1e-4 relative."""
    shift = lambda s: jax.tree_util.tree_map(lambda p, e: p + s * h * e, point, d)  # noqa: E731
    fd = float((f(shift(1.0)) - f(shift(-1.0))) / (2 * h))
    if zero:
        assert g_dot_d == 0 and abs(fd) < 1e-9, f"{what}: expected 0 (piecewise constant), got {g_dot_d}, FD {fd}"
        return
    assert abs(fd) > 1e-5, f"{what}: directional derivative {fd:.3g} too small for the check to mean anything"
    assert abs(g_dot_d - fd) <= 1e-4 * abs(fd), (
        f"{what}: jax.grad gives {g_dot_d:.10g}, central difference {fd:.10g} (1e-4 relative)")


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("method", METHODS)
def test_grad_of_the_map_w_r_t_x_and_params_matches_float64_finite_differences(tiny_net, method):
    """``jax.grad`` of Σ map² — with respect to the input and to the parameters, under the user's
    ``jit`` — equals a float64 central difference along a random direction (h = 1e-6, 1e-4 rel).

    Two-phase methods (RSP, AB) include the seed's dependence on x and on the parameters.
    """
    model, v, x = tiny_net
    v = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v)
    x = jnp.asarray(x, jnp.float64)
    fn = xa.attributor(model, method, **OPTIONS.get(method, {}))
    t = jnp.array([0, 2, 3])  # Grad-CAM's map of sample 0 for class 1 is all zero (ReLU of a negative sum)
    peaks = np.max(np.abs(np.asarray(fn(v, x, t, key=KEY).map)), axis=(1, 2))
    assert np.all(peaks > 1e-6), f"{method}: every sample's map must be non-zero, max |map| per sample {peaks}"

    f_x = lambda xx: jnp.sum(fn(v, xx, t, key=KEY).map ** 2)  # noqa: E731
    d = jax.random.normal(jax.random.PRNGKey(3), x.shape, jnp.float64)
    g = jax.jit(jax.grad(f_x))(x)
    _directional_fd(f_x, float(jnp.sum(g * d)), x, d, f"{method}: d Σ map² / dx", zero=method in CONSTANT_IN_X)

    f_v = lambda vv: jnp.sum(fn(vv, x, t, key=KEY).map ** 2)  # noqa: E731
    leaves, tree = jax.tree_util.tree_flatten(v["params"])
    keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
    dp = tree.unflatten([jax.random.normal(k, a.shape, a.dtype) * (jnp.std(a) + 1e-3) for k, a in zip(keys, leaves)])
    dv = {**jax.tree_util.tree_map(jnp.zeros_like, v), "params": dp}
    gv = jax.jit(jax.grad(f_v))(v)
    dot = sum(float(jnp.sum(a * b)) for a, b in zip(jax.tree_util.tree_leaves(gv), jax.tree_util.tree_leaves(dv)))
    _directional_fd(f_v, dot, v, dv, f"{method}: d Σ map² / d params")


# ----------------------------------------------------------------------------------------------
# bad values: an error when concrete, NaN under tracing


@pytest.mark.parametrize("method", ["gradient", "excitation_backprop", "lrp", "rsp", "integrated_gradients"])
def test_target_out_of_range_is_an_error_eagerly_and_a_nan_map_under_jit(tiny_net, method):
    model, v, x = tiny_net
    fn = _fn(model, method)
    for bad in (99, -1, 5):
        with pytest.raises(ValueError, match=r"target out of range: \[" + str(bad)):
            fn(v, x, jnp.array([0, bad, 1]))
    res = jax.jit(lambda t: fn(v, x, t))(jnp.array([0, 99, -1]))
    m = np.asarray(res.map)
    assert np.all(np.isfinite(m[0])), f"{method}: the valid example keeps its map"
    assert np.all(np.isnan(m[1])) and np.all(np.isnan(m[2])), (
        f"{method}: targets 99 and -1 (5 classes) under jit must give NaN maps, not a plausible map")
    assert np.all(np.isnan(np.asarray(res.relevance)[1:])), f"{method}: and NaN relevance"
    _close(m[0], fn(v, x, jnp.array([0, 1, 2])).map[0], f"{method}: the valid example's map")
    k = jax.jit(lambda t: fn(v, x, t))(jnp.array([[0, 1], [7, 2], [3, 4]]))  # [N, K]: per column
    km = np.asarray(k.map)
    assert np.all(np.isnan(km[1, 0])) and np.all(np.isfinite(km[1, 1])) and np.all(np.isfinite(km[0]))


@pytest.mark.parametrize("method", ["gradient", "excitation_backprop", "attention_backprop", "smoothgrad"])
def test_non_finite_input_is_an_error_eagerly_and_a_nan_map_under_jit(tiny_net, method):
    model, v, x = tiny_net
    fn = _fn(model, method)
    t = jnp.array([0, 1, 2])
    for val in (jnp.nan, jnp.inf):
        bad = x.at[1, 3, 4, 0].set(val)
        with pytest.raises(ValueError, match=r"NaN or Inf values \(samples \[1\]\)"):
            fn(v, bad, t, key=KEY)
        m = np.asarray(jax.jit(lambda xx: fn(v, xx, t, key=KEY).map)(bad))
        assert np.all(np.isnan(m[1])), f"{method}: a non-finite pixel under jit gives a NaN map"
        assert np.all(np.isfinite(m[[0, 2]])), f"{method}: the other examples keep finite maps"
    grads = jax.jit(jax.grad(lambda xx: jnp.nansum(fn(v, xx, t, key=KEY).map)))(x.at[1, 3, 4, 0].set(jnp.nan))
    assert np.all(np.isfinite(np.asarray(grads)[[0, 2]])), f"{method}: the NaN example does not poison others' gradients"


# ----------------------------------------------------------------------------------------------
# SmoothGrad's randomness


def test_smoothgrad_needs_a_key_and_per_example_keys_give_independent_noise(tiny_net):
    model, v, x = tiny_net
    fn = xa.attributor(model, "smoothgrad", samples=3, chunk=3)
    t = jnp.array([1, 1, 1])
    with pytest.raises(ValueError, match=r"pass key=jax.random.key"):
        fn(v, x, t)
    with pytest.raises(ValueError, match=r"one key or one per example \(shape \[3\]\)"):
        fn(v, x, t, key=jax.random.split(KEY, 2))
    same = jnp.stack([x[0]] * 3)  # three copies of one image
    one = np.asarray(fn(v, same, t, key=KEY).map)
    assert not np.allclose(one[0], one[1]), "one key for a batch: example i draws from fold_in(key, i)"
    k = jax.random.split(KEY, 3)
    per = np.asarray(jax.vmap(lambda xi, ti, ki: fn(v, xi[None], ti[None], key=ki).map[0])(same, t, k))
    assert not np.allclose(per[0], per[1]) and not np.allclose(per[1], per[2]), (
        "vmap with per-example keys: the copies get different noise")
    repeat = np.asarray(jax.vmap(lambda xi, ti, ki: fn(v, xi[None], ti[None], key=ki).map[0])(same, t, k[jnp.array([0, 0, 0])]))
    np.testing.assert_allclose(repeat[1], repeat[0], rtol=0, atol=1e-6, err_msg="the same key, the same noise")
    _close(per, fn(v, same, t, key=k).map, "vmapped single-image calls vs the batch with the same keys")
    _close(fn(v, same, t, key=0).map, fn(v, same, t, key=jax.random.key(0)).map, "an int seed is jax.random.key(seed)")
    raw = jax.random.PRNGKey(5)
    _close(fn(v, same, t, key=raw).map, fn(v, same, t, key=jax.random.wrap_key_data(raw)).map, "raw uint32 keys")


def test_smoothgrad_noise_is_the_documented_stream(tiny_net):
    """Draw k of example i is ``normal(fold_in(fold_in(key, i), k), x.shape[1:])`` (as the docs say):
    the keyed call equals the same call with those draws passed explicitly."""
    model, v, x = tiny_net
    t = jnp.array([1, 2, 3])
    n = 5  # chunks of 2: the last chunk padded
    keys = [jax.random.fold_in(KEY, i) for i in range(x.shape[0])]
    draws = jnp.stack([jnp.stack([jax.random.normal(jax.random.fold_in(ki, k), x.shape[1:]) for ki in keys])
                       for k in range(n)])
    keyed = xa.attributor(model, "smoothgrad", samples=n, chunk=2)(v, x, t, key=KEY).map
    explicit = xa.attributor(model, "smoothgrad", samples=n, chunk=2, draws=draws)(v, x, t).map
    _close(keyed, explicit, "keyed noise vs the documented draws passed explicitly")


def test_methods_that_draw_no_noise_ignore_a_key(tiny_net):
    model, v, x = tiny_net
    fn = _fn(model, "gradient")
    t = jnp.array([1, 2, 3])
    np.testing.assert_array_equal(np.asarray(fn(v, x, t, key=KEY).map), np.asarray(fn(v, x, t).map))


# ----------------------------------------------------------------------------------------------
# options and empty batches


@pytest.mark.parametrize("method,opts,match", [
    ("integrated_gradients", {"steps": 2.5}, r"steps must be an int >= 1, got 2.5 \(float\)"),
    ("integrated_gradients", {"steps": 0}, r"steps must be an int >= 1, got 0"),
    ("integrated_gradients", {"steps": True}, r"steps must be an int >= 1, got True \(bool\)"),
    ("integrated_gradients", {"chunk": -1}, r"chunk must be an int >= 1"),
    ("integrated_gradients", {"rule": "simpson"}, r"rule must be one of \['right', 'left', 'middle', 'trapezoid'\]"),
    ("integrated_gradients", {"baseline": "grey"}, r"baseline must be one of \['black', 'zeros'\]"),
    ("integrated_gradients", {"normalization": ((0, 0, 0), (1, 0, 1))}, r"normalization must be \(mean, std\)"),
    ("smoothgrad", {"noise": -0.1}, r"noise must be a finite real number >= 0.0, got -0.1"),
    ("smoothgrad", {"noise": float("nan")}, r"noise must be a finite real number"),
    ("smoothgrad", {"samples": 0}, r"samples must be an int >= 1"),
    ("smoothgrad", {"key": 0}, r"unknown option\(s\) \['key'\]"),
    ("lrp", {"composite": "epsilon_everything"}, r"composite must be a Composite or a preset name"),
    ("lrp", {"canonize": "yes"}, r"canonize must be True or False"),
    ("lrp", {"low": "zero"}, r"low must be a finite real number"),
    ("rsp", {"max_hostile": 0}, r"max_hostile must be an int >= 1"),
    ("rsp", {"purge": "all"}, r"purge must be one of"),
    ("attention_backprop", {"seed": "cam"}, r"seed must be one of \['gradcam', 'logit'\]"),
    ("excitation_backprop", {"conservation": 1}, r"conservation must be True or False, got 1 \(int\)"),
    ("contrastive_excitation_backprop", {"contrast_layer": 3}, r"contrast_layer must be a layer name"),
])
def test_options_are_checked_by_type_and_range_when_the_attributor_is_built(tiny_net, method, opts, match):
    model, _, _ = tiny_net
    with pytest.raises(ValueError, match=match):
        xa.attributor(model, method, **opts)


def test_every_option_has_a_check_and_a_meaning():
    from xattr_jax.methods import get_method

    for name in available():
        m = get_method(name)
        for k, o in m.opts.items():
            assert o.doc and callable(o.check), f"{name}.{k} needs a check and a one-line meaning"
            o.check(f"{name}.{k}", o.default)  # the default passes its own check
        assert all(k in m.option_table() for k in m.opts)


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients", "smoothgrad"])
def test_an_empty_batch_is_refused(tiny_net, method):
    model, v, x = tiny_net
    with pytest.raises(ValueError, match=r"x is an empty batch \(shape \(0, 12, 12, 3\)\); pass at least one image"):
        _fn(model, method)(v, x[:0], jnp.zeros((0,), jnp.int32), key=KEY)


# ----------------------------------------------------------------------------------------------
# grad of maps on torchvision networks (overlapping max-pools, residual sums, batch norm)

TV_SIZE = {"resnet18": 33, "resnet50": 33, "vgg16": 32}  # ResNets: layer4 is 2x2 (CAM needs a real GAP)
TV_OPTIONS = {"smoothgrad": dict(samples=2, chunk=2), "integrated_gradients": dict(steps=2, chunk=2),
              "gnl_integrated_gradients": dict(steps=2, chunk=2)}
# c-EB on random VGG16: the target's and its dual's excitations become alike through the random
# 4096-wide classifier (each dense mixing layer averages the top-down difference away), so at the
# default layer (features.23) the map is ~1e-9 (Σ map² 3e-18), a difference of terms ~0.25 that no
# central difference resolves. Read at features.28 with the classifier's two hidden layers 1 %
# dense (random, 99 % of the weights zeroed), Σ map² is 2e-5.
TV_LAYER = {("vgg16", "contrastive_excitation_backprop"): {"layer": "features.28"}}


def _sparse_classifier(v, keep=0.01):
    p = dict(v["params"])
    c = dict(p["classifier"])
    for name, k in zip(("0", "3"), jax.random.split(jax.random.PRNGKey(7), 2)):
        w = c[name]["kernel"]
        c[name] = {**c[name], "kernel": w * (jax.random.uniform(k, w.shape) < keep)}
    return {**v, "params": {**p, "classifier": c}}


TV_WEIGHTS = {("vgg16", "contrastive_excitation_backprop"): _sparse_classifier}
# with the logit signal, GNL's gradient is piecewise constant in x too (guided ReLUs, no softmax)
TV_CONSTANT_IN_X = CONSTANT_IN_X | {"gnl_gradient"}
TV_FAST = {("resnet18", m) for m in ("gradient", "grad_cam", "cam", "input_x_gradient", "deconvnet")}
TV_CASES = [(arch, m) for arch in ("resnet18", "resnet50", "vgg16") for m in METHODS]


def _tv_cases():
    for arch, m in TV_CASES:
        marks = [pytest.mark.slow] if (arch, m) not in TV_FAST else []
        yield pytest.param(arch, m, marks=marks, id=f"{arch}-{m}")


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("arch,method", list(_tv_cases()))
def test_grad_of_the_map_on_torchvision_networks_matches_float64_finite_differences(torch_pair, arch, method):
    """``jax.grad`` of Σ map² w.r.t. the parameters and w.r.t. x of a random-weight torchvision
    network (float64, one image) equals a float64 central difference along a random direction
    (h = 1e-6, 1e-7 and 1e-8: 1e-4 relative to one of them plus its own rounding; a ReLU kink
    crossed would be off by O(1)). One compiled program per case: ``value_and_grad`` also gives the
    finite differences' values. ResNets route their overlapping 3x3/2 max-pool through
    ``max_route``, whose backward must itself differentiate."""
    _, model, v = torch_pair(arch)
    v = TV_WEIGHTS.get((arch, method), lambda v: v)(v)
    n = TV_SIZE[arch]
    x = jax.random.normal(jax.random.PRNGKey(0), (1, n, n, 3), jnp.float64)
    # the predicted class, read through its logit: a random network's softmax saturates (ResNet50's
    # probability of another class underflows to 1e-190), and Grad-CAM of a class the features
    # argue against is ReLU(negative) = 0 everywhere
    t = jnp.argmax(model.apply(v, x), axis=-1)
    fn = xa.attributor(model, method, signal="logit", **TV_OPTIONS.get(method, {}), **TV_LAYER.get((arch, method), {}))
    if method == "cam" and arch == "vgg16":
        with pytest.raises(ValueError, match="no global average pool.*grad_cam"):
            fn(v, x, t)
        return
    f = lambda p, xx: jnp.sum(fn({**v, "params": p}, xx, t, key=KEY).map ** 2)  # noqa: E731
    vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
    p = v["params"]
    value, (gp, gx) = vg(p, x)
    value = float(value)
    assert value > 1e-12, f"{arch}/{method}: Σ map² = {value:.3g}; the check would prove nothing"
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
    dp = tree.unflatten([jax.random.normal(k, a.shape, a.dtype) * (jnp.std(a) + 1e-3) for k, a in zip(keys, leaves)])
    dx = jax.random.normal(jax.random.PRNGKey(5), x.shape, jnp.float64)

    # the differences' values: on VGG16 (138M parameters, each evaluation a float64 pass over them)
    # a values-only program saves more than its compilation costs; on the ResNets it does not
    n_params = sum(a.size for a in leaves)
    fv = jax.jit(f) if n_params > 5e7 else (lambda pp, xx: vg(pp, xx)[0])

    def central(wrt, h):
        if wrt == "x":
            return float(fv(p, x + h * dx) - fv(p, x - h * dx)) / (2 * h)
        shift = lambda s: jax.tree_util.tree_map(lambda a, e: a + s * h * e, p, dp)  # noqa: E731
        return float(fv(shift(1.0), x) - fv(shift(-1.0), x)) / (2 * h)

    grads = {"params": sum(float(jnp.sum(a * b)) for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(dp))),
             "x": float(jnp.sum(gx * dx))}
    for wrt, g_dot_d in grads.items():
        what = f"{arch}/{method}: d Σ map² / d {wrt}"
        fd = central(wrt, 1e-8)
        if wrt == "x" and method in TV_CONSTANT_IN_X:
            assert g_dot_d == 0 and abs(fd) < 1e-9, f"{what}: expected 0 (piecewise constant), got {g_dot_d}, FD {fd} (h = 1e-8)"
            continue
        assert abs(fd) > 1e-12 * max(1.0, value), f"{what}: directional derivative {fd:.3g} too small for the check to mean anything"
        # A central difference has errors of its own: truncation, O(h²), large where a stabiliser's
        # denominator is near 0 (ResNet50's LRP is 6e-4 off at h = 1e-7, 5e-6 at 1e-8), and rounding,
        # ~eps |Σ map²| / h (bounded at 10x that), far more where the map is a difference of nearly
        # equal terms (c-EB: 4e-3 off at 1e-8, 1e-5 at 1e-6). So up to three steps: jax.grad must
        # agree with one of them to 1e-4 relative plus that step's rounding; a wrong derivative
        # (off by 1e-2 or more) agrees with none, as they agree with each other.
        tried = []
        for h in (1e-8, 1e-7, 1e-6):
            fd = fd if h == 1e-8 else central(wrt, h)
            tried.append((h, fd, abs(g_dot_d - fd), 1e-4 * abs(fd) + 2.2e-15 * value / h))
            if tried[-1][2] <= tried[-1][3]:
                break
        else:
            raise AssertionError(
                f"{what}: jax.grad gives {g_dot_d:.10g}; central differences (h, value, off by, allowed): "
                + "; ".join(f"{h:g}: {v:.10g}, {e:.3g}, {t:.3g}" for h, v, e, t in tried))


@pytest.mark.parametrize("method", ["excitation_backprop", "integrated_gradients"])
def test_compiler_options_reach_every_program_the_attributor_compiles(tiny_net, method):
    """``compiler_options=`` goes to XLA for the one program and a path method's chunk programs: an
    unknown option is XLA's error at the first call; real ones (on XLA:CPU: YNNPACK off, and the
    faster-compiling set docs/your_model.md#compilation gives for convolutional networks) give the
    same map (float32, other kernels: 1e-5 of the map's scale); a malformed mapping is refused when
    the attributor is built."""
    model, v, x = tiny_net
    t = jnp.array([0, 3, 4])
    opts = OPTIONS.get(method, {})
    bad = xa.attributor(model, method, compiler_options={"xla_no_such_option": True}, **opts)
    with pytest.raises(Exception, match="xla_no_such_option"):
        bad(v, x, t)
    with pytest.raises(Exception, match="xla_no_such_option"):
        bad.program(v, x, t)
    with pytest.raises(TypeError, match="compiler_options must map"):
        xa.attributor(model, method, compiler_options=["xla_cpu_experimental_ynn_fusion_type"])
    if jax.default_backend() != "cpu":
        return
    plain = _fn(model, method)(v, x, t).map
    for what, options in [("YNNPACK off", {"xla_cpu_experimental_ynn_fusion_type": ""}),
                          ("older fusion emitters at -O1", {"xla_cpu_use_fusion_emitters": False,
                                                            "xla_backend_optimization_level": 1})]:
        fast = xa.attributor(model, method, compiler_options=options, **opts)
        _close(fast(v, x, t).map, plain, f"{method}: {what} vs XLA's defaults")
