"""VGG 11/13/16/19 with and without batch norm, laid out and named as torchvision's ``vgg*``."""

from __future__ import annotations

import flax.linen as nn

from xattr_jax import nn as xnn
from xattr_jax.models._layers import Sequential, batch_norm, check_image_batch, conv, spec

__all__ = [
    "VGG",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

# Output channels of each 3x3 conv; "M" is a 2x2 max pool (torchvision's configurations A, B, D, E).
_CFGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ),
}


def _features(cfg: tuple, batch_norm_: bool) -> tuple:
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(spec(xnn.MaxPool, kernel_size=2, stride=2))
        else:
            layers.append(conv(v, 3, padding=1))
            if batch_norm_:
                layers.append(batch_norm())
            layers.append(spec(xnn.ReLU))
    return tuple(layers)


def vgg_features(depth: int, batch_norm_: bool) -> tuple:
    """The layer specs of VGG-``depth``'s ``features`` (shared with the fully-convolutional VGG)."""
    if depth not in _CFGS:
        raise ValueError(f"VGG depth must be one of {sorted(_CFGS)}, got {depth}")
    return _features(_CFGS[depth], batch_norm_)


def vgg_features_out(depth: int) -> int:
    """Channels of VGG-``depth``'s last conv."""
    return [v for v in _CFGS[depth] if v != "M"][-1]


def _classifier(num_classes: int) -> tuple:
    return (
        spec(nn.Dense, features=4096),
        spec(xnn.ReLU),
        spec(xnn.Dropout, rate=0.5),
        spec(nn.Dense, features=4096),
        spec(xnn.ReLU),
        spec(xnn.Dropout, rate=0.5),
        spec(nn.Dense, features=num_classes),
    )


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman, 2015) on NHWC float32 input ``[N, H, W, 3]``.

    Layer names (torchvision's):

    - ``features``: ``features.0``, ``features.1``, ... exactly torchvision's indices. Without batch
      norm each conv is followed by a ReLU (conv, relu, ..., pool); with batch norm by BN then ReLU.
      VGG16: convs at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, max pools at 4, 9, 16, 23, 30.
    - ``avgpool``: adaptive average pool to 7x7 (any input of at least 32x32 works).
    - ``flatten``: NHWC flatten (torchvision calls ``torch.flatten`` here; ours is a layer).
    - ``classifier``: ``classifier.0`` Dense 4096, ``.1`` ReLU, ``.2`` Dropout, ``.3`` Dense 4096,
      ``.4`` ReLU, ``.5`` Dropout, ``.6`` Dense ``num_classes`` (the logits).

    Attributes:
      depth: 11, 13, 16 or 19.
      batch_norm: whether each conv is followed by batch norm (the ``_bn`` variants).
      num_classes: size of the output layer.
    """

    depth: int = 16
    batch_norm: bool = False
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        check_image_batch(x)
        x = Sequential(vgg_features(self.depth, self.batch_norm), name="features")(x)
        x = xnn.AdaptiveAvgPool(7, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        return Sequential(_classifier(self.num_classes), name="classifier")(x)


def vgg11(num_classes: int = 1000) -> VGG:
    """VGG-11 (configuration A)."""
    return VGG(depth=11, batch_norm=False, num_classes=num_classes)


def vgg11_bn(num_classes: int = 1000) -> VGG:
    """VGG-11 with batch norm."""
    return VGG(depth=11, batch_norm=True, num_classes=num_classes)


def vgg13(num_classes: int = 1000) -> VGG:
    """VGG-13 (configuration B)."""
    return VGG(depth=13, batch_norm=False, num_classes=num_classes)


def vgg13_bn(num_classes: int = 1000) -> VGG:
    """VGG-13 with batch norm."""
    return VGG(depth=13, batch_norm=True, num_classes=num_classes)


def vgg16(num_classes: int = 1000) -> VGG:
    """VGG-16 (configuration D)."""
    return VGG(depth=16, batch_norm=False, num_classes=num_classes)


def vgg16_bn(num_classes: int = 1000) -> VGG:
    """VGG-16 with batch norm."""
    return VGG(depth=16, batch_norm=True, num_classes=num_classes)


def vgg19(num_classes: int = 1000) -> VGG:
    """VGG-19 (configuration E)."""
    return VGG(depth=19, batch_norm=False, num_classes=num_classes)


def vgg19_bn(num_classes: int = 1000) -> VGG:
    """VGG-19 with batch norm."""
    return VGG(depth=19, batch_norm=True, num_classes=num_classes)
