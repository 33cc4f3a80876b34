"""Finding layers in a flat program: which operations form a conv, dense, batch-norm,
ReLU, pool, sum or other layer, and where each value keeps its channels."""

from __future__ import annotations

import numpy as np
from jax.extend import core as jcore

from .regions import Flow, find_regions
from .ir import (AFFINE_OPS, BATCH_MIXING_OPS, INLINE_CALLS, RNG_OPS, SHAPE_OPS, VALUE_IDENTITY, Segment, is_float,
                 is_zero, nonneg_const, only_consumer, size_of, x_inputs)


def _is_literal_zero(a, zeros=()) -> bool:
    return (isinstance(a, jcore.Literal) and np.all(np.asarray(a.val) == 0)) or a in zeros


def is_relu_jaxpr(cj) -> bool:
    """``custom_jvp_call``'s program is a rectifier: ``max(x, 0)`` (``jax.nn.relu``), or
    ``min(max(x, 0), c)`` with a constant ``c > 0`` (``jax.nn.relu6``), possibly inside a ``jit``."""
    j = cj.jaxpr if hasattr(cj, "jaxpr") else cj
    if len(j.invars) != 1 or not j.eqns:
        return False
    zeros = set()  # shard_map marks the literal 0 as varying first: pvary(0.0)
    eqns = list(j.eqns)
    while eqns and eqns[0].primitive.name in VALUE_IDENTITY:
        if not all(_is_literal_zero(a) for a in eqns[0].invars):
            return False
        zeros.update(eqns.pop(0).outvars)
    if len(eqns) == 1 and eqns[0].primitive.name in INLINE_CALLS:
        return is_relu_jaxpr(eqns[0].params[INLINE_CALLS[eqns[0].primitive.name]])
    if not eqns or eqns[0].primitive.name != "max" or len(eqns) > 2:
        return False
    a, b = eqns[0].invars
    other = b if a is j.invars[0] else a if b is j.invars[0] else None
    if other is None or not _is_literal_zero(other, zeros):
        return False
    if len(eqns) == 1:
        return True
    c, d = eqns[1].invars
    bound = d if c is eqns[0].outvars[0] else c
    return (eqns[1].primitive.name == "min" and isinstance(bound, jcore.Literal)
            and np.size(bound.val) == 1 and float(np.asarray(bound.val)) > 0)


def rectifier(k, ops, facts, taken=()):
    """The ops of a ``relu``-kind layer starting at op ``k``, or None: a ``custom_jvp`` rectifier
    (:func:`is_relu_jaxpr`), or ``max(x, 0)`` followed by its only consumer ``min(·, c)``, ``c > 0`` a
    constant scalar (``jnp.clip(x, 0, c)``, ``hardtanh(x, 0, c)``)."""
    op = ops[k]
    xs = x_inputs(op, facts)
    if len(xs) != 1:
        return None
    if op.prim.name == "custom_jvp_call":
        return (k,) if is_relu_jaxpr(op.params["call_jaxpr"]) else None
    if op.prim.name != "max" or len(op.ins) != 2 or not is_zero([a for a in op.ins if a != xs[0]][0], facts):
        return None
    nxt = only_consumer(op.outs[0], facts)
    if nxt is not None and nxt not in taken and ops[nxt].prim.name == "min" and len(x_inputs(ops[nxt], facts)) == 1:
        bound = [a for a in ops[nxt].ins if a != op.outs[0]][0]
        val = np.asarray(bound[1]) if isinstance(bound, tuple) else facts.concrete.get(bound)
        if val is not None and np.size(val) == 1 and float(val.reshape(())) > 0:
            return (k, nxt)
    return (k,)


def conv_feature(op):
    """(kernel axis, output axis) of a convolution's output features."""
    dn = op.params["dimension_numbers"]
    return (dn.rhs_spec[0], dn.out_spec[1])


def dot_feature(op, shapes, x_pos):
    """For ``dot_general``: (kernel axis, output axis) when the weight has one free axis."""
    (lc, rc), (lb, rb) = op.params["dimension_numbers"]
    lhs_rank, rhs_rank = (len(shapes[0]), len(shapes[1]))
    l_free = [d for d in range(lhs_rank) if d not in lc and d not in lb]
    r_free = [d for d in range(rhs_rank) if d not in rc and d not in rb]
    if x_pos == 0:  # weight is rhs: output = batch, lhs free, rhs free
        if len(r_free) != 1:
            return None
        return (r_free[0], len(lb) + len(l_free))
    if len(l_free) != 1:
        return None
    return (l_free[0], len(lb))


def dot_axis(op, shapes, pos, axis):
    """Where free axis ``axis`` of operand ``pos`` of a ``dot_general`` lands in its output (output
    axes: batch, lhs free, rhs free), or None when it is contracted or batched."""
    (lc, rc), (lb, rb) = op.params["dimension_numbers"]
    contract, batch = (lc, lb) if pos == 0 else (rc, rb)
    if axis in contract or axis in batch:
        return None
    free = [d for d in range(len(shapes[pos])) if d not in contract and d not in batch]
    offset = len(lb) + (0 if pos == 0 else len([d for d in range(len(shapes[0])) if d not in lc and d not in lb]))
    return offset + free.index(axis)


def track_axis(axis, op, in_shape):
    """Where output axis ``axis`` of the value entering shape op ``op`` ends up, or None."""
    name = op.prim.name
    p = op.params
    if name in ("convert_element_type", "copy", "copy_p", "reduce_precision", "optimization_barrier",
                "slice", "dynamic_slice", "pad", "concatenate", "rev"):  # same rank, axes in place
        return axis
    if name == "transpose":
        return list(p["permutation"]).index(axis)
    if name == "squeeze":
        dims = [d % len(in_shape) for d in p["dimensions"]]
        return None if axis in dims else axis - sum(d < axis for d in dims)
    if name == "expand_dims":
        dims = sorted(p["dimensions"])
        out = axis
        for d in dims:
            if d <= out:
                out += 1
        return out
    if name == "broadcast_in_dim":
        return p["broadcast_dimensions"][axis]
    if name == "reshape":
        new = tuple(p["new_sizes"])
        before = int(np.prod(in_shape[:axis]))
        size = in_shape[axis]
        acc = 1
        for j, s in enumerate(new):
            if acc == before and s == size:
                return j
            acc *= s
        return None
    return None


def find_segments(ops, facts, shapes, x_batch, x_ids=(), outvars=()):
    """Group operations into layer segments (program order)."""
    segs, taken = [], set()
    # values that weigh another: sigmoid / hard-sigmoid outputs (gates), softmax outputs (attention)
    weights: dict = {}

    def params_of(op_ids, keys=None):
        out, seen = [], set()
        keys = dict(keys or {})
        n = 0
        for k in op_ids:
            for a in ops[k].ins:
                if isinstance(a, tuple) or a in facts.xdep or a in seen:
                    continue
                seen.add(a)
                if a in keys:
                    out.append((keys[a], a))
                else:
                    out.append((f"c{n}", a))
                    n += 1
        return tuple(out)

    def chain_shape_then(v, want):
        """Follow single-consumer shape ops from ``v`` to an op in ``want``; (shape ops, op, var)."""
        path = []
        cur = v
        while True:
            k = only_consumer(cur, facts)
            if k is None or k in taken:
                return path, None
            op = ops[k]
            if op.prim.name in want and len(x_inputs(op, facts)) == 1:
                return path, k
            if op.prim.name in SHAPE_OPS and len(x_inputs(op, facts)) == 1 and len(op.outs) == 1 and \
                    op.prim.name not in ("gather", "dynamic_slice", "pad", "concatenate", "slice"):
                path.append(k)
                cur = op.outs[0]
                continue
            return path, None

    def unit_squeeze(members, out):
        """Take in a ``squeeze`` of unit axes after a pool (a pool written over an added axis)."""
        k = only_consumer(out, facts)
        if k is not None and k not in taken and ops[k].prim.name == "squeeze":
            return members + [k], ops[k].outs[0]
        return members, out

    def spatial_view(members, out):
        """Take in the transposes/reshapes that bring a pooling matrix product's output back to an
        image ``[N, h, w, C]`` (adaptive average pooling written as one matrix product)."""
        path, cur = [], out
        for _ in range(3):
            k = only_consumer(cur, facts)
            if k is None or k in taken or ops[k].prim.name not in ("transpose", "reshape"):
                break
            path.append(k)
            cur = ops[k].outs[0]
            if len(shapes[cur][0]) >= 4:
                return members + path, cur
        return members, out

    def affine_ok(op, v):
        others = [a for a in op.ins if a != v]
        if op.prim.name in ("sub", "div") and op.ins[0] != v:
            return False
        return len(op.ins) == 2 and all(isinstance(a, tuple) or a not in facts.xdep for a in others)

    flow = Flow(ops, facts, x_ids, outvars)
    for kind, members, entry, exit_ in find_regions(ops, facts, shapes, flow,
                                                    lambda j: rectifier(j, ops, facts) is not None):
        segs.append(Segment(kind, members, (entry,), params_of(members), exit_, None, None))
        taken.update(members)
        if kind == "softmax":
            weights[exit_] = "attention"
        elif kind == "activation" and [ops[j].prim.name for j in members] == ["logistic"]:
            weights[exit_] = "gate"

    for k, op in enumerate(ops):
        if k in taken:
            continue
        xs = x_inputs(op, facts)
        if not xs:
            continue
        name = op.prim.name
        if name in RNG_OPS:
            raise ValueError(
                "the model draws random numbers on the way from x to its output (dropout or noise in "
                "training mode); attribution needs the model in inference mode: linen "
                "deterministic=True / train=False, NNX model.eval(), Equinox eqx.nn.inference_mode(model)"
            )
        if not all(is_float(shapes[o][1]) for o in op.outs):
            continue  # comparisons, indices: no signal flows
        if name in BATCH_MIXING_OPS and op.ins[0] in facts.xdep:
            axes = op.params.get("axes", (op.params.get("axis"),))
            in_shape = shapes[op.ins[0]][0]
            if 0 in tuple(a for a in axes if a is not None) and in_shape and in_shape[0] == x_batch and x_batch > 1:
                raise ValueError(
                    f"the model reduces over the batch axis ({name} at {op.source}): its output for one "
                    "sample depends on the others, as batch-norm in training mode does; call the model in "
                    "inference mode (linen use_running_average=True / train=False, NNX model.eval(), "
                    "Equinox eqx.nn.inference_mode(model))"
                )
        if name in ("conv_general_dilated", "dot_general") and len(xs) == 1:
            x_pos = op.ins.index(xs[0])
            w = op.ins[1 - x_pos]
            const_w = isinstance(w, tuple) or not facts.sources.get(w)
            if name == "conv_general_dilated" and x_pos != 0:
                segs.append(Segment("other", (k,), tuple(xs), params_of([k]), op.outs[0], None, None))
                taken.add(k)
                continue
            if const_w:  # a constant linear map: pooling when its weights are non-negative
                kind = "avgpool" if nonneg_const(w, facts) else "other"
                members, out = spatial_view([k], op.outs[0])
                segs.append(Segment(kind, tuple(members), tuple(xs), params_of(members), out, None, None))
                taken.update(members)
                continue
            if name == "conv_general_dilated":
                feat = conv_feature(op)
            else:
                feat = dot_feature(op, [shapes[a][0] if not isinstance(a, tuple) else np.shape(a[1])
                                         for a in op.ins], x_pos)
            members = [k]
            path, add_k = chain_shape_then(op.outs[0], {"add"})
            bias_op = None
            out = op.outs[0]
            if add_k is not None and affine_ok(ops[add_k], ops[path[-1]].outs[0] if path else op.outs[0]):
                for p in path:
                    if feat is not None:
                        ax = track_axis(feat[1], ops[p], shapes[ops[p].ins[0]][0])
                        feat = None if ax is None else (feat[0], ax)
                members += path + [add_k]
                bias_op = len(members) - 1
                out = ops[add_k].outs[0]
            keys = {w: "kernel"}
            if bias_op is not None:
                b = [a for a in ops[add_k].ins if isinstance(a, tuple) or a not in facts.xdep][0]
                if not isinstance(b, tuple):
                    keys[b] = "bias"
            taken.update(members)
            segs.append(Segment("conv" if name == "conv_general_dilated" else "dense", tuple(members),
                                 tuple(xs), params_of(members, keys), out, bias_op, feat))
            continue
        rect = rectifier(k, ops, facts, taken)
        if rect is not None:
            out = ops[rect[-1]].outs[0]
            segs.append(Segment("relu", rect, tuple(xs), params_of(rect), out, None, None))
            taken.update(rect)
            bounded = _bounded(op.params["call_jaxpr"]) if name == "custom_jvp_call" else len(rect) == 2
            if bounded:  # relu6(x + 3) / 6: a hard sigmoid
                weights[out] = "gate"
            continue
        if name in ("mul", "dot_general") and len(xs) == 2 and len(set(xs)) == 2:
            roles = [weights.get(a) for a in xs]
            order = tuple(xs)
            if roles[0] is not None and roles[1] is None:
                order = (xs[1], xs[0])  # the value first, then what weighs it
            kind = "gate" if weights.get(order[1]) == "gate" and name == "mul" else "product"
            segs.append(Segment(kind, (k,), order, params_of([k]), op.outs[0], None, None))
            taken.add(k)
            continue
        if name == "reduce_window_max":
            members, out = unit_squeeze([k], op.outs[0])
            taken.update(members)
            segs.append(Segment("maxpool", tuple(members), tuple(xs), params_of(members), out, None, None))
            continue
        if name in ("reduce_window_sum", "reduce_sum") and len(xs) == 1:
            members = [k]
            out = op.outs[0]
            path, d = chain_shape_then(out, {"div"})
            if d is not None and affine_ok(ops[d], ops[path[-1]].outs[0] if path else out):
                members += path + [d]
                out = ops[d].outs[0]
            if name == "reduce_window_sum":
                members, out = unit_squeeze(members, out)
            taken.update(members)
            segs.append(Segment("avgpool", tuple(members), tuple(xs), params_of(members), out, None, None))
            continue
        if name == "add" and len(xs) == 2:
            segs.append(Segment("add", (k,), tuple(xs), (), op.outs[0], None, None))
            taken.add(k)
            continue
        if name in AFFINE_OPS and len(xs) == 1 and affine_ok(op, xs[0]):
            members = [k]
            cur = op.outs[0]
            while True:
                path, nk = chain_shape_then(cur, AFFINE_OPS)
                if nk is None or not affine_ok(ops[nk], ops[path[-1]].outs[0] if path else cur):
                    break
                members += path + [nk]
                cur = ops[nk].outs[0]
            operands = [a for m in members for a in ops[m].ins if isinstance(a, tuple) or a not in facts.xdep]
            if all(size_of(a, shapes) == 1 and (isinstance(a, tuple) or not facts.sources.get(a))
                   for a in operands):
                _follow(weights, op, xs)
                continue  # scaling by constant scalars (x / 255, gelu's 0.5·x): no layer, its gradient
            if shapes[cur][0] != shapes[xs[0]][0]:  # a per-sample statistic scaled by parameters
                segs.append(Segment("other", (k,), tuple(xs), params_of([k]), op.outs[0], None, None))
                taken.add(k)
                continue
            taken.update(members)
            segs.append(Segment("batchnorm", tuple(members), tuple(xs), params_of(members), cur, None, None))
            continue
        if name in SHAPE_OPS:
            _follow(weights, op, xs)
            continue
        segs.append(Segment("other", (k,), tuple(xs), params_of([k]), op.outs[0], None, None))
        taken.add(k)
    return sorted(segs, key=lambda s: s.ops[0])


def _follow(weights, op, xs):
    """A weight stays one through shape operations and scaling by constants."""
    if len(xs) == 1 and xs[0] in weights:
        for o in op.outs:
            weights[o] = weights[xs[0]]


def _bounded(cj) -> bool:
    """A ``custom_jvp`` rectifier with an upper bound (``relu6``)."""
    j = cj.jaxpr if hasattr(cj, "jaxpr") else cj
    return any(e.primitive.name == "min" or e.primitive.name in INLINE_CALLS and _bounded(
        e.params[INLINE_CALLS[e.primitive.name]]) for e in j.eqns)


def channel_axes(ops, facts, shapes, x_ids):
    """The channel axis of every x-dependent value (``None`` where it is lost), in program order.

    The input's channels are last (NHWC); a convolution's output features are its ``out_spec``
    feature axis, a dense layer's the weight's free axis; element-wise operations and windowed
    reductions keep their input's; shape operations and reductions move it.
    """
    axis = {v: len(shapes[v][0]) - 1 for v in x_ids}
    for op in ops:
        xs = x_inputs(op, facts)
        if not xs:
            continue
        name = op.prim.name
        a = axis.get(xs[0])
        out_rank = len(shapes[op.outs[0]][0])
        if name == "conv_general_dilated":
            a = op.params["dimension_numbers"].out_spec[1]
        elif name == "dot_general" and len(xs) == 1:
            x_pos = op.ins.index(xs[0])
            w = op.ins[1 - x_pos]
            in_shapes = [shapes[v][0] if not isinstance(v, tuple) else np.shape(v[1]) for v in op.ins]
            if isinstance(w, tuple) or not facts.sources.get(w):  # a constant map: x's channels go through
                a = None if a is None else dot_axis(op, in_shapes, x_pos, a)
            else:
                f = dot_feature(op, in_shapes, x_pos)
                a = None if f is None else f[1]
        elif name in SHAPE_OPS:
            a = None if a is None else track_axis(a, op, shapes[xs[0]][0])
        elif name in ("reduce_sum", "reduce_max", "reduce_min"):
            red = tuple(op.params["axes"])
            a = None if a is None or a in red else a - sum(r < a for r in red)
        elif out_rank != len(shapes[xs[0]][0]):
            a = None
        for o in op.outs:
            axis[o] = a
    return axis
