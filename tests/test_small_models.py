"""The small synthetic-benchmark models and the shipped (embedded) checkpoints."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax.app.train import mean_average_precision
from xattr_jax.data import make_dataset, normalize
from xattr_jax.data.synthetic import HELD_OUT_SEED, TRAIN_SEED
from xattr_jax.models import ARCHITECTURES, EMBEDDED, build, load_embedded
from xattr_jax.models.small import embedded_info, embedded_path


def _n_params(variables):
    return sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(variables["params"]))


@pytest.mark.parametrize("arch", EMBEDDED)
def test_registered_small_and_named_like_the_zoo(arch):
    assert arch in ARCHITECTURES
    model = build(arch)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert _n_params(variables) < 1_000_000
    params = variables["params"]
    if arch == "small_vgg":
        assert {"features", "classifier"} <= set(params)
        assert "kernel" in params["features"]["0"] and "scale" in params["features"]["1"]
        assert "kernel" in params["classifier"]["2"] and "batch_stats" in variables
    else:
        assert {"conv1", "bn1", "layer1", "layer4", "fc"} <= set(params)
        assert "downsample" in params["layer2"]["0"] and "batch_stats" in variables
    assert model.apply(variables, jnp.zeros((2, 64, 64, 3))).shape == (2, 20)


def test_resnet_train_mode_uses_batch_statistics():
    model, train_model = build("small_resnet"), build("small_resnet", train=True)
    x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
    variables = model.init(jax.random.key(0), x)
    _, upd = train_model.apply(variables, x, mutable=["batch_stats"])
    old = variables["batch_stats"]["bn1"]["mean"]
    assert float(jnp.max(jnp.abs(upd["batch_stats"]["bn1"]["mean"] - old))) > 1e-4
    # attribution refuses a model in training mode (the interpreter's check, or flax's own
    # refusal to update batch statistics that are not mutable)
    with pytest.raises((ValueError, flax.errors.ModifyScopeVariableError)):
        xa.explain(train_model, variables, x[:1], jnp.array([0]), method="excitation_backprop")


@pytest.mark.parametrize("arch", EMBEDDED)
def test_embedded_checkpoint_loads_and_scores_held_out_images(arch):
    model, variables = load_embedded(arch)
    info = embedded_info(arch)
    assert info["config"]["train_seed"] == TRAIN_SEED
    assert info["config"]["held_out_seed"] == HELD_OUT_SEED
    assert info["held_out_map"] >= 0.85  # the recorded held-out mAP of the shipped weights
    # a quick check on the first 100 held-out images (a subset of the recorded 1000)
    ds = make_dataset(100, 64, seed=HELD_OUT_SEED)
    scores = np.asarray(jax.jit(model.apply)(variables, normalize(ds.images)))
    m, _ = mean_average_precision(scores, ds.labels)
    assert m >= 0.8


def test_embedded_assets_are_small():
    total = sum(f.stat().st_size for a in EMBEDDED for f in embedded_path(a).rglob("*") if f.is_file())
    assert total < 20 * 2**20


def test_load_embedded_rejects_unknown_names():
    with pytest.raises(ValueError, match="small_vgg"):
        load_embedded("vgg16")


@pytest.mark.parametrize("arch", EMBEDDED)
def test_the_method_families_apply(arch):
    model, variables = load_embedded(arch)
    ds = make_dataset(2, 64, seed=HELD_OUT_SEED)
    x, t = jnp.asarray(normalize(ds.images)), jnp.asarray(ds.trial_class[[0, -1]])
    for method in ("excitation_backprop", "contrastive_excitation_backprop", "grad_cam", "lrp"):
        if method not in xa.methods_available():
            continue
        res = xa.explain(model, variables, x, t, method=method)
        assert res.map.ndim == 3 and res.map.shape[0] == 2
        assert bool(jnp.all(jnp.isfinite(res.map)))
