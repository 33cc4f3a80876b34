"""The method type, the registry, and the read-out helpers every method shares."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax.numpy as jnp

from ..composites.core import Composite, resolve_layers
from ..passes import modified_pass
from ..program import KINDS, check_domain
from ..rules.core import upcast
from ..tables import text_table
from ..types import Attribution, Context
from .option_types import Option
from .summaries import SUMMARIES

__all__ = ["Method", "Domain", "RELEVANCE", "NONNEGATIVE", "register", "get_method", "available", "single_pass", "REDUCTIONS", "options", "total"]

_REGISTRY: dict = {}


def _no_layer(layers):
    return None


class Method(NamedTuple):
    """An attribution method: ``run(ctx, x, target[N, K]) -> Attribution`` with ``[N, K, ...]`` fields.

    Attributes:
      name: the public method name.
      run: the implementation.
      opts: option name -> :class:`~xattr_jax.methods.option_types.Option` (default, check,
        meaning); the valid options.
      default_signal: top signal when the caller gives none.
      default_layer: ``(layers) -> name | None`` when the caller gives no layer.
      path: ``run`` returns a :class:`~xattr_jax.types.PathPlan` (a sum of gradients over points),
        which the attributor runs as one ``lax.scan`` under tracing, or chunk by chunk when eager.
      random: the method draws noise from the call's ``key=`` (``ctx.key``: one key per example).
      domain: a :class:`Domain`: the layer kinds the method is defined on; a model with others is
        refused unless the caller passes ``strict=False`` (``None``: any model).
      per_sample: ``(options) -> bool``: the method builds per-example kernels unrolled over the
        batch (RSP); called with concrete arrays, the attributor then runs one compiled batch-1
        program per example instead, so compilation does not grow with the batch.
    """

    name: str
    run: Callable
    opts: Mapping[str, Option]
    default_signal: Any = "logit"
    default_layer: Callable = _no_layer
    path: bool = False
    random: bool = False
    per_sample: Callable = lambda options: False
    domain: Any = None

    def check_domain(self, layers) -> None:
        """Refuse a model with layers outside the method's :class:`Domain` (by default)."""
        if self.domain is not None:
            check_domain(layers, self.domain.kinds, self.name, self.domain.reason, self.domain.fix)

    @property
    def defaults(self) -> dict:
        """Option name -> default value."""
        return {k: o.default for k, o in self.opts.items()}

    def check_options(self, opts: Mapping[str, Any]) -> None:
        """Unknown options and values of the wrong type or range raise ``ValueError``."""
        bad = sorted(set(opts) - set(self.opts))
        if bad:
            valid = sorted(self.opts) or ["(none)"]
            raise ValueError(f"method {self.name!r} got unknown option(s) {bad}; valid options: {valid}")
        for k, v in opts.items():
            self.opts[k].check(f"{self.name} option {k}", v)

    def option_table(self) -> str:
        """The options as a text table: name, default, meaning."""
        if not self.opts:
            return "(no options)"
        return text_table([(k, repr(o.default), o.doc) for k, o in self.opts.items()])


class Domain(NamedTuple):
    """The layer kinds a method is defined on, why, and what to do about the others."""

    kinds: frozenset
    reason: str
    fix: str


#: LRP's: every kind with a rule (conservation is its contract).
RELEVANCE = Domain(frozenset(KINDS) - {"other"}, "has no rule for some operations (relevance would not be conserved)",
                   "Rewrite them with operations of a known kind (xattr_jax.program.KINDS), or pass strict=False "
                   "to keep their ordinary gradient there.")
#: Excitation Backprop's, RSP's and Attention Backpropagation's: non-negative activations.
NONNEGATIVE = Domain(frozenset({"conv", "dense", "batchnorm", "relu", "maxpool", "avgpool", "add", "gate"}),
                     "is defined for networks whose activations are non-negative (ReLU, pools, batch-norm, gates, "
                     "concatenation)",
                     "Use method='lrp', which has rules for these kinds, or pass strict=False to run with the "
                     "ordinary gradient there.")


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def available(describe: bool = False):
    """Names of every registered method; ``describe=True``: ``{name: one-line description}``."""
    names = tuple(sorted(_REGISTRY))
    if not describe:
        return names
    return {n: SUMMARIES.get(n, "") for n in names}


def get_method(name) -> Method:
    """The registered :class:`Method` called ``name``; ``ValueError`` listing them otherwise."""
    if isinstance(name, Method):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available methods: {list(available())}")
    return _REGISTRY[name]


def options(ctx: Context, method: Method) -> dict:
    """The method's options: its defaults updated with the caller's."""
    return {**method.defaults, **ctx.options}


def _t(a):
    """``[K, N, ...] -> [N, K, ...]`` in the compute dtype (at least float32: maps and totals of
    half-precision relevance are summed in float32; the attributor returns them in x's dtype)."""
    return jnp.moveaxis(upcast(a), 0, 1)


def total(a):
    """``[K, N, ...] -> [N, K]``: the total per sample and target (in the compute dtype)."""
    a = _t(a)
    return jnp.sum(a.reshape(a.shape[:2] + (-1,)), axis=-1)


REDUCTIONS = {
    "sum": lambda r: jnp.sum(r, axis=-1),
    "max_abs": lambda r: jnp.max(jnp.abs(r), axis=-1),
    "sum_abs": lambda r: jnp.sum(jnp.abs(r), axis=-1),
}


def single_pass(ctx: Context, x, target, *, composite: Composite | None = None, rules=None,
                reduce: str = "sum", times_input: bool = False, fold: bool = False,
                conservation: bool = False) -> Attribution:
    """One modified backward pass, read at ``ctx.layer`` (or the input); the common method body.

    Args:
      composite: rules to resolve against the traced layers (or ``rules``, already resolved).
      reduce: the 2-D map's channel reduction (``"sum"``, ``"max_abs"``, ``"sum_abs"``).
      times_input: relevance = signal ⊙ (input or layer output), as gradient×input.
      fold: fold batch-norms into the conv/dense before them for the rules (canonizer).
      conservation: also return the total relevance at the output of every layer called once.
    """
    if rules is None:
        rules = resolve_layers(composite, ctx.layers) if composite is not None else {}
    at = [ctx.layer] if ctx.layer is not None else []
    if conservation:
        at += [l.name for l in ctx.layers if l.calls == 1 and l.name not in at and l.dtype is not None]
    cap = [ctx.layer] if (times_input and ctx.layer is not None) else []
    p = modified_pass(ctx, x, target, rules=rules, at=at, input=ctx.layer is None or conservation,
                      capture=cap, fold=fold)
    if ctx.layer is None:
        sig, base = p.input, x
    else:
        sig, base = p.at[ctx.layer], p.acts.get(ctx.layer)
    rel = _t(sig * base[None] if times_input else sig)
    cons = None
    if conservation:
        cons = {n: total(p.at[n]) for n in at}
        cons["input"] = total(p.input)
    return Attribution(REDUCTIONS[reduce](rel), rel, p.logits, None, cons)
