"""Fully-convolutional versions of the zoo's classifiers (dense layers as convolutions).

``fully_convolutional(model, variables) -> (model_fc, variables_fc)`` is a canonizer: a pure
rewrite that keeps the logits (at the training resolution) and every remaining layer name, and
gives a class score *map* ``[N, h, w, num_classes]`` on larger inputs — what the pointing game of
Excitation Backprop evaluates, with ``signal="pointing"`` (the class score's spatial softmax as the
top signal). As TorchRay's benchmark models (``torchray.benchmark.models``):

* **VGG**: ``features`` unchanged; the adaptive ``avgpool`` and ``flatten`` are dropped;
  ``classifier.0`` becomes a 7×7 conv (no padding) on the 512-channel feature map,
  ``classifier.3`` and ``classifier.6`` 1×1 convs. 224² input → 1×1 score map.
* **ResNet**: stem and stages unchanged; ``avgpool`` becomes ``AvgPool2d(7, stride=1)`` (TorchRay's
  benchmark ResNet) and ``fc`` a 1×1 conv; ``flatten`` is dropped. 224² → 1×1.
* **AlexNet** (ours, by the same recipe): ``avgpool``/``flatten`` dropped, ``classifier.1`` a
  6×6 conv, ``classifier.4``/``.6`` 1×1 convs. 224² → 1×1.

At the training resolution the logits equal the original model's (``logits_fc[:, 0, 0]``), up to
float rounding of a conv versus a matmul.

Example:
  >>> fc_model, fc_vars = fully_convolutional(model, variables)
  >>> scores = fc_model.apply(fc_vars, x_448)          # [N, 8, 8, 1000] for VGG16
  >>> res = xa.explain(fc_model, fc_vars, x_448, t, method="contrastive_excitation_backprop",
  ...                  signal="pointing")
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from xattr_jax import nn as xnn
from xattr_jax.models._layers import Sequential, check_image_batch, conv, make, spec
from xattr_jax.models.alexnet import AlexNet, alexnet_features
from xattr_jax.models.resnet import ResNet, resnet_trunk
from xattr_jax.models.vgg import VGG, vgg_features, vgg_features_out

__all__ = ["fully_convolutional", "FullyConvVGG", "FullyConvResNet", "FullyConvAlexNet"]


def _conv_head(specs):
    """(kind, features, kernel) -> layer specs; "conv" entries are VALID convs with bias."""
    out = []
    for s in specs:
        if s[0] == "conv":
            out.append(conv(s[1], s[2]))
        elif s[0] == "relu":
            out.append(spec(xnn.ReLU))
        else:
            out.append(spec(xnn.Dropout, rate=0.5))
    return tuple(out)


class FullyConvVGG(nn.Module):
    """VGG with its classifier as convolutions (``classifier.0`` 7×7, ``.3``/``.6`` 1×1); no avgpool.

    Output ``[N, h, w, num_classes]`` (``h = w = 1`` at 224²). Layer names as :class:`VGG` minus
    ``avgpool`` and ``flatten``.
    """

    depth: int = 16
    batch_norm: bool = False
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        check_image_batch(x)
        x = Sequential(vgg_features(self.depth, self.batch_norm), name="features")(x)
        head = (("conv", 4096, 7), ("relu",), ("drop",), ("conv", 4096, 1), ("relu",), ("drop",),
                ("conv", self.num_classes, 1))
        return Sequential(_conv_head(head), name="classifier")(x)


class FullyConvAlexNet(nn.Module):
    """AlexNet with its classifier as convolutions (``classifier.1`` 6×6, ``.4``/``.6`` 1×1)."""

    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        check_image_batch(x)
        x = Sequential(alexnet_features(), name="features")(x)
        head = (("drop",), ("conv", 4096, 6), ("relu",), ("drop",), ("conv", 4096, 1), ("relu",),
                ("conv", self.num_classes, 1))
        return Sequential(_conv_head(head), name="classifier")(x)


class FullyConvResNet(nn.Module):
    """ResNet with ``avgpool = AvgPool2d(7, stride=1)`` and ``fc`` a 1×1 conv; no flatten.

    Output ``[N, h, w, num_classes]`` (``h = w = 1`` at 224²). Layer names as :class:`ResNet` minus
    ``flatten``.
    """

    depth: int = 50
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        check_image_batch(x)
        x = resnet_trunk(x, self.depth)
        x = xnn.AvgPool(7, 1, name="avgpool")(x)
        return make(conv(self.num_classes, 1), "fc")(x)


def _as_conv(dense: dict, kernel_hw: tuple, in_channels: int) -> dict:
    """Dense ``{'kernel': [in, out], 'bias'}`` -> conv ``{'kernel': [kh, kw, C, out], 'bias'}``.

    Our ``Flatten`` is NHWC, so the dense input index is ``(h·kw + w)·C + c`` and a plain reshape
    gives the HWIO kernel.
    """
    k = dense["kernel"]
    out = dict(dense)
    out["kernel"] = jnp.reshape(k, (*kernel_hw, in_channels, k.shape[-1]))
    return out


def _with_params(variables, params):
    out = dict(variables)
    out["params"] = params
    return out


def fully_convolutional(model, variables):
    """The fully-convolutional version of a zoo VGG / ResNet / AlexNet, and its variables.

    Args:
      model: a :class:`~xattr_jax.models.VGG`, :class:`~xattr_jax.models.ResNet` or
        :class:`~xattr_jax.models.AlexNet`.
      variables: its variables (``params`` and, for batch-norm models, ``batch_stats``; unchanged
        except the classifier's dense kernels, reshaped into conv kernels).

    Returns:
      ``(model_fc, variables_fc)``; ``model_fc.apply(variables_fc, x)`` is ``[N, h, w, classes]``
      and equals ``model.apply(variables, x)`` at ``[:, 0, 0]`` for 224² inputs.

    Raises:
      TypeError: another kind of model (only the zoo's classifiers can be rewritten).
    """
    params = dict(variables["params"])
    if isinstance(model, VGG):
        cls = dict(params["classifier"])
        c_in = _features_out(model)
        cls["0"] = _as_conv(cls["0"], (7, 7), c_in)
        cls["3"] = _as_conv(cls["3"], (1, 1), cls["3"]["kernel"].shape[0])
        cls["6"] = _as_conv(cls["6"], (1, 1), cls["6"]["kernel"].shape[0])
        params["classifier"] = cls
        fc = FullyConvVGG(depth=model.depth, batch_norm=model.batch_norm, num_classes=model.num_classes)
        return fc, _with_params(variables, params)
    if isinstance(model, ResNet):
        params["fc"] = _as_conv(params["fc"], (1, 1), params["fc"]["kernel"].shape[0])
        return FullyConvResNet(depth=model.depth, num_classes=model.num_classes), _with_params(variables, params)
    if isinstance(model, AlexNet):
        cls = dict(params["classifier"])
        cls["1"] = _as_conv(cls["1"], (6, 6), 256)
        cls["4"] = _as_conv(cls["4"], (1, 1), cls["4"]["kernel"].shape[0])
        cls["6"] = _as_conv(cls["6"], (1, 1), cls["6"]["kernel"].shape[0])
        params["classifier"] = cls
        return FullyConvAlexNet(num_classes=model.num_classes), _with_params(variables, params)
    raise TypeError(
        f"fully_convolutional rewrites the zoo's VGG, ResNet and AlexNet models; got {type(model).__name__}"
    )


def _features_out(model) -> int:
    return vgg_features_out(model.depth)
