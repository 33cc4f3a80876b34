"""Layer kinds beyond ReLU networks (METHODS Decision 8): recognition, each method's rule per kind
against independent references, and refusals that name the operation and the fix."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax.composites import composite, epsilon_plus, kind, resolve_layers
from xattr_jax.program import run, trace
from xattr_jax.rules import epsilon, guided_relu

from _nets import bias_free
from families import FAMILIES, ConvNeXt, EfficientNet, ViT, _linen

RELEVANCE = ("lrp", "excitation_backprop", "contrastive_excitation_backprop", "rsp", "attention_backprop")


class _Act(nn.Module):
    act: object

    @nn.compact
    def __call__(self, x):
        x = self.act(nn.Conv(4, (3, 3))(x))
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


_SPELLINGS = {
    "relu": (nn.relu, jax.nn.relu6, lambda x: jnp.clip(x, 0, 6), lambda x: jnp.clip(x, 0),
             lambda x: jnp.minimum(jnp.maximum(x, 0.0), 2.0), lambda x: jnp.maximum(0.0, x)),
    "activation": (nn.silu, nn.gelu, lambda x: nn.gelu(x, approximate=False), lambda x: nn.leaky_relu(x, 0.1),
                   nn.hard_swish, nn.softplus, lambda x: x * jnp.tanh(nn.softplus(x)), nn.sigmoid, jnp.tanh,
                   nn.elu),
    "norm": (nn.LayerNorm(), nn.RMSNorm(), nn.GroupNorm(num_groups=2), nn.GroupNorm(num_groups=None, group_size=1),
             # torch's layer norm through torchax: the centring mean apart from jnp.var's own
             lambda x: (x - x.mean(-1, keepdims=True)) * jax.lax.rsqrt(x.var(-1, keepdims=True) + 1e-5)),
    "gate": (nn.glu,),
    "softmax": (nn.softmax,),
}


@pytest.mark.parametrize("kind", sorted(_SPELLINGS))
def test_each_spelling_of_a_kind_is_one_layer_of_that_kind(kind):
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    for i, act in enumerate(_SPELLINGS[kind]):
        model = _Act(act)
        v = model.init(jax.random.key(1), x)
        kinds = [l.kind for l in xa.layers(model, v, x) if l.kind is not None]
        want = ["conv", kind, "avgpool", "dense"]
        if kind == "gate":  # glu: the gate's sigmoid is an activation of its own
            want = ["conv", "activation", "gate", "avgpool", "dense"]
        assert kinds == want, f"{kind} spelling {i}: {kinds}, expected {want}"
        prog = trace(model, v, x)
        # compiled, as attributions run: an eager run binds an inlined jit's operations one by one
        # (jnp.var's), which XLA would have fused, so eagerly they may differ from the model by an ulp
        ours = jax.jit(lambda v, x: run(prog, v, x)[0])(v, x)
        assert np.array_equal(np.asarray(ours), np.asarray(jax.jit(model.apply)(v, x))), \
            f"{kind} spelling {i}: the interpreted forward differs from the model's"


def test_a_variance_clamp_is_part_of_its_norm_and_attention_is_products_and_a_softmax():
    model, v, x = FAMILIES["vit"]()
    kinds = [l.kind for l in xa.layers(model, v, x) if l.kind is not None]
    assert "relu" not in kinds and "other" not in kinds, kinds
    assert kinds.count("norm") == 5 and kinds.count("softmax") == 2 and kinds.count("product") == 4, kinds


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_forward_is_bit_identical_under_every_kind_rule_on_every_family(family):
    model, v, x = FAMILIES[family]()
    plain = model.apply(v, x) if isinstance(model, nn.Module) else model(v, x)
    prog = trace(model, v, x)
    assert not any(l.kind == "other" for l in prog.layers), \
        f"{family}: {[(l.name, l.type_name) for l in prog.layers if l.kind == 'other']}"
    for comp in (epsilon_plus(), epsilon_plus(attention="attnlrp"), composite((kind("relu", "activation"),
                                                                              guided_relu()))):
        rules = resolve_layers(comp, prog.layers)
        out, _ = run(prog, v, x, rules=rules)
        assert np.array_equal(np.asarray(out), np.asarray(plain)), f"{family}: {comp.name} changed the forward"


# ----------------------------------------------------------------------------------------------
# guided backprop and deconvnet against a hand-written float64 backward pass


class _Mixed(nn.Module):
    """conv → ReLU6 → conv → SiLU → conv → GELU → mean → dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu6(nn.Conv(4, (3, 3), name="c1")(x))
        x = nn.silu(nn.Conv(4, (3, 3), name="c2")(x))
        x = nn.gelu(nn.Conv(4, (3, 3), name="c3")(x), approximate=False)
        return nn.Dense(3, name="fc")(jnp.mean(x, axis=(1, 2)))


def _reference(v, x, t, modify):
    """The backward pass written out: linear maps by their vjp, activations by ``modify(f'(z), g)``."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v["params"])
    x = jnp.asarray(x, jnp.float64)
    conv = lambda q, h: jax.lax.conv_general_dilated(  # noqa: E731
        h, q["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + q["bias"][None, None, None]
    sig = jax.nn.sigmoid
    phi = lambda z: 0.5 * (1 + jax.scipy.special.erf(z / np.sqrt(2)))  # noqa: E731  (normal cdf)
    acts = [(lambda z: jnp.clip(z, 0, 6), lambda z: ((z > 0) & (z < 6)).astype(z.dtype)),
            (lambda z: z * sig(z), lambda z: sig(z) * (1 + z * (1 - sig(z)))),
            (lambda z: z * phi(z), lambda z: phi(z) + z * jnp.exp(-z * z / 2) / np.sqrt(2 * np.pi))]
    h, pre = x, []
    vjps = []
    for name, (f, _) in zip(("c1", "c2", "c3"), acts):
        z, vjp = jax.vjp(lambda a, q=p[name]: conv(q, a), h)
        vjps.append(vjp)
        pre.append(z)
        h = f(z)
    _, head = jax.vjp(lambda a: jnp.mean(a, axis=(1, 2)) @ p["fc"]["kernel"] + p["fc"]["bias"][None], h)
    (g,) = head(jax.nn.one_hot(t, 3, dtype=jnp.float64))
    for (_, df), z, vjp in reversed(list(zip(acts, pre, vjps))):
        (g,) = vjp(modify(df(z), g))
    return np.asarray(g)


@pytest.mark.parametrize("method,modify", [
    ("guided_backprop", lambda d, g: d * jnp.maximum(g, 0)),
    ("deconvnet", lambda d, g: jnp.maximum(g, 0)),
])
def test_guided_backprop_and_deconvnet_on_relu6_silu_gelu_match_a_hand_written_float64_pass(method, modify):
    x = 3.0 * jax.random.normal(jax.random.key(0), (2, 8, 8, 3))  # ReLU6 saturates somewhere
    v = _Mixed().init(jax.random.key(1), x)
    t = jnp.array([0, 2])
    res = xa.explain(_Mixed(), v, x, t, method=method)
    with jax.enable_x64(True):
        ref = _reference(v, x, t, modify)
    err = np.max(np.abs(np.asarray(res.relevance[:, 0] if res.relevance.ndim == 5 else res.relevance) - ref))
    assert err <= 1e-5 * np.max(np.abs(ref)), f"{method}: {err:.2e} x max off the float64 reference (tol 1e-5)"
    z = nn.Conv(4, (3, 3)).apply({"params": v["params"]["c1"]}, x)
    assert np.any(np.asarray(z) > 6), "the test input should saturate a ReLU6 unit"


# ----------------------------------------------------------------------------------------------
# LRP conserves on bias-free copies; EB conserves and stays non-negative


@pytest.mark.parametrize("cls", [ConvNeXt, ViT, EfficientNet])
def test_lrp_conserves_on_bias_free_copies(cls):
    """CP-LRP (the default) conserves: norms with σ constant, GELU/SiLU identity, the gate and the
    attention weights constants. (AttnLRP's softmax rule drops its bias term: it does not.)"""
    model, v, x = _linen(cls, bias=False)()
    v = bias_free(v)
    comp = composite((kind("conv"), epsilon()), *epsilon_plus().entries)  # ε conserves on signed inputs too
    res = xa.explain(model, v, x, jnp.array([1, 3]), method="lrp", composite=comp, strict=True)
    total = np.asarray(jnp.sum(res.relevance, axis=(1, 2, 3)))
    np.testing.assert_allclose(total, 1.0, rtol=1e-3,
                               err_msg=f"{cls.__name__}: input relevance != the seed 1 (rtol 1e-3)")


@pytest.mark.parametrize("family", ["googlenet", "avg_flatten", "equinox_cnn"])
def test_excitation_backprop_is_non_negative_and_conserves_on_relu_families(family):
    """Read at the stem conv's output, a cut through the whole network (inception and dense blocks'
    branches included): every unit's signal >= 0 and the total the seed's, 1."""
    model, v, x = FAMILIES[family]()
    stem = next(l.name for l in xa.layers(model, v, x) if l.kind == "conv")
    res = xa.explain(model, v, x, jnp.array([1, 2]), method="excitation_backprop", layer=stem)
    rel = np.asarray(res.relevance)
    assert rel.min() >= -1e-6, f"{family}: EB signal {rel.min():.3g} < 0 at {stem}"
    total = rel.reshape(2, -1).sum(1)
    np.testing.assert_allclose(total, 1.0, rtol=1e-3, err_msg=f"{family}: EB total at {stem} != the seed 1 (rtol 1e-3)")


# ----------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("family", ["convnext", "vit", "efficientnet"])
def test_excitation_family_refuses_smooth_activations_norms_attention_and_points_to_lrp(family):
    model, v, x = FAMILIES[family]()
    outside = [l for l in xa.layers(model, v, x) if l.kind in ("activation", "norm", "product", "softmax")]
    for method in RELEVANCE[1:]:
        with pytest.raises(ValueError) as e:
            xa.explain(model, v, x, jnp.array([1, 2]), method=method)
        msg = str(e.value)
        assert msg.startswith(method) and "method='lrp'" in msg and "strict=False" in msg, msg
        assert "families.py:" in msg, f"the user's source line is named: {msg}"
        assert all(l.kind in msg for l in outside), msg
        assert len(msg) < 1500 and msg.count("\n") < 15, f"one screen: {len(msg)} characters"
    res = xa.explain(model, v, x, jnp.array([1, 2]), method="excitation_backprop", strict=False)
    assert np.all(np.isfinite(np.asarray(res.map)))


# ----------------------------------------------------------------------------------------------
# layers a user means; the documented table


def test_a_module_name_reads_its_output_and_defaults_take_the_whole_block():
    model, v, x = FAMILIES["googlenet"]()
    infos = {l.name: l for l in xa.layers(model, v, x)}
    assert infos["inception3b"].shape == (2, 8, 8, 16), "an inception block's output is its concatenation"
    assert "avgpool_0" in infos, "the outermost module's own pooling is named at the top"
    res = xa.explain(model, v, x, jnp.array([1, 2]), method="grad_cam")
    _, acts = run(trace(model, v, x), v, x, capture=["inception3b"])
    inner = model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])[1]["intermediates"]
    want = np.asarray(inner["inception3b"]["__call__"][0])
    np.testing.assert_array_equal(np.asarray(acts["inception3b"]), want, err_msg="the module's own output")
    assert res.map.shape == (2, 8, 8), f"Grad-CAM's default reads the block: {res.map.shape}"
    model, v, x = FAMILIES["vit"]()
    res = xa.explain(model, v, x, jnp.array([1, 2]), method="grad_cam")
    assert res.map.shape == (2, 4, 4), f"a ViT's Grad-CAM is on its 4x4 patch grid: {res.map.shape}"
    model, v, x = FAMILIES["densenet"]()
    block = {l.name: l for l in xa.layers(model, v, x)}["block1"]
    assert block.shape[-1] == 16, f"a dense block's output holds all its channels: {block.shape}"


def test_without_a_name_stack_a_parents_own_operations_are_named_in_the_parent():
    """NNX and Equinox programs carry no module names: weight paths name the layers, and a
    parameter-free operation belongs to the module whose code runs it (``Net.__call__``'s pool after
    ``self.block``), so the block's name reads the block's output."""
    model, v, x = FAMILIES["mobilenet_v2_nnx"]()
    infos = {l.name: l for l in xa.layers(model, v, x)}
    assert "avgpool_0" in infos and "block.avgpool_0" not in infos, sorted(infos)
    assert infos["block"].output == infos["block.add_0"].output, "the block returns its residual sum"
    res = xa.explain(model, v, x, jnp.array([1, 2]), method="grad_cam", layer="block")
    assert res.map.shape == (2, 8, 8), f"Grad-CAM at the block reads its spatial output: {res.map.shape}"


def _nnx_densenet():
    from flax import nnx

    class DenseLayer(nnx.Module):
        def __init__(self, c, rngs):
            self.conv = nnx.Conv(c, 4, (3, 3), rngs=rngs)

        def __call__(self, x):
            return jnp.concatenate([x, nnx.relu(self.conv(x))], axis=-1)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.stem = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.block = nnx.Sequential(DenseLayer(8, rngs), DenseLayer(12, rngs))
            self.head = nnx.Linear(16, 5, rngs=rngs)

        def __call__(self, x):
            x = self.block(nnx.relu(self.stem(x)))
            return self.head(jnp.mean(x, axis=(1, 2)))

    net = Net(nnx.Rngs(0))
    graphdef, state = nnx.split(net)
    blocks = {"block": lambda h: net.block(nnx.relu(net.stem(h))),
              "block.layers.0": lambda h: net.block.layers[0](nnx.relu(net.stem(h)))}
    return (lambda state, x: nnx.merge(graphdef, state)(x)), state, blocks


def _equinox_inception():
    import equinox as eqx

    class Inception(eqx.Module):
        b1: eqx.nn.Conv2d
        b3: eqx.nn.Conv2d

        def __init__(self, c, key):
            k1, k2 = jax.random.split(key)
            self.b1 = eqx.nn.Conv2d(c, 4, 1, key=k1)
            self.b3 = eqx.nn.Conv2d(c, 6, 3, padding=1, key=k2)

        def __call__(self, x):  # channels first, one example
            return jnp.concatenate([jax.nn.relu(self.b1(x)), jax.nn.relu(self.b3(x))], axis=0)

    class Net(eqx.Module):
        stem: eqx.nn.Conv2d
        mixed: Inception
        head: eqx.nn.Linear

        def __init__(self, key):
            k = jax.random.split(key, 3)
            self.stem = eqx.nn.Conv2d(3, 8, 3, padding=1, key=k[0])
            self.mixed = Inception(8, k[1])
            self.head = eqx.nn.Linear(10, 5, key=k[2])

        def __call__(self, x):
            return self.head(jnp.mean(self.mixed(jax.nn.relu(self.stem(x))), axis=(1, 2)))

    net = Net(jax.random.key(0))
    params, static = eqx.partition(net, eqx.is_array)
    blocks = {"mixed": lambda h: jax.vmap(lambda a: net.mixed(jax.nn.relu(net.stem(a))))(jnp.moveaxis(h, -1, 1))}
    return (lambda p, x: jax.vmap(eqx.combine(p, static))(jnp.moveaxis(x, -1, 1))), params, blocks


@pytest.mark.parametrize("form,block,channels", [("nnx", "block", 16), ("nnx", "block.layers.0", 12),
                                                 ("equinox", "mixed", 10)])
def test_without_a_name_stack_a_concatenating_block_reads_its_concatenation(form, block, channels):
    """A dense block in NNX, an inception block in Equinox: the block's name reads the block's own
    output, all its channels, not its last branch's."""
    model, v, blocks = _nnx_densenet() if form == "nnx" else _equinox_inception()
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    infos = {l.name: l for l in xa.layers(model, v, x)}
    assert infos[block].shape == (2, 8, 8, channels), f"{form} {block}: {infos[block].shape}, {sorted(infos)}"
    _, acts = run(trace(model, v, x), v, x, capture=[block])  # in the program's own layout
    np.testing.assert_allclose(np.asarray(acts[block]), np.asarray(blocks[block](x)), rtol=1e-5, atol=1e-6,
                               err_msg=f"{form}: the value read at {block} is not the module's output")
    res = xa.explain(model, v, x, jnp.array([1, 2]), method="grad_cam", layer=block)
    assert res.map.shape == (2, 8, 8)


def test_the_documented_method_by_kind_table_is_the_generated_one():
    from pathlib import Path

    from xattr_jax.methods.kinds_table import kinds_table

    doc = (Path(__file__).parents[1] / "docs" / "methods.md").read_text()
    committed = doc.split("<!-- kinds-table -->\n", 1)[1].split("\n<!-- /kinds-table -->", 1)[0]
    assert committed == kinds_table(), "docs/methods.md's kinds table is stale: paste kinds_table()'s output"


_METHODS = ("gradient", "input_x_gradient", "guided_backprop", "deconvnet", "smoothgrad", "integrated_gradients",
            "gnl_gradient", "gnl_integrated_gradients", "lrp", "grad_cam", "cam", *RELEVANCE[1:])
_CHEAP = {"smoothgrad": {"samples": 2, "key": jax.random.key(0)}, "integrated_gradients": {"steps": 2},
          "gnl_integrated_gradients": {"steps": 2}}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_method_on_every_family_runs_or_refuses_naming_the_operation_and_the_fix(family):
    model, v, x = FAMILIES[family]()
    plain = np.asarray(model.apply(v, x) if isinstance(model, nn.Module) else model(v, x))
    kinds = {l.kind for l in xa.layers(model, v, x)}
    for method in _METHODS:
        domain = xa.methods.get_method(method).domain
        outside = sorted(k for k in kinds - {None} if domain is not None and k not in domain.kinds)
        try:
            res = xa.explain(model, v, x, jnp.array([1, 2]), method=method, **_CHEAP.get(method, {}))
        except ValueError as e:
            msg = str(e)
            if method == "cam" and msg.startswith("cam needs"):  # no conv → global pool → dense head
                continue
            assert outside, f"{family} × {method}: refused a model inside its domain: {msg}"
            assert all(k in msg for k in outside) and "strict=False" in msg, f"{family} × {method}: {msg}"
            continue
        assert not outside, f"{family} × {method}: ran although {outside} are outside its domain"
        assert np.all(np.isfinite(np.asarray(res.map))), f"{family} × {method}: non-finite map"
        np.testing.assert_allclose(np.asarray(res.logits), plain, rtol=0, atol=1e-5 * np.abs(plain).max(),
                                   err_msg=f"{family} × {method}: logits (jit vs eager, 1e-5 x max)")


def test_a_scale_after_a_permute_folds_into_the_conv_before_it():
    """ConvNeXt's layer scale as torch writes it: conv (NHWC here) with its bias, a permute to NCHW,
    a per-channel scale. LRP folds the scale into the conv (``canonize``); its map equals LRP on the
    network whose conv already holds the scaled kernel and bias, which has no scale layer at all."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4)
    s, d = rng.uniform(0.5, 2.0, size=4), rng.normal(size=(4, 5))
    conv = lambda x, w, b: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b[None, None, None]

    def scaled(v, x):
        h = jnp.transpose(conv(x, v["w"], v["b"]), (0, 3, 1, 2)) * v["s"][None, :, None, None]
        return jnp.mean(jax.nn.relu(h), axis=(2, 3)) @ v["d"]

    def folded(v, x):
        h = jnp.transpose(conv(x, v["w"] * v["s"][None, None, None], v["b"] * v["s"]), (0, 3, 1, 2))
        return jnp.mean(jax.nn.relu(h), axis=(2, 3)) @ v["d"]

    with jax.enable_x64(True):
        v = {k: jnp.asarray(a) for k, a in dict(w=w, b=b, s=s, d=d).items()}
        x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)))
        assert [l.kind for l in xa.layers(scaled, v, x) if l.kind][:2] == ["conv", "batchnorm"]
        ours = np.asarray(xa.explain(scaled, v, x, jnp.array([1, 3]), method="lrp").relevance)
        ref = np.asarray(xa.explain(folded, v, x, jnp.array([1, 3]), method="lrp").relevance)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10 * np.abs(ref).max(),
                               err_msg="LRP with the scale folded differs from LRP on the pre-scaled conv (> 1e-10 × max)")


def test_an_additive_chain_through_a_reshape_is_two_batchnorm_layers():
    """Swin's attention logits as torch writes them: ``+ relative-position bias``, a reshape to
    windows, ``+ window mask``. Each add keeps its input's shape and is a batch-norm-kind layer (the
    chain stops before the reshape); no ``other`` layer, so LRP runs, with an exact forward."""
    rng = np.random.default_rng(0)
    v = {"w": rng.normal(size=(3, 3, 3, 4)).astype(np.float32), "bias": rng.normal(size=(4, 4, 4)).astype(np.float32),
         "d": rng.normal(size=(4, 5)).astype(np.float32)}
    mask = np.where(rng.random((1, 2, 1, 4, 4)) > 0.5, 0.0, -100.0).astype(np.float32)

    def model(v, x):
        h = jax.lax.conv_general_dilated(x, v["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jnp.transpose(jax.nn.relu(h), (0, 3, 1, 2)) + v["bias"][None]  # [N, 4, 4, 4] + bias
        h = h.reshape(x.shape[0], 2, 2, 4, 4) + mask  # windows, then the mask
        return jnp.mean(h, axis=(1, 3, 4)) @ v["d"][:2]

    x = jnp.asarray(rng.normal(size=(2, 4, 4, 3)).astype(np.float32))
    kinds = [l.kind for l in xa.layers(model, v, x) if l.kind]
    assert kinds == ["conv", "relu", "batchnorm", "batchnorm", "avgpool", "dense"], kinds
    prog = trace(model, v, x)
    assert np.array_equal(np.asarray(run(prog, v, x)[0]), np.asarray(model(v, x))), "the forward is exact"
    res = xa.explain(model, v, x, jnp.array([1, 3]), method="lrp")
    assert np.all(np.isfinite(np.asarray(res.relevance))) and np.abs(np.asarray(res.relevance)).max() > 0
