"""Spearman, SSIM and cascading parameter randomisation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict, freeze

from xattr_jax.metrics import (
    cascading_randomization,
    randomization_sensitivity,
    rankdata,
    spearman,
    spearman_abs,
    ssim,
)


def test_spearman_with_ties_by_hand():
    a = [1.0, 2.0, 2.0, 3.0]  # ranks 1, 2.5, 2.5, 4
    b = [1.0, 3.0, 2.0, 4.0]  # ranks 1, 3, 2, 4
    np.testing.assert_allclose(rankdata(a), [1, 2.5, 2.5, 4])
    # centred ranks (mean 2.5): a -> -1.5, 0, 0, 1.5; b -> -1.5, 0.5, -0.5, 1.5
    # Σ ab = 2.25 + 0 + 0 + 2.25 = 4.5; Σ a² = 4.5; Σ b² = 5  ->  ρ = 4.5 / sqrt(22.5)
    assert spearman(a, b) == pytest.approx(4.5 / math.sqrt(22.5), abs=1e-12)
    assert spearman(np.array(a).reshape(2, 2), np.array(b).reshape(2, 2)) == pytest.approx(
        0.9486833, abs=1e-7
    )
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, [-v for v in a]) == pytest.approx(-1.0)
    # |.|: [-3, 1, 2] vs [3, 1, 2] are perfectly rank-correlated in absolute value
    assert spearman_abs([-3.0, 1.0, 2.0], [3.0, 1.0, 2.0]) == pytest.approx(1.0)
    assert spearman([-3.0, 1.0, 2.0], [3.0, 1.0, 2.0]) == pytest.approx(-0.5)
    assert math.isnan(spearman([1.0, 1.0], [1.0, 2.0]))


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=(9, 11)), 1)
    b = np.round(a + rng.normal(size=a.shape), 1)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)


def _ssim_direct(a, b, win, sigma, L, k1=0.01, k2=0.03):
    """Window by window, float64, straight from the definition."""
    d = np.arange(win) - (win - 1) / 2
    g = np.exp(-(d**2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    vals = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            pa, pb = a[i : i + win, j : j + win], b[i : i + win, j : j + win]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim():
    rng = np.random.default_rng(0)
    a = rng.random((16, 18))
    b = a + 0.3 * rng.normal(size=a.shape)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    L = max(a.max(), b.max()) - min(a.min(), b.min())
    assert ssim(a, b) == pytest.approx(_ssim_direct(a, b, 11, 1.5, L), abs=1e-10)
    assert ssim(a, b, win_size=7, sigma=1.0, data_range=1.0) == pytest.approx(
        _ssim_direct(a, b, 7, 1.0, 1.0), abs=1e-10
    )
    # two constants 0 and 1 (L = 1): σ = 0, so SSIM = (2·0·1 + C1) / (0 + 1 + C1) · C2 / C2
    # with C1 = (0.01 · 1)² = 1e-4  ->  1e-4 / 1.0001
    assert ssim(np.zeros((11, 11)), np.ones((11, 11))) == pytest.approx(1e-4 / 1.0001, rel=1e-9)
    assert ssim(np.full((12, 12), 2.0), np.full((12, 12), 2.0)) == 1.0
    with pytest.raises(ValueError, match="smaller than"):
        ssim(np.zeros((5, 5)), np.zeros((5, 5)))
    with pytest.raises(ValueError, match="same shape"):
        ssim(np.zeros((12, 12)), np.zeros((12, 13)))


def _params():
    rng = np.random.default_rng(0)
    return {
        "features": {
            "0": {
                "kernel": jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32),
                "bias": jnp.full((4,), -5.0),
            },
            "2": {
                "kernel": jnp.asarray(rng.normal(size=(3, 3, 4, 4)), jnp.float32),
                "bias": jnp.full((4,), -5.0),
            },
        },
        "classifier": {
            "0": {
                "kernel": jnp.asarray(rng.normal(size=(64, 10)), jnp.float32),
                "bias": jnp.full((10,), -5.0),
            }
        },
    }


def _same(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


def test_cascading_randomization_order_and_inits():
    p = _params()
    orig = jax.tree_util.tree_map(np.array, p)
    order = ["classifier.0", "features.2", "features.0"]
    steps = list(cascading_randomization(p, order, jax.random.PRNGKey(0)))
    assert [name for name, _ in steps] == order
    changed = lambda q, layer: not _same(
        q[layer.split(".")[0]][layer.split(".")[1]],  # noqa: E731
        orig[layer.split(".")[0]][layer.split(".")[1]],
    )
    # step k randomised exactly order[:k+1]
    for k, (_, q) in enumerate(steps):
        for j, layer in enumerate(order):
            assert changed(q, layer) == (j <= k), (k, layer)
    # cumulative: a layer keeps the random value it got when it was first randomised
    assert _same(steps[0][1]["classifier"], steps[2][1]["classifier"])
    assert _same(steps[1][1]["features"]["2"], steps[2][1]["features"]["2"])
    # the input is untouched
    assert _same(p, orig)
    # Glorot-uniform kernels within ±sqrt(6 / (fan_in + fan_out)); biases U(0, 1)
    last = steps[-1][1]
    lim_conv = math.sqrt(6 / (3 * 9 + 4 * 9))  # [3, 3, 3, 4]: fan_in 27, fan_out 36
    lim_fc = math.sqrt(6 / (64 + 10))
    k0 = np.asarray(last["features"]["0"]["kernel"])
    assert np.abs(k0).max() <= lim_conv and np.abs(k0).max() > 0.5 * lim_conv
    assert np.abs(np.asarray(last["classifier"]["0"]["kernel"])).max() <= lim_fc
    for layer in ("0", "2"):
        b = np.asarray(last["features"][layer]["bias"])
        assert b.min() >= 0 and b.max() < 1
    # same key -> same sequence; a FrozenDict comes back frozen
    again = list(cascading_randomization(freeze(p), order, jax.random.PRNGKey(0)))
    assert isinstance(again[0][1], FrozenDict)
    assert _same(again[-1][1], last)


def test_cascading_randomization_errors():
    p = _params()
    with pytest.raises(KeyError, match="available"):
        cascading_randomization(p, ["features.5"], jax.random.PRNGKey(0))
    with pytest.raises(KeyError, match="variables\\['params'\\]"):
        cascading_randomization({"params": p}, ["features.0"], jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="repeated"):
        cascading_randomization(p, ["features.0", "features.0"], jax.random.PRNGKey(0))


def test_randomization_sensitivity():
    p = _params()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 12, 12, 3)), jnp.float32)

    def explain(params, x, target):
        # depends on features.0 only: a 1x1 "conv" by the centre tap of its kernel, summed
        w = params["features"]["0"]["kernel"][1, 1]  # [3, 4]
        return jnp.einsum("nhwc,cd->nhw", x, w) + 0.0 * target[:, None, None]

    out = randomization_sensitivity(
        explain,
        p,
        ["classifier.0", "features.2", "features.0"],
        x,
        jnp.array([0, 1]),
        jax.random.PRNGKey(0),
        ssim_kwargs={"win_size": 7},
        return_maps=True,
    )
    assert out["layers"] == ["classifier.0", "features.2", "features.0"]
    assert out["spearman"].shape == (3, 2) and out["maps"].shape == (4, 2, 12, 12)
    # the map ignores the first two randomised layers: identical maps
    np.testing.assert_allclose(out["spearman"][:2], 1.0, atol=1e-12)
    np.testing.assert_allclose(out["spearman_abs"][:2], 1.0, atol=1e-12)
    np.testing.assert_allclose(out["ssim"][:2], 1.0, atol=1e-12)
    # randomising features.0 changes it
    assert np.all(out["spearman"][2] < 0.99)
    assert np.all(out["ssim"][2] < 0.99)
