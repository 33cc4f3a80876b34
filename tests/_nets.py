"""Helpers shared by tests that build small Flax networks."""

import jax
import jax.numpy as jnp
import numpy as np


def random_variables(model, x, seed=0):
    """Seeded random variables (He-scaled kernels, non-trivial BN statistics) without compiling init."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)

    def fill(path, leaf):
        key = getattr(path[-1], "key", None)
        if key in ("var", "scale"):
            a = rng.uniform(0.5, 1.5, leaf.shape)
        elif key in ("mean", "bias"):
            a = 0.1 * rng.standard_normal(leaf.shape)
        else:
            a = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
        return jnp.asarray(a, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)
