"""AlexNet, laid out and named as torchvision's ``alexnet`` (the one-GPU variant)."""

from __future__ import annotations

import flax.linen as nn

from xattr_jax import nn as xnn
from xattr_jax.models._layers import Sequential, check_image_batch, conv, spec

__all__ = ["AlexNet", "alexnet"]


def alexnet_features() -> tuple:
    """The layer specs of AlexNet's ``features`` (shared with the fully-convolutional AlexNet)."""
    pool = spec(xnn.MaxPool, kernel_size=3, stride=2)
    return (
        conv(64, 11, stride=4, padding=2), spec(xnn.ReLU), pool,
        conv(192, 5, padding=2), spec(xnn.ReLU), pool,
        conv(384, 3, padding=1), spec(xnn.ReLU),
        conv(256, 3, padding=1), spec(xnn.ReLU),
        conv(256, 3, padding=1), spec(xnn.ReLU), pool,
    )  # fmt: skip


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al., 2012; torchvision's variant) on NHWC float32 ``[N, H, W, 3]``.

    Layer names (torchvision's):

    - ``features``: ``.0`` conv 11x11/4 (64), ``.1`` ReLU, ``.2`` max pool 3/2, ``.3`` conv
      5x5 (192), ``.4`` ReLU, ``.5`` max pool, ``.6`` conv 3x3 (384), ``.7`` ReLU, ``.8`` conv
      3x3 (256), ``.9`` ReLU, ``.10`` conv 3x3 (256), ``.11`` ReLU, ``.12`` max pool.
    - ``avgpool``: adaptive average pool to 6x6 (inputs of at least 63x63 work).
    - ``flatten``: NHWC flatten (torchvision calls ``torch.flatten``; ours is a layer).
    - ``classifier``: ``.0`` Dropout, ``.1`` Dense 4096, ``.2`` ReLU, ``.3`` Dropout, ``.4`` Dense
      4096, ``.5`` ReLU, ``.6`` Dense ``num_classes`` (the logits).

    Attributes:
      num_classes: size of the output layer.
    """

    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        check_image_batch(x)
        features = alexnet_features()
        classifier = (
            spec(xnn.Dropout, rate=0.5), spec(nn.Dense, features=4096), spec(xnn.ReLU),
            spec(xnn.Dropout, rate=0.5), spec(nn.Dense, features=4096), spec(xnn.ReLU),
            spec(nn.Dense, features=self.num_classes),
        )  # fmt: skip
        x = Sequential(features, name="features")(x)
        x = xnn.AdaptiveAvgPool(6, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        return Sequential(classifier, name="classifier")(x)


def alexnet(num_classes: int = 1000) -> AlexNet:
    """AlexNet as in torchvision."""
    return AlexNet(num_classes=num_classes)
