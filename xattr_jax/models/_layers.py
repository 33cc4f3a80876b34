"""Shared building blocks of the model zoo: a numerically named container and layer factories.

Every layer of a zoo model is built with an explicit ``name=`` so that its Flax module path joined
with ``"."`` is the torchvision module name (``features.23``, ``layer3.1.conv2``, ``fc``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

__all__ = ["Sequential", "spec", "make", "conv", "batch_norm", "check_image_batch"]

# A layer spec is ``(module class, ((field, value), ...))``: hashable and compared by value, so two
# identically built models are equal (and share jit caches).
LayerSpec = tuple[type, tuple[tuple[str, Any], ...]]


def spec(cls: type, **fields: Any) -> LayerSpec:
    """Describe a layer to be built inside a :class:`Sequential`."""
    return (cls, tuple(sorted(fields.items())))


def make(layer: LayerSpec, name: str) -> nn.Module:
    """Instantiate a spec (inside a compact method, so it becomes a child named ``name``)."""
    cls, fields = layer
    return cls(**dict(fields), name=name)


class Sequential(nn.Module):
    """Apply ``layers`` in order; child ``i`` is named ``str(i)`` (torchvision's ``nn.Sequential``).

    Attributes:
      layers: a tuple of :func:`spec` entries.
    """

    layers: tuple[LayerSpec, ...]

    @nn.compact
    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = make(layer, str(i))(x)
        return x


def conv(
    features: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True
) -> LayerSpec:
    """``torch.nn.Conv2d`` as a ``flax.linen.Conv`` spec with explicit symmetric padding."""
    return spec(
        nn.Conv,
        features=features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=bias,
    )


def batch_norm() -> LayerSpec:
    """``torch.nn.BatchNorm2d`` in eval mode (running statistics from ``batch_stats``)."""
    return spec(nn.BatchNorm, use_running_average=True, momentum=0.9, epsilon=1e-5)


def check_image_batch(x) -> None:
    """Reject anything but an NHWC RGB batch ``[N, H, W, 3]`` with a hint."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"expected an NHWC image batch of shape [N, H, W, 3], got shape {shape}; "
            "a torch-style NCHW batch becomes NHWC with x.transpose(0, 2, 3, 1)"
        )
