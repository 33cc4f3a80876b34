"""Deletion / insertion (RISE) against a plain numpy loop written here."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xattr_jax.metrics import curve_auc, deletion, gaussian_blur, gaussian_kernel, insertion

_W = np.array([[2.0, -1.0, 0.5], [-1.5, 3.0, 1.0], [0.3, 0.2, -2.5], [1.0, 1.0, 1.0]])  # [C=4, 3]
_B = np.array([0.1, -0.2, 0.0, 0.3])


def predict_np(images):
    """softmax(W · mean colour + b): a closed-form classifier of the mean colour."""
    x = np.asarray(images, np.float64)
    z = x.mean(axis=(1, 2)) @ _W.T + _B
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _blur_loop(img, klen=11, sigma=5.0):
    """Direct per-channel correlation with zero padding klen // 2, float64."""
    c = klen // 2
    g = np.exp(-((np.arange(klen) - c) ** 2) / (2 * sigma**2))
    k = np.outer(g, g)
    k /= k.sum()
    h, w, ch = img.shape
    pad = np.zeros((h + 2 * c, w + 2 * c, ch))
    pad[c : c + h, c : c + w] = img
    out = np.zeros_like(img, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            out[i, j] = np.einsum("ab,abc->c", k, pad[i : i + klen, j : j + klen])
    return out


def _reference(img, sal, target, step, start, finish):
    """The curve by a plain loop: pixels by decreasing saliency, ties by row-major index."""
    h, w, _ = img.shape
    hw = h * w
    order = sorted(range(hw), key=lambda p: (-sal.ravel()[p], p))
    n = math.ceil(hw / step)
    scores = []
    for i in range(n + 1):
        cur = start.copy().reshape(hw, -1)
        for p in order[: min(i * step, hw)]:
            cur[p] = finish.reshape(hw, -1)[p]
        scores.append(predict_np(cur.reshape(1, h, w, -1))[0, target])
    s = np.array(scores)
    return s, (s.sum() - s[0] / 2 - s[-1] / 2) / n


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 7, 3)).astype(np.float32)  # HW = 35
    maps = np.round(rng.random((3, 5, 7)) * 4) / 4  # quantised: many ties
    return x, maps.astype(np.float32)


def test_auc_formula_by_hand():
    # curve 1, 0.5, 0 over n = 2 steps: (1.5 - 0.5 - 0) / 2 = 0.5
    assert curve_auc([1.0, 0.5, 0.0]) == pytest.approx(0.5)
    # constant curve c -> c
    assert curve_auc(np.full(9, 0.3)) == pytest.approx(0.3)


@pytest.mark.parametrize("step", [8, 5, 35, 50, 1])  # 8 does not divide 35; 5 does; one step; step > HW
def test_deletion_matches_numpy_loop(data, step):
    x, maps = data
    target = np.array([0, 2, 3])
    res = deletion(predict_np, x, maps, target, step=step, batch_size=4)
    n = math.ceil(35 / step)
    assert res.curve.shape == (3, n + 1) and res.auc.shape == (3,)
    for i in range(3):
        s, auc = _reference(
            x[i].astype(np.float64),
            maps[i],
            target[i],
            step,
            x[i].astype(np.float64),
            np.zeros_like(x[i], np.float64),
        )
        np.testing.assert_allclose(res.curve[i], s, atol=1e-6, rtol=0)
        assert res.auc[i] == pytest.approx(auc, abs=1e-6)


@pytest.mark.parametrize("substrate", ["blur", "zero"])
def test_insertion_matches_numpy_loop(data, substrate):
    x, maps = data
    target = np.array([1, 1, 0])
    res = insertion(predict_np, x, maps, target, step=8, substrate=substrate, batch_size=5)
    for i in range(3):
        xi = x[i].astype(np.float64)
        start = _blur_loop(xi) if substrate == "blur" else np.zeros_like(xi)
        s, auc = _reference(xi, maps[i], target[i], 8, start, xi)
        np.testing.assert_allclose(res.curve[i], s, atol=1e-6, rtol=0)
        assert res.auc[i] == pytest.approx(auc, abs=1e-6)
        # insertion ends on the original image, deletion on the substrate
        assert res.curve[i, -1] == pytest.approx(predict_np(xi[None])[0, target[i]], abs=1e-6)


def test_deletion_blur_substrate_and_batching(data):
    x, maps = data
    ref = deletion(predict_np, x, maps, [0, 1, 2], step=8, substrate="blur", batch_size=1)
    for bs in (3, 7, 100):
        res = deletion(predict_np, x, maps, [0, 1, 2], step=8, substrate="blur", batch_size=bs)
        np.testing.assert_allclose(res.curve, ref.curve, atol=1e-12)
    blurred = np.stack([_blur_loop(xi.astype(np.float64)) for xi in x])
    np.testing.assert_allclose(ref.curve[:, -1], predict_np(blurred)[np.arange(3), [0, 1, 2]], atol=1e-6)


def test_blur_matches_loop():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 13, 16, 3)).astype(np.float32)
    out = np.asarray(gaussian_blur(x))
    for i in range(2):
        np.testing.assert_allclose(out[i], _blur_loop(x[i].astype(np.float64)), atol=1e-6)
    k = gaussian_kernel(11, 5.0)
    assert k.shape == (11, 11) and k.sum() == pytest.approx(1.0) and k[5, 5] == k.max()


def test_default_target_is_top1_and_jax_predict(data):
    x, maps = data

    @jax.jit
    def predict_jax(images):
        z = (
            jnp.mean(images, axis=(1, 2)) @ jnp.asarray(_W.T, jnp.float32)
            + jnp.asarray(_B, jnp.float32)[None]
        )
        return jax.nn.softmax(z, axis=-1)

    res = deletion(predict_jax, x, maps, step=8, batch_size=6)
    np.testing.assert_array_equal(res.target, np.argmax(predict_np(x), axis=1))
    ref = deletion(predict_np, x, maps, res.target, step=8)
    np.testing.assert_allclose(res.curve, ref.curve, atol=1e-5)


def test_deletion_validation(data):
    x, maps = data
    with pytest.raises(ValueError, match="resize maps"):
        deletion(predict_np, x, maps[:, :4], [0, 0, 0])
    with pytest.raises(ValueError, match="step"):
        deletion(predict_np, x, maps, [0, 0, 0], step=0)
    with pytest.raises(ValueError, match="target must be in"):
        deletion(predict_np, x, maps, [0, 0, 9], step=35)
    with pytest.raises(ValueError, match="substrate"):
        deletion(predict_np, x, maps, [0, 0, 0], substrate="noise")
    bad = maps.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        insertion(predict_np, x, bad, [0, 0, 0])
    with pytest.raises(ValueError, match=r"\[B, num_classes\]"):
        deletion(lambda im: np.zeros((1,)), x, maps, [0, 0, 0])
