"""Half precision: bfloat16 and float16 inputs and parameters against float32, every method.

The shipped small VGG (trained, batch-norm) on four synthetic benchmark images, each image's map
for its first present class. The forward runs in the half dtype (the model's own arithmetic);
rules compute in at least float32 and the map comes back in the input dtype. What differs is what
the half-precision forward decides differently — ReLU signs and max-pool winners near ties — so
methods that route through many such decisions down to the input (gradient family, AB, IG) differ
most. The floors below are the measured values (XLA:CPU, jax 0.8) with a margin; per image: the
Pearson correlation of the maps and the largest difference as a fraction of the float32 map's
largest value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from xattr_jax.data import make_dataset, normalize
from xattr_jax.models import load_embedded

OPTIONS = {
    "integrated_gradients": dict(steps=8, chunk=4),
    "gnl_integrated_gradients": dict(steps=8, chunk=4),
    "smoothgrad": dict(samples=4, chunk=4),
}
# method: (bf16 min correlation, bf16 max error / max|map|, fp16 min correlation, fp16 max error)
# measured: bf16 corr / err, fp16 corr / err, in the comments
FLOORS = {
    "attention_backprop": (0.70, 0.90, 0.99, 0.20),  # 0.758 / 0.731, 0.995 / 0.138
    "cam": (0.9999, 0.03, 0.9999, 0.01),  # 1.0000 / 0.0139, 1.0000 / 0.0021
    "contrastive_excitation_backprop": (0.999, 0.15, 0.9999, 0.015),  # 0.9996 / 0.084, 1.0000 / 0.0057
    "deconvnet": (0.985, 0.30, 0.998, 0.15),  # 0.9924 / 0.208, 0.9991 / 0.105
    "excitation_backprop": (0.9999, 0.02, 0.9999, 0.01),  # 1.0000 / 0.0083, 1.0000 / 0.0035
    "gnl_gradient": (0.98, 0.85, 0.98, 0.85),  # 0.9900 / 0.711, 0.9897 / 0.722
    "gnl_integrated_gradients": (0.985, 0.45, 0.995, 0.25),  # 0.9925 / 0.305, 0.9979 / 0.148
    "grad_cam": (0.9999, 0.03, 0.9999, 0.01),  # 1.0000 / 0.0123, 1.0000 / 0.0021
    "gradient": (0.975, 0.35, 0.994, 0.25),  # 0.9833 / 0.237, 0.9970 / 0.176
    "guided_backprop": (0.996, 0.22, 0.999, 0.15),  # 0.9983 / 0.144, 0.9996 / 0.094
    "input_x_gradient": (0.975, 0.33, 0.993, 0.20),  # 0.9824 / 0.223, 0.9963 / 0.133
    "integrated_gradients": (0.94, 1.0, 0.99, 0.35),  # 0.9530 / 0.903, 0.9944 / 0.25
    "lrp": (0.999, 0.14, 0.9998, 0.035),  # 0.9995 / 0.091, 0.9999 / 0.0215
    "rsp": (0.997, 0.25, 0.9995, 0.09),  # 0.9987 / 0.167, 0.9998 / 0.059
    "smoothgrad": (0.98, 0.35, 0.997, 0.15),  # 0.9857 / 0.24, 0.9986 / 0.101
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
            scale = float(np.max(np.abs(ref[i])))
            assert scale > 0, f"{method}: the float32 map of image {i} is all zero"
            corr = float(np.corrcoef(a[i].ravel(), ref[i].ravel())[0, 1])
            err = float(np.max(np.abs(a[i] - ref[i]))) / scale
            assert corr >= min_corr, f"{method} {name} image {i}: correlation {corr:.4f} < {min_corr}"
            assert err <= max_err, f"{method} {name} image {i}: max error {err:.3g} x max|map| > {max_err}"


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
