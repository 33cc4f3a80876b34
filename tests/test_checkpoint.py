"""xattr_jax.checkpoint: bit-exact round trip and clear errors; no torch needed."""

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xattr_jax.checkpoint import METADATA_FILE, load_checkpoint, save_checkpoint
from xattr_jax.models import build


def _random_variables(arch: str, seed: int = 0, **kwargs):
    """Variables of the right structure filled with random float32 (no model.init needed)."""
    model = build(arch, **kwargs)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def variables():
    return _random_variables("resnet18", num_classes=10)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, variables):
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "r18", "resnet18", variables, num_classes=10
    )


def _assert_bit_exact(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb], "same tree paths"
    for (path, x), (_, y) in zip(la, lb, strict=True):
        assert np.asarray(y).dtype == np.asarray(x).dtype, (
            f"{jax.tree_util.keystr(path)}: dtype kept"
        )
        assert np.array_equal(np.asarray(x), np.asarray(y)), (
            f"{jax.tree_util.keystr(path)}: bit-exact"
        )


def test_round_trip_is_bit_exact(saved, variables):
    model, restored = load_checkpoint(saved)
    assert model == build("resnet18", num_classes=10)
    assert set(restored) == {"params", "batch_stats"}
    _assert_bit_exact(variables, restored)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 40, 56, 3)), jnp.float32)
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(
        np.asarray(apply(restored, x)),
        np.asarray(apply(variables, x)),
        err_msg="outputs of restored variables are identical",
    )


def test_round_trip_without_batch_stats(tmp_path):
    v = _random_variables("alexnet", num_classes=3)
    assert set(v) == {"params"}
    model, restored = load_checkpoint(save_checkpoint(tmp_path / "a", "alexnet", v, num_classes=3))
    assert model.num_classes == 3 and set(restored) == {"params"}
    _assert_bit_exact(v, restored)


def test_metadata(saved):
    meta = json.loads((saved / METADATA_FILE).read_text())
    assert meta == {
        "format": "xattr-jax-checkpoint",
        "version": 1,
        "arch": "resnet18",
        "model_kwargs": {"num_classes": 10},
    }


def test_overwrite_policy(tmp_path, variables):
    path = save_checkpoint(tmp_path / "c", "resnet18", variables, num_classes=10)
    (path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        save_checkpoint(path, "resnet18", variables, num_classes=10)
    other = jax.tree_util.tree_map(lambda a: a + 1, variables)
    save_checkpoint(path, "resnet18", other, overwrite=True, num_classes=10)
    _assert_bit_exact(other, load_checkpoint(path)[1])
    assert (path / "notes.txt").read_text() == "keep me"
    (tmp_path / "d").mkdir()  # an existing empty directory is fine
    save_checkpoint(tmp_path / "d", "resnet18", variables, num_classes=10)


def test_save_refuses_variables_that_do_not_fit(tmp_path, variables):
    with pytest.raises(
        ValueError,
        match=r"(?s)do not fit resnet18.*"
        r"\['fc'\]\['kernel'\]: expected \(512, 1000\), got \(512, 10\)",
    ):
        save_checkpoint(tmp_path / "x", "resnet18", variables)  # num_classes forgotten
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'.*resnet18"):
        save_checkpoint(tmp_path / "x", "resnet19", variables)
    with pytest.raises(ValueError, match="keyword arguments"):
        save_checkpoint(tmp_path / "x", "resnet18", variables, width=2)
    assert not (tmp_path / "x").exists()


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_checkpoint(tmp_path / "nothing_here")


def test_foreign_directory(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "model.bin").write_bytes(b"\0" * 8)
    with pytest.raises(
        ValueError, match=f"foreign is not an xattr-jax checkpoint: {METADATA_FILE} is missing"
    ):
        load_checkpoint(tmp_path / "foreign")
    (tmp_path / "foreign" / METADATA_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format 'something-else'"):
        load_checkpoint(tmp_path / "foreign")
    with pytest.raises(ValueError, match="is a file"):
        load_checkpoint(tmp_path / "foreign" / "model.bin")


def _copy(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "copy")


def test_corrupt_metadata(saved, tmp_path):
    path = _copy(saved, tmp_path)
    (path / METADATA_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path)


def test_unknown_arch_or_newer_version(saved, tmp_path):
    path = _copy(saved, tmp_path)
    meta = json.loads((path / METADATA_FILE).read_text())
    (path / METADATA_FILE).write_text(json.dumps({**meta, "arch": "resnet19"}))
    with pytest.raises(
        ValueError, match="cannot be rebuilt.*unknown architecture 'resnet19'.*resnet18"
    ):
        load_checkpoint(path)
    (path / METADATA_FILE).write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(path)
    (path / METADATA_FILE).write_text(json.dumps({**meta, "model_kwargs": {"num_classes": 11}}))
    with pytest.raises(ValueError, match="do not fit resnet18"):
        load_checkpoint(path)


_DAMAGE_SCRIPT = """
import pathlib, shutil, sys
from xattr_jax.checkpoint import load_checkpoint

src, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
cases = {
    "array metadata": lambda v: (v / "_METADATA").write_bytes(b"garbage"),
    "manifest": lambda v: (v / "manifest.ocdbt").write_bytes(b"garbage"),
    "array data": lambda v: [f.write_bytes(b"garbage") for f in v.rglob("*")
                             if f.is_file() and f.parent.name == "d"],
}
for name, damage in cases.items():
    path = work / name.replace(" ", "_")
    shutil.copytree(src, path)
    damage(path / "variables")
    try:
        load_checkpoint(path)
        print(name, "=> LOADED")
    except ValueError as err:
        print(name, "=>", str(err).splitlines()[0])
"""


def test_damaged_arrays(saved, tmp_path):
    """Damaged orbax files give a ValueError. In a subprocess: when a read fails, orbax leaves
    callbacks on its closed event loop, which pytest would report as unraisable exceptions in
    whichever test happens to run when they fire."""
    proc = subprocess.run(
        [sys.executable, "-c", _DAMAGE_SCRIPT, str(saved), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(line.split(" => ", 1) for line in proc.stdout.strip().splitlines())
    assert set(results) == {"array metadata", "manifest", "array data"}, proc.stdout
    for name, result in results.items():
        assert "is corrupt: could not restore variables/" in result, f"{name}: {result}"


def test_missing_arrays(saved, tmp_path):
    path = _copy(saved, tmp_path)
    shutil.rmtree(path / "variables")
    with pytest.raises(ValueError, match="incomplete: variables/ is missing"):
        load_checkpoint(path)
