"""Training script for the embedded models: a few steps only (the full run is documented)."""

import json

import jax
import numpy as np
import pytest

from xattr_jax.app.train import (
    TrainConfig,
    average_precision,
    main,
    mean_average_precision,
    save_trained,
    train,
)
from xattr_jax.checkpoint import load_checkpoint


def test_average_precision_known_values():
    # perfect ranking -> 1
    assert average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == pytest.approx(1.0, abs=1e-12)
    # positives at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7], [1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2, abs=1e-12)
    # no positive -> NaN, left out of the mean
    assert np.isnan(average_precision([0.3, 0.2], [0, 0]))
    m, ap = mean_average_precision(np.array([[0.9, 0.1], [0.1, 0.2]]), np.array([[1, 0], [0, 0]]))
    assert m == pytest.approx(1.0, abs=1e-12) and np.isnan(ap[1])


def test_average_precision_matches_bruteforce():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=50), rng.random(50) < 0.3
    order = np.argsort(-s)
    precisions = [y[order][: k + 1].mean() for k in range(50) if y[order][k]]
    assert average_precision(s, y) == pytest.approx(np.mean(precisions), abs=1e-12)


def _config(arch):
    return TrainConfig(arch=arch, steps=6, batch_size=8, lr=3e-3, warmup=1, train_size=16,
                       held_out_size=12)  # fmt: skip


_RUNS = {}


def _run(arch):
    if arch not in _RUNS:
        _RUNS[arch] = train(_config(arch), log_every=2)
    return _RUNS[arch]


@pytest.mark.parametrize("arch", ["small_vgg", "small_resnet"])
def test_a_few_training_steps_run_and_save(arch, tmp_path):
    cfg = _config(arch)
    res = _run(arch)
    assert np.all(np.isfinite(res.losses)) and res.losses.shape == (3,)
    assert 0.0 <= res.held_out_map <= 1.0
    if arch == "small_resnet":  # batch statistics were updated in training mode
        means = jax.tree_util.tree_leaves(res.variables["batch_stats"])
        assert any(float(np.abs(np.asarray(m)).max()) > 0 for m in means)
    path = save_trained(res, cfg, tmp_path / arch)
    model, variables = load_checkpoint(path)
    record = json.loads((path / "training.json").read_text())
    assert record["held_out_map"] == pytest.approx(res.held_out_map, abs=1e-6)
    x = np.zeros((1, 64, 64, 3), np.float32)
    np.testing.assert_allclose(model.apply(variables, x), res.model.apply(res.variables, x),
                               rtol=0, atol=1e-6)  # fmt: skip


def test_training_is_deterministic():
    a, b = _run("small_vgg"), train(_config("small_vgg"), log_every=2)
    for u, v in zip(jax.tree_util.tree_leaves(a.variables), jax.tree_util.tree_leaves(b.variables)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_command_line(tmp_path, capsys):
    out = tmp_path / "ckpt"
    rc = main(["--arch", "small_vgg", "--out", str(out), "--steps", "6", "--batch-size", "8",
               "--lr", "3e-3", "--train-size", "16", "--held-out-size", "12", "--quiet"])  # fmt: skip
    assert rc == 0 and (out / "training.json").is_file()
    assert "held-out mAP" in capsys.readouterr().out
    # refuses to overwrite without --overwrite
    rc = main(["--arch", "small_vgg", "--out", str(out), "--steps", "6", "--batch-size", "8",
               "--lr", "3e-3", "--train-size", "16", "--held-out-size", "12", "--quiet"])  # fmt: skip
    assert rc == 1
