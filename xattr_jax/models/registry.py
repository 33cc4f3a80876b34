"""Architecture names -> constructors, for checkpoints, converters and the command line."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from xattr_jax.models.alexnet import alexnet
from xattr_jax.models.small import small_resnet, small_vgg
from xattr_jax.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from xattr_jax.models.vgg import vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

__all__ = ["ARCHITECTURES", "TORCHVISION_ARCHITECTURES", "build"]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "alexnet": alexnet,
    "vgg11": vgg11,
    "vgg11_bn": vgg11_bn,
    "vgg13": vgg13,
    "vgg13_bn": vgg13_bn,
    "vgg16": vgg16,
    "vgg16_bn": vgg16_bn,
    "vgg19": vgg19,
    "vgg19_bn": vgg19_bn,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "small_vgg": small_vgg,  # synthetic-benchmark models (xattr_jax.models.small)
    "small_resnet": small_resnet,
}

ARCHITECTURES: tuple[str, ...] = tuple(_BUILDERS)
#: The architectures that mirror a torchvision model (the converter's; the small ones do not).
TORCHVISION_ARCHITECTURES: tuple[str, ...] = tuple(a for a in _BUILDERS if not a.startswith("small_"))


def build(arch: str, **kwargs) -> nn.Module:
    """Build a zoo model by torchvision architecture name.

    Args:
      arch: one of :data:`ARCHITECTURES` (``"vgg16"``, ``"resnet50"``, ``"alexnet"``, ...).
      **kwargs: passed to the constructor (``num_classes``).

    Returns:
      The unbound ``flax.linen`` module.

    Raises:
      ValueError: ``arch`` is not a supported architecture (the message lists them).

    Example:
      >>> model = build("resnet18", num_classes=10)
    """
    try:
        builder = _BUILDERS[arch]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}"
        ) from None
    return builder(**kwargs)
