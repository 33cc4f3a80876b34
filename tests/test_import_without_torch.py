"""The library, the zoo and checkpoints work where torch cannot be imported."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())

    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_numpy_rank_promotion", "raise")

    import xattr_jax
    import xattr_jax.models
    import xattr_jax.checkpoint
    import xattr_jax.app.cli
    from xattr_jax.checkpoint import load_checkpoint, save_checkpoint

    model = xattr_jax.models.build("resnet18", num_classes=4)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_map(
        lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes
    )
    save_checkpoint(sys.argv[1], "resnet18", variables, num_classes=4)
    loaded, restored = load_checkpoint(sys.argv[1])
    assert loaded == model
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(restored)):
        assert np.array_equal(a, b) and a.dtype == b.dtype
    x = jnp.ones((1, 40, 48, 3), jnp.float32)
    assert loaded.apply(restored, x).shape == (1, 4)

    out = sys.argv[1] + "_cli"
    rc = xattr_jax.app.cli.main(["convert", "--arch", "resnet18", "--weights", "w.pth", "--out", out])
    assert rc == 1, rc

    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
    assert not leaked, leaked
    print("OK")
    """
)


def test_library_works_without_torch(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
    assert "pip install 'xattr-jax[converters]'" in proc.stderr
