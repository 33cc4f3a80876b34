"""Architecture names -> constructors, for checkpoints, converters and the command line."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from xattr_jax.models.alexnet import alexnet
from xattr_jax.models.small import small_resnet, small_vgg
from xattr_jax.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from xattr_jax.models.vgg import vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

__all__ = ["ARCHITECTURES", "TORCHVISION_ARCHITECTURES", "TORCHAX_ARCHITECTURES", "build"]

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
#: torchvision 0.27's other classification architectures: no zoo model, they run through torchax
#: (``converters.torchvision.convert``); named here so that the command line knows them without torch.
TORCHAX_ARCHITECTURES: tuple[str, ...] = (
    *(f"convnext_{s}" for s in ("tiny", "small", "base", "large")),
    "densenet121", "densenet161", "densenet169", "densenet201",
    *(f"efficientnet_b{i}" for i in range(8)), "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
    "googlenet", "inception_v3", "maxvit_t",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    *(f"regnet_{t}_{s}" for t in ("x", "y") for s in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")),
    "regnet_y_128gf",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
    *(f"shufflenet_v2_x{s}" for s in ("0_5", "1_0", "1_5", "2_0")),
    "squeezenet1_0", "squeezenet1_1",
    *(f"swin_{s}" for s in ("t", "s", "b", "v2_t", "v2_s", "v2_b")),
    *(f"vit_{s}" for s in ("b_16", "b_32", "l_16", "l_32", "h_14")),
)


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
