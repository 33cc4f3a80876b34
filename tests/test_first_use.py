"""What a new user touches first: the layer table, a result naming its layer, constants, ``xa.show``."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from _nets import random_variables

DOCS = Path(__file__).resolve().parents[1] / "docs"


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(6, (3, 3))(x))
        return nn.Dense(5)(jnp.mean(x, axis=(1, 2)))


X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)
T = jnp.array([1, 3])


@pytest.fixture(scope="module")
def model():
    m = CNN()
    return m, random_variables(m, X)


def test_layer_table_prints_as_a_table_and_iterates(model):
    table = xa.layers(*model, X)
    lines = repr(table).splitlines()
    assert lines[0].split() == ["name", "kind", "shape", "source"], lines[0]
    assert len(lines) == len(table) + 1, "one line per layer under the header"
    for line, l in zip(lines[1:], table):
        assert line.split()[:2] == [l.name, l.kind or "container"], (line, l)
    assert str(table) == repr(table)
    assert [l.kind for l in table if l.kind == "conv"] == ["conv", "conv"], "still a tuple of rows"


def test_result_names_its_method_and_layer_also_under_jit(model):
    m, v = model
    res = xa.explain(m, v, X, T, method="grad_cam")
    table = {l.name: l for l in xa.layers(m, v, X)}
    assert res.method == "grad_cam" and res.layer in table, (res.method, res.layer)
    assert res.map.shape[1:] == table[res.layer].shape[1:3], "the map is at the layer it names"
    again = xa.explain(m, v, X, T, method="grad_cam", layer=res.layer)
    np.testing.assert_array_equal(again.map, res.map, err_msg="the named layer is the default's (exact)")
    fn = xa.attributor(m, "gradient")
    jitted = jax.jit(lambda t: fn(v, X, t))(T)
    assert (jitted.method, jitted.layer) == ("gradient", "input")
    assert len(jax.tree_util.tree_leaves(jitted)) == 3, "method and layer are not leaves"


def test_an_attributor_is_a_frozen_callable_value(model):
    m, v = model
    fn = xa.attributor(m, "gradient")
    assert isinstance(fn, xa.Attributor) and (fn.method, fn.layer) == ("gradient", None), repr(fn)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fn.layer = "Conv_0"
    assert {fn: 1}[fn] == 1, "hashable (by identity), as a function is"
    eager = fn(v, X, T)
    np.testing.assert_array_equal(jax.jit(fn)(v, X, T).map, eager.map, err_msg="jax.jit(fn) == fn (exact)")
    assert fn.lower(v, X, T).as_text() == fn.program.lower(v, X, T, None).as_text(), "lower() lowers the one program"
    assert fn.chunk_program is None, "only path methods have a chunk program"
    assert fn.trace_count() == 1, f"one trace for the call, jax.jit(fn) and lower(): {fn.trace_count()}"


def test_constants_are_arrays():
    for name, want in (("IMAGENET_MEAN", (0.485, 0.456, 0.406)), ("IMAGENET_STD", (0.229, 0.224, 0.225))):
        a = getattr(xa, name)
        assert isinstance(a, np.ndarray) and a.shape == (3,), f"{name} is a [3] array, got {type(a)}"
        np.testing.assert_allclose(a, want, rtol=1e-7, err_msg=f"{name} (float32 rounding)")
    img = np.ones((2, 2, 3), np.float32)
    assert (img * xa.IMAGENET_STD + xa.IMAGENET_MEAN).shape == (2, 2, 3), "arithmetic with images works"


def test_show_draws_a_result_in_one_call(model):
    m, v = model
    res = xa.explain(m, v, X, T, method="gradient")
    names = [f"c{i}" for i in range(5)]
    fig = xa.show(res, X, T, class_names=names)
    assert fig.get_suptitle().startswith("gradient at input"), fig.get_suptitle()
    z = np.asarray(res.logits, np.float64)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    heads = [ax.get_title() for ax in fig.axes[:2]]
    for i, h in enumerate(heads):
        assert h == f"c{int(T[i])}\nsoftmax p {p[i, T[i]]:.3g}", h
    one = xa.show(res._replace(map=res.map[:1], logits=res.logits[:1]), X[:1])
    assert len([ax for ax in one.axes if ax.images]) == 2, "one example: input and its overlay"
    with pytest.raises(ValueError, match="same N"):
        xa.show(res, X[:1])


def test_visualisation_doc_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "visualisation.md").read_text(), re.S)
    assert len(blocks) >= 2, "the page's two examples"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile("\n".join(blocks[:2]), "visualisation.md", "exec"), scope)
    assert (tmp_path / "grad_cam.png").is_file() and (tmp_path / "grad_cam.pdf").is_file()
    assert scope["fig"].get_suptitle().startswith("grad_cam"), scope["fig"].get_suptitle()


def test_api_reference_is_current():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(DOCS / "make_api.py"), "--check"], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
