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


def random_torchvision(arch):
    """A seeded random-weight torchvision ``arch`` in eval mode, ReLUs not in place, batch-norm
    statistics and affine parameters randomised (so that batch-norm is no identity)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    m = getattr(torchvision.models, arch)(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
        if isinstance(mod, torch.nn.BatchNorm2d):
            with torch.no_grad():
                c = mod.num_features
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
                mod.weight.copy_(0.5 + torch.rand(c, generator=g))
                mod.bias.copy_(0.1 * torch.randn(c, generator=g))
    return m


def bias_free(variables):
    """The same network with every bias, batch-norm mean and learned class token / position
    embedding set to 0 (what LRP's conservation is stated for), for any pytree of variables."""
    def zero(path, a):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        hit = any(s in name for s in ("bias", "mean", "cls", "class_token", "pos"))
        return jnp.zeros_like(a) if hit else a
    return jax.tree_util.tree_map_with_path(zero, variables)
