"""Half precision: bfloat16 and float16 inputs and parameters against float32, every method.

The shipped small VGG (trained, batch-norm) on four synthetic benchmark images, each image's map
for its first present class. The forward runs in the half dtype (the model's own arithmetic);
rules compute in at least float32 and the map comes back in the input dtype. What differs is what
the half-precision forward decides differently — ReLU signs and max-pool winners near ties — so
methods that route through many such decisions down to the input (gradient family, AB, IG) differ
most. The floors below are the measured values (XLA:CPU, jax 0.10) with a margin; per image: the
Pearson correlation of the maps and the norm of the difference as a fraction of the float32 map's norm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax.data import make_dataset, normalize
from xattr_jax.models import load_embedded

# The softmax-probability signal (IG's and GNL's default) of this trained model is saturated (p > 0.9999),
# and its half-precision gradient is then off in scale (GNL gradient: relative error 0.72 in both dtypes,
# correlation 0.99): a property of the signal, not of the rules. This test measures the rules, on logits.
OPTIONS = {
    "integrated_gradients": dict(steps=8, chunk=4, signal="logit"),
    "gnl_integrated_gradients": dict(steps=8, chunk=4, signal="logit"),
    "gnl_gradient": dict(signal="logit"),
    "smoothgrad": dict(samples=4, chunk=4),
}
# method: (bf16 min correlation, bf16 max relative error, fp16 min correlation, fp16 max relative error)
# where relative error = ||map - map32|| / ||map32|| per image (a few pixels next to a flipped ReLU or
# max-pool decision move the largest difference by up to 0.9 x max|map|, so that is no measure).
# measured (worst image): bf16 corr / error, fp16 corr / error, in the comments; bounds ~1.4 x.
FLOORS = {
    "attention_backprop": (0.70, 0.95, 0.99, 0.14),  # 0.758 / 0.675, 0.995 / 0.100
    "cam": (0.9999, 0.018, 0.9999, 0.0026),  # 1.0000 / 0.0127, 1.0000 / 0.0018
    "contrastive_excitation_backprop": (0.999, 0.10, 0.9999, 0.0076),  # 0.9996 / 0.072, 1.0000 / 0.0054
    "deconvnet": (0.985, 0.12, 0.998, 0.037),  # 0.9924 / 0.081, 0.9991 / 0.026
    "excitation_backprop": (0.9999, 0.0081, 0.9999, 0.0029),  # 1.0000 / 0.0058, 1.0000 / 0.0020
    "gnl_gradient": (0.99, 0.15, 0.998, 0.05),  # 0.9944 / 0.105, 0.9994 / 0.035
    "gnl_integrated_gradients": (0.99, 0.16, 0.993, 0.13),  # 0.9938 / 0.108, 0.9957 / 0.092
    "grad_cam": (0.9999, 0.018, 0.9999, 0.0026),  # 1.0000 / 0.0125, 1.0000 / 0.0018
    "gradient": (0.975, 0.18, 0.994, 0.079),  # 0.9833 / 0.125, 0.9970 / 0.056
    "guided_backprop": (0.996, 0.075, 0.999, 0.034),  # 0.9983 / 0.053, 0.9996 / 0.024
    "input_x_gradient": (0.975, 0.27, 0.993, 0.13),  # 0.9824 / 0.187, 0.9963 / 0.088
    "integrated_gradients": (0.96, 0.34, 0.993, 0.13),  # 0.9717 / 0.237, 0.9961 / 0.088
    "lrp": (0.999, 0.05, 0.9998, 0.016),  # 0.9995 / 0.035, 0.9999 / 0.011
    "rsp": (0.997, 0.073, 0.9995, 0.03),  # 0.9987 / 0.052, 0.9998 / 0.021
    "smoothgrad": (0.98, 0.15, 0.997, 0.053),  # 0.9857 / 0.103, 0.9986 / 0.038
}


@pytest.fixture(scope="module")
def batch():
    model, v = load_embedded("small_vgg")
    ds = make_dataset(4, seed=2)
    first = np.searchsorted(ds.trial_image, np.arange(4))
    return model, v, jnp.asarray(normalize(ds.images)), jnp.asarray(ds.trial_class[first], jnp.int32)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def test_every_method_has_floors():
    assert set(FLOORS) == set(xa.methods_available())


@pytest.mark.parametrize("method", sorted(FLOORS))
def test_half_precision_maps_against_float32(batch, method):
    model, v, x, t = batch
    opts = OPTIONS.get(method, {})
    key = jax.random.key(0)
    ref = np.asarray(xa.explain(model, v, x, t, method=method, key=key, **opts).map, np.float64)
    floors = dict(zip(("bfloat16", "float16"), (FLOORS[method][:2], FLOORS[method][2:])))
    for dtype in (jnp.bfloat16, jnp.float16):
        name = jnp.dtype(dtype).name
        res = xa.explain(model, _cast(v, dtype), x.astype(dtype), t, method=method, key=key, **opts)
        assert res.map.dtype == dtype and res.relevance.dtype == dtype, (
            f"{method} {name}: the result comes back in the input dtype, got {res.map.dtype}")
        a = np.asarray(res.map, np.float64)
        assert np.all(np.isfinite(a)), f"{method} {name}: non-finite map"
        min_corr, max_err = floors[name]
        for i in range(a.shape[0]):
            scale = float(np.linalg.norm(ref[i]))
            assert scale > 0, f"{method}: the float32 map of image {i} is all zero"
            corr = float(np.corrcoef(a[i].ravel(), ref[i].ravel())[0, 1])
            err = float(np.linalg.norm(a[i] - ref[i])) / scale
            assert corr >= min_corr, f"{method} {name} image {i}: correlation {corr:.4f} < {min_corr}"
            assert err <= max_err, f"{method} {name} image {i}: ||map - map32|| = {err:.3g} x ||map32|| > {max_err}"


@pytest.mark.parametrize("method", ["excitation_backprop", "lrp", "gradient"])
def test_half_precision_input_with_float32_parameters(batch, method):
    """A bfloat16 batch into float32 parameters (Flax promotes to float32): the map comes back bfloat16."""
    model, v, x, t = batch
    ref = np.asarray(xa.explain(model, v, x, t, method=method).map, np.float64)
    res = xa.explain(model, v, x.astype(jnp.bfloat16), t, method=method)
    assert res.map.dtype == jnp.bfloat16
    a = np.asarray(res.map, np.float64)
    for i in range(a.shape[0]):
        corr = float(np.corrcoef(a[i].ravel(), ref[i].ravel())[0, 1])
        assert corr >= 0.97, f"{method} image {i}: correlation {corr:.4f} < 0.97"
