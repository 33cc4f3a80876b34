"""The model zoo: flax.linen VGG, ResNet and AlexNet named as their torchvision counterparts.

Every model takes NHWC float32 input ``[N, H, W, 3]`` (torchvision-normalised) and returns logits
``[N, num_classes]``. Every layer is a named module whose dotted path is the torchvision module name
(``features.23``, ``layer3.1.conv2``, ``classifier.4``); each model's docstring lists its names.
Weights come from ``converters.torchvision.convert`` or ``xattr_jax.checkpoint.load_checkpoint``.
"""

from xattr_jax.models._layers import Sequential
from xattr_jax.models.alexnet import AlexNet, alexnet
from xattr_jax.models.registry import ARCHITECTURES, TORCHAX_ARCHITECTURES, TORCHVISION_ARCHITECTURES, build
from xattr_jax.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from xattr_jax.models.small import (
    EMBEDDED,
    SmallResNet,
    SmallVGG,
    load_embedded,
    small_resnet,
    small_vgg,
)
from xattr_jax.models.vgg import (
    VGG,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
)

__all__ = [
    "ARCHITECTURES",
    "TORCHVISION_ARCHITECTURES",
    "TORCHAX_ARCHITECTURES",
    "build",
    "Sequential",
    "AlexNet",
    "VGG",
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "alexnet",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "SmallVGG",
    "SmallResNet",
    "small_vgg",
    "small_resnet",
    "EMBEDDED",
    "load_embedded",
]
