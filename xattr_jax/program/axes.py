"""Where a value keeps its channels: one table entry per primitive that moves an axis, and one
propagation loop over the program (:func:`channel_axes`)."""

from __future__ import annotations

import numpy as np

from .ir import SHAPE_OPS, operand_shape, x_inputs


def conv_feature(op):
    """(kernel axis, output axis) of a convolution's output features."""
    dn = op.params["dimension_numbers"]
    return (dn.rhs_spec[0], dn.out_spec[1])


def dot_feature(op, shapes, x_pos):
    """For ``dot_general``: (kernel axis, output axis) when the weight has one free axis."""
    (lc, rc), (lb, rb) = op.params["dimension_numbers"]
    l_free = [d for d in range(len(shapes[0])) if d not in lc and d not in lb]
    r_free = [d for d in range(len(shapes[1])) if d not in rc and d not in rb]
    if x_pos == 0:  # weight is rhs: output = batch, lhs free, rhs free
        return (r_free[0], len(lb) + len(l_free)) if len(r_free) == 1 else None
    return (l_free[0], len(lb)) if len(l_free) == 1 else None


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


def _squeeze(axis, p, in_shape):
    dims = [d % len(in_shape) for d in p["dimensions"]]
    return None if axis in dims else axis - sum(d < axis for d in dims)


def _expand_dims(axis, p, in_shape):
    for d in sorted(p["dimensions"]):
        if d <= axis:
            axis += 1
    return axis


def _reshape(axis, p, in_shape):
    """The output axis that holds exactly input axis ``axis`` (same size, same elements before it)."""
    before, size, acc = int(np.prod(in_shape[:axis])), in_shape[axis], 1
    for j, s in enumerate(tuple(p["new_sizes"])):
        if acc == before and s == size:
            return j
        acc *= s
    return None


def _in_place(axis, p, in_shape):
    return axis


#: primitive -> ``(axis, params, input shape) -> output axis or None``: where a shape operation
#: moves an axis of its (x-dependent) input
AXIS_MOVES = {
    **{name: _in_place for name in ("convert_element_type", "copy", "copy_p", "reduce_precision",
                                    "optimization_barrier", "slice", "dynamic_slice", "pad", "concatenate", "rev")},
    "transpose": lambda axis, p, s: list(p["permutation"]).index(axis),
    "squeeze": _squeeze,
    "expand_dims": _expand_dims,
    "broadcast_in_dim": lambda axis, p, s: p["broadcast_dimensions"][axis],
    "reshape": _reshape,
}


def track_axis(axis, op, in_shape):
    """Where axis ``axis`` of the value entering shape op ``op`` ends up, or None."""
    move = AXIS_MOVES.get(op.prim.name)
    return None if move is None else move(axis, op.params, in_shape)


def _conv_channels(a, op, xs, facts, shapes):
    return op.params["dimension_numbers"].out_spec[1]


def _dot_channels(a, op, xs, facts, shapes):
    if len(xs) != 1:
        return _other_channels(a, op, xs, facts, shapes)
    x_pos = op.ins.index(xs[0])
    w = op.ins[1 - x_pos]
    in_shapes = [operand_shape(v, shapes) for v in op.ins]
    if not facts.from_params(w):  # a constant map: x's channels go through
        return None if a is None else dot_axis(op, in_shapes, x_pos, a)
    f = dot_feature(op, in_shapes, x_pos)
    return None if f is None else f[1]


def _shape_channels(a, op, xs, facts, shapes):
    return None if a is None else track_axis(a, op, shapes[xs[0]][0])


def _reduce_channels(a, op, xs, facts, shapes):
    red = tuple(op.params["axes"])
    return None if a is None or a in red else a - sum(r < a for r in red)


def _other_channels(a, op, xs, facts, shapes):
    """Element-wise operations and windowed reductions keep their input's channel axis."""
    return a if len(shapes[op.outs[0]][0]) == len(shapes[xs[0]][0]) else None


#: primitive -> ``(channel axis of the first x-dependent input, op, x inputs, facts, shapes) ->
#: channel axis of the outputs``; every other primitive: :func:`_other_channels`
CHANNEL_RULES = {
    "conv_general_dilated": _conv_channels,
    "dot_general": _dot_channels,
    **{name: _shape_channels for name in SHAPE_OPS},
    **{name: _reduce_channels for name in ("reduce_sum", "reduce_max", "reduce_min")},
}


def channel_axes(ops, facts, shapes, x_ids):
    """The channel axis of every x-dependent value (``None`` where it is lost), in program order.

    The input's channels are last (NHWC); a convolution's output features are its ``out_spec``
    feature axis, a dense layer's the weight's free axis; element-wise operations and windowed
    reductions keep their input's; shape operations and reductions move it (:data:`CHANNEL_RULES`).
    """
    axis = {v: len(shapes[v][0]) - 1 for v in x_ids}
    for op in ops:
        xs = x_inputs(op, facts)
        if xs:
            rule = CHANNEL_RULES.get(op.prim.name, _other_channels)
            a = rule(axis.get(xs[0]), op, xs, facts, shapes)
            axis.update((o, a) for o in op.outs)
    return axis
