"""Apply a resolved ``{layer path: rule}`` map to an unmodified Flax model while it is traced.

The interpreter is a ``flax.linen.intercept_methods`` interceptor entered *inside* the function that
is differentiated or jitted (a cached ``jax.jit(model.apply)`` would ignore it). It acts on
``__call__`` only, and only on the outermost call per module (a re-entrancy guard), and never
mutates the model. Besides rules it can add a zero *probe* to a layer's output — the cotangent at
the probe is the signal arriving at that layer's output — and capture layer outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple

import flax.linen as nn
import jax

from ..rules.core import Rule, apply_rule
from .layers import describe

__all__ = ["LayerInfo", "trace_layers", "interpret", "layer_name"]


def layer_name(module) -> str:
    """The dotted layer name of a bound module (``'features.23'``, ``'layer3.0.conv1'``)."""
    return ".".join(str(p) for p in module.path)


class LayerInfo(NamedTuple):
    """One layer of a traced model, in call order."""

    name: str
    kind: str | None  # None for containers and modules without a layer spec
    type_name: str
    shape: tuple  # output shape
    dtype: object
    calls: int  # how many times the module was called in one forward
    inputs: tuple = ()  # ids of the input arrays of the first call (adjacency, within one trace)
    output: int = 0  # id of the output array of the first call
    meta: tuple = ()  # static attributes of the layer's pure function, e.g. (("epsilon", 1e-5),)


@dataclasses.dataclass
class _State:
    rules: Mapping[str, Rule]
    probes: Mapping[str, jax.Array]
    overrides: Mapping[str, dict]
    capture: frozenset
    record: list | None = None
    active: set = dataclasses.field(default_factory=set)
    calls: dict = dataclasses.field(default_factory=dict)
    captured: dict = dataclasses.field(default_factory=dict)
    nonneg: dict = dataclasses.field(default_factory=dict)  # id -> array known to be >= 0


# Layer kinds whose output is >= 0 (a ReLU), and those that keep every input's sign when all are >= 0.
_MAKES_NONNEG = frozenset({"relu"})
_KEEPS_NONNEG = frozenset({"maxpool", "avgpool", "flatten", "dropout", "add"})


def _interceptor(state: _State):
    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not module.path:
            return next_fun(*args, **kwargs)
        name = layer_name(module)
        if name in state.active:  # re-entrant call of the same module: leave it alone
            return next_fun(*args, **kwargs)
        state.active.add(name)
        try:
            rule = state.rules.get(name)
            spec = describe(module) if (state.rules or state.record is not None) else None
            nonneg_in = bool(args) and all(id(a) in state.nonneg for a in args)
            if rule is not None:
                if kwargs:
                    raise TypeError(f"layer {name!r}: rules need positional inputs, got {sorted(kwargs)}")
                if spec.kind not in rule.kinds:
                    raise ValueError(
                        f"rule {rule.name} applies to {sorted(rule.kinds)} layers, but layer "
                        f"{name!r} is a {spec.kind} layer"
                    )
                if nonneg_in and rule.nonnegative is not None:
                    rule = rule._replace(backward=rule.nonnegative)
                out = apply_rule(
                    rule, spec.fn, spec.params, *args, rule_params=state.overrides.get(name)
                )
            else:
                out = next_fun(*args, **kwargs)
            n = state.calls.get(name, 0)
            state.calls[name] = n + 1
            if name in state.probes or name in state.capture:
                if n > 0:
                    raise ValueError(
                        f"layer {name!r} is called more than once per forward pass, so its output "
                        "is ambiguous; read the signal at a layer that is called once"
                    )
                if name in state.probes:
                    probe = state.probes[name]
                    if probe.shape != out.shape:
                        raise ValueError(f"probe for {name!r} has shape {probe.shape}, output {out.shape}")
                    out = out + probe
                if name in state.capture:
                    state.captured[name] = out
            if spec is not None and (
                spec.kind in _MAKES_NONNEG or (spec.kind in _KEEPS_NONNEG and nonneg_in)
            ):
                state.nonneg[id(out)] = out  # the reference keeps the id unique for the trace
            if state.record is not None:
                state.record.append((name, spec, type(module).__name__, out, tuple(map(id, args))))
            return out
        finally:
            state.active.discard(name)

    return intercept


def interpret(model, variables, x, *, rules=None, probes=None, capture=(), overrides=None):
    """Run ``model.apply(variables, x)`` with rules attached, probes added and outputs captured.

    Args:
      model: a ``flax.linen.Module``.
      variables: its variables (``{'params': ..., 'batch_stats': ...}``).
      x: the input batch.
      rules: ``{layer name: Rule}``.
      probes: ``{layer name: array}`` added to that layer's output (zeros; differentiate w.r.t. them).
      capture: layer names whose outputs are returned.
      overrides: ``{layer name: params}`` the rule of that layer sees instead of the layer's own
        (canonizers); the forward pass is unchanged.

    Returns:
      ``(output, {layer name: output})``.
    """
    state = _State(dict(rules or {}), dict(probes or {}), dict(overrides or {}), frozenset(capture))
    with nn.intercept_methods(_interceptor(state)):
        out = model.apply(variables, x)
    missing = (set(state.probes) | state.capture | set(state.rules)) - set(state.calls)
    if missing:
        raise ValueError(f"layers never called in the forward pass: {sorted(missing)}")
    return out, state.captured


def trace_layers(model, variables, x) -> tuple[LayerInfo, ...]:
    """Every layer called in one forward pass, in call order (one abstract ``jax.eval_shape`` pass)."""
    record: list = []

    def run(v, x):
        state = _State({}, {}, {}, frozenset(), record=record)
        with nn.intercept_methods(_interceptor(state)):
            return model.apply(v, x)

    jax.eval_shape(run, variables, x)  # the record keeps the tracers alive, so ids stay unique
    calls: dict = {}
    for name, *_ in record:
        calls[name] = calls.get(name, 0) + 1
    infos, seen = [], set()
    for name, spec, type_name, out, ins in record:
        if name in seen:
            continue
        seen.add(name)
        shape = tuple(out.shape) if hasattr(out, "shape") else ()
        dtype = getattr(out, "dtype", None)
        kind = None if spec is None else spec.kind
        meta = tuple(sorted(getattr(spec.fn, "keywords", {}).items())) if spec is not None else ()
        infos.append(LayerInfo(name, kind, type_name, shape, dtype, calls[name], ins, id(out), meta))
    # The record is in completion order, and containers complete after their children. A layer's
    # place is where its call started: a container goes just before its first descendant, outer
    # containers before inner ones.
    order = {info.name: i for i, info in enumerate(infos)}

    def start_key(info):
        kids = [order[n] for n in order if n.startswith(info.name + ".")]
        if kids:
            return (min(kids), -1, info.name.count("."))
        return (order[info.name], 0, 0)

    return tuple(sorted(infos, key=start_key))
