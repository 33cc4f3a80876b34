"""The method type, the registry, and the read-out helpers every method shares."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax.numpy as jnp

from ..attribution import Attribution, Context, modified_pass
from ..composites.core import Composite, resolve_layers

__all__ = ["Method", "register", "get_method", "available", "single_pass", "REDUCTIONS", "options"]

_REGISTRY: dict = {}


def _no_layer(layers):
    return None


class Method(NamedTuple):
    """An attribution method: ``run(ctx, x, target[N, K]) -> Attribution`` with ``[N, K, ...]`` fields.

    Attributes:
      name: the public method name.
      run: the implementation.
      defaults: option name -> default value (the valid options).
      default_signal: top signal when the caller gives none.
      default_layer: ``(layers) -> name | None`` when the caller gives no layer.
      path: the method sums gradients over points with :func:`~xattr_jax.methods.path.accumulate`
        (the attributor may then drive it chunk by chunk).
    """

    name: str
    run: Callable
    defaults: Mapping[str, Any]
    default_signal: Any = "logit"
    default_layer: Callable = _no_layer
    path: bool = False

    def check_options(self, opts: Mapping[str, Any]) -> None:
        bad = sorted(set(opts) - set(self.defaults))
        if bad:
            valid = sorted(self.defaults) or ["(none)"]
            raise ValueError(f"method {self.name!r} got unknown option(s) {bad}; valid options: {valid}")


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def available() -> tuple:
    """Names of every registered method."""
    return tuple(sorted(_REGISTRY))


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
    """``[K, N, ...] -> [N, K, ...]``."""
    return jnp.moveaxis(a, 0, 1)


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
        cons = {n: _t(jnp.sum(p.at[n].reshape(p.at[n].shape[:2] + (-1,)), axis=-1)) for n in at}
        cons["input"] = _t(jnp.sum(p.input.reshape(p.input.shape[:2] + (-1,)), axis=-1))
    return Attribution(REDUCTIONS[reduce](rel), rel, p.logits, None, cons)


def two_phase_pass(ctx: Context, x, target, *, seed_layer: str, seed: Callable, rules=None,
                   at=(), input: bool = True, fold: bool = False, vmap_targets: bool = True):
    """Seed at ``seed_layer`` from ordinary gradients, then propagate down with ``rules``; one forward.

    One forward pass with ``rules`` attached (give rules only to layers *below* ``seed_layer``, so the
    layers above it keep their ordinary gradient) is differentiated as
    ``f(x, probes) = (logits, A)`` with ``A`` the output of ``seed_layer``:

    1. ``grad(cts)`` pulls ``(cts_j, 0)`` back for logits cotangents ``cts [J, *logits.shape]`` and
       returns the signal at the ``seed_layer`` probe, ``[J, *A.shape]`` (for one-hot cotangents:
       ``∂y_c/∂A``, the ordinary gradient). Only the part above ``seed_layer`` is computed (under
       jit the rest is dead code).
    2. ``R0 = seed(grad, A, logits, target)``: ``[K, *A.shape]``, the seed for each target column.
    3. ``(0, R0_k)`` is pulled back (``vmap`` over k): the relevance at every ``at`` probe and the input.

    Args:
      ctx, x, target: as :func:`~xattr_jax.attribution.modified_pass` (``target`` ``[N, K]``).
      seed_layer: name of a layer called once per forward.
      seed: ``(grad, A, logits, target) -> R0 [K, *A.shape]``.
      rules: ``{layer name: Rule}``.
      at: layers whose output relevance is returned (``Pass.at``; ``seed_layer`` is always there and
        holds ``R0``).
      input: also return the relevance at the input.
      fold: fold batch-norms into the conv/dense before them for the rules (canonizer).
      vmap_targets: pull the K seeds back in one vmapped pass (default) or one pass per column,
        stacked (for rules whose backward builds per-sample kernels: batching those over K turns
        them into grouped convolutions, which XLA:CPU runs far slower).

    Returns:
      a ``Pass`` (``logits``, ``input [K, N, ...]``, ``at {name: [K, N, ...]}``, ``acts`` with
      ``seed_layer``'s output).
    """
    import jax

    from ..attribution import Pass
    from ..program import run

    infos = {l.name: l for l in ctx.layers}
    names = [seed_layer] + [n for n in at if n != seed_layer]
    probes = {n: jnp.zeros(infos[n].native_shape, infos[n].dtype) for n in names}
    seed_info = infos[seed_layer]

    def fwd(x, probes):
        out, acts = run(ctx.program, ctx.variables, x, rules=rules, probes=probes,
                        capture=[seed_layer], fold=fold)
        return (out, acts[seed_layer]), acts

    if input:
        (logits, a), vjp, acts = jax.vjp(fwd, x, probes, has_aux=True)
    else:
        (logits, a), vjp_p, acts = jax.vjp(lambda p: fwd(x, p), probes, has_aux=True)
        vjp = lambda ct: (None, *vjp_p(ct))  # noqa: E731

    zero_a = jnp.zeros_like(a)
    zero_l = jnp.zeros_like(logits)

    def grad(cts):
        g = jax.vmap(lambda c: vjp((c.astype(logits.dtype), zero_a))[1][seed_layer])(cts)
        return seed_info.to_channels_last(g, lead=1)

    # not stop-gradiented: maps stay differentiable through the seed
    r0 = seed(grad, seed_info.to_channels_last(a), logits, target)
    r0 = seed_info.from_channels_last(r0, lead=1)

    def pull(r):
        return vjp((zero_l, r.astype(a.dtype)))

    if vmap_targets:
        x_ct, p_ct = jax.vmap(pull)(r0)
    else:
        cols = [pull(r0[k]) for k in range(r0.shape[0])]
        x_ct, p_ct = jax.tree_util.tree_map(lambda *c: jnp.stack(c), *cols)
    p_ct = {n: infos[n].to_channels_last(v, lead=1) for n, v in p_ct.items()}
    acts = {n: infos[n].to_channels_last(v) for n, v in acts.items()}
    return Pass(logits, x_ct if input else None, p_ct, acts)
