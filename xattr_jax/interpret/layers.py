"""What the interpreter knows about a layer: its kind, its pure forward function and its parameters.

``describe(module)`` returns a :class:`LayerSpec` for every module type a rule can attach to
(``flax.linen`` ``Conv``, ``Dense``, ``BatchNorm`` and the modules of :mod:`xattr_jax.nn`), or
``None`` for anything else (containers, user modules), whose ops are differentiated as usual.
The pure functions replicate the modules' own computation op for op, so a forward pass under a
rule is bit-identical to the plain forward (tested).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import flax.linen as nn
from jax import lax

from .. import nn as xnn

__all__ = ["LayerSpec", "describe", "KINDS"]

KINDS = ("conv", "dense", "batchnorm", "relu", "maxpool", "avgpool", "add", "flatten", "dropout")


class LayerSpec(NamedTuple):
    """A layer as the rules see it: ``fn(params, *xs) -> y`` with ``params`` a dict of arrays."""

    kind: str
    fn: Callable
    params: dict


def _conv(params, x, *, strides, padding, lhs_dilation, rhs_dilation, groups, precision):
    y = lax.conv_general_dilated(
        x,
        params["kernel"],
        window_strides=strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
        precision=precision,
    )
    if "bias" in params:
        y = y + params["bias"].reshape((1,) * (y.ndim - 1) + (-1,))
    return y


def _dense(params, x, *, precision):
    y = lax.dot_general(x, params["kernel"], (((x.ndim - 1,), (0,)), ((), ())), precision=precision)
    if "bias" in params:
        y = y + params["bias"].reshape((1,) * (y.ndim - 1) + (-1,))
    return y


def _batchnorm(params, x, *, epsilon):
    # Op for op as flax.linen.normalization._normalize in inference mode.
    y = x - params["mean"].reshape((1,) * (x.ndim - 1) + (-1,))
    mul = lax.rsqrt(params["var"].reshape((1,) * (x.ndim - 1) + (-1,)) + epsilon)
    if "scale" in params:
        mul = mul * params["scale"].reshape((1,) * (x.ndim - 1) + (-1,))
    y = y * mul
    if "bias" in params:
        y = y + params["bias"].reshape((1,) * (x.ndim - 1) + (-1,))
    return y


def _tuple(v, n):
    if v is None:
        return (1,) * n
    if isinstance(v, int):
        return (v,) * n
    return tuple(v)


def _conv_padding(padding, kernel_shape):
    if isinstance(padding, str):
        if padding.upper() in ("SAME", "VALID"):
            return padding.upper()
        raise NotImplementedError(f"Conv padding {padding!r} has no rule support; use explicit pairs")
    if isinstance(padding, int):
        return [(padding, padding)] * len(kernel_shape)
    pads = []
    for p in padding:
        pads.append((p, p) if isinstance(p, int) else tuple(p))
    return pads


def _params(module, collection="params"):
    try:
        return dict(module.variables.get(collection, {}))
    except Exception:  # pragma: no cover - unbound modules
        return {}


def describe(module) -> LayerSpec | None:
    """The :class:`LayerSpec` of a bound module, or ``None`` if no rule can attach to it."""
    if isinstance(module, nn.Conv) and type(module) is nn.Conv:
        p = _params(module)
        ks = p["kernel"].shape[:-2]
        fn = functools.partial(
            _conv,
            strides=_tuple(module.strides, len(ks)),
            padding=_conv_padding(module.padding, ks),
            lhs_dilation=_tuple(module.input_dilation, len(ks)),
            rhs_dilation=_tuple(module.kernel_dilation, len(ks)),
            groups=module.feature_group_count,
            precision=module.precision,
        )
        return LayerSpec("conv", fn, p)
    if type(module) is nn.Dense:
        return LayerSpec("dense", functools.partial(_dense, precision=module.precision), _params(module))
    if type(module) is nn.BatchNorm:
        if not module.use_running_average:
            raise ValueError(
                f"BatchNorm {'.'.join(module.path)} is in training mode; attribution needs "
                "use_running_average=True"
            )
        if module.axis not in (-1,):
            raise NotImplementedError("BatchNorm rules support axis=-1 (NHWC) only")
        p = _params(module)
        stats = _params(module, "batch_stats")
        p = {**p, "mean": stats["mean"], "var": stats["var"]}
        return LayerSpec("batchnorm", functools.partial(_batchnorm, epsilon=module.epsilon), p)
    if isinstance(module, xnn.ReLU):
        return LayerSpec("relu", xnn.relu, {})
    if isinstance(module, xnn.MaxPool):
        return LayerSpec("maxpool", functools.partial(xnn.max_pool, **module.static()), {})
    if isinstance(module, xnn.AvgPool):
        return LayerSpec("avgpool", functools.partial(xnn.avg_pool, **module.static()), {})
    if isinstance(module, xnn.AdaptiveAvgPool):
        return LayerSpec("avgpool", functools.partial(xnn.adaptive_avg_pool, **module.static()), {})
    if isinstance(module, xnn.Add):
        return LayerSpec("add", xnn.add, {})
    if isinstance(module, xnn.Flatten):
        return LayerSpec("flatten", xnn.flatten, {})
    if isinstance(module, xnn.Dropout):
        return LayerSpec("dropout", lambda params, x: x, {})
    return None

