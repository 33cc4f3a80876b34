"""Rule constructors. Each validates its hyperparameters at once and returns a :class:`Rule`.

Linear-layer rules are parameterisations of the one engine in :mod:`xattr_jax.rules.core`
(notation: ``z = Σ_j x_j w_jk + b_k``, ``R_k`` the relevance arriving at output ``k``):

=================  =========================================================================
``epsilon(ε)``     ``R_j = Σ_k x_j w_jk / (z_k + ε·sign z_k) · R_k``  (Bach et al. 2015)
``zero()``         LRP-0, ``epsilon(0)``
``zplus()``        ``R_j = Σ_k (x⁺_j w⁺_jk + x⁻_j w⁻_jk)/Σ_j(·) · R_k``, positive bias kept
``alpha_beta(α,β)````α·(x⁺w⁺ + x⁻w⁻)/Σ(·) − β·(x⁺w⁻ + x⁻w⁺)/Σ(·)``, α − β = 1
``gamma(γ)``       weights ``w + γ w^±`` split by the sign of ``z`` (generalised γ, Andéol 2021)
``zbox(l, h)``     ``R_i = Σ_j (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij)/Σ_i(·) · R_j`` (Montavon 2017)
``flat()``         uniform: inputs and weights set to 1, bias 0; ``R_i = Σ_j R_j / Σ_i 1``
``wsquare()``      ``R_i = Σ_j w²_ij / Σ_i w²_ij · R_j``
``norm()``         proportional, for sums and average pools: ``R_i = x_i · f*(R ⊘ f(x))``
``excitation()``   ``R_in = x ⊙ f*(x, W⁺, R ⊘ f(x, W⁺))``, bias dropped, 0 where f(x,W⁺)=0
                   (Excitation Backprop, Zhang et al. IJCV 2018)
=================  =========================================================================

Element-wise rules: ``pass_rule()`` (identity), ``guided_relu()`` (``g·[z>0]·[g>0]``,
Springenberg et al. 2015), ``deconvnet_relu()`` (``max(g, 0)``, Zeiler & Fergus 2014),
``positive_maxpool()`` (routes ``max(g, 0)`` to the argmax; Kwon et al. ICPR 2020).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from .core import Rule, Term, linear_rule, safe_divide, stabilize

__all__ = [
    "epsilon",
    "zero",
    "zplus",
    "alpha_beta",
    "gamma",
    "zbox",
    "flat",
    "wsquare",
    "norm",
    "excitation",
    "pass_rule",
    "guided_relu",
    "deconvnet_relu",
    "positive_maxpool",
]


def _check_number(name, value, *, low=None, inclusive=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (not inclusive and value == low)):
        op = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {value!r}")
    return value


def _mod(weight=None, bias=None):
    """Parameter modifier: apply ``weight`` to the kernel and ``bias`` to the bias (None keeps)."""

    def modify(params):
        out = dict(params)
        if weight is not None and "kernel" in out:
            out["kernel"] = weight(out["kernel"])
        if "bias" in out and bias is not None:
            out["bias"] = bias(out["bias"])
        return out

    return modify


_pos = lambda a: jnp.maximum(a, 0)  # noqa: E731
_neg = lambda a: jnp.minimum(a, 0)  # noqa: E731
_zero = jnp.zeros_like
_ones = jnp.ones_like


def _sum_of_products(ins, grads):
    return sum(x * g for x, g in zip(ins, grads))


def epsilon(eps: float = 1e-6) -> Rule:
    """LRP-ε: ``R_j = Σ_k x_j w_jk / (z_k + ε·sign(z_k)) · R_k``, ``sign(0)=+1``; the bias absorbs.

    Args:
      eps: the stabiliser, ``>= 0``. Raises ``ValueError`` otherwise. (Bach et al., PLOS ONE 2015.)
    """
    eps = _check_number("epsilon", eps, low=0.0)
    return linear_rule(
        f"epsilon({eps:g})",
        [Term()],
        lambda r, zs: [r / stabilize(zs[0], eps)],
        _sum_of_products,
    )


def zero() -> Rule:
    """LRP-0: ``R_j = Σ_k x_j w_jk / z_k · R_k`` (0 where ``z_k = 0``)."""
    return linear_rule("zero", [Term()], lambda r, zs: [safe_divide(r, zs[0])], _sum_of_products)


def norm(stabilizer: float = 1e-6) -> Rule:
    """Proportional split for parameter-free linear layers (sums, average pools).

    ``R_i = x_i · f*(R / stab(f(x)))`` — LRP-ε without parameters (Zennit's ``Norm``).
    """
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    return linear_rule(
        f"norm({stabilizer:g})",
        [Term()],
        lambda r, zs: [r / stabilize(zs[0], stabilizer)],
        _sum_of_products,
    )


def zplus(stabilizer: float = 1e-6) -> Rule:
    """LRP-z⁺ (α=1, β=0): ``R_j = Σ_k (x⁺_j w⁺_jk + x⁻_j w⁻_jk) / Σ_j(x⁺w⁺ + x⁻w⁻ + b⁺) · R_k``.

    (Montavon et al., Pattern Recognition 2017.)
    """
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    return linear_rule(
        f"zplus({stabilizer:g})",
        [Term(_pos, _mod(_pos, _pos)), Term(_neg, _mod(_neg, _zero))],
        lambda r, zs: [r / stabilize(zs[0] + zs[1], stabilizer)] * 2,
        _sum_of_products,
    )


def alpha_beta(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> Rule:
    """LRP-αβ: ``R_j = Σ_k [α (x w)⁺_jk / Σ_j (x w)⁺ − β (x w)⁻_jk / Σ_j (x w)⁻] R_k``.

    The positive part is built from ``x⁺w⁺ + x⁻w⁻`` (+ b⁺), the negative from ``x⁺w⁻ + x⁻w⁺``
    (+ b⁻). Requires ``α, β >= 0`` and ``α − β = 1``. (Bach et al., PLOS ONE 2015.)
    """
    alpha = _check_number("alpha", alpha, low=0.0)
    beta = _check_number("beta", beta, low=0.0)
    if abs(alpha - beta - 1.0) > 1e-12:
        raise ValueError(f"alpha - beta must equal 1, got alpha={alpha}, beta={beta}")
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    terms = [
        Term(_pos, _mod(_pos, _pos)),
        Term(_neg, _mod(_neg, _zero)),
        Term(_pos, _mod(_neg, _neg)),
        Term(_neg, _mod(_pos, _zero)),
    ]

    def mapper(r, zs):
        sp = r / stabilize(zs[0] + zs[1], stabilizer)
        sn = r / stabilize(zs[2] + zs[3], stabilizer)
        return [sp, sp, sn, sn]

    def reducer(ins, gs):
        return alpha * (ins[0] * gs[0] + ins[1] * gs[1]) - beta * (ins[2] * gs[2] + ins[3] * gs[3])

    return linear_rule(f"alpha_beta({alpha:g},{beta:g})", terms, mapper, reducer)


def gamma(gamma: float = 0.25, stabilizer: float = 1e-6) -> Rule:
    """Generalised LRP-γ: weights ``w + γ w⁺`` where the output is positive, ``w + γ w⁻`` where negative.

    For ``z_k > 0``: ``R_j = Σ_k (x⁺(w+γw⁺) + x⁻(w+γw⁻))_jk / Σ_j(·) · R_k``; for ``z_k < 0`` the
    mirrored terms. Equals the original γ-rule for ``x ≥ 0``. (Montavon et al. 2019; Andéol et al. 2021.)
    """
    g = _check_number("gamma", gamma, low=0.0)
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    up = lambda w: w + g * jnp.maximum(w, 0)  # noqa: E731
    down = lambda w: w + g * jnp.minimum(w, 0)  # noqa: E731
    terms = [
        Term(_pos, _mod(up, up)),
        Term(_neg, _mod(down, _zero)),
        Term(_pos, _mod(down, down)),
        Term(_neg, _mod(up, _zero)),
        Term(),
    ]

    def mapper(r, zs):
        pos = (zs[4] > 0).astype(r.dtype)
        neg = (zs[4] < 0).astype(r.dtype)
        sp = pos * r / stabilize(zs[0] + zs[1], stabilizer)
        sn = neg * r / stabilize(zs[2] + zs[3], stabilizer)
        return [sp, sp, sn, sn, None]

    return linear_rule(f"gamma({g:g})", terms, mapper, _sum_of_products)


def _bound(name, v):
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return _check_number(name, v)
    arr = jnp.asarray(v)
    if arr.ndim > 1 or not jnp.issubdtype(arr.dtype, jnp.floating) and not jnp.issubdtype(
        arr.dtype, jnp.integer
    ):
        raise ValueError(f"{name} must be a scalar or a per-channel vector, got shape {arr.shape}")
    return tuple(float(a) for a in jax.device_get(arr).reshape(-1))


def zbox(low, high, stabilizer: float = 1e-6) -> Rule:
    """LRP-zB for bounded inputs ``l ≤ x ≤ h``: ``R_i = Σ_j (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij)/Σ_i(·) R_j``.

    Args:
      low, high: scalars or per-channel sequences (last axis), e.g. ``(0 − μ_c)/σ_c`` and
        ``(1 − μ_c)/σ_c`` for normalised images. Each ``low`` must be ``<=`` its ``high``.
    (Montavon et al., Pattern Recognition 2017.)
    """
    lo, hi = _bound("low", low), _bound("high", high)
    lo_a, hi_a = jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)
    if lo_a.shape != hi_a.shape and lo_a.ndim and hi_a.ndim:
        raise ValueError(f"low and high must have the same length, got {lo_a.shape} and {hi_a.shape}")
    if bool(jnp.any(lo_a > hi_a)):
        raise ValueError(f"low must be <= high, got low={lo}, high={hi}")
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    l_in = lambda x: jnp.broadcast_to(jnp.asarray(lo, x.dtype), x.shape)  # noqa: E731
    h_in = lambda x: jnp.broadcast_to(jnp.asarray(hi, x.dtype), x.shape)  # noqa: E731
    terms = [Term(), Term(l_in, _mod(_pos, _pos)), Term(h_in, _mod(_neg, _neg))]

    def mapper(r, zs):
        s = r / stabilize(zs[0] - zs[1] - zs[2], stabilizer)
        return [s, s, s]

    def reducer(ins, gs):
        return ins[0] * gs[0] - ins[1] * gs[1] - ins[2] * gs[2]

    return linear_rule(f"zbox({lo},{hi})", terms, mapper, reducer, kinds=frozenset({"conv", "dense"}))


def flat(stabilizer: float = 1e-6) -> Rule:
    """Flat rule: ``R_i = Σ_j R_j / Σ_i 1`` over each output's receptive field (inputs, weights = 1)."""
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    return linear_rule(
        "flat",
        [Term(_ones, _mod(_ones, _zero))],
        lambda r, zs: [r / stabilize(zs[0], stabilizer)],
        lambda ins, gs: gs[0],
        kinds=frozenset({"conv", "dense"}),
    )


def wsquare(stabilizer: float = 1e-6) -> Rule:
    """w²-rule: ``R_i = Σ_j w²_ij / Σ_i w²_ij · R_j`` (bias squared too, as Zennit)."""
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    sq = lambda a: a * a  # noqa: E731
    return linear_rule(
        "wsquare",
        [Term(_ones, _mod(sq, sq))],
        lambda r, zs: [r / stabilize(zs[0], stabilizer)],
        lambda ins, gs: gs[0],
        kinds=frozenset({"conv", "dense"}),
    )


def excitation() -> Rule:
    """Excitation Backprop: ``p_in = x ⊙ f*(x, W⁺, p ⊘ f(x, W⁺))``, bias dropped, 0 where ``f(x,W⁺)=0``.

    On parameter-free linear layers (average pools, sums) ``W⁺ = W`` and it is the proportional
    split. (Zhang et al., Top-down Neural Attention by Excitation Backprop, IJCV 2018.)
    """
    return linear_rule(
        "excitation",
        [Term(params=_mod(_pos, _zero))],
        lambda r, zs: [safe_divide(r, zs[0])],
        _sum_of_products,
    )


def _elementwise(name, backward_fn, kinds) -> Rule:
    def backward(fn, params, xs, y, ct):
        return (backward_fn(xs[0], y, ct),)

    return Rule(name, backward, frozenset(kinds))


def pass_rule() -> Rule:
    """Identity: the signal passes unchanged (activations, batch-norm, dropout)."""
    return _elementwise(
        "pass", lambda x, y, g: g, {"relu", "batchnorm", "dropout", "maxpool", "avgpool"}
    )


def guided_relu() -> Rule:
    """Guided backprop ReLU: ``g_in = g · [x > 0] · [g > 0]`` (Springenberg et al., ICLR-W 2015)."""
    return _elementwise("guided_relu", lambda x, y, g: jnp.where((x > 0) & (g > 0), g, 0.0), {"relu"})


def deconvnet_relu() -> Rule:
    """Deconvnet ReLU: ``g_in = max(g, 0)``, no forward mask (Zeiler & Fergus, ECCV 2014)."""
    return _elementwise("deconvnet_relu", lambda x, y, g: jnp.maximum(g, 0), {"relu"})


def positive_maxpool() -> Rule:
    """Max-pool passing only positive gradients: ``g_in = route_to_argmax(max(g, 0))``.

    The guided non-linearity for max-pooling (Kwon, Koo & Cho, ICPR 2020; our interpretation).
    """

    def backward(fn, params, xs, y, ct):
        _, vjp = jax.vjp(lambda x: fn(params, x), xs[0])
        return vjp(jnp.maximum(ct, 0))

    return Rule("positive_maxpool", backward, frozenset({"maxpool"}))

