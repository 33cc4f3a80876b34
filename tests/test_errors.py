"""Bad input gets a clear error that names the problem and the fix."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax import rules as R
from xattr_jax.composites import composite, first_linear, kind, path, resolve


def test_unknown_method_lists_the_available_ones(tiny_net):
    model, v, x = tiny_net
    with pytest.raises(ValueError, match="unknown method 'excitation'.*'gradient'.*'lrp'"):
        xa.explain(model, v, x, jnp.array([0, 1, 2]), method="excitation")


def test_unknown_layer_lists_the_valid_names(tiny_net):
    model, v, x = tiny_net
    with pytest.raises(ValueError, match=r"unknown layer 'conv9'; valid layer names: \[.*'conv1'.*'relu2'.*'fc'"):
        xa.explain(model, v, x, jnp.array([0, 1, 2]), method="gradient", layer="conv9")


def test_unknown_option_lists_the_valid_ones(tiny_net):
    model, v, x = tiny_net
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['step'\]; valid options: .*'steps'"):
        xa.attributor(model, "integrated_gradients", step=3)


def test_unknown_signal(tiny_net):
    model, _, _ = tiny_net
    with pytest.raises(ValueError, match="unknown signal 'softmax'; valid: .*'prob'"):
        xa.attributor(model, "gradient", signal="softmax")


@pytest.mark.parametrize("target,msg", [
    (jnp.array([0, 5, 1]), r"target out of range: \[5\] not in \[0, 5\)"),
    (jnp.array([0, -1, 1]), r"target out of range: \[-1\]"),
    (jnp.array([[0, 9], [1, 1], [2, 2]]), r"target out of range: \[9\]"),
    (jnp.array([0, 1]), "target has 2 rows but x has batch size 3"),
    (jnp.array([0.0, 1.0, 2.0]), "target must be an integer array"),
    (jnp.zeros((3, 1, 1), jnp.int32), r"target must be an int array \[N\] or \[N, K\]"),
])
def test_bad_targets(tiny_net, target, msg):
    model, v, x = tiny_net
    with pytest.raises((ValueError, TypeError), match=msg):
        xa.explain(model, v, x, target, method="gradient")


def test_bad_inputs(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"x must be a rank-4 NHWC batch .* got shape \(12, 12, 3\).*x\[None\]"):
        xa.explain(model, v, x[0], t[:1], method="gradient")
    with pytest.raises(TypeError, match="x must be floating point .*int32"):
        xa.explain(model, v, x.astype(jnp.int32), t, method="gradient")
    bad = x.at[1, 2, 3, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN or Inf"):
        xa.explain(model, v, bad, t, method="gradient")
    with pytest.raises(ValueError, match="NaN or Inf"):
        xa.explain(model, v, x.at[0, 0, 0, 0].set(jnp.inf), t, method="lrp")


def test_strict_mode_lists_every_unmatched_layer(tiny_net):
    model, v, x = tiny_net
    comp = composite((kind("conv"), R.zplus()))
    with pytest.raises(ValueError) as e:
        resolve(comp, model, v, x, strict=True)
    msg = str(e.value)
    for name in ["relu1 (relu)", "pool1 (maxpool)", "relu2 (relu)", "relu3 (relu)", "avgpool (avgpool)", "fc (dense)"]:
        assert name in msg, f"strict-mode error should list {name}: {msg}"
    assert "conv1" not in msg.split("composite")[0]
    with pytest.raises(ValueError, match="strict mode"):
        xa.explain(model, v, x, jnp.array([0, 1, 2]), method="lrp", composite=comp, strict=True)


def test_rule_on_the_wrong_layer_kind_is_refused(tiny_net):
    model, v, x = tiny_net
    with pytest.raises(ValueError, match="gives rule guided_relu\\(\\) to layer 'conv1', a conv layer, but guided_relu\\(\\) applies to \\['activation', 'relu'\\] only"):
        resolve(composite((path("conv*"), R.guided_relu())), model, v, x)


@pytest.mark.parametrize("make,msg", [
    (lambda: R.epsilon(-1.0), "epsilon must be >= 0"),
    (lambda: R.epsilon(float("nan")), "epsilon must be finite"),
    (lambda: R.epsilon("big"), "epsilon must be a real number"),
    (lambda: R.alpha_beta(1.0, 1.0), "alpha - beta must equal 1"),
    (lambda: R.alpha_beta(-1.0, -2.0), "alpha must be >= 0"),
    (lambda: R.gamma(-0.5), "gamma must be >= 0"),
    (lambda: R.zbox(1.0, -1.0), "low must be <= high"),
    (lambda: R.zbox((0.0, 0.0), (1.0, 1.0, 1.0)), "same length"),
    (lambda: R.zplus(stabilizer=-1), "stabilizer must be >= 0"),
])
def test_invalid_rule_hyperparameters(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_bad_composites_and_matchers():
    with pytest.raises(ValueError, match="unknown layer kind.*'pool'.*valid kinds"):
        kind("pool")
    with pytest.raises(TypeError, match="not a Rule"):
        composite((kind("conv"), "zplus"))
    with pytest.raises(TypeError, match="not a Matcher"):
        composite((3, R.zplus()))
    assert first_linear().name == "first_linear"


def test_method_option_values_are_checked(tiny_net):
    model, v, x = tiny_net
    t = jnp.array([0, 1, 2])
    with pytest.raises(ValueError, match="rule must be one of .*'trapezoid'\\], got 'simpson'"):
        xa.explain(model, v, x, t, method="integrated_gradients", rule="simpson")
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        xa.explain(model, v, x, t, method="integrated_gradients", steps=0)
    with pytest.raises(ValueError, match="baseline of shape \\(7,\\) does not broadcast"):
        xa.explain(model, v, x, t, method="integrated_gradients", baseline=np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="smoothgrad option variant must be one of"):
        xa.explain(model, v, x, t, method="smoothgrad", variant="cube")
    with pytest.raises(ValueError, match="composite must be a Composite or a preset name .*epsilon_plus_flat"):
        xa.explain(model, v, x, t, method="lrp", composite="eps")
    with pytest.raises(ValueError, match="cam needs conv -> global average pool -> dense after 'avgpool'"):
        xa.explain(model, v, x, t, method="cam", layer="avgpool")  # nothing pools globally after it
    with pytest.raises(ValueError, match="needs a spatial layer"):
        xa.explain(model, v, x, t, method="grad_cam", layer="fc")


# ----------------------------------------------------------------------------------------------
# the engine on users' programs


class _CumsumNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.cumsum(nn.relu(nn.Conv(4, (3, 3))(x)), axis=1)  # no kind of its own: "other"
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


@pytest.mark.parametrize("method", ["gradient", "excitation_backprop", "lrp", "integrated_gradients"])
def test_strict_names_each_primitive_without_a_rule_with_its_source_line(method):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = _CumsumNet().init(jax.random.PRNGKey(1), x)
    with pytest.raises(ValueError) as e:
        xa.explain(_CumsumNet(), v, x, jnp.array([0, 1]), method=method, strict=True)
    msg = str(e.value)
    assert msg.startswith("strict mode:") and "no rule" in msg, msg
    assert "cumsum" in msg, msg
    assert "test_errors.py:" in msg and "_CumsumNet.__call__" in msg, f"the user's source line: {msg}"
    others = [l for l in xa.layers(_CumsumNet(), v, x) if l.kind == "other"]
    assert others and all(l.name in msg and l.type_name in msg for l in others), msg
    # with strict=False, the same model runs (cumsum keeps its ordinary gradient)
    res = xa.explain(_CumsumNet(), v, x, jnp.array([0, 1]), method=method, strict=False)
    assert np.all(np.isfinite(np.asarray(res.map)))


@pytest.mark.parametrize("method", ["gradient", "excitation_backprop", "lrp"])
def test_relevance_methods_refuse_other_operations_by_default(method):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = _CumsumNet().init(jax.random.PRNGKey(1), x)
    if method == "gradient":  # the gradient family never needs to
        assert np.all(np.isfinite(np.asarray(xa.explain(_CumsumNet(), v, x, jnp.array([0, 1]), method=method).map)))
        return
    with pytest.raises(ValueError) as e:
        xa.explain(_CumsumNet(), v, x, jnp.array([0, 1]), method=method)
    msg = str(e.value)
    assert "1× other (cumsum) at" in msg and "test_errors.py:" in msg and "strict=False" in msg, msg


def test_a_model_in_training_mode_is_refused():
    class TrainBN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.BatchNorm(use_running_average=False)(nn.Conv(4, (3, 3))(x))
            return nn.Dense(3)(jnp.mean(nn.relu(x), axis=(1, 2)))

    class TrainDropout(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dropout(0.5, deterministic=False)(nn.relu(nn.Conv(4, (3, 3))(x)))
            return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    t = jnp.array([0, 1])
    v = TrainBN().init(jax.random.PRNGKey(1), x)
    with pytest.raises(ValueError, match="inference mode"):
        xa.explain(TrainBN(), v, x, t, method="gradient")
    v = TrainDropout().init({"params": jax.random.PRNGKey(1), "dropout": jax.random.PRNGKey(2)}, x)
    with pytest.raises(ValueError, match="inference mode"):
        xa.explain(TrainDropout(), v, x, t, method="gradient")

    # statistics or noise computed inside the program (as NNX does in training mode)
    from flax import nnx

    class NNXNet(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.fc = nnx.Linear(4, 3, rngs=rngs)

        def __call__(self, x):
            return self.fc(self.drop(nnx.relu(self.bn(self.conv(x)))).mean(axis=(1, 2)))

    net = NNXNet(nnx.Rngs(0))
    net.train()
    graphdef, state = nnx.split(net)
    with pytest.raises(ValueError, match="inference mode"):
        xa.explain(lambda s, x: nnx.merge(graphdef, s)(x), state, x, t, method="gradient")
    net.eval()
    graphdef, state = nnx.split(net)
    res = xa.explain(lambda s, x: nnx.merge(graphdef, s)(x), state, x, t, method="lrp")
    assert np.all(np.isfinite(np.asarray(res.map)))


def test_an_output_that_does_not_depend_on_x_is_refused():
    params = {"w": jnp.ones((3,))}
    with pytest.raises(ValueError, match="output does not depend on x"):
        xa.explain(lambda p, x: jnp.broadcast_to(p["w"], (x.shape[0], 3)), params,
                   jnp.ones((2, 4, 4, 3)), jnp.array([0, 1]), method="gradient")


def test_unknown_layer_of_a_users_model_lists_the_table():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    v = _CumsumNet().init(jax.random.PRNGKey(1), x)
    names = [l.name for l in xa.layers(_CumsumNet(), v, x)]
    assert names[0] == "Conv_0" and names[-1] == "Dense_0", names
    with pytest.raises(ValueError, match=r"unknown layer 'conv9'; valid layer names: \['input', 'Conv_0', .*'Dense_0'\]"):
        xa.explain(_CumsumNet(), v, x, jnp.array([0, 1]), method="grad_cam", layer="conv9")


def test_methods_are_discoverable_with_descriptions_and_option_tables():
    from xattr_jax.methods import get_method

    described = xa.methods_available(describe=True)
    assert list(described) == list(xa.methods_available())
    for name, line in described.items():
        assert line and "\n" not in line and "(" in line, (name, line)  # one line naming its paper
        table = xa.method_options(name)
        for opt, o in get_method(name).opts.items():  # every option: its name, default and meaning
            row = next(r for r in table.splitlines() if r.split()[0] == opt)
            assert repr(o.default) in row and o.doc in row, row
    assert "steps" in xa.explain.__doc__ and "composite" in xa.explain.__doc__


# ----------------------------------------------------------------------------------------------
# how a model is called: layout, argument order, output


def _conv(x, w, layout):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=layout)


def _nchw_model(p, x):
    """A plain function written for channels-first inputs."""
    return jnp.mean(jax.nn.relu(_conv(x, p["conv_oihw"], ("NCHW", "OIHW", "NCHW"))), axis=(2, 3)) @ p["fc"]


def _nhwc_model(p, x):
    return jnp.mean(jax.nn.relu(_conv(x, p["conv_hwio"], ("NHWC", "HWIO", "NHWC"))), axis=(1, 2)) @ p["fc"]


def _plain_params():
    k = jax.random.split(jax.random.key(0), 3)
    w = jax.random.normal(k[0], (3, 3, 3, 4))
    return {"conv_hwio": w, "conv_oihw": w.transpose(3, 2, 0, 1), "fc": jax.random.normal(k[1], (4, 5))}


NHWC_X = jax.random.normal(jax.random.key(1), (2, 8, 9, 3))


def test_a_channels_first_model_given_channels_first_x_is_refused():
    p, t = _plain_params(), jnp.array([0, 1])
    nchw_x = NHWC_X.transpose(0, 3, 1, 2)
    msg = r"x must be NHWC \[N, H, W, C\].*first convolution \(\S+ at .*test_errors.py.*\[N, C, W\].*transpose inside"
    with pytest.raises(ValueError, match=msg):
        xa.explain(_nchw_model, p, nchw_x, t, method="gradient")
    with pytest.raises(ValueError, match=msg):
        xa.layers(_nchw_model, p, nchw_x)
    # the fix the message gives: NHWC x, transposed inside the function; the same map as the NHWC model
    fixed = xa.explain(lambda p, x: _nchw_model(p, x.transpose(0, 3, 1, 2)), p, NHWC_X, t, method="gradient")
    want = xa.explain(_nhwc_model, p, NHWC_X, t, method="gradient")
    assert fixed.map.shape == (2, 8, 9)
    np.testing.assert_allclose(fixed.map, want.map, rtol=1e-5, atol=1e-6, err_msg="NCHW form = NHWC form (1e-5)")


def test_a_channels_last_model_given_channels_first_x_is_refused():
    with pytest.raises(ValueError, match=r"failed for x of shape \(2, 3, 8, 9\), but runs on x.transpose\(0, 2, 3, 1\)"
                                         r": x must be NHWC"):
        xa.explain(_nhwc_model, _plain_params(), NHWC_X.transpose(0, 3, 1, 2), jnp.array([0, 1]), method="gradient")


def test_swapped_arguments_are_refused():
    p, t = _plain_params(), jnp.array([0, 1])
    with pytest.raises(ValueError, match=r"model\(variables, x\) failed, but model\(x, variables\) runs.*"
                                         r"lambda v, x: f\(x, v\)"):
        xa.explain(lambda x, p: _nhwc_model(p, x), p, NHWC_X, t, method="gradient")
    with pytest.raises(ValueError, match=r"x is a dict and variables an array of shape \(2, 8, 9, 3\): the arguments "
                                         r"look swapped; call explain\(model, variables, x, target\)"):
        xa.explain(_nhwc_model, NHWC_X, p, t, method="gradient")
    with pytest.raises(ValueError, match="look swapped"):
        xa.layers(_nhwc_model, NHWC_X, p)


@pytest.mark.parametrize("wrap,msg", [
    (lambda f: lambda p, x: f(p, x)[:, 0], r"returned an array of shape \(2,\);.*\[N, classes\].*out\[:, None\]"),
    (lambda f: lambda p, x: (f(p, x), x), r"returned a tuple of 2 \(\(2, 5\), \(2, 8, 9, 3\)\);.*f\(v, x\)\[0\]"),
    (lambda f: lambda p, x: {"logits": f(p, x)}, r"returned a dict with keys \['logits'\];.*f\(v, x\)\['logits'\]"),
    (lambda f: lambda p, x: f(p, x)[:1], r"returned an array of shape \(1, 5\) for a batch of 2;.*jax.vmap"),
])
def test_a_model_output_that_is_not_class_scores_is_refused(wrap, msg):
    with pytest.raises(ValueError, match=msg):
        xa.explain(wrap(_nhwc_model), _plain_params(), NHWC_X, jnp.array([0, 1]), method="gradient")


def test_a_composite_that_matches_no_layer_is_refused(tiny_net):
    model, v, x = tiny_net
    comp = composite((path("features.*"), R.zplus()), (path("classifier.*") & kind("dense"), R.epsilon()),
                     name="vgg_only")
    msg = (r"composite 'vgg_only' matches no layer of the model.*path\('features\.\*',\).*path\('classifier\.\*',\)"
           r".*conv1 \(conv\).*fc \(dense\).*kinds \[.*'avgpool'.*\].*xa.layers")
    with pytest.raises(ValueError, match=msg):
        xa.explain(model, v, x, jnp.array([0, 1, 2]), method="lrp", composite=comp)


def test_black_baseline_on_a_grayscale_model_names_the_fix():
    """The default 'black' baseline reads ImageNet's 3-channel normalisation; a 1-channel model
    gets an error naming it and the options to pass, not a broadcasting error from deep inside."""

    class Gray(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(features=4, kernel_size=(3, 3))(x))
            return nn.Dense(features=3)(x.mean(axis=(1, 2)))

    m, x = Gray(), jnp.ones((2, 8, 8, 1), jnp.float32)
    v = m.init(jax.random.key(0), x)
    t = jnp.array([0, 1])
    for method in ("integrated_gradients", "gnl_integrated_gradients"):
        with pytest.raises(ValueError, match=r"baseline='black' .* shape \(3,\), which does not broadcast to the "
                                             r"input \(2, 8, 8, 1\); pass normalization=\(mean, std\)"):
            xa.explain(m, v, x, t, method=method, steps=2)
    res = xa.explain(m, v, x, t, method="integrated_gradients", steps=2, normalization=((0.5,), (0.25,)))
    assert np.all(np.isfinite(np.asarray(res.map))), "with the model's own normalisation the map is computed"
