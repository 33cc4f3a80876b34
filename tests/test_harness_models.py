"""The harness calls a model as the engine does (:func:`xattr_jax.program.call_model`).

One small network (conv, relu, max pool, conv, relu, global mean, dense) is written four ways: a
Flax linen module, a plain function of a parameter dict, a Flax NNX module (``nnx.split`` /
``nnx.merge``), and a callable object that also has an ``apply`` of its own (the contract calls the
object, not ``.apply``). ``evaluate`` and ``run_job`` must give each form the linen module's records
and maps (max abs error <= 1e-5 x max: the forms write the same primitives, up to float32 order),
and a model that takes ``(x, variables)`` is refused in the engine's words.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from xattr_jax.app.cli_common import num_classes
from xattr_jax.data.samples import synthetic_samples
from xattr_jax.harness import MemoryStore, evaluate, run_job
from xattr_jax.harness.evaluate import harness_options

from _nets import random_variables

METHODS = ["gradient", "excitation_backprop"]
SIDE, CLASSES = 64, 20
DN = ("NHWC", "HWIO", "NHWC")


class Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding=1, name="c1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(8, (3, 3), padding=1, name="c2")(x))
        return nn.Dense(CLASSES, name="fc")(jnp.mean(x, axis=(1, 2)))


def plain(p, x):
    def conv(x, layer):
        y = lax.conv_general_dilated(x, layer["kernel"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)
        return jax.nn.relu(y + layer["bias"][None, None, None])

    x = conv(x, p["c1"])
    x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    x = conv(x, p["c2"])
    return jnp.mean(x, axis=(1, 2)) @ p["fc"]["kernel"] + p["fc"]["bias"][None]


def nnx_form(params):
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.c1 = nnx.Conv(3, 4, (3, 3), padding=1, rngs=rngs)
            self.c2 = nnx.Conv(4, 8, (3, 3), padding=1, rngs=rngs)
            self.fc = nnx.Linear(8, CLASSES, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.c1(x))
            x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            x = nnx.relu(self.c2(x))
            return self.fc(jnp.mean(x, axis=(1, 2)))

    net = Net(nnx.Rngs(0))
    for name in ("c1", "c2", "fc"):
        getattr(net, name).kernel[...] = params[name]["kernel"]
        getattr(net, name).bias[...] = params[name]["bias"]
    graphdef, state = nnx.split(net)
    return (lambda state, x: nnx.merge(graphdef, state)(x)), state


class WithApply:
    """A callable model whose class also has an ``apply`` that is not the model call."""

    def __call__(self, variables, x):
        return plain(variables, x)

    def apply(self, fn):  # e.g. a method of the user's own wrapper, unrelated to the model call
        raise AssertionError("the harness called model.apply; the contract is model(variables, x)")


@pytest.fixture(scope="module")
def forms():
    model = Linen()
    variables = random_variables(model, jnp.zeros((1, SIDE, SIDE, 3)), seed=3)
    params = variables["params"]
    return {
        "linen": (model, variables),
        "function": (plain, params),
        "nnx": nnx_form(params),
        "callable with apply": (WithApply(), params),
    }


@pytest.fixture(scope="module")
def samples():
    return synthetic_samples(3)


def _close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, what
    err, scale = float(np.max(np.abs(a - b))), float(np.max(np.abs(b)))
    assert err <= 1e-5 * scale, f"{what}: max abs error {err:.3g} > 1e-5 x max {scale:.3g}"


def test_every_form_is_the_linen_module_in_evaluate(forms, samples):
    results = {name: evaluate(m, v, samples, METHODS, preprocess="embedded", batch_size=4, deletion_images=1,
                              deletion_steps=4, keep_maps=True, progress=False, log=lambda s: None)
               for name, (m, v) in forms.items()}  # fmt: skip
    want = results["linen"]
    for name, got in results.items():
        for m in METHODS:
            assert "error" not in got["methods"][m], f"{name}, {m}: {got['methods'][m]}"
            assert got["maps"][m].keys() == want["maps"][m].keys(), f"{name}, {m}: other trials"
            for k, mp in got["maps"][m].items():
                _close(mp, want["maps"][m][k], f"{name}, {m}, {k}")
            for stat in ("pointing_all", "box_acc"):
                assert got["methods"][m][stat] == want["methods"][m][stat], f"{name}, {m}, {stat}"
            assert got["methods"][m]["deletion_auc"] == pytest.approx(want["methods"][m]["deletion_auc"], abs=1e-5)


def test_every_form_is_the_linen_module_in_run_job(forms, samples):
    jobs = {}
    for name, (m, v) in forms.items():
        store = MemoryStore()
        res = run_job(m, v, samples, METHODS, preprocess="embedded", store=store, batch_size=4, progress=False,
                      log=lambda s: None)  # fmt: skip
        assert not res.failed, f"{name}: {res.failed}"
        jobs[name] = {(r["image"], r["method"], r["target"]): (r, store.load_map(r)) for r in store.records}
    want = jobs["linen"]
    for name, got in jobs.items():
        assert got.keys() == want.keys(), f"{name}: other (image, method, target) records"
        for k, (r, mp) in got.items():
            w, wmp = want[k]
            assert r["predicted"] == w["predicted"], f"{name}, {k}"
            assert r["logit"] == pytest.approx(w["logit"], abs=1e-5) and r["prob"] == pytest.approx(w["prob"], abs=1e-6)
            _close(mp, wmp, f"{name}, {k}")


def test_every_form_has_the_same_number_of_classes_and_options(forms):
    for name, (m, v) in forms.items():
        assert num_classes(m, v, "embedded") == CLASSES, name
    # the pointing signal is the one-hot on [N, classes] logits: the same options for every form
    assert harness_options("excitation_backprop") == {"signal": "pointing"}
    assert harness_options("gradient") == {}


def test_a_model_taking_x_first_is_refused_in_the_engines_words(forms, samples):
    _, params = forms["function"]
    with pytest.raises(ValueError, match=r"model\(x, variables\) runs"):
        evaluate(lambda x, v: plain(v, x), params, samples, ["gradient"], preprocess="embedded",
                 deletion_images=0, progress=False, log=lambda s: None)  # fmt: skip
    with pytest.raises(TypeError, match="callable"):
        run_job(object(), params, samples, ["gradient"], preprocess="embedded", store=MemoryStore(), progress=False,
                log=lambda s: None)  # fmt: skip
