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
