"""The zoo's building blocks: named modules for PyTorch-semantics operations.

Every module here is a thin ``flax.linen.Module`` whose ``__call__`` is exactly one of the pure
functions below. The zoo uses them so that its layers carry torchvision's names (``features.1``,
``layer1.0.relu``); rules do not need them: the engine finds ReLUs, pools and sums in any program
(:mod:`xattr_jax.program`). All tensors are NHWC.

Padding is always explicit and follows PyTorch's arithmetic (``ceil_mode``, adaptive bins), so the
zoo's models reproduce torchvision's for every input size torchvision accepts.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "ReLU",
    "MaxPool",
    "AvgPool",
    "AdaptiveAvgPool",
    "Add",
    "Flatten",
    "Dropout",
    "relu",
    "max_pool",
    "avg_pool",
    "adaptive_avg_pool",
    "add",
    "flatten",
    "pool_output_size",
]


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {v!r}")
    return v


def pool_output_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """Output length of a 1-D pooling window, with PyTorch's rule for ``ceil_mode``.

    ``out = floor_or_ceil((size + 2*pad - kernel) / stride) + 1``, and in ceil mode the last window
    must start inside the input or the left padding (PyTorch's ``pooling_output_shape``).
    """
    num = size + 2 * pad - kernel
    if num < 0:
        raise ValueError(
            f"pooling window {kernel} (padding {pad}) is larger than the input ({size}); "
            "use a larger input"
        )
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_padding(shape, kernel, stride, pad, ceil_mode):
    """Explicit (low, high) padding per spatial axis so that reduce_window gives torch's size."""
    pads = []
    for size, k, s, p in zip(shape, kernel, stride, pad):
        out = pool_output_size(size, k, s, p, ceil_mode)
        high = max((out - 1) * s + k - size - p, 0)
        pads.append((p, high))
    return pads


def relu(params, x):
    """``max(x, 0)`` with gradient 0 at 0 (as PyTorch)."""
    del params
    return jax.nn.relu(x)


def max_pool(params, x, *, kernel, stride, padding, ceil_mode):
    """Max pooling over NHWC windows, padded with ``-inf`` as PyTorch."""
    del params
    pads = _pool_padding(x.shape[1:3], kernel, stride, padding, ceil_mode)
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, *kernel, 1), (1, *stride, 1), [(0, 0), *pads, (0, 0)]
    )


def avg_pool(params, x, *, kernel, stride, padding):
    """Average pooling over NHWC windows; zero padding counts in the divisor (PyTorch default)."""
    del params
    pads = [(p, p) for p in padding]
    s = lax.reduce_window(x, 0.0, lax.add, (1, *kernel, 1), (1, *stride, 1), [(0, 0), *pads, (0, 0)])
    return s / np.asarray(kernel[0] * kernel[1], dtype=x.dtype)


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """[out, size] averaging matrix with PyTorch's adaptive bins [floor(i*n/o), ceil((i+1)*n/o))."""
    m = np.zeros((out, size), dtype=np.float64)
    for i in range(out):
        lo = (i * size) // out
        hi = -(-((i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(params, x, *, output_size):
    """Adaptive average pooling with PyTorch's bin arithmetic, for any input size."""
    del params
    h, w = x.shape[1:3]
    oh, ow = output_size
    if (h, w) == (oh, ow):
        return x
    if oh == 1 and ow == 1:
        return jnp.mean(x, axis=(1, 2), keepdims=True)
    if h % oh == 0 and w % ow == 0:
        n, _, _, c = x.shape
        return x.reshape(n, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))
    # one averaging matrix over (h, w) -> (oh, ow): a single linear map, one layer for the rules
    m = jnp.asarray(np.kron(_adaptive_matrix(h, oh), _adaptive_matrix(w, ow)), dtype=x.dtype)
    n, _, _, c = x.shape
    y = lax.dot_general(m, x.reshape(n, h * w, c), (((1,), (1,)), ((), ())))  # [oh*ow, n, c]
    return jnp.transpose(y, (1, 0, 2)).reshape(n, oh, ow, c)


def add(params, a, b):
    """Residual sum ``a + b``."""
    del params
    return a + b


def flatten(params, x):
    """``[N, ...] -> [N, prod(...)]`` in NHWC order (converters permute the next layer's weights)."""
    del params
    return x.reshape(x.shape[0], -1)


class ReLU(nn.Module):
    """Rectified linear unit as an addressable layer."""

    @nn.compact
    def __call__(self, x):
        return relu({}, x)


class MaxPool(nn.Module):
    """Max pooling (``torch.nn.MaxPool2d`` semantics, NHWC)."""

    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] | None = None
    padding: int | Sequence[int] = 0
    ceil_mode: bool = False

    def static(self) -> dict:
        k = _pair(self.kernel_size)
        s = k if self.stride is None else _pair(self.stride)
        return dict(kernel=k, stride=s, padding=_pair(self.padding), ceil_mode=bool(self.ceil_mode))

    @nn.compact
    def __call__(self, x):
        return max_pool({}, x, **self.static())


class AvgPool(nn.Module):
    """Average pooling (``torch.nn.AvgPool2d`` with ``count_include_pad=True``, NHWC)."""

    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] | None = None
    padding: int | Sequence[int] = 0

    def static(self) -> dict:
        k = _pair(self.kernel_size)
        s = k if self.stride is None else _pair(self.stride)
        return dict(kernel=k, stride=s, padding=_pair(self.padding))

    @nn.compact
    def __call__(self, x):
        return avg_pool({}, x, **self.static())


class AdaptiveAvgPool(nn.Module):
    """Adaptive average pooling (``torch.nn.AdaptiveAvgPool2d`` bins, NHWC)."""

    output_size: int | Sequence[int]

    def static(self) -> dict:
        return dict(output_size=_pair(self.output_size))

    @nn.compact
    def __call__(self, x):
        return adaptive_avg_pool({}, x, **self.static())


class Add(nn.Module):
    """Residual sum of two tensors, as a layer so sum rules can attach to it."""

    @nn.compact
    def __call__(self, a, b):
        return add({}, a, b)


class Flatten(nn.Module):
    """Flatten all but the batch axis (NHWC order)."""

    @nn.compact
    def __call__(self, x):
        return flatten({}, x)


class Dropout(nn.Module):
    """Dropout in inference mode: the identity. Attribution always runs the model in eval mode."""

    rate: float = 0.5

    @nn.compact
    def __call__(self, x):
        return x

