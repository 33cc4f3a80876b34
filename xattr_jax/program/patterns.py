"""The ways each layer kind is written, as a table: one :class:`Pattern` per way, matched at its
anchor primitives (:data:`PATTERNS`).

A pattern's ``match(scan, k)`` looks at the operation ``k`` that anchors it and returns the
:class:`Match` it finds there (the operations it takes, its x-dependent inputs, its output), or
``None``. The first pattern in table order that matches at an operation makes the layer; an
operation no pattern takes is a layer of kind ``other``. Region patterns (``region=True``:
activations, norms, softmaxes; :mod:`.regions`) are matched first, in table order, over the whole
program. A pattern of kind ``None`` takes nothing: the signal follows the values through it.

Adding a way of writing a layer is one entry here (and, for a new kind, its rule per method in
the composites).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .axes import conv_feature, dot_feature, track_axis
from .ir import AFFINE_OPS, KINDS, SHAPE_OPS, Lit, is_zero, nonneg_const, only_consumer, operand_shape, size_of, x_inputs
from .regions import REGION_KINDS, grow, has_product
from .relu import is_relu_jaxpr, rectifier_bound


class Match(NamedTuple):
    """What a pattern found at its anchor."""

    ops: tuple  # op indices of the layer, in program order
    inputs: tuple  # x-dependent inputs (a gate's or product's: the value first)
    output: int
    keys: tuple = ()  # ((variable id, parameter key), ...): named parameters ("kernel", "bias")
    bias_op: int | None = None  # index into ``ops`` of a linear layer's bias add
    feature: tuple | None = None  # linear: (kernel axis of the output features, output axis)
    weighs: str | None = None  # the output weighs another value: "gate" or "attention"


class Pattern(NamedTuple):
    """One way a layer kind is written."""

    kind: str | None  # None: no layer
    anchors: frozenset  # primitives where the match starts
    match: Callable  # (scan, op index) -> Match | None
    doc: str  # the operations, as the layer table's documentation shows them
    region: bool = False


class Scan:
    """One pass over a flat program: the operations taken so far and the values that weigh others."""

    def __init__(self, ops, facts, shapes, flow=None):
        self.ops, self.facts, self.shapes, self.flow = ops, facts, shapes, flow
        self.taken: set = set()
        self.weights: dict = {}  # value -> "gate" / "attention"

    def xs(self, k) -> list:
        return x_inputs(self.ops[k], self.facts)

    def name(self, k) -> str:
        return self.ops[k].prim.name

    def next_op(self, v):
        """The only consumer of ``v`` when no layer has taken it, else None."""
        k = only_consumer(v, self.facts)
        return None if k is None or k in self.taken else k

    def through_shapes(self, v, want):
        """Follow single-consumer shape operations from ``v`` to an op in ``want`` with one x input:
        ``(shape ops, that op)``, the op None when there is none."""
        path = []
        while True:
            k = self.next_op(v)
            if k is None:
                return path, None
            name, single = self.name(k), len(self.xs(k)) == 1
            if name in want and single:
                return path, k
            if not (name in SHAPE_OPS and single and len(self.ops[k].outs) == 1) or name in _NOT_THROUGH:
                return path, None
            path.append(k)
            v = self.ops[k].outs[0]

    def then(self, members, out, names, limit=1, until_rank=None):
        """Take in up to ``limit`` following ops whose primitive is in ``names`` (``until_rank``: stop
        as soon as the value has that rank, else drop them all)."""
        path, cur = [], out
        for _ in range(limit):
            k = self.next_op(cur)
            if k is None or self.name(k) not in names:
                break
            path.append(k)
            cur = self.ops[k].outs[0]
            if until_rank is not None and len(self.shapes[cur][0]) >= until_rank:
                return members + path, cur
        if until_rank is not None or not path:
            return members, out
        return members + path, cur

    def affine_ok(self, k, v) -> bool:
        """Op ``k`` is ``v`` combined with one value that does not depend on x (``v`` first for
        ``sub``/``div``)."""
        op = self.ops[k]
        if op.prim.name in ("sub", "div") and op.ins[0] != v:
            return False
        return len(op.ins) == 2 and all(not self.facts.depends_on_x(a) for a in op.ins if a != v)

    def affine_after(self, v, names):
        """``(shape ops, op)``: the op in ``names`` that ``v`` reaches through single-consumer shape
        operations, when it combines that value with one that does not depend on x; else None."""
        path, k = self.through_shapes(v, names)
        if k is None or not self.affine_ok(k, self.ops[path[-1]].outs[0] if path else v):
            return None
        return path, k

    def chain(self, start):
        """``[start, …]``: affine op ``start``, then every affine op reached from it through shape
        operations; ``(members, output)``."""
        members, cur = [start], self.ops[start].outs[0]
        while (found := self.affine_after(cur, AFFINE_OPS)) is not None:
            members += found[0] + [found[1]]
            cur = self.ops[found[1]].outs[0]
        return members, cur


_NOT_THROUGH = frozenset({"gather", "dynamic_slice", "pad", "concatenate", "slice"})


def _one_input(scan, k):
    xs = scan.xs(k)
    return xs[0] if len(xs) == 1 else None


def _weight(scan, k):
    """``(x position, weight)`` of a linear op with one x-dependent operand, else None."""
    v = _one_input(scan, k)
    if v is None:
        return None
    pos = scan.ops[k].ins.index(v)
    return pos, scan.ops[k].ins[1 - pos]


def _linear(scan, k):
    """A convolution or matrix product by a weight from the variables, with its bias ``add``."""
    found = _weight(scan, k)
    if found is None or not scan.facts.from_params(found[1]):
        return None
    (pos, w), op = found, scan.ops[k]
    if op.prim.name == "conv_general_dilated":
        if pos != 0:
            return None
        feat = conv_feature(op)
    else:
        feat = dot_feature(op, [operand_shape(a, scan.shapes) for a in op.ins], pos)
    members, keys, out, bias_op = [k], [(w, "kernel")], op.outs[0], None
    bias_add = scan.affine_after(out, {"add"})
    if bias_add is not None:
        path, add = bias_add
        for p in path:
            if feat is not None:
                ax = track_axis(feat[1], scan.ops[p], scan.shapes[scan.ops[p].ins[0]][0])
                feat = None if ax is None else (feat[0], ax)
        members += path + [add]
        bias_op, out = len(members) - 1, scan.ops[add].outs[0]
        b = [a for a in scan.ops[add].ins if not scan.facts.depends_on_x(a)][0]
        if not isinstance(b, Lit):
            keys.append((b, "bias"))
    return Match(tuple(members), tuple(scan.xs(k)), out, tuple(keys), bias_op, feat)


def _x_kernel(scan, k):
    """A convolution whose kernel is the x-dependent operand."""
    found = _weight(scan, k)
    if found is None or found[0] == 0:
        return None
    return Match((k,), tuple(scan.xs(k)), scan.ops[k].outs[0])


def _constant_map(nonneg):
    def match(scan, k):
        """A linear map by constant weights, with the reshapes that bring its output back to an image."""
        found = _weight(scan, k)
        if found is None or scan.facts.from_params(found[1]) or nonneg_const(found[1], scan.facts) != nonneg:
            return None
        members, out = scan.then([k], scan.ops[k].outs[0], {"transpose", "reshape"}, limit=3, until_rank=4)
        return Match(tuple(members), tuple(scan.xs(k)), out)

    return match


def _rectifier(scan, k):
    """``custom_jvp`` rectifiers, ``max(x, 0)`` and ``min(max(x, 0), c)``; a bounded one (``relu6``)
    is a hard sigmoid when it weighs another value."""
    ops = rectifier_ops(scan, k)  # None unless op k has one x-dependent input
    if ops is None:
        return None
    op, v = scan.ops[k], scan.xs(k)[0]
    bounded = rectifier_bound(op.params["call_jaxpr"]) if op.prim.name == "custom_jvp_call" else len(ops) == 2
    return Match(ops, (v,), scan.ops[ops[-1]].outs[0], weighs="gate" if bounded else None)


def rectifier_ops(scan, k, taken=True):
    """The ops of a ``relu``-kind layer starting at op ``k``, or None (``taken``: not through ops
    a layer has taken)."""
    op, v = scan.ops[k], _one_input(scan, k)
    if v is None:
        return None
    if op.prim.name == "custom_jvp_call":
        return (k,) if is_relu_jaxpr(op.params["call_jaxpr"]) else None
    if op.prim.name != "max" or len(op.ins) != 2 or not is_zero([a for a in op.ins if a != v][0], scan.facts):
        return None
    nxt = only_consumer(op.outs[0], scan.facts)
    if nxt is not None and (not taken or nxt not in scan.taken) and scan.name(nxt) == "min" and \
            len(scan.xs(nxt)) == 1:
        val = scan.facts.value([a for a in scan.ops[nxt].ins if a != op.outs[0]][0])
        if val is not None and np.size(val) == 1 and float(val.reshape(())) > 0:
            return (k, nxt)
    return (k,)


def _where_rectifier(scan, k):
    """``jnp.where(x > 0, x, 0)``: ``select_n(x > 0, 0, x)``, its comparison read by nothing else."""
    op, facts = scan.ops[k], scan.facts
    if len(op.ins) != 3 or not all(facts.depends_on_x(a) for a in (op.ins[0], op.ins[2])) or \
            facts.depends_on_x(op.ins[1]) or not is_zero(op.ins[1], facts):
        return None
    p = facts.producer[op.ins[0]]
    if p in scan.taken or only_consumer(op.ins[0], facts) != k or scan.name(p) not in _POSITIVE:
        return None
    x, zero = scan.ops[p].ins[::_POSITIVE[scan.name(p)]]
    return Match((p, k), (x,), op.outs[0]) if x == op.ins[2] and is_zero(zero, facts) else None


_POSITIVE = {"gt": 1, "lt": -1}  # x > 0 as gt(x, 0) or lt(0, x): the step that puts x first


def _two_inputs(scan, k):
    """The two distinct x-dependent operands, the one that weighs the other second."""
    xs = scan.xs(k)
    if len(xs) != 2 or xs[0] == xs[1]:
        return None
    if scan.weights.get(xs[0]) is not None and scan.weights.get(xs[1]) is None:
        return (xs[1], xs[0])
    return tuple(xs)


def _gate(scan, k):
    """``a ⊙ s``, ``s`` a gate value."""
    order = _two_inputs(scan, k)
    if order is None or scan.weights.get(order[1]) != "gate":
        return None
    return Match((k,), order, scan.ops[k].outs[0])


def _product(scan, k):
    """``a · b``, with the constant scalar factors on its operands and on its result taken in
    (attention's ``q/√d``, ``(q·kᵀ)·c``): relevance rules then see the product as written, and a
    scaling does not shrink the relevance that passes through it."""
    order = _two_inputs(scan, k)
    if order is None:
        return None
    members, inputs = [k], []
    for v in order:
        before, source = _scaled_from(scan, v, k)
        members, inputs = before + members, inputs + [source]
    out = scan.ops[k].outs[0]
    after = scan.next_op(out)
    if after is not None and _is_scaling(scan, after, out):
        members, out = members + [after], scan.ops[after].outs[0]
    return Match(tuple(sorted(members)), tuple(inputs), out)


def _is_scaling(scan, k, v):
    """Op ``k`` multiplies or divides ``v`` by a constant scalar (not a parameter)."""
    return scan.name(k) in ("mul", "div") and scan.affine_ok(k, v) and _scalar_operands(scan, [k])


def _scaled_from(scan, v, user):
    """``(ops, source)``: ``v`` as constant scalar multiples of ``source`` through single-consumer
    shape operations, ending at ``user``; ``([], v)`` when no scaling is on that path."""
    found, path = ([], v), []
    while True:
        p = scan.facts.producer.get(v)
        if p is None or p in scan.taken or only_consumer(v, scan.facts) != user or len(scan.ops[p].outs) != 1:
            return found
        xs = scan.xs(p)
        scaling = len(xs) == 1 and _is_scaling(scan, p, xs[0])
        if len(xs) != 1 or not (scaling or (scan.name(p) in SHAPE_OPS and scan.name(p) not in _NOT_THROUGH)):
            return found
        path.insert(0, p)
        if scaling:
            found = (list(path), xs[0])
        v, user = xs[0], p


def _maxpool(scan, k):
    members, out = scan.then([k], scan.ops[k].outs[0], {"squeeze"})
    return Match(tuple(members), tuple(scan.xs(k)), out)


def _sum_pool(scan, k):
    """A windowed or spatial sum, with its division (and a ``squeeze`` of unit window axes)."""
    v = _one_input(scan, k)
    if v is None:
        return None
    members, out = [k], scan.ops[k].outs[0]
    found = scan.affine_after(out, {"div"})
    if found is not None:
        members += found[0] + [found[1]]
        out = scan.ops[found[1]].outs[0]
    if scan.name(k) == "reduce_window_sum":
        members, out = scan.then(members, out, {"squeeze"})
    return Match(tuple(members), (v,), out)


def _residual(scan, k):
    xs = scan.xs(k)
    return Match((k,), tuple(xs), scan.ops[k].outs[0]) if len(xs) == 2 else None


def _affine_chain(scan, k):
    v = _one_input(scan, k)
    if v is None or not scan.affine_ok(k, v):
        return None
    return scan.chain(k)


def _scalar_operands(scan, members) -> bool:
    ops = [a for m in members for a in scan.ops[m].ins if not scan.facts.depends_on_x(a)]
    return all(size_of(a, scan.shapes) == 1 and not scan.facts.from_params(a) for a in ops)


def _scaling(scan, k):
    """Scaling by constant scalars (``x / 255``, GELU's ``0.5·x``)."""
    found = _affine_chain(scan, k)
    return None if found is None or not _scalar_operands(scan, found[0]) else Match((), tuple(scan.xs(k)), -1)


def _batchnorm(scan, k):
    """An element-wise affine chain by values that do not depend on x, shaped like its input."""
    found = _affine_chain(scan, k)
    if found is None or _scalar_operands(scan, found[0]):
        return None
    members, shape = found[0], scan.shapes[scan.xs(k)[0]][0]
    while members and (scan.name(members[-1]) not in AFFINE_OPS
                       or scan.shapes[scan.ops[members[-1]].outs[0]][0] != shape):
        members = members[:-1]  # up to the last affine op that keeps the input's shape (Swin: then a reshape)
    if not members or _scalar_operands(scan, members):
        return None  # a per-sample statistic broadcast by parameters: kind other
    return Match(tuple(members), tuple(scan.xs(k)), scan.ops[members[-1]].outs[0])


def _shape(scan, k):
    xs = scan.xs(k)
    return Match((), tuple(xs), scan.ops[k].outs[0])


def selected_value(op, facts):
    """The one x-dependent value a ``select_n`` chooses between constants (``jnp.where(mask, v, 0)``,
    torch's safe softmax), else None; its predicate may depend on x (a mask carries no signal)."""
    if op.prim.name != "select_n":
        return None
    live = [a for a in op.ins[1:] if facts.depends_on_x(a)]
    return live[0] if len(live) == 1 else None


def _selection(scan, k):
    v = selected_value(scan.ops[k], scan.facts)
    return None if v is None else Match((), (v,), scan.ops[k].outs[0])


def _region(kind):
    def match(scan, k):
        """The largest single-entry, single-exit region of ``kind`` around anchor ``k``."""
        rect = scan.name(k) in ("max", "custom_jvp_call") and rectifier_ops(scan, k, taken=False) is not None
        if scan.name(k) == "max" and not rect:
            return None
        found = grow(kind, k, scan.ops, scan.facts, scan.shapes, scan.flow, scan.taken)
        if found is None or (kind == "activation" and rect and not has_product(found[0], scan.ops, scan.facts)):
            return None
        region, entry, exit_ = found
        members = tuple(sorted(region))
        weighs = "attention" if kind == "softmax" else (
            "gate" if kind == "activation" and [scan.name(j) for j in members] == ["logistic"] else None)
        return Match(members, (entry,), exit_, weighs=weighs)

    return match


_LINEAR_OPS = frozenset({"conv_general_dilated", "dot_general"})

#: Every way a layer kind is written, in matching order.
PATTERNS = (
    Pattern("norm", REGION_KINDS["norm"][0], _region("norm"),
            "statistics over each sample: LayerNorm, RMSNorm, GroupNorm, instance norm, with their affine part "
            "(a `max(var, 0)` clamp inside is part of the norm, never a `relu`)", region=True),
    Pattern("softmax", REGION_KINDS["softmax"][0], _region("softmax"), "a softmax (attention weights)",
            region=True),
    Pattern("relu", frozenset({"select_n"}), _where_rectifier, "`jnp.where(x > 0, x, 0)`", region=True),
    Pattern("activation", REGION_KINDS["activation"][0], _region("activation"),
            "any other element-wise non-linearity, found as one region of operations: SiLU (`x·σ(x)`), GELU "
            "(erf or tanh form), leaky ReLU / PReLU, hardswish, Mish, softplus, ELU, a standalone sigmoid or "
            "tanh", region=True),
    Pattern("other", frozenset({"conv_general_dilated"}), _x_kernel,
            "a convolution whose kernel depends on `x`"),
    Pattern("avgpool", _LINEAR_OPS, _constant_map(True),
            "linear maps by constant non-negative matrices (adaptive average pooling)"),
    Pattern("other", _LINEAR_OPS, _constant_map(False), "linear maps by constant matrices with negative entries"),
    Pattern("conv", frozenset({"conv_general_dilated"}), _linear,
            "`conv_general_dilated` whose kernel comes from `variables` (any padding, stride, dilation, feature "
            "groups, layout), with its bias `add`"),
    Pattern("dense", frozenset({"dot_general"}), _linear,
            "`dot_general` with a weight from `variables`, with its bias `add`"),
    Pattern("relu", frozenset({"max", "custom_jvp_call"}), _rectifier,
            "every rectifier that is 0 below 0 and the identity up to a bound: `nn.relu`, `jax.nn.relu6`, "
            "`jnp.clip(x, 0, c)`, `jnp.clip(x, 0)`, `jnp.maximum(x, 0)`, `minimum(maximum(x, 0), c)` "
            "(derivative `[0 < x < c]`, 0 at the kinks)"),
    Pattern("gate", frozenset({"mul"}), _gate,
            "`a ⊙ s` with `s` a sigmoid / hard-sigmoid of another x-dependent path: squeeze-excitation, GLU"),
    Pattern("product", frozenset({"mul", "dot_general"}), _product,
            "any other product of two x-dependent values (attention's `QKᵀ` and `A·V`), constant scalar factors on it included (`q/√d`)"),
    Pattern("maxpool", frozenset({"reduce_window_max"}), _maxpool,
            "`reduce_window_max` (`nn.max_pool`, `eqx.nn.MaxPool2d`, ...)"),
    Pattern("avgpool", frozenset({"reduce_window_sum", "reduce_sum"}), _sum_pool,
            "`reduce_window_sum` with its division; `jnp.mean`/`sum` over the spatial axes (global pooling)"),
    Pattern("add", frozenset({"add"}), _residual,
            "a sum of two values that both depend on `x` (residual connections)"),
    Pattern(None, AFFINE_OPS, _scaling, "scaling by a constant scalar (`x / 255`)"),
    Pattern("batchnorm", AFFINE_OPS, _batchnorm,
            "a chain of `sub`/`add`/`mul`/`div` by per-channel values that do not depend on `x`: inference "
            "batch-norm in any spelling (`(x − μ)·γ/√(σ²+ε) + β`), and also an input normalisation inside the "
            "model"),
    Pattern(None, frozenset(SHAPE_OPS), _shape,
            "reshapes, transposes, broadcasts, slices, padding and concatenation: the signal follows the values"),
    Pattern(None, frozenset({"select_n"}), _selection,
            "a selection between one value and constants (`jnp.where(mask, v, 0)`, torch's safe softmax): the "
            "signal follows the value where it is selected"),
)

OTHER_DOC = "anything else between `x` and the output (`jnp.cumsum`, sorting, unknown custom operations)"


def by_anchor(patterns=PATTERNS) -> dict:
    """``{primitive: [operation-anchored patterns that may match there, in table order]}``."""
    out: dict = {}
    for p in patterns:
        if not p.region:
            for a in p.anchors:
                out.setdefault(a, []).append(p)
    return out


def _rows() -> list:
    """``[(kind, its patterns' docs joined)]`` in :data:`.ir.KINDS` order, then the no-layer ones."""
    rows: dict = {}
    for p in PATTERNS:
        if p.kind is not None:
            rows.setdefault(p.kind, []).append(p.doc)
    rows.setdefault("other", []).append(OTHER_DOC)
    out = [(f"`{kind}`", "; ".join(rows[kind])) for kind in KINDS if kind in rows]
    return out + [("(no layer)", "; ".join(p.doc for p in PATTERNS if p.kind is None))]


def patterns_table() -> str:
    """The Markdown table of the kinds and how each is written (``docs/your_model.md``)."""
    lines = ["| kind | operations in your program |", "|---|---|"]
    return "\n".join(lines + [f"| {kind} | {doc} |" for kind, doc in _rows()])


def kinds_text() -> str:
    """The same as a list for the package docstring."""
    return "\n".join(f"* {kind}: {doc}" for kind, doc in _rows())


__all__ = ["PATTERNS", "Pattern", "Match", "Scan", "by_anchor", "patterns_table", "kinds_text"]
