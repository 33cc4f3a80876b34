"""Rule constructors. Each validates its hyperparameters at once and returns a :class:`Rule` that
carries them (``hyper``) and compares equal to another exactly when they are equal.

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
``zbox_global()``  zB with the per-sample image min/max as bounds, no bias (RAP/RSP input layer)
``rsp_add()``      residual sum split ∝ ``max(x, 0) + 1e-9`` (RSP)
``contrastive_excitation()``
                   ``EB_W(R) − EB_{−W}(R)`` on the classifier (contrastive EB, c-MWP)
=================  =========================================================================

Rules non-linear in ``R``: ``rsp_conv()`` (the surrogate-kernel bipolar conv rule of Relative
Sectional Propagation, Nam et al. AAAI 2021), ``rsp_batchnorm()`` (masked identity) and
``skip_ignored()`` (residual sum: all signal to the branch).

Element-wise rules: ``pass_rule()`` (identity), ``guided_relu()`` (``f'(z)·max(g, 0)``,
Springenberg et al. 2015), ``deconvnet_relu()`` (``max(g, 0)``, Zeiler & Fergus 2014),
``positive_maxpool()`` (routes ``max(g, 0)`` to the argmax; Kwon et al. ICPR 2020).

Rules for the kinds beyond ReLU networks: ``take_all()`` (gates and attention's ``A·V``: all to the
value), ``uniform_product()`` (half to each factor), ``constant_statistics()`` (normalisations, σ
constant), ``attnlrp_softmax()`` and ``block()`` (softmax: AttnLRP / CP-LRP).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .core import LayerFn, Rule, Term, contract, linear_rule, safe_divide, stabilize, upcast

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
    "take_all",
    "uniform_product",
    "constant_statistics",
    "attnlrp_softmax",
    "block",
    "contrastive_excitation",
    "skip_ignored",
    "zbox_global",
    "rsp_add",
    "rsp_batchnorm",
    "rsp_conv",
    "PURGES",
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


def _minus(f):
    """``−f(a)``."""
    return lambda a: -f(a)


def _total(zs):
    """``Σ_t z_t``: what a ``shared`` rule's mapper reads (one term, or the terms apart)."""
    return sum(zs[1:], zs[0])


def _negative_term(weight):
    """The term ``x⁻ · weight(W)`` with no bias: exactly zero after a ReLU, where it is skipped."""
    return Term(_neg, _mod(weight, _zero), negative=True)


def _sum_of_products(ins, grads):
    return sum(x * g for x, g in zip(ins, grads))


def _stabilized(name: str, hyper: str, eps: float) -> Rule:
    """``R_j = Σ_k x_j w_jk / stab(z_k, eps) · R_k`` as the rule ``name`` (``eps`` recorded as ``hyper``)."""
    return linear_rule(name, [Term()], lambda r, zs: [r / stabilize(zs[0], eps)], _sum_of_products,
                       hyper=((hyper, eps),))  # fmt: skip


def epsilon(eps: float = 1e-6) -> Rule:
    """LRP-ε: ``R_j = Σ_k x_j w_jk / (z_k + ε·sign(z_k)) · R_k``, ``sign(0)=+1``; the bias absorbs.

    Args:
      eps: the stabiliser, ``>= 0``. Raises ``ValueError`` otherwise. (Bach et al., PLOS ONE 2015.)
    """
    return _stabilized("epsilon", "eps", _check_number("epsilon", eps, low=0.0))


def zero() -> Rule:
    """LRP-0: ``R_j = Σ_k x_j w_jk / z_k · R_k`` (0 where ``z_k = 0``)."""
    return linear_rule("zero", [Term()], lambda r, zs: [safe_divide(r, zs[0])], _sum_of_products, hyper=())


def norm(stabilizer: float = 1e-6) -> Rule:
    """Proportional split for parameter-free linear layers (sums, average pools).

    ``R_i = x_i · f*(R / stab(f(x)))`` — LRP-ε without parameters (Zennit's ``Norm``).
    """
    return _stabilized("norm", "stabilizer", _check_number("stabilizer", stabilizer, low=0.0))


def zplus(stabilizer: float = 1e-6) -> Rule:
    """LRP-z⁺ (α=1, β=0): ``R_j = Σ_k (x⁺_j w⁺_jk + x⁻_j w⁻_jk) / Σ_j(x⁺w⁺ + x⁻w⁻ + b⁺) · R_k``.

    (Montavon et al., Pattern Recognition 2017.)
    """
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    return linear_rule(
        "zplus",
        [Term(_pos, _mod(_pos, _pos)), _negative_term(_neg)],
        lambda r, zs: [r / stabilize(_total(zs), stabilizer)] * len(zs),
        _sum_of_products,
        hyper=(("stabilizer", stabilizer),),
        shared=True,  # one convolution over [x⁺ | x⁻] with [W⁺ ; W⁻] where x takes both signs
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
        _negative_term(_neg),
        Term(_pos, _mod(_neg, _neg)),
        _negative_term(_pos),
    ]

    def mapper(r, zs):
        sp = r / stabilize(zs[0] + zs[1], stabilizer)
        sn = r / stabilize(zs[2] + zs[3], stabilizer)
        return [sp, sp, sn, sn]

    def reducer(ins, gs):
        return alpha * (ins[0] * gs[0] + ins[1] * gs[1]) - beta * (ins[2] * gs[2] + ins[3] * gs[3])

    return linear_rule("alpha_beta", terms, mapper, reducer,
                       hyper=(("alpha", alpha), ("beta", beta), ("stabilizer", stabilizer)))


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
        _negative_term(down),
        Term(_pos, _mod(down, down)),
        _negative_term(up),
        Term(),
    ]

    def mapper(r, zs):
        pos = (zs[4] > 0).astype(r.dtype)
        neg = (zs[4] < 0).astype(r.dtype)
        sp = pos * r / stabilize(zs[0] + zs[1], stabilizer)
        sn = neg * r / stabilize(zs[2] + zs[3], stabilizer)
        return [sp, sp, sn, sn, None]

    return linear_rule("gamma", terms, mapper, _sum_of_products, hyper=(("gamma", g), ("stabilizer", stabilizer)))


def _bound(name, v):
    """A zB bound as a float or a tuple of floats (numpy only: composites are built inside jit)."""
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return _check_number(name, v)
    arr = np.asarray(jax.device_get(v))
    if arr.ndim > 1 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a scalar or a per-channel vector, got shape {arr.shape}")
    return tuple(_check_number(name, float(a)) for a in arr.reshape(-1))


def zbox(low, high, stabilizer: float = 1e-6) -> Rule:
    """LRP-zB for bounded inputs ``l ≤ x ≤ h``: ``R_i = Σ_j (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij)/Σ_i(·) R_j``.

    Args:
      low, high: scalars or per-channel sequences (last axis), e.g. ``(0 − μ_c)/σ_c`` and
        ``(1 − μ_c)/σ_c`` for normalised images. Each ``low`` must be ``<=`` its ``high``.
    (Montavon et al., Pattern Recognition 2017.)
    """
    lo, hi = _bound("low", low), _bound("high", high)
    lo_a, hi_a = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if lo_a.shape != hi_a.shape and lo_a.ndim and hi_a.ndim:
        raise ValueError(f"low and high must have the same length, got {lo_a.shape} and {hi_a.shape}")
    if bool(np.any(lo_a > hi_a)):
        raise ValueError(f"low must be <= high, got low={lo}, high={hi}")
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    l_in = lambda x: jnp.broadcast_to(jnp.asarray(lo, x.dtype), x.shape)  # noqa: E731
    h_in = lambda x: jnp.broadcast_to(jnp.asarray(hi, x.dtype), x.shape)  # noqa: E731
    # the bounds' terms carry their minus sign in their parameters (−W⁺, −W⁻): a plain sum of terms
    terms = [Term(), Term(l_in, _mod(_minus(_pos), _minus(_pos))), Term(h_in, _mod(_minus(_neg), _minus(_neg)))]

    def mapper(r, zs):
        return [r / stabilize(_total(zs), stabilizer)] * len(zs)

    return linear_rule("zbox", terms, mapper, _sum_of_products, kinds=frozenset({"conv", "dense"}),
                       hyper=(("low", lo), ("high", hi), ("stabilizer", stabilizer)), shared=True)


def _inputs_as_one(name: str, params, stabilizer) -> Rule:
    """``R_i = Σ_j ρ(w_ij) / Σ_i ρ(w_ij) · R_j`` for conv / dense layers: every input taken as 1 and
    the parameters modified by ``params`` (:func:`_mod`), so the split follows the weights alone."""
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    return linear_rule(name, [Term(_ones, params)], lambda r, zs: [r / stabilize(zs[0], stabilizer)],
                       lambda ins, gs: gs[0], kinds=frozenset({"conv", "dense"}),
                       hyper=(("stabilizer", stabilizer),))  # fmt: skip


def flat(stabilizer: float = 1e-6) -> Rule:
    """Flat rule: ``R_i = Σ_j R_j / Σ_i 1`` over each output's receptive field (inputs, weights = 1)."""
    return _inputs_as_one("flat", _mod(_ones, _zero), stabilizer)


def wsquare(stabilizer: float = 1e-6) -> Rule:
    """w²-rule: ``R_i = Σ_j w²_ij / Σ_i w²_ij · R_j`` (bias squared too, as Zennit)."""
    sq = lambda a: a * a  # noqa: E731
    return _inputs_as_one("wsquare", _mod(sq, sq), stabilizer)


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
        hyper=(),
    )


def _elementwise(name, backward_fn, kinds) -> Rule:
    def backward(fn, params, xs, y, ct):
        return (backward_fn(xs[0], y, ct),)

    return Rule(name, backward, frozenset(kinds), hyper=())


def pass_rule() -> Rule:
    """Identity: the signal passes unchanged (rectifiers, other activations, batch-norm: element-wise
    layers; for an activation ``f`` this is LRP's ``R·f(x)/f(x)``, AttnLRP / LXT)."""
    return _elementwise(
        "pass_rule", lambda x, y, g: g, {"relu", "activation", "batchnorm"}
    )


def _slope(fn, params, x):
    """``f'(x)`` of an element-wise layer (its own derivative: ``[0 < x < c]`` for a rectifier)."""
    _, s = jax.jvp(lambda a: fn(params, a), (x,), (jnp.ones_like(x),))
    return s


def guided_relu() -> Rule:
    """Guided backprop: ``g_in = f'(x) · max(g, 0)``; for ReLU ``g · [x > 0] · [g > 0]``, for ReLU6
    ``[0 < x < 6]``, for a smooth activation its own slope (Springenberg et al., ICLR-W 2015)."""

    def backward(fn, params, xs, y, ct):
        return (_slope(fn, params, xs[0]) * jnp.maximum(ct, 0),)

    return Rule("guided_relu", backward, frozenset({"relu", "activation"}), hyper=())


def deconvnet_relu() -> Rule:
    """Deconvnet: ``g_in = max(g, 0)`` on every activation, no forward mask (Zeiler & Fergus, ECCV 2014)."""
    return _elementwise("deconvnet_relu", lambda x, y, g: jnp.maximum(g, 0), {"relu", "activation"})


def take_all(stabilizer: float = 1e-6) -> Rule:
    """Signal-take-all for ``y = a ⊙ s`` (a gate) or ``y = A·v`` (attention weights ``A`` constant):
    ``R_a = a ⊙ J_aᵀ(R ⊘ y)``, ``R_s = 0``; for a gate ``R_a = R`` (Arras et al. 2017; CP-LRP, Ali
    et al. ICML 2022). The layer's first input is the value, the second what weighs it.
    """
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)

    def backward(fn, params, xs, y, ct):
        a, s = upcast(xs[0]), xs[1]
        z, vjp = jax.vjp(lambda v: fn(params, v, s), a)
        (g,) = vjp(upcast(ct) / stabilize(z, stabilizer))
        return (a * g, jnp.zeros_like(s))

    return Rule("take_all", backward, frozenset({"gate", "product"}), hyper=(("stabilizer", stabilizer),))


def uniform_product(stabilizer: float = 1e-6) -> Rule:
    """Uniform rule for a product of two x-dependent values: each operand gets half,
    ``R_i = ½ x_i ⊙ J_iᵀ(R ⊘ y)`` (AttnLRP, Achtibat et al. ICML 2024)."""
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)
    return linear_rule(
        "uniform_product",
        [Term()],
        lambda r, zs: [r / stabilize(zs[0], stabilizer)],
        lambda ins, gs: 0.5 * ins[0] * gs[0],
        kinds=frozenset({"product"}),
        hyper=(("stabilizer", stabilizer),),
    )


def constant_statistics(stabilizer: float = 1e-6) -> Rule:
    """LRP-ε through a normalisation with its statistic σ a constant: ``y = (x − μ(x))·γ/σ + β`` is
    then linear in ``x`` and ``R_x = x ⊙ J_σᵀ(R ⊘ y)``, the bias absorbing (AttnLRP / LXT)."""
    stabilizer = _check_number("stabilizer", stabilizer, low=0.0)

    def backward(fn, params, xs, y, ct):
        frozen = fn.constant_statistics if isinstance(fn, LayerFn) and fn.constant_statistics else fn
        x = upcast(xs[0])
        z, vjp = jax.vjp(lambda a: frozen(params, a), x)
        (g,) = vjp(upcast(ct) / stabilize(z, stabilizer))
        return (x * g,)

    return Rule("constant_statistics", backward, frozenset({"norm"}), hyper=(("stabilizer", stabilizer),))


def attnlrp_softmax() -> Rule:
    """AttnLRP's softmax rule: ``R_x = x ⊙ (R − s·ΣR)`` = ``x ⊙ J_sᵀ(R ⊘ s)`` (Achtibat et al. ICML 2024)."""
    return linear_rule("attnlrp_softmax", [Term()], lambda r, zs: [safe_divide(r, zs[0])], _sum_of_products,
                       kinds=frozenset({"softmax"}), hyper=())


def block() -> Rule:
    """No signal passes: ``R_x = 0`` (CP-LRP's softmax, whose output is taken as constant)."""
    return _elementwise("block", lambda x, y, g: jnp.zeros_like(x), {"softmax"})


def positive_maxpool() -> Rule:
    """Max-pool passing only positive gradients: ``g_in = route_to_argmax(max(g, 0))``.

    The guided non-linearity for max-pooling (Kwon, Koo & Cho, ICPR 2020; our interpretation).
    """

    def backward(fn, params, xs, y, ct):
        _, vjp = jax.vjp(lambda x: fn(params, x), xs[0])
        return vjp(jnp.maximum(ct, 0))

    return Rule("positive_maxpool", backward, frozenset({"maxpool"}), hyper=())



# ----------------------------------------------------------------------------------------------
# Excitation Backprop family and Relative Sectional Propagation (RSP)

_negw = lambda w: jnp.maximum(-w, 0)  # noqa: E731  ((−W)⁺ = −W⁻)


def contrastive_excitation() -> Rule:
    """Contrastive Excitation Backprop on the classifier layer: ``p_in = EB_W(p) − EB_{−W}(p)``.

    ``p_in = x ⊙ W⁺ᵀ(p ⊘ W⁺ᵀx) − x ⊙ (−W)⁺ᵀ(p ⊘ (−W)⁺ᵀx)``, bias dropped, ``⊘`` the safe division
    (0 where the normaliser is 0). Put on the top (classifier) layer, it gives at its input the
    contrast ``Δ = p − p̄`` of c-MWP, where ``p̄`` is Excitation Backprop through the classifier
    with negated weights (the "dual" output unit). No clamping: ``Δ`` is signed. Because EB is
    linear in ``p``, one backward pass below this layer yields the contrastive map.
    Two terms of the linear engine. (Zhang et al., Top-down Neural Attention by Excitation
    Backprop, ECCV 2016 / IJCV 2018, docs/methods.md#contrastive-excitation-backprop.)

    Example:
      >>> rules = {"classifier.6": contrastive_excitation(), "features.28": excitation()}
    """

    def reducer(ins, gs):
        return ins[0] * gs[0] - ins[1] * gs[1]

    return linear_rule(
        "contrastive_excitation",
        [Term(params=_mod(_pos, _zero)), Term(params=_mod(_negw, _zero))],
        lambda r, zs: [safe_divide(r, zs[0]), safe_divide(r, zs[1])],
        reducer,
        kinds=frozenset({"conv", "dense"}),
        hyper=(),
    )


def skip_ignored() -> Rule:
    """Residual sum that sends the whole signal to the residual branch: ``(R_branch, R_skip) = (R, 0)``.

    The rule of the 2017 Caffe Excitation Backprop README ("ignore the bottom input corresponding to
    the skip link"); the layer's first input is the branch (``Add()(branch, skip)``).
    """

    def backward(fn, params, xs, y, ct):
        if len(xs) != 2:
            raise ValueError(f"skip_ignored needs a two-input sum (branch, skip), got {len(xs)} inputs")
        return (ct, jnp.zeros_like(xs[1]))

    return Rule("skip_ignored", backward, frozenset({"add"}), hyper=())


def _per_sample(reduce):
    def modifier(x):
        axes = tuple(range(1, x.ndim))
        return jnp.broadcast_to(reduce(x, axis=axes, keepdims=True), x.shape)

    return modifier


def zbox_global() -> Rule:
    """zB with image-global bounds (RAP/RSP's first layer): ``L = min x``, ``H = max x`` per sample.

    ``Za = f(x, W) − f(L, W⁺) − f(H, W⁻)`` (no bias; the constant images ``L``, ``H`` are zero
    padded like ``x``), ``S = R ⊘ Za``,
    ``R_in = x ⊙ f*(W, S) − L ⊙ f*(W⁺, S) − H ⊙ f*(W⁻, S)``. The min/max run over every channel and
    pixel of one sample — not the per-channel pixel-domain bounds of :func:`zbox`. Signed ``R``
    passes through linearly. (Nam et al., Relative Attributing Propagation, AAAI 2020; RSP, AAAI
    2021; docs/methods.md#rsp-input-layer.)
    """
    terms = [  # the bounds' terms carry their minus sign in their kernels (−W⁺, −W⁻)
        Term(params=_mod(None, _zero)),
        Term(_per_sample(jnp.min), _mod(_minus(_pos), _zero)),
        Term(_per_sample(jnp.max), _mod(_minus(_neg), _zero)),
    ]

    def mapper(r, zs):
        return [safe_divide(r, _total(zs))] * len(zs)

    return linear_rule("zbox_global", terms, mapper, _sum_of_products, kinds=frozenset({"conv", "dense"}),
                       hyper=(), shared=True)


def rsp_add(offset: float = 1e-9) -> Rule:
    """RSP's residual sum: split ``R`` in proportion to the clamped inputs.

    ``a' = max(a, 0) + δ``, ``b' = max(b, 0) + δ``, ``R_a = a'·R/(a' + b')``, ``R_b = b'·R/(a' + b')``
    with ``δ = offset`` (1e-9 in the released code). Conserves ``R``. (Nam et al. AAAI 2021;
    docs/methods.md#rsp-on-resnet.)
    """
    offset = _check_number("offset", offset, low=0.0, inclusive=False)
    clamp = lambda x: jnp.maximum(x, 0) + jnp.asarray(offset, x.dtype)  # noqa: E731
    return linear_rule(
        "rsp_add",
        [Term(clamp)],
        lambda r, zs: [safe_divide(r, zs[0])],
        _sum_of_products,
        kinds=frozenset({"add"}),
        hyper=(("offset", offset),),
    )


def rsp_batchnorm() -> Rule:
    """RSP's batch-norm rule: the identity, masked where the input times the BN scale is 0.

    ``R_in = R · [x · γ/√(σ² + ε) ≠ 0]``. This is what the released rule (bias share subtracted,
    then added back through an ``x·(R/(x·w))·w`` form) computes algebraically (docs/methods.md#rsp-on-resnet).
    """

    def backward(fn, params, xs, y, ct):
        x = xs[0]
        # the effective scale of the affine fn, read off its slope at every element
        _, w = jax.jvp(lambda a: fn(params, a), (x,), (jnp.ones_like(x),))
        return (jnp.where(x * w != 0, ct, 0.0),)

    return Rule("rsp_batchnorm", backward, frozenset({"batchnorm"}), hyper=())


PURGES = ("none", "sign_consistent", "uniform_spread")


def _purge(r, purge):
    """The per-position purge of RSP's incoming relevance (docs/methods.md#rsp-purge)."""
    if purge == "none":
        return r
    s = jnp.sum(r, axis=-1, keepdims=True)
    if purge == "sign_consistent":
        keep = ((r > 0) & (s > 0)) | ((r < 0) & (s < 0))
        return jnp.where(keep, r, 0.0)
    return jnp.broadcast_to(s / r.shape[-1], r.shape)


RSP_BATCH = ("batched", "unroll", "map")


#: the largest output map (positions) on which ``rsp_conv`` runs a depthwise layer of one example by
#: convolutions (28×28): fewer kernels to compile; above it matrix products and the fold run faster
DEPTHWISE_CONV_POSITIONS = 784


def rsp_conv(purge: str = "none", factor: float = 2.0, batch: str = "batched") -> Rule:
    """RSP's bipolar conv rule with relevance-weighted surrogate kernels (released code, §2.3d).

    Per sample, with ``x⁺ = max(x, 0)``, ``R⁺ = max(R, 0)``, ``R⁻ = max(−R, 0)``:

    * surrogate kernels ``G± = ∂⟨R±, conv(x⁺, W)⟩/∂W``, i.e. ``G±_{k,i,o} = Σ_p R±_{p,o} x⁺_{p·s+k−pad, i}``
      (the weight-gradient of the relevance-weighted conv output; it does not depend on ``W``);
    * ``C1 = x⁺ ⊙ convᵀ_{G⁺}(R⁺ ⊘ conv(x⁺, G⁺))``, ``C2`` likewise with ``R⁻`` (``ΣC1 = ΣR⁺``);
    * 1×1 kernels: ``R_in = C1 − C2``; otherwise ``C = factor·(C1 − C2)`` and the uniform shift
      ``R_in = C − (T/N)·[C ≠ 0]`` with ``T = ΣR`` and ``N`` the number of non-zero entries of
      ``C`` (both per sample), so ``ΣR_in = ΣR``.

    The layer's weights and bias are never used — only ``x``, ``R`` and the conv geometry (stride,
    padding, dilation, kernel size); this is the released algorithm, kept as is (docs/methods.md#rsp-conv-rule).
    The kernels are built per sample (the released code sums them over the batch, which is only
    right at batch size 1).

    On a dense layer (a 1×1 conv on a 1×1 image) it is ``C1 − C2``.

    This is a plain :class:`Rule`, not a parameterisation of :func:`linear_rule`: the kernels are
    built from ``R`` itself, so the backward is non-linear in ``R`` (sign split, per-sample
    kernels, a global shift), which the engine's fixed parameter modifiers cannot express.

    Args:
      purge: what to do with the incoming relevance first, at each spatial position ``u`` with
        ``s_u = Σ_k R_{k,u}``: ``"none"`` (the released code, whose purge line is a no-op),
        ``"sign_consistent"`` (zero the units whose sign differs from ``s_u``; our reading of the
        paper's "purging"; it removes relevance, so the total is that of the purged ``R``) or
        ``"uniform_spread"`` (``R_{k,u} = s_u / C``, as the multi-class seed does; conserving).
      factor: the combination factor for ``k > 1`` kernels (2 released; 1 a commented alternative).
      batch: how a batch of ``N > 1`` runs its per-sample kernels: ``"batched"`` (all examples at once
        as batched matrix products over each conv's receptive fields, per feature group,
        ``LayerFn.patches``: one program whatever ``N``, and nothing crosses devices on a
        batch-sharded operand; memory ``N × positions × k²·C_in`` per layer; convolutions without
        plain patches are unrolled; with ``N = 1`` the kernels come from the same products and,
        for kernels larger than 1×1, ``z`` and ``C1 − C2`` from the layer's own convolution and
        its transpose; a depthwise layer with ``N = 1`` runs wholly by convolutions on maps of at
        most ``DEPTHWISE_CONV_POSITIONS`` outputs and wholly by products on larger ones),
        ``"unroll"`` (``N`` batch-1 convolutions in one straight-line program: the program, and its
        compile time, grow with ``N``) or ``"map"`` (a ``lax.map`` over the examples).

    Raises:
      ValueError: unknown ``purge`` or ``batch``, or ``factor`` not a finite number ``> 0``.

    (Nam, Choi & Lee, Relative Sectional Propagation, AAAI 2021; docs/methods.md#rsp-conv-rule.)

    Example:
      >>> rules = {"features.28": rsp_conv(), "features.0": zbox_global()}
    """
    if purge not in PURGES:
        raise ValueError(f"unknown purge {purge!r}; valid: {list(PURGES)}")
    factor = _check_number("factor", factor, low=0.0, inclusive=False)

    def backward(fn, params, xs, y, ct):
        (x,) = xs
        kernel = jnp.zeros_like(params["kernel"])  # only its shape: G± do not depend on W
        window = fn.kernel_window if isinstance(fn, LayerFn) else kernel.shape[:-2]  # else HWIO
        one_by_one = all(k == 1 for k in window)
        r = _purge(ct, purge)

        def half(xp, rh):
            _, kvjp = jax.vjp(lambda k: fn({"kernel": k}, xp), kernel)
            (g,) = kvjp(rh)
            z, xvjp = jax.vjp(lambda a: fn({"kernel": g}, a), xp)
            (c,) = xvjp(safe_divide(rh, z))
            return xp * c

        def combine(c, rn):  # C1 − C2, k > 1: factor·(C1 − C2) − (T/n)·[C ≠ 0], per example
            if one_by_one:
                return c
            c = factor * c
            nz = c != 0
            axes = tuple(range(1, c.ndim))
            t = jnp.sum(rn, axis=axes, keepdims=True)
            # counted in floats where that is exact (fewer kernels to compile than an integer count)
            count = jnp.float32 if c.size // c.shape[0] < 2 ** 24 else jnp.int32
            n = jnp.sum(nz.astype(count), axis=axes, keepdims=True).astype(c.dtype)
            return c - jnp.where(nz, t / jnp.maximum(n, 1), 0.0)

        def sample(xn, rn):  # one sample, batch axis of size 1; the halves one after the other
            # (side by side as a vmap over the kernels, a depthwise convolution's kernel gradient
            # becomes a convolution XLA:CPU runs 100x slower: MobileNetV2 0.59 s -> 34 s)
            xp = jnp.maximum(xn, 0)
            return combine(half(xp, jnp.maximum(rn, 0)) - half(xp, jnp.maximum(-rn, 0)), rn)

        def batched(xn, rn):
            """Every example at once in the receptive fields' basis (``P = patches(x⁺)``, per example),
            both halves side by side on the output features: ``G = Pᵀ [R⁺ | R⁻]``, ``z = P G`` and
            ``C1 − C2 = foldᵀ([R⁺ ⊘ z⁺ | −R⁻ ⊘ z⁻] Gᵀ)``: batched matrix products. With one example,
            ``z`` and ``C1 − C2`` are the layer's convolution and its transpose with the kernels
            ``[G⁺ | G⁻]`` and ``[G⁺ | −G⁻]``: fewer operations to compile than the fold; but for a
            depthwise layer only on small maps (``≤ DEPTHWISE_CONV_POSITIONS`` outputs, where ``G`` is
            a convolution too, ``ConvPatches.kernels``): on larger ones XLA:CPU's transposed grouped
            convolutions run several times slower than the fold (MobileNetV2 RSP, batch 1, steady:
            0.52–0.56 s with every depthwise layer by convolutions, 0.37 s so split)."""
            cp = fn.patches
            ps, rs_ = cp.subscripts()
            xp = jnp.maximum(xn, 0)
            signs = np.array([1, -1], rn.dtype)  # the halves' order: R⁺ then R⁻
            halves = jnp.maximum(cp.outer(rn, signs), 0)  # [R⁺ | R⁻] per group
            rr = cp.rows(halves)  # [N, F, Q, 2O] (or [N, F, 2O, Q])
            sign = np.repeat(signs, rr.shape[2 if cp.rows_first else -1] // 2)
            single, q = xn.shape[0] == 1, rr.shape[-1 if cp.rows_first else 2]  # q: output positions
            if single and cp.kernels is not None and q <= DEPTHWISE_CONV_POSITIONS and not one_by_one:
                g = cp.kernels(xp, halves)[None]  # depthwise, small map: convolutions only, no patches
                by_conv = True
            else:
                pt = cp.patches(xp)  # [N, F, Q, K] (or [N, F, K, Q])
                g = contract(f"{ps},{rs_}->nfko", pt, rr)  # [G⁺ | G⁻]
                by_conv = single and not one_by_one and cp.kernels is None
            if by_conv:
                z = cp.conv(xp, g[0])
                conv_t = jax.linear_transpose(lambda a: cp.conv(a, g[0] * sign[None, None]), xp)
                (c,) = conv_t(safe_divide(halves, z))
            else:
                z = contract(f"{ps},nfko->{rs_}", pt, g)
                fold = jax.linear_transpose(cp.patches, xp)  # patchesᵀ
                sg = sign[:, None] if cp.rows_first else sign[None]
                (c,) = fold(contract(f"{rs_},nfko->{ps}", safe_divide(rr, z) * sg[None, None], g))  # C1 − C2 in one product
            return combine(xp * c, rn)

        if batch == "batched" and isinstance(fn, LayerFn) and fn.patches is not None:
            return (batched(x, r),)  # also at N = 1: the kernels' matrix products beat XLA:CPU's
            # kernel-gradient convolutions (VGG16 224², batch 1: RSP 1.05 s against 1.50 s)
        if x.shape[0] == 1:
            return (sample(x, r),)
        if batch == "map":  # a loop over the examples: one program whatever N
            return (jax.lax.map(lambda xr: sample(*xr), (x[:, None], r[:, None]))[:, 0],)
        if batch == "batched" and window == ():  # a dense layer: per-sample outer products
            return (jax.vmap(sample)(x[:, None], r[:, None])[:, 0],)
        # unrolled over the static batch: plain batch-1 convolutions, the program grows with N. (A
        # vmap of a convolution's kernel gradient gives grouped convolutions, which XLA:CPU runs
        # >10x slower and XLA's SPMD partitioner miscomputes on a batch-sharded operand.)
        return (jnp.concatenate([sample(x[i:i + 1], r[i:i + 1]) for i in range(x.shape[0])], axis=0),)

    if batch not in RSP_BATCH:
        raise ValueError(f"unknown batch {batch!r}; valid: {list(RSP_BATCH)}")
    return Rule("rsp_conv", backward, frozenset({"conv", "dense"}),
                hyper=(("purge", purge), ("factor", factor), ("batch", batch)))
