"""Small VGG- and ResNet-style networks for the synthetic benchmark, and the shipped ("embedded") ones.

Both take NHWC float32 input ``[N, 64, 64, 3]`` normalised with ImageNet's mean and std
(:func:`xattr_jax.data.normalize`; any size ≥ 32 runs, the shipped weights were trained at 64×64)
and return 20 multi-label logits (one sigmoid per class of :data:`xattr_jax.data.CLASS_NAMES`).
They are built from the zoo's modules (``flax.linen.Conv`` / ``Dense`` / ``BatchNorm`` and the
addressable :mod:`xattr_jax.nn` layers), with torchvision-style names, so every attribution method
applies to them as to the full-size models.

``train=True`` puts batch norm in training mode (batch statistics, ``mutable=['batch_stats']``);
attribution always uses the default ``train=False`` (running statistics).

The shipped checkpoints are trained by ``python -m xattr_jax.app.train`` (see :mod:`xattr_jax.app.train`)
and loaded with :func:`load_embedded`.

Example:
  >>> from xattr_jax.models import load_embedded
  >>> model, variables = load_embedded("small_vgg")
  >>> logits = model.apply(variables, x)          # x: [N, 64, 64, 3], normalised
"""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn

from xattr_jax import nn as xnn
from xattr_jax._checkpoint import restore
from xattr_jax._constants import EMBEDDED, EMBEDDED_SIZE
from xattr_jax.models._layers import Sequential, check_image_batch, conv, make, spec

__all__ = [
    "SmallVGG",
    "SmallResNet",
    "SmallBasicBlock",
    "small_vgg",
    "small_resnet",
    "EMBEDDED",
    "INPUT_SIZE",
    "embedded_path",
    "embedded_info",
    "load_embedded",
]

INPUT_SIZE = EMBEDDED_SIZE  # the input side the shipped weights were trained at
_ASSETS = Path(__file__).resolve().parent.parent / "assets"

# 3x3 convs (each followed by a ReLU); "M" a 2x2 max pool. 64 -> 32 -> 16 -> 8.
_VGG_CFG = (16, "M", 32, "M", 64, 64, "M", 128, 128)


class SmallVGG(nn.Module):
    """A VGG-style network with batch norm, like torchvision's ``vgg*_bn`` (about 0.3 M parameters).

    Layer names (conv, BN, ReLU per stage as in ``vgg16_bn``):

    - ``features``: ``features.0`` conv 16, ``.1`` BN, ``.2`` ReLU, ``.3`` max pool, ``.4`` conv
      32, ``.5`` BN, ``.6`` ReLU, ``.7`` max pool (Excitation Backprop's layer: 16×16 at 64×64
      input), ``.8`` conv 64, ``.9`` BN, ``.10`` ReLU, ``.11`` conv 64, ``.12`` BN, ``.13`` ReLU,
      ``.14`` max pool, ``.15`` conv 128, ``.16`` BN, ``.17`` ReLU, ``.18`` conv 128, ``.19`` BN,
      ``.20`` ReLU (8×8; Grad-CAM's layer).
    - ``avgpool``: global average pool (1×1); ``flatten``.
    - ``classifier``: ``classifier.0`` Dense 128, ``.1`` ReLU, ``.2`` Dense ``num_classes``.

    Attributes:
      num_classes: size of the output layer (20 for the synthetic benchmark).
      train: batch norm uses batch statistics (training; apply with ``mutable=['batch_stats']``).
    """

    num_classes: int = 20
    train: bool = False

    @nn.compact
    def __call__(self, x):
        check_image_batch(x)
        layers = []
        for v in _VGG_CFG:
            if v == "M":
                layers.append(spec(xnn.MaxPool, kernel_size=2, stride=2))
            else:
                bn = spec(nn.BatchNorm, use_running_average=not self.train, momentum=0.9,
                          epsilon=1e-5)  # fmt: skip
                layers += [conv(v, 3, padding=1), bn, spec(xnn.ReLU)]
        x = Sequential(tuple(layers), name="features")(x)
        x = xnn.AdaptiveAvgPool(1, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        head = (spec(nn.Dense, features=128), spec(xnn.ReLU), spec(nn.Dense, features=self.num_classes))
        return Sequential(head, name="classifier")(x)


def _bn(train: bool, name: str) -> nn.Module:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class SmallBasicBlock(nn.Module):
    """The zoo's :class:`~xattr_jax.models.BasicBlock` with a batch-norm training switch.

    Children (as the zoo's): ``conv1`` (3×3, ``stride``), ``bn1``, ``relu1``, ``conv2``, ``bn2``,
    ``downsample`` (``.0`` 1×1 conv, ``.1`` BN; only when ``downsample``), ``add``, ``relu``.
    """

    features: int
    stride: int = 1
    downsample: bool = False
    train: bool = False

    @nn.compact
    def __call__(self, x):
        c = lambda k, s, name: make(conv(self.features, k, stride=s, padding=k // 2, bias=False), name)  # noqa: E731
        out = c(3, self.stride, "conv1")(x)
        out = _bn(self.train, "bn1")(out)
        out = xnn.ReLU(name="relu1")(out)
        out = c(3, 1, "conv2")(out)
        out = _bn(self.train, "bn2")(out)
        identity = x
        if self.downsample:
            identity = _Downsample(self.features, self.stride, self.train, name="downsample")(x)
        out = xnn.Add(name="add")(out, identity)
        return xnn.ReLU(name="relu")(out)


class _Downsample(nn.Module):
    """``downsample.0`` (1×1 conv, ``stride``) and ``downsample.1`` (BN)."""

    features: int
    stride: int
    train: bool

    @nn.compact
    def __call__(self, x):
        x = make(conv(self.features, 1, stride=self.stride, bias=False), "0")(x)
        return _bn(self.train, "1")(x)


class SmallResNet(nn.Module):
    """A ResNet-style network (about 0.3 M parameters), one basic block per stage.

    Layer names (torchvision's): ``conv1`` (3×3/1, 16, no bias), ``bn1``, ``relu``, ``maxpool``
    (3×3/2, padding 1), ``layer1`` (16, 32×32 at 64×64 input), ``layer2`` (32, stride 2, 16×16),
    ``layer3`` (64, stride 2, 8×8; Excitation Backprop's layer), ``layer4`` (128, stride 1, 8×8:
    kept at 8×8 for finer class-activation maps), each with one block ``layerN.0`` named as
    :class:`SmallBasicBlock` (``layer3.0.conv2``, ``layer4.0.downsample.0``, ``layer4.0.relu``),
    ``avgpool`` (global average), ``flatten``, ``fc`` (logits).

    Attributes:
      num_classes: size of the output layer.
      train: batch norm uses batch statistics (training; apply with ``mutable=['batch_stats']``).
    """

    num_classes: int = 20
    train: bool = False

    @nn.compact
    def __call__(self, x):
        check_image_batch(x)
        x = make(conv(16, 3, stride=1, padding=1, bias=False), "conv1")(x)
        x = _bn(self.train, "bn1")(x)
        x = xnn.ReLU(name="relu")(x)
        x = xnn.MaxPool(3, 2, 1, name="maxpool")(x)
        in_features = 16
        for i, (features, stride) in enumerate(((16, 1), (32, 2), (64, 2), (128, 1))):
            block = spec(
                SmallBasicBlock,
                features=features,
                stride=stride,
                downsample=stride != 1 or in_features != features,
                train=self.train,
            )
            x = Sequential((block,), name=f"layer{i + 1}")(x)
            in_features = features
        x = xnn.AdaptiveAvgPool(1, name="avgpool")(x)
        x = xnn.Flatten(name="flatten")(x)
        return nn.Dense(self.num_classes, name="fc")(x)


def small_vgg(num_classes: int = 20, train: bool = False) -> SmallVGG:
    """The small VGG-style network (:class:`SmallVGG`)."""
    return SmallVGG(num_classes=num_classes, train=train)


def small_resnet(num_classes: int = 20, train: bool = False) -> SmallResNet:
    """The small ResNet-style network (:class:`SmallResNet`)."""
    return SmallResNet(num_classes=num_classes, train=train)


def _build_embedded(arch: str, **kwargs) -> nn.Module:
    # The shipped checkpoints' builder: the registry (which imports this module) is not needed.
    return {"small_vgg": small_vgg, "small_resnet": small_resnet}[_check_name(arch)](**kwargs)


def _check_name(name: str) -> str:
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; available: {', '.join(EMBEDDED)}")
    return name


def embedded_path(name: str) -> Path:
    """Directory of the shipped checkpoint ``name`` inside the installed package."""
    return _ASSETS / _check_name(name)


def embedded_info(name: str) -> dict:
    """The shipped model's training record (``training.json``: config, seeds, held-out mAP)."""
    path = embedded_path(name) / "training.json"
    if not path.is_file():
        raise FileNotFoundError(f"no training record for {name!r} at {path}")
    return json.loads(path.read_text())


def load_embedded(name: str):
    """Load a shipped model trained on the synthetic benchmark (no torch needed).

    Args:
      name: ``"small_vgg"`` or ``"small_resnet"``.

    Returns:
      ``(model, variables)``; the model takes ``[N, 64, 64, 3]`` images normalised with
      :func:`xattr_jax.data.normalize` and returns 20 logits (sigmoid per class).

    Raises:
      ValueError: unknown name.
      FileNotFoundError: the package was installed without its assets.

    Example:
      >>> model, variables = load_embedded("small_resnet")
    """
    path = embedded_path(name)
    if not path.is_dir():
        raise FileNotFoundError(
            f"the embedded checkpoint {name!r} is missing at {path}; reinstall xattr-jax "
            "or train it with: python -m xattr_jax.app.train --arch " + name + " --out DIR"
        )
    return restore(path, _build_embedded)
