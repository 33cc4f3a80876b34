"""Tracing a model (any JAX callable or a linen Module) to a :class:`~.ir.Program`."""

from __future__ import annotations

import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .ir import (KEEPS_NONNEG, LINEAR, SHAPE_OPS, Program, find_facts, flatten_jaxpr, key_name,
                 path_parts, x_inputs)
from .layers import channel_axes, find_segments, track_axis
from .names import layer_names, layer_rows, module_outputs


def call_model(model) -> Callable:
    """``model`` as a function ``(variables, x) -> output``."""
    return model_call(model)[0]


def describe(layers, limit: int = 8) -> str:
    """Layers grouped by kind, main primitive and source line, one group per line:
    ``12× activation (integer_pow) at model.py:40 (blocks.*.mlp.activation_0)``."""
    groups: dict = {}
    for l in layers:
        groups.setdefault((l.kind, l.type_name, l.source), []).append(l.name)
    lines = []
    for (k, t, src), names in groups.items():
        pats = sorted({re.sub(r"\d+", "*", n) for n in names})
        where = ", ".join(names) if len(names) <= 3 else ", ".join(pats[:3]) + (", ..." if len(pats) > 3 else "")
        lines.append(f"  {len(names)}× {k} ({t}) at {src or 'unknown source'} ({where})")
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more groups"]
    return "\n".join(lines)


def check_strict(layers) -> None:
    """Refuse operations without a rule on the way from x to the output (``strict=True``)."""
    other = [l for l in layers if l.kind == "other"]
    if other:
        raise ValueError(
            f"strict mode: {len(other)} operation(s) between x and the output have no rule:\n{describe(other)}\n"
            "They would keep their ordinary gradient; rewrite them with operations of a known kind "
            "(xattr_jax.program.KINDS), or pass strict=False to accept the gradient there."
        )


def check_domain(layers, kinds, method: str, reason: str, fix: str) -> None:
    """Refuse layers whose kind is not in ``kinds`` (a method's domain), naming each group."""
    out = [l for l in layers if l.kind is not None and l.kind not in kinds]
    if out:
        raise ValueError(f"{method} {reason}; this model has {len(out)} layer(s) outside it:\n{describe(out)}\n{fix}")


def check_channels_last(segs, names, ops, shapes, axes) -> None:
    """Refuse an input whose last axis the model's first convolution reads as a spatial axis.

    ``axes`` holds each value's channel axis with x's taken as last (NHWC); an NCHW model given
    NCHW ``x`` feeds x's last axis (width) to its first convolution as a spatial axis, and every
    map would come back ``[N, C, W]``.
    """
    first = next((i for i, s in enumerate(segs) if s.kind in LINEAR), None)
    if first is None or segs[first].kind != "conv":
        return
    seg = segs[first]
    op = ops[seg.ops[0]]
    lhs = op.params["dimension_numbers"].lhs_spec
    a = axes.get(seg.inputs[0])
    if a is None or a == lhs[1]:
        return
    shape = shapes[seg.inputs[0]][0]
    raise ValueError(
        f"x must be NHWC [N, H, W, C]: the model's first convolution ({names[first]} at "
        f"{op.source or 'unknown source'}) reads x's last axis as a spatial axis and the axis of size "
        f"{shape[lhs[1]]} as its channels, so x is laid out channels-first (NCHW) and every map would be "
        "[N, C, W]. Pass x as NHWC and transpose inside your function, e.g. "
        "lambda v, x: f(v, x.transpose(0, 3, 1, 2))"
    )


def checked_call(fn):
    """``fn(variables, x)`` with its failures told in our words: a Flax model in training mode,
    a function that takes ``(x, variables)``, or channels-first ``x`` given to an NHWC model."""

    def call(variables, x):
        try:
            return fn(variables, x)
        except Exception as err:
            hint = _training_mode(err) or _misuse(fn, variables, x)
            if hint:
                raise ValueError(hint) from err
            raise

    return call


def _training_mode(err) -> str | None:
    text = str(err)
    if "batch_stats" in text or "dropout" in text.lower() or "is immutable" in text:
        return (f"the model could not run in inference mode ({type(err).__name__}: {text.splitlines()[0]}); "
                "attribution calls it as model.apply(variables, x): build it with "
                "use_running_average=True / deterministic=True (or train=False)")
    return None


def _runs(fn, *args) -> bool:
    """Whether ``fn(*args)`` traces without an error, on shapes only."""
    spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), getattr(a, "dtype", None) or jnp.result_type(a))  # noqa: E731
    try:
        jax.eval_shape(fn, *jax.tree_util.tree_map(spec, args))  # also fails on non-array leaves
        return True
    except Exception:  # noqa: BLE001 -- any failure means "not this way either"
        return False


def _misuse(fn, variables, x) -> str | None:
    """Why ``fn(variables, x)`` failed when another reading of the arguments runs, else None."""
    if _runs(fn, x, variables):
        return ("model(variables, x) failed, but model(x, variables) runs: attribution calls "
                "model(variables, x); pass a function that takes the variables first, e.g. "
                "lambda v, x: f(x, v)")
    shape = np.shape(x) if hasattr(x, "dtype") else ()
    nhwc = jax.ShapeDtypeStruct((shape[0], shape[2], shape[3], shape[1]), x.dtype) if len(shape) == 4 else None
    if nhwc is not None and _runs(fn, variables, nhwc):
        return (f"model(variables, x) failed for x of shape {tuple(x.shape)}, but runs on "
                "x.transpose(0, 2, 3, 1): x must be NHWC [N, H, W, C], not channels-first; transpose it "
                "(or, for a channels-first model, transpose inside your function)")
    return None


def model_call(model):
    apply = getattr(model, "apply", None)
    try:
        import flax.linen as nn

        if isinstance(model, nn.Module):
            return checked_call(model.apply), True
    except ImportError:  # pragma: no cover
        pass
    if callable(model):
        return checked_call(model), False
    raise TypeError(
        f"model must be a flax.linen.Module or a callable model(variables, x) -> logits, got "
        f"{type(model).__name__}" + (" (it has .apply: pass model.apply)" if apply else "")
    )


def trace(model, variables, x) -> Program:
    """Trace ``model`` on ``(variables, x)`` (concrete or abstract) and find its layers."""
    fn, linen = model_call(model)
    closed = jax.make_jaxpr(lambda v, x: fn(v, x))(variables, x)
    flat, _ = jax.tree_util.tree_flatten_with_path((variables, x))
    leaf_paths = [path_parts(p, linen) if p and key_name(p[0]) == "0" else None for p, _ in flat]
    ops: list = []
    consts: list = []
    counter = [0]
    invars = []
    env = {}
    shapes = {}
    for v in closed.jaxpr.invars:
        counter[0] += 1
        env[v] = counter[0]
        invars.append(counter[0])
        shapes[counter[0]] = (tuple(v.aval.shape), v.aval.dtype)
    outs = flatten_jaxpr(closed.jaxpr, closed.consts, env, ops, consts, counter, shapes)
    for i, c in consts:
        shapes[i] = (tuple(np.shape(c)), getattr(c, "dtype", None) or np.asarray(c).dtype)
    n_x = len(jax.tree_util.tree_leaves(x))
    x_ids = invars[len(invars) - n_x:]
    param_ids = invars[: len(invars) - n_x]
    facts = find_facts(ops, x_ids, param_ids, consts)
    # everything that does not depend on x runs first (parameter preparation), so a layer's rule
    # can read any parameter of the program (a canonizer folds the batch-norm after a conv into it)
    ops = [op for op in ops if not any(o in facts.xdep for o in op.outs)] + \
          [op for op in ops if any(o in facts.xdep for o in op.outs)]
    facts = find_facts(ops, x_ids, param_ids, consts)
    if not any(o in facts.xdep for o in outs):
        raise ValueError(
            "the model's output does not depend on x (the input): nothing to attribute; check that "
            "model(variables, x) uses its second argument"
        )
    xb = int(np.shape(jax.tree_util.tree_leaves(x)[0])[0]) if np.ndim(jax.tree_util.tree_leaves(x)[0]) else 1
    segs = find_segments(ops, facts, shapes, xb, x_ids, outs)
    names = layer_names(segs, ops, facts, leaf_paths)
    # static non-negativity: ReLU outputs, kept by pools, sums and shape operations
    nonneg_vars: set = set()
    nonneg_segs = set()
    seg_at = {max(s.ops): i for i, s in enumerate(segs)}  # a segment runs where its last op stood
    in_seg = frozenset(k for s in segs for k in s.ops)
    for k, op in enumerate(ops):
        i = seg_at.get(k)
        if i is not None:
            s = segs[i]
            all_nn = all(v in nonneg_vars for v in s.inputs)
            if all_nn:
                nonneg_segs.add(i)
            if s.kind == "relu" or (s.kind in ("maxpool", "avgpool", "add") and all_nn):
                nonneg_vars.add(s.output)
            continue
        if k in in_seg:
            continue
        xs = x_inputs(op, facts)
        if xs and op.prim.name in KEEPS_NONNEG and all(a in nonneg_vars for a in xs):
            nonneg_vars.update(op.outs)
    # folds: a linear layer whose only consumer is a batch-norm chain
    folds = {}
    by_input = {}
    for i, s in enumerate(segs):
        if s.kind == "batchnorm":
            by_input.setdefault(s.inputs[0], []).append(i)
    for i, s in enumerate(segs):
        if s.kind not in LINEAR or s.feature is None:
            continue
        # through single-consumer shape operations (a vmapped channels-first conv reshapes first)
        v, path, axis = s.output, [], s.feature[1]
        while len(facts.consumers.get(v, [])) == 1 and v not in by_input:
            k = facts.consumers[v][0]
            op = ops[k]
            if k in in_seg or op.prim.name not in KEEPS_NONNEG or op.prim.name in (
                    "broadcast_in_dim", "slice", "dynamic_slice", "gather", "concatenate") or len(op.outs) != 1:
                break
            axis = track_axis(axis, op, shapes[v][0])
            if axis is None:
                break
            path.append(k)
            v = op.outs[0]
        if v in by_input and len(facts.consumers.get(v, [])) == 1 and axis is not None:
            folds[i] = (by_input[v][0], tuple(path), axis)
    outs_of_segs = {s.output for s in segs}

    def upstream(v):  # the layer output a value comes from, through shape operations
        while v not in outs_of_segs and v in facts.producer:
            op = ops[facts.producer[v]]
            xs = x_inputs(op, facts)
            if op.prim.name not in SHAPE_OPS or len(xs) != 1:
                break
            v = xs[0]
        return v

    ins = [tuple(upstream(v) for v in s.inputs) for s in segs]
    axes = channel_axes(ops, facts, shapes, x_ids)
    check_channels_last(segs, names, ops, shapes, axes)
    table, outputs = layer_rows(segs, names, ops, shapes, nonneg_segs, ins, axes, module_outputs(segs, ops, facts, outs))
    return Program(tuple(ops), tuple(invars), tuple(consts), tuple(outs), tuple(segs),
                   tuple(names), seg_at, in_seg, table, outputs, frozenset(nonneg_segs), folds, shapes)
