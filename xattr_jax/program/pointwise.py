"""1×1 convolutions with matrix-product derivatives.

A channels-last 1×1 convolution (no padding, no feature groups, any stride and kernel layout) is a
matrix product over its features at every kept position: ``y[n, p, o] = Σ_i x[n, s·p, i] ·
W[i, o]``. Its forward is bound as traced (the same values), but its derivative is written as that
product (``dot_general`` on the strided input), so the transposes that backward passes need are
matrix products with a transposed operand. Differentiated as a convolution, XLA:CPU instead
transposes every kernel at every call (the kernels are arguments, so nothing folds them): about
34 ms of ResNet50's 174 ms gradient at batch 1, and its 1×1 input-gradient convolutions ran
1.6-3.5x slower than the products. The rule is a ``custom_jvp`` whose tangent is linear, so it
differentiates to any order in either mode.

Features-first layouts (NCHW, as torch modules run through torchax) keep the convolution's
derivative: there the product would transpose every activation (ResNet50's gradient at batch 1:
0.21 -> 0.27 s).
"""

from __future__ import annotations

import jax
from jax import lax
from jax.custom_derivatives import SymbolicZero

from .ir import bind

__all__ = ["is_pointwise", "pointwise_conv"]


def is_pointwise(params, kernel_shape) -> bool:
    """A convolution that is a per-position matrix product with no transposes: 1×1 window, no
    padding, no input dilation, no feature or batch groups, features last in its input and output
    (the same layout)."""
    dn = params["dimension_numbers"]
    return (dn.lhs_spec == dn.out_spec and dn.lhs_spec[1] == len(dn.lhs_spec) - 1
            and all(kernel_shape[d] == 1 for d in dn.rhs_spec[2:])
            and all(tuple(p) == (0, 0) for p in params["padding"])
            and all(d == 1 for d in params["lhs_dilation"])
            and params["feature_group_count"] == 1 and params["batch_group_count"] == 1)


def _product(params, x, w):
    """``conv(x, w)`` of a pointwise convolution as a strided slice and one ``dot_general``."""
    dn = params["dimension_numbers"]
    lhs, rhs = dn.lhs_spec, dn.rhs_spec
    strides = [1] * x.ndim
    for d, s in zip(lhs[2:], params["window_strides"]):
        strides[d] = s
    if any(s != 1 for s in strides):
        x = lax.slice(x, [0] * x.ndim, x.shape, strides)
    w2 = lax.squeeze(w, rhs[2:])  # [O, I] or [I, O], as the kernel's layout orders them
    i_axis = 0 if rhs[1] < rhs[0] else 1
    # x's axes but its features, then the output features: the output's layout (is_pointwise)
    return lax.dot_general(x, w2, (((lhs[1],), (i_axis,)), ((), ())), precision=params["precision"],
                           preferred_element_type=params["preferred_element_type"])


def pointwise_conv(op, x, w):
    """``op`` (a pointwise ``conv_general_dilated``) on ``(x, w)``: the traced convolution's
    values, with :func:`_product` as its derivative in ``x`` and ``w``."""

    @jax.custom_jvp
    def conv(x, w):
        return bind(op, [x, w])[0]

    def jvp(primals, tangents):
        (x, w), (tx, tw) = primals, tangents
        y = conv(x, w)
        terms = []
        if not isinstance(tx, SymbolicZero):
            terms.append(_product(op.params, tx, w))
        if not isinstance(tw, SymbolicZero):
            terms.append(_product(op.params, x, tw))
        if not terms:
            return y, lax.zeros_like_array(y)
        return y, terms[0] if len(terms) == 1 else terms[0] + terms[1]

    conv.defjvp(jvp, symbolic_zeros=True)
    return conv(x, w)
