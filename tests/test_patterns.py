"""The layer patterns table (``xattr_jax.program.patterns.PATTERNS``), one entry at a time.

Each pattern has a short program of its own below. The test traces it and checks the layer kinds
found; then it takes that one pattern out of the table and traces again: the kinds must change,
so each program exercises its own entry and no other entry covers for it. A last test asserts every
entry of the table has its program here, and that the documentation's kinds table is the one
generated from the patterns.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax.program.layers as layers_module
from xattr_jax.program import trace
from xattr_jax.program.patterns import PATTERNS, patterns_table

X = np.asarray(jax.random.normal(jax.random.key(0), (1, 4, 4, 3)), np.float32)
CONV = ("NHWC", "HWIO", "NHWC")


def _conv(v, x):
    return jax.lax.conv_general_dilated(x, v["w"], (1, 1), "SAME", dimension_numbers=CONV) + v["b"][None, None, None]


def _x_kernel(v, x):  # a constant image convolved with a kernel made of x
    return jax.lax.conv_general_dilated(np.ones((1, 6, 6, 3), np.float32), x[0][..., None], (1, 1), "VALID",
                                        dimension_numbers=CONV)


def _spatial_map(weights):
    def model(v, x):  # a linear map of the rows by a constant matrix (adaptive pooling written by hand)
        return jnp.einsum("nhwc,hk->nkwc", x, weights)
    return model


# (kind, the matcher's name) -> (model(v, x), its variables, the layer kinds it has)
EXAMPLES = {
    ("norm", "_region.<locals>.match"): (lambda v, x: jax.nn.standardize(x, axis=-1), {}, ["norm"]),
    ("softmax", "_region.<locals>.match"): (lambda v, x: jax.nn.softmax(x), {}, ["softmax"]),
    ("activation", "_region.<locals>.match"): (lambda v, x: jnp.tanh(x), {}, ["activation"]),
    ("other", "_x_kernel"): (_x_kernel, {}, ["other"]),
    ("avgpool", "_constant_map.<locals>.match"): (_spatial_map(np.full((4, 2), 0.5, np.float32)), {}, ["avgpool"]),
    ("other", "_constant_map.<locals>.match"): (_spatial_map(np.array([[1, -1]] * 4, np.float32)), {}, ["other"]),
    ("conv", "_linear"): (_conv, {"w": np.ones((3, 3, 3, 2), np.float32), "b": np.zeros(2, np.float32)}, ["conv"]),
    ("dense", "_linear"): (lambda v, x: x.reshape(1, -1) @ v["w"] + v["b"][None],
                           {"w": np.ones((48, 2), np.float32), "b": np.zeros(2, np.float32)}, ["dense"]),
    ("relu", "_rectifier"): (lambda v, x: jnp.clip(x, 0, 6), {}, ["relu"]),
    ("relu", "_where_rectifier"): (lambda v, x: jnp.where(x > 0, x, 0.0), {}, ["relu"]),
    ("gate", "_gate"): (lambda v, x: x * jax.nn.sigmoid(jnp.sum(x, axis=(1, 2), keepdims=True)), {},
                        ["avgpool", "activation", "gate"]),
    ("product", "_product"): (lambda v, x: x * jnp.tanh(jnp.sum(x, axis=(1, 2), keepdims=True)), {},
                              ["avgpool", "activation", "product"]),
    ("maxpool", "_maxpool"): (lambda v, x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1),
                                                                 (1, 2, 2, 1), "VALID"), {}, ["maxpool"]),
    ("avgpool", "_sum_pool"): (lambda v, x: jnp.mean(x, axis=(1, 2)), {}, ["avgpool"]),
    ("add", "_residual"): (lambda v, x: jnp.maximum(x, 0) + x, {}, ["relu", "add"]),
    (None, "_scaling"): (lambda v, x: x / 255.0, {}, []),
    ("batchnorm", "_batchnorm"): (lambda v, x: (x - v["mu"][None, None, None]) * v["g"][None, None, None],
                                  {"mu": np.zeros(3, np.float32), "g": np.ones(3, np.float32)}, ["batchnorm"]),
    (None, "_shape"): (lambda v, x: x.reshape(1, -1), {}, []),
    (None, "_selection"): (  # torch's safe softmax: rows of -inf give 0
        lambda v, x: jnp.where(jnp.all(x == -jnp.inf, axis=-1, keepdims=True), 0.0, jax.nn.softmax(x)), {},
        ["softmax"]),
}


def _key(p):
    return (p.kind, p.match.__qualname__)


def _layers(model, v):
    return [(l.kind, l.shape) for l in trace(model, v, X).layers if l.kind is not None]


@pytest.mark.parametrize("index", range(len(PATTERNS)), ids=[f"{p.kind}-{p.match.__qualname__}" for p in PATTERNS])
def test_each_pattern_finds_its_layer_and_only_it_does(index, monkeypatch):
    pattern = PATTERNS[index]
    model, v, want = EXAMPLES[_key(pattern)]
    found = _layers(model, v)
    assert [k for k, _ in found] == want, f"{_key(pattern)}: found {found}, expected kinds {want}"
    monkeypatch.setattr(layers_module, "PATTERNS", PATTERNS[:index] + PATTERNS[index + 1:])
    without = _layers(model, v)
    assert without != found, f"{_key(pattern)}: its program gives the same layers {found} without the pattern"


def test_every_pattern_has_its_program_and_the_docs_table_is_generated():
    assert sorted(map(str, EXAMPLES)) == sorted(str(_key(p)) for p in PATTERNS), "one program per pattern entry"
    doc = (Path(__file__).parents[1] / "docs" / "your_model.md").read_text()
    committed = doc.split("<!-- patterns-table -->\n", 1)[1].split("\n<!-- /patterns-table -->", 1)[0]
    assert committed == patterns_table(), "docs/your_model.md's kinds table is stale: paste patterns_table()'s output"


def test_a_relu_written_as_where_gets_every_relu_rule():
    """The ``jnp.where`` rectifier is a ``relu`` layer to every method: Excitation Backprop runs on it
    (an ``activation`` would be refused) and gives the map of the same network written with
    ``jnp.maximum``; guided backprop's too."""
    import xattr_jax as xa

    w = np.asarray(jax.random.normal(jax.random.key(1), (3, 3, 3, 4)), np.float32)
    d = np.asarray(jax.random.normal(jax.random.key(2), (4, 5)), np.float32)

    def net(relu):
        def model(v, x):
            h = relu(jax.lax.conv_general_dilated(x, v["w"], (1, 1), "SAME", dimension_numbers=CONV))
            return jnp.mean(h, axis=(1, 2)) @ v["d"]
        return model

    x = np.asarray(jax.random.normal(jax.random.key(3), (2, 8, 8, 3)), np.float32)
    v = {"w": w, "d": d}
    where, maximum = net(lambda z: jnp.where(z > 0, z, 0.0)), net(lambda z: jnp.maximum(z, 0.0))
    assert np.array_equal(np.asarray(where(v, x)), np.asarray(maximum(v, x)))
    for method in ("excitation_backprop", "guided_backprop", "lrp", "rsp"):
        a = np.asarray(xa.explain(where, v, x, jnp.array([1, 3]), method=method, layer="input").map)
        b = np.asarray(xa.explain(maximum, v, x, jnp.array([1, 3]), method=method, layer="input").map)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max(),
                                   err_msg=f"{method}: where-ReLU map differs from the maximum-ReLU map by > 1e-6 × max")
