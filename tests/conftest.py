"""Strict test settings shared by the whole suite (DESIGN.md, style rule 7)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
# the xattr commands' compilation cache stays off in-process (tests/test_compile_cache.py turns it on
# in subprocesses): nothing written to the user's cache, no test reads another's programs
os.environ["XATTR_JAX_CACHE"] = "off"

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

    The torch model is float64 (the referee); ``variables`` are float64 JAX arrays holding float32
    values exactly (the converter's float32 weights), so ``_parity.float32(variables)`` gives our
    float32 side the same weights bit for bit. Parity tests run ours in float32 against the peer in
    float64: PyTorch's own float32 input gradient of a random ResNet18 at 224² is 5.3e-2 x max off
    its float64 one (ReLU pre-activations within rounding of 0 flip in its float32 convolutions),
    ours in float32 is 8.9e-7 x max off it. Integrated gradients is the exception (one of its float32
    path points sits on a ReLU kink on either side) and runs float64 on both sides under ``x64``. On
    ``image_batch`` some pre-activations lie within float32 rounding of 0 in our forward too, which
    moves the plain input gradient; those cases compare against ``kinked_gradient``.
    """
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    import jax.numpy as jnp

    from _nets import random_torchvision
    from converters.torchvision import convert

    cache = {}

    def get(arch):
        if arch not in cache:
            m = random_torchvision(arch)
            model, variables = convert(arch, m)
            with jax.enable_x64(True):
                variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
            cache[arch] = (m.double(), model, variables)
        return cache[arch]

    return get


@pytest.fixture
def x64():
    """Run a test with float64 enabled in JAX (float64 references; integrated-gradients parity)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def image_batch():
    """A seeded batch of 2 normalised-image-like 64x64 inputs: (torch NCHW float64, jax NHWC float64).

    The values are float32 numbers (a float64 draw rounded to float32), so the float64 peer and our
    float32 side (``_parity.float32(xj)``) see the same input exactly. 64x64 keeps the full VGG16 and
    ResNet50 (every layer, adaptive pooling upsamples 2x2 to 7x7 on VGG) while making each parity
    program ~12x cheaper than 224x224.
    """
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    g = torch.Generator().manual_seed(123)
    x = torch.randn(2, 3, 64, 64, generator=g, dtype=torch.float64).float().double()
    with jax.enable_x64(True):
        xj = jnp.asarray(x.permute(0, 2, 3, 1).numpy())
    return x, xj


@pytest.fixture(scope="session")
def kinked_gradient(torch_pair, image_batch):
    """``get(arch, targets) -> (g64, g32)``: the float64 input gradient of the logits at ``targets`` on
    ``image_batch``, with the ReLU masks of the float64 forward (``g64``: the plain gradient) and of a
    float32 forward on this machine (``g32``); see ``_parity.kinked_input_gradient``. Cached."""
    from _parity import kinked_input_gradient
    import numpy as np

    cache = {}

    def get(arch, targets):
        key = (arch, tuple(targets))
        if key not in cache:
            _, model, v = torch_pair(arch)
            x = np.asarray(image_batch[1])
            cache[key] = tuple(kinked_input_gradient(model, v, x, targets, d) for d in (np.float64, np.float32))
        return cache[key]

    return get


def _listed_slow() -> set[str]:
    """Node ids in ``slow_tests.txt`` (written by ``update_slow_list.py`` from a measured run)."""
    from pathlib import Path

    path = Path(__file__).with_name("slow_tests.txt")
    if not path.is_file():
        return set()
    return {line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()}


def pytest_collection_modifyitems(config, items):
    """Mark the measured slow tests ``slow``: ``pytest -m "not slow"`` is the fast loop."""
    listed = _listed_slow()
    for item in items:
        if item.nodeid in listed:
            item.add_marker(pytest.mark.slow)
