"""Channels-first programs read out channels-last through concatenation, padding and slicing.

The same inception-like net written NHWC and NCHW (the NCHW one transposes the NHWC input first,
as ``converters.torch`` does): two conv+ReLU branches concatenated on the channel axis, a max-pool
of the zero-padded concatenation, a channel slice, a pool and a dense layer. The layer table must
list the NCHW program's maps with their channels last, and every read-out (the table's shapes,
Excitation Backprop and Grad-CAM at the pool after the concatenation) must equal the NHWC
program's. Before the channel axis was tracked through ``concatenate``/``pad``/``slice`` the NCHW
max-pool's map came back ``[N, C, H]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa

REL = 1e-6  # max |NCHW map - NHWC map| / max |NHWC map|: the same float32 operations, reordered


def _net(layout):
    """``f(params, x_nhwc)`` computing in ``layout`` ("NHWC" or "NCHW")."""
    c = layout.index("C")
    spatial = tuple(i for i in range(4) if layout[i] in "HW")

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=(layout, "HWIO", layout))

    def f(p, x):
        if layout == "NCHW":
            x = jnp.transpose(x, (0, 3, 1, 2))
        a = jax.nn.relu(conv(x, p["a"]["w"]))
        b = jax.nn.relu(conv(x, p["b"]["w"]))
        h = jnp.concatenate([a, b], axis=c)
        pad = [(0, 0)] * 4
        for d in spatial:
            pad[d] = (1, 1)
        h = jnp.pad(h, pad)
        window = tuple(2 if d in spatial else 1 for d in range(4))
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, window, window, "VALID")
        h = jax.lax.slice_in_dim(h, 0, 5, axis=c)  # the first five channels
        return jnp.mean(h, axis=spatial) @ p["fc"]["w"]

    return f


@pytest.fixture(scope="module")
def nets():
    k = jax.random.split(jax.random.key(0), 4)
    p = {"a": {"w": jax.random.normal(k[0], (3, 3, 3, 4))}, "b": {"w": jax.random.normal(k[1], (3, 3, 3, 3))},
         "fc": {"w": jax.random.normal(k[2], (5, 6))}}
    x = jax.random.normal(k[3], (2, 8, 10, 3))
    return _net("NHWC"), _net("NCHW"), p, x


def test_table_lists_channels_last(nets):
    nhwc, nchw, p, x = nets
    rows_last = {r.name: r for r in xa.layers(nhwc, p, x)}
    rows_first = {r.name: r for r in xa.layers(nchw, p, x)}
    pool = [n for n, r in rows_first.items() if r.kind == "maxpool"]
    assert len(pool) == 1, f"expected one maxpool layer, got table {list(rows_first)}"
    assert rows_first[pool[0]].shape == (2, 5, 6, 7), (
        f"the NCHW max-pool of the padded concat must read as NHWC [2, 5, 6, 7], got {rows_first[pool[0]].shape}"
    )
    assert {n: r.shape for n, r in rows_first.items()} == {n: r.shape for n, r in rows_last.items()}


@pytest.mark.parametrize("method", ["excitation_backprop", "grad_cam"])
def test_maps_at_the_pool_equal_the_channels_last_program(nets, method):
    nhwc, nchw, p, x = nets
    pool = [r.name for r in xa.layers(nchw, p, x) if r.kind == "maxpool"][0]
    t = jnp.array([1, 3])
    ref = xa.explain(nhwc, p, x, t, method=method, layer=pool)
    got = xa.explain(nchw, p, x, t, method=method, layer=pool)
    assert got.map.shape == ref.map.shape == (2, 5, 6), f"{method}: map shapes {got.map.shape}, {ref.map.shape}"
    assert got.relevance.shape == ref.relevance.shape == (2, 5, 6, 7)
    scale = float(jnp.max(jnp.abs(ref.map)))
    assert scale > 0, f"{method}: the NHWC reference map is all zero"
    err = float(jnp.max(jnp.abs(got.map - ref.map)))
    assert err <= REL * scale, f"{method}: NCHW map off the NHWC one by {err / scale:.3g} x max (tolerance {REL})"
    np.testing.assert_allclose(np.asarray(got.relevance), np.asarray(ref.relevance), rtol=0, atol=REL * float(
        jnp.max(jnp.abs(ref.relevance))), err_msg=f"{method}: relevance at {pool}, tolerance {REL} x max")
