"""The rule type, the one ``jax.custom_vjp`` helper, and the generic linear-layer rule engine.

A *rule* keeps a layer's forward pass exact and replaces its backward pass. Its backward function
maps the output cotangent (the top-down signal ``R``) to the input cotangents::

    backward(fn, params, xs, y, R) -> (R_x1, R_x2, ...)

where ``fn(params, *xs) = y`` is the layer's pure forward function (a :class:`LayerFn`, which also
carries the layer's kernel window). :func:`apply_rule` is the only place in the library where
``jax.custom_vjp`` is called; the layer parameters are explicit arguments of the custom_vjp
function (never closed over), so attributions can be differentiated again (gradients *of* saliency
maps). Rules are immutable values compared by their hyperparameters (:class:`Rule`).

The linear engine (:func:`linear_rule`) is the "modified gradient" form of the LRP literature: for
terms ``t = 1..T`` with input modifiers ``x_t = m_t(x)`` and parameter modifiers ``θ_t = p_t(θ)``,

    z_t = fn(θ_t, x_t),      s = mapper(R, [z_1..z_T]),      g_t = (∂z_t/∂x_t)ᵀ s_t,
    R_x = reducer([x_1..x_T], [g_1..g_T]).

ε, z⁺, αβ, γ, zB, flat, w², norm and excitation are parameterisations of it (``rules.library``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "Rule",
    "LayerFn",
    "Term",
    "apply_rule",
    "linear_rule",
    "stabilize",
    "safe_divide",
    "compute_dtype",
    "upcast",
    "LINEAR_KINDS",
    "ACTIVATION_KINDS",
    "ALL_KINDS",
]

LINEAR_KINDS = frozenset({"conv", "dense", "avgpool", "add"})
ACTIVATION_KINDS = frozenset({"relu"})
ALL_KINDS = frozenset({"conv", "dense", "batchnorm", "relu", "maxpool", "avgpool", "add"})


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Rule:
    """A backward-pass replacement for one layer; an immutable value compared by what it computes.

    Attributes:
      name: the rule's name, e.g. ``"epsilon"`` (printed with its hyperparameters).
      backward: ``(fn, params, xs, y, R) -> tuple`` of cotangents, one per input in ``xs``.
      kinds: the layer kinds the rule may attach to (``"conv"``, ``"dense"``, ``"relu"``, ...).
      nonnegative: optional cheaper ``backward`` with the same result whenever every input is
        ``>= 0``; the interpreter uses it where it knows that statically (inputs that come from a
        ReLU, through pools, flattening and sums of such).
      hyper: the values that determine ``backward``, ``((name, value), ...)``; ``None`` when the
        callables themselves are the definition.

    Equality and hashing are by value: by ``(name, kinds, hyper)`` when ``hyper`` is given (every
    constructor in :mod:`xattr_jax.rules` gives it, so ``epsilon(0.1234567) != epsilon(0.1234568)``
    and equal rules built twice are equal), else by ``(name, kinds)`` and the *identity* of
    ``backward`` and ``nonnegative``. Equal composites share one compiled program; different ones
    never do.

    Example:
      >>> Rule("clip", lambda fn, params, xs, y, r: (jnp.clip(r, -1, 1),), {"relu"})
    """

    name: str
    backward: Callable
    kinds: frozenset
    nonnegative: Callable | None = None
    hyper: tuple | None = None

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"Rule name must be a str, got {self.name!r}")
        if not callable(self.backward) or not (self.nonnegative is None or callable(self.nonnegative)):
            raise TypeError(f"Rule {self.name!r}: backward and nonnegative must be callables")
        object.__setattr__(self, "kinds", frozenset(self.kinds))
        if self.hyper is not None:
            object.__setattr__(self, "hyper", tuple(self.hyper))
            if not all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in self.hyper):
                raise TypeError(f"Rule {self.name!r}: hyper must be ((name, value), ...) pairs, got {self.hyper!r}")
        try:
            hash(self.hyper)
        except TypeError as err:
            raise TypeError(f"Rule {self.name!r}: hyper must be hashable (tuples, numbers, strings, "
                            f"callables), got {self.hyper!r}") from err

    def _value(self) -> tuple:
        if self.hyper is not None:
            return (self.name, self.kinds, self.hyper, self.nonnegative is None)
        return (self.name, self.kinds, None, self.backward, self.nonnegative)

    def __eq__(self, other) -> bool:
        return isinstance(other, Rule) and self._value() == other._value()

    def __hash__(self) -> int:
        return hash(("Rule",) + self._value())

    def __repr__(self) -> str:
        shown = [f"{k}={v!r}" for k, v in self.hyper or () if not _is_callable_tree(v)]
        return f"{self.name}({', '.join(shown)})"

    def on_nonnegative(self) -> "Rule":
        """This rule with its cheaper ``nonnegative`` backward (valid where every input is ``>= 0``).

        Raises:
          ValueError: the rule has no such backward.
        """
        if self.nonnegative is None:
            raise ValueError(f"rule {self!r} has no backward for non-negative inputs")
        hyper = None if self.hyper is None else self.hyper + (("nonnegative_input", True),)
        return Rule(self.name, self.nonnegative, self.kinds, None, hyper)


def _is_callable_tree(v) -> bool:
    """Whether ``v`` is a callable or a tuple holding one (left out of the printed form)."""
    return callable(v) or (isinstance(v, tuple) and any(_is_callable_tree(a) for a in v))


def contract(spec: str, a, b):
    """``jnp.einsum(spec, a, b)`` for two operands as one ``lax.dot_general`` (and a transpose where
    ``spec``'s output order needs one): no einsum path search or inner ``jit`` to trace, which
    matters in a rule that runs once per layer. Every index is a batch (in ``a``, ``b`` and the
    output), contracted (in ``a`` and ``b`` only) or free (in one operand and the output)."""
    ins, out = spec.split("->")
    sa, sb = ins.split(",")
    batch = [c for c in out if c in sa and c in sb]
    con = [c for c in sa if c in sb and c not in out]
    y = jax.lax.dot_general(a, b, (([sa.index(c) for c in con], [sb.index(c) for c in con]),
                                   ([sa.index(c) for c in batch], [sb.index(c) for c in batch])))
    got = batch + [c for c in sa if c not in batch and c not in con] + [c for c in sb if c not in batch and c not in con]
    return y if got == list(out) else jnp.transpose(y, [got.index(c) for c in out])


class ConvPatches(NamedTuple):
    """A convolution's receptive fields as matrices, one per feature group (``LayerFn.patches``),
    oriented as the layer's own layouts (features first or last) so that no activation of an
    ungrouped convolution is transposed.

    With ``F`` feature groups, ``Q`` output positions, ``K`` the size of a group's receptive field
    (window × input features / F) and ``O`` a group's outputs:

    Attributes:
      patches: ``patches(x) -> [N, F, Q, K]`` (``[N, F, K, Q]`` where ``patches_first``).
      rows: ``rows(y) -> [N, F, Q, O]`` (``[N, F, O, Q]`` where ``rows_first``): an output-shaped
        array in the same positions, so that ``rows(conv(x, W)) = patches(x) · W_f`` per group.
      outer: ``outer(y, m)``, an output-shaped ``y`` times each entry of a vector ``m [H]``, the
        ``H`` products side by side on each group's features (``[.., F·H·O, ..]``, in the output's
        layout, ordered group, ``h``, feature): several kernels' outputs at once without a
        concatenation.
      conv: ``conv(x, w) -> y``, the layer's convolution (geometry, groups, layouts) with kernels
        ``w [F, K, O']`` given in the patches' basis, any number ``O'`` of outputs per group
        (ordered as ``outer`` orders them).
      patches_first, rows_first: the orientations above.
      kernels: for a convolution with one input feature per group (depthwise), ``kernels(x, y) ->
        [F, K, O']`` for one example (batch 1): ``Σ_q patches(x)_q ⊗ rows(y)_q`` as a single
        convolution whose kernel is ``y``, without forming the patches; else ``None``.
    """

    patches: Callable
    rows: Callable
    outer: Callable
    conv: Callable
    patches_first: bool = False
    rows_first: bool = False
    kernels: Callable | None = None

    def subscripts(self) -> tuple:
        """``(patches, rows)`` as einsum subscripts over ``n`` (batch), ``f`` (group), ``q``
        (positions), ``k`` (receptive field) and ``o`` (outputs): ``"nfqk"`` or ``"nfkq"``,
        ``"nfqo"`` or ``"nfoq"``."""
        return ("nfkq" if self.patches_first else "nfqk"), ("nfoq" if self.rows_first else "nfqo")


@dataclasses.dataclass(frozen=True)
class LayerFn:
    """A layer's exact forward ``fn(params, *xs)`` as a rule receives it, with its geometry.

    Attributes:
      forward: the pure forward function ``forward(params, *xs) -> y``.
      kernel_window: a convolution's spatial window in any kernel layout (``(3, 3)``), ``()`` for
        a dense layer, ``None`` for other layers.
      constant_statistics: for a normalisation, the same forward with its statistic σ held
        constant (``stop_gradient``), else ``None``.
      patches: for a convolution that is the whole layer (bias aside) whose receptive fields are
        plain windows, its :class:`ConvPatches`; else ``None``.
      stacked: for a convolution that is the whole layer (bias aside, one feature group),
        ``stacked([params_1..params_T], [x_1..x_T]) = Σ_t forward(params_t, x_t)`` as *one*
        convolution over the inputs concatenated along their features; else ``None``.
    """

    forward: Callable
    kernel_window: tuple | None = None
    constant_statistics: Callable | None = None
    patches: ConvPatches | None = None
    stacked: Callable | None = None

    def __call__(self, params, *xs):
        return self.forward(params, *xs)


def apply_rule(rule: Rule, fn: Callable, params, *xs, rule_params=None):
    """Run ``fn(params, *xs)`` exactly, with ``rule.backward`` as its vector-Jacobian product.

    Args:
      rule: the backward replacement.
      fn: the layer's pure forward function ``fn(params, *xs)``.
      params: the layer parameters (a dict of arrays), an explicit argument of the custom_vjp.
      *xs: the layer inputs.
      rule_params: parameters the *backward* rule sees instead of ``params`` (a canonizer's folded
        conv+BN parameters); the forward always uses ``params``.

    The cotangent returned for the parameters is zero: a modified backward pass defines no parameter
    gradient. Differentiating the *result* of the backward pass (second order) is ordinary JAX.
    """
    if rule_params is None:
        rule_params = params

    @jax.custom_vjp
    def layer(params, rule_params, *xs):
        return fn(params, *xs)

    def fwd(params, rule_params, *xs):
        y = fn(params, *xs)
        return y, (params, rule_params, xs, y)

    def bwd(res, ct):
        params, rule_params, xs, y = res
        cts = tuple(rule.backward(fn, rule_params, xs, y, ct))
        if len(cts) != len(xs):
            raise ValueError(f"{rule!r} returned {len(cts)} cotangents for {len(xs)} inputs")
        cts = tuple(c.astype(x.dtype) for c, x in zip(cts, xs))
        return (None, None, *cts)  # symbolic zeros for the parameters: nothing to trace or compile

    layer.defvjp(fwd, bwd)
    return layer(params, rule_params, *xs)


def stabilize(z, epsilon):
    """``z + ε·sign(z)`` with ``sign(0) = +1`` (the LRP-ε denominator)."""
    return z + epsilon * jnp.where(z >= 0, 1.0, -1.0).astype(z.dtype)


def safe_divide(a, b):
    """``a / b`` where ``b ≠ 0`` and ``0`` elsewhere; differentiable (no NaN in its gradient)."""
    nz = b != 0
    return jnp.where(nz, a / jnp.where(nz, b, 1.0), 0.0)


def compute_dtype(dtype):
    """The dtype rules compute in for a layer of ``dtype``: at least float32 (half-precision
    layers' stabilised divisions and signed sums need it); the result is stored in ``dtype``."""
    return jnp.promote_types(dtype, jnp.float32) if jnp.issubdtype(dtype, jnp.floating) else dtype


def upcast(a):
    """``a`` in :func:`compute_dtype` (at least float32)."""
    return a.astype(compute_dtype(a.dtype))


def _upcast(tree):
    """Floating leaves in :func:`compute_dtype`."""
    return jax.tree_util.tree_map(lambda a: upcast(a) if hasattr(a, "dtype") else a, tree)


class Term(NamedTuple):
    """One modified forward term of the linear engine: ``z_t = fn(params(θ), input(x))``.

    ``negative=True`` declares that the term reads only the negative part of the inputs, with a
    zero bias, so it is exactly zero when every input is ``>= 0``: the rule's ``nonnegative``
    backward leaves out its two convolutions (after a ReLU, z⁺ costs one modified forward and one
    transposed convolution instead of two of each).
    """

    input: Callable = lambda x: x
    params: Callable = lambda p: p
    negative: bool = False


def linear_rule(
    name: str,
    terms: Sequence[Term],
    mapper: Callable,
    reducer: Callable,
    kinds: frozenset = LINEAR_KINDS,
    *,
    hyper: tuple | None = None,
    shared: bool = False,
) -> Rule:
    """Build a rule from the generic linear-layer engine.

    Args:
      name: readable name of the rule.
      terms: the modified forward terms (input and parameter modifiers).
      mapper: ``(R, [z_t]) -> [s_t or None]``; the cotangent to pull back through each term
        (``None`` skips a term that only serves the denominator, such as γ's sign reference).
      reducer: ``([x_t], [g_t]) -> R_x``; combines the pulled-back gradients per input.
      kinds: layer kinds the rule applies to (linear in the input for every kind listed).
      hyper: the hyperparameters that determine ``terms``, ``mapper`` and ``reducer``
        (``((name, value), ...)``, as the library's constructors give); ``None``: the rule is
        defined by these callables, and two rules are equal when they have the same name and the
        *same* (identical) callables — a rule rebuilt from new lambdas is a new rule.
      shared: the mapper depends on the terms only through ``Σ_t z_t`` (it may be called with the
        one-element list ``[Σ_t z_t]``) and gives every term the same cotangent, and the reducer
        is ``Σ_t x_t ⊙ g_t`` (z⁺, zB). Then, on
        a layer with ``LayerFn.stacked``, the terms run as one convolution over their inputs
        side by side (``z`` and ``[g_1..g_T]`` from one forward and one transposed convolution
        instead of ``T`` of each): the same values, up to the order of summation.

    Returns:
      A :class:`Rule`.
    """
    terms = tuple(terms)
    if hyper is None:
        hyper = (("terms", terms), ("mapper", mapper), ("reducer", reducer), ("shared", shared))

    def backward(fn, params, xs, y, ct, skip_negative=False):
        del y
        xs, params, ct = _upcast((xs, params, ct))
        active = [t for t in terms if not (skip_negative and t.negative)]
        if shared and len(active) > 1 and getattr(fn, "stacked", None) is not None:
            xt = [t.input(xs[0]) for t in active]  # a whole-layer convolution has one input
            z, vjp = jax.vjp(lambda *a: fn.stacked([t.params(params) for t in active], a), *xt)
            return (reducer(xt, list(vjp(mapper(ct, [z])[0]))),)
        ins, outs, vjps = [], [], []
        for term in terms:
            if skip_negative and term.negative:  # exactly zero: every input is >= 0
                ins.append(tuple(jnp.zeros_like(x) for x in xs))
                outs.append(None)
                vjps.append(None)
                continue
            xt = tuple(term.input(x) for x in xs)
            out, vjp = jax.vjp(lambda *a, _p=term.params(params): fn(_p, *a), *xt)
            ins.append(xt)
            outs.append(out)
            vjps.append(vjp)
        ref = next(o for o in outs if o is not None)
        outs = [jnp.zeros_like(ref) if o is None else o for o in outs]
        cts = mapper(ct, outs)
        grads = [
            None if s is None else ins[t] if vjps[t] is None else vjps[t](s)  # skipped: zeros
            for t, s in enumerate(cts)
        ]
        used = [t for t, g in enumerate(grads) if g is not None]
        return tuple(
            reducer([ins[t][k] for t in used], [grads[t][k] for t in used]) for k in range(len(xs))
        )

    nonnegative = None
    if any(t.negative for t in terms):
        nonnegative = functools.partial(backward, skip_negative=True)
    return Rule(name, backward, frozenset(kinds), nonnegative, hyper)
