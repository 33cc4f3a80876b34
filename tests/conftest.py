"""Strict test settings shared by the whole suite (DESIGN.md, style rule 7)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Keep the torch references on the same two cores as XLA."""
    try:
        import torch
    except ImportError:  # the core suite runs without torch
        yield
        return
    torch.set_num_threads(2)
    yield


def _tiny_net():
    """A small residual CNN exercising every layer kind: conv, BN, ReLU, max-pool, add, GAP, dense."""
    import flax.linen as nn
    import jax.numpy as jnp

    from xattr_jax import nn as xnn

    class TinyNet(nn.Module):
        num_classes: int = 5

        @nn.compact
        def __call__(self, x):
            x = nn.Conv(6, (3, 3), padding=((1, 1), (1, 1)), name="conv1")(x)
            x = nn.BatchNorm(use_running_average=True, name="bn1")(x)
            x = xnn.ReLU(name="relu1")(x)
            x = xnn.MaxPool(2, 2, name="pool1")(x)
            y = nn.Conv(6, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv2")(x)
            y = xnn.ReLU(name="relu2")(y)
            x = xnn.Add(name="add")(y, x)
            x = xnn.ReLU(name="relu3")(x)
            x = xnn.AdaptiveAvgPool(1, name="avgpool")(x)
            x = xnn.Flatten(name="flatten")(x)
            x = xnn.Dropout(name="dropout")(x)
            return nn.Dense(self.num_classes, name="fc")(x)

    model = TinyNet()
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 12, 12, 3))
    variables = model.init(key, x)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(2), 3)
    variables = {
        "params": variables["params"],
        "batch_stats": {
            "bn1": {
                "mean": 0.1 * jax.random.normal(k1, (6,)),
                "var": jax.random.uniform(k2, (6,), minval=0.5, maxval=1.5),
            }
        },
    }
    variables["params"]["bn1"]["scale"] = jax.random.uniform(k3, (6,), minval=0.5, maxval=1.5)
    return model, variables, x.astype(jnp.float32)


@pytest.fixture(scope="session")
def tiny_net():
    return _tiny_net()
