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


@pytest.fixture(scope="session")
def torch_pair():
    """``get(arch) -> (torch_model, flax_model, variables)`` for random-weight torchvision models.

    Seeded, ``.eval()``, in-place ReLUs turned off (hook-based references need that), and batch-norm
    statistics and affine parameters randomised so BN folding is not a no-op. Cached per session.

    Both sides are float64. Parity tests compare algorithms, and in float32 a few of the ~10^7
    ReLU pre-activations of VGG16/ResNet50 lie within rounding of zero and take opposite signs in
    XLA and PyTorch (measured: one unit of VGG16 flipped and moved the input gradient by 4 % of its
    maximum; the float32 input gradient at 64², batch 2, three input draws per net: five draws agree
    with torch to <= 2.1e-6 x max, one ResNet50 draw differs by 9.5e-3 x max). Use the ``x64``
    fixture with these models.
    """
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    import jax.numpy as jnp

    from converters.torchvision import convert

    cache = {}

    def get(arch):
        if arch not in cache:
            torch.manual_seed(0)
            m = getattr(tv.models, arch)(weights=None).eval()
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
            model, variables = convert(arch, m)
            with jax.enable_x64(True):
                variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
            cache[arch] = (m.double(), model, variables)
        return cache[arch]

    return get


@pytest.fixture
def x64():
    """Run a test with float64 enabled in JAX (parity tests against float64 torch models)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def image_batch():
    """A seeded batch of 2 normalised-image-like 64x64 inputs, float64: (torch NCHW, jax NHWC).

    64x64 keeps the full VGG16 and ResNet50 (every layer, adaptive pooling upsamples 2x2 to 7x7 on
    VGG) while making each parity program ~12x cheaper than 224x224.
    """
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    g = torch.Generator().manual_seed(123)
    x = torch.randn(2, 3, 64, 64, generator=g, dtype=torch.float64)
    with jax.enable_x64(True):
        xj = jnp.asarray(x.permute(0, 2, 3, 1).numpy())
    return x, xj
