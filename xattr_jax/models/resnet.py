"""ResNet 18/34/50/101/152 (v1.5, stride on the 3x3 conv), named as torchvision's ``resnet*``."""

from __future__ import annotations

import flax.linen as nn

from xattr_jax import nn as xnn
from xattr_jax.models._layers import Sequential, batch_norm, check_image_batch, conv, make, spec

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]


def _downsample(features: int, stride: int) -> Sequential:
    return Sequential(
        (conv(features, 1, stride=stride, bias=False), batch_norm()), name="downsample"
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34).

    Children: ``conv1`` (3x3, ``stride``), ``bn1``, ``relu1``, ``conv2`` (3x3), ``bn2``,
    ``downsample`` (``.0`` 1x1 conv, ``.1`` BN; only when ``downsample``), ``add`` (residual branch
    first, skip second), ``relu`` (the block output). torchvision calls its single ``relu`` module
    twice; here ``relu1`` is the inner call and ``relu`` the one after the sum.
    """

    features: int
    stride: int = 1
    downsample: bool = False

    expansion = 1  # output channels / features (a class constant, not a field)

    @nn.compact
    def __call__(self, x):
        out = _block_conv(self.features, 3, self.stride, "conv1")(x)
        out = _block_bn("bn1")(out)
        out = xnn.ReLU(name="relu1")(out)
        out = _block_conv(self.features, 3, 1, "conv2")(out)
        out = _block_bn("bn2")(out)
        identity = _downsample(self.features, self.stride)(x) if self.downsample else x
        out = xnn.Add(name="add")(out, identity)
        return xnn.ReLU(name="relu")(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, v1.5), 1x1 expand by 4, residual (ResNet-50/101/152).

    Children: ``conv1``, ``bn1``, ``relu1``, ``conv2`` (3x3, ``stride``), ``bn2``, ``relu2``,
    ``conv3``, ``bn3``, ``downsample`` (``.0`` 1x1 conv, ``.1`` BN; only when ``downsample``),
    ``add`` (residual branch first, skip second), ``relu`` (the block output). torchvision calls its
    single ``relu`` three times; here they are ``relu1``, ``relu2`` and ``relu``.
    """

    features: int
    stride: int = 1
    downsample: bool = False

    expansion = 4  # output channels / features (a class constant, not a field)

    @nn.compact
    def __call__(self, x):
        out = _block_conv(self.features, 1, 1, "conv1")(x)
        out = _block_bn("bn1")(out)
        out = xnn.ReLU(name="relu1")(out)
        out = _block_conv(self.features, 3, self.stride, "conv2")(out)
        out = _block_bn("bn2")(out)
        out = xnn.ReLU(name="relu2")(out)
        out = _block_conv(self.features * self.expansion, 1, 1, "conv3")(out)
        out = _block_bn("bn3")(out)
        identity = x
        if self.downsample:
            identity = _downsample(self.features * self.expansion, self.stride)(x)
        out = xnn.Add(name="add")(out, identity)
        return xnn.ReLU(name="relu")(out)


def _block_conv(features: int, kernel: int, stride: int, name: str) -> nn.Module:
    return make(conv(features, kernel, stride=stride, padding=kernel // 2, bias=False), name)


def _block_bn(name: str) -> nn.Module:
    return make(batch_norm(), name)


_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _stage(block: type, in_features: int, features: int, blocks: int, stride: int):
    """Block specs of one ``layerN``; the first block downsamples when the shape changes."""
    first = spec(
        block,
        features=features,
        stride=stride,
        downsample=stride != 1 or in_features != features * block.expansion,
    )
    return (first,) + (spec(block, features=features),) * (blocks - 1)


def resnet_trunk(x, depth: int):
    """Stem and ``layer1``–``layer4`` of ResNet-``depth``, called inside a compact module's ``__call__``
    (the submodules are named as torchvision's; shared with the fully-convolutional ResNet)."""
    if depth not in _DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
    block, counts = _DEPTHS[depth]
    x = make(conv(64, 7, stride=2, padding=3, bias=False), "conv1")(x)
    x = _block_bn("bn1")(x)
    x = xnn.ReLU(name="relu")(x)
    x = xnn.MaxPool(3, 2, 1, name="maxpool")(x)
    in_features = 64
    for i, (features, blocks) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
        stride = 1 if i == 0 else 2
        layers = _stage(block, in_features, features, blocks, stride)
        x = Sequential(layers, name=f"layer{i + 1}")(x)
        in_features = features * block.expansion
    return x


class ResNet(nn.Module):
    """ResNet (He et al., 2016; torchvision's v1.5) on NHWC float32 input ``[N, H, W, 3]``.

    Layer names (torchvision's): ``conv1`` (7x7/2, no bias), ``bn1``, ``relu``, ``maxpool``
    (3x3/2, padding 1), ``layer1`` .. ``layer4`` (each a container of blocks ``layerN.0``,
    ``layerN.1``, ...; see :class:`BasicBlock` and :class:`Bottleneck` for the names inside a block,
    e.g. ``layer3.1.conv2``, ``layer4.0.downsample.0``, ``layer4.2.relu``), ``avgpool`` (global
    average pool to 1x1), ``flatten`` (ours; torchvision calls ``torch.flatten``), ``fc`` (logits).

    Attributes:
      depth: 18, 34, 50, 101 or 152.
      num_classes: size of the output layer.
    """

    depth: int = 50
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        check_image_batch(x)
        x = resnet_trunk(x, self.depth)
        x = xnn.AdaptiveAvgPool(1, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        return nn.Dense(self.num_classes, name="fc")(x)


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2)."""
    return ResNet(depth=18, num_classes=num_classes)


def resnet34(num_classes: int = 1000) -> ResNet:
    """ResNet-34 (BasicBlock, 3-4-6-3)."""
    return ResNet(depth=34, num_classes=num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3)."""
    return ResNet(depth=50, num_classes=num_classes)


def resnet101(num_classes: int = 1000) -> ResNet:
    """ResNet-101 (Bottleneck, 3-4-23-3)."""
    return ResNet(depth=101, num_classes=num_classes)


def resnet152(num_classes: int = 1000) -> ResNet:
    """ResNet-152 (Bottleneck, 3-8-36-3)."""
    return ResNet(depth=152, num_classes=num_classes)
