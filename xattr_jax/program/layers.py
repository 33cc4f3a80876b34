"""Finding layers in a flat program (:data:`.patterns.PATTERNS`), and the static facts about them:
which layers see only non-negative inputs, which batch-norms fold into the linear layer before
them, which layer output each layer reads."""

from __future__ import annotations

from .checks import refuse_training_mode
from .ir import FOLD_THROUGH, KEEPS_NONNEG, LINEAR, NONNEG_KINDS, SHAPE_OPS, Lit, Segment, is_float, x_inputs
from .axes import track_axis
from .patterns import PATTERNS, Match, Scan, by_anchor, selected_value
from .regions import Flow


def find_segments(ops, facts, shapes, x_batch, x_ids=(), outvars=()):
    """Group operations into layer segments (program order): region patterns over the whole
    program first, then at each operation the first pattern anchored there that matches; an
    x-dependent operation no pattern takes is a layer of kind ``other``."""
    scan = Scan(ops, facts, shapes, Flow(ops, facts, x_ids, outvars))
    segs, anchored = [], by_anchor(PATTERNS)
    for pat in PATTERNS:
        if pat.region:
            for k, op in enumerate(ops):
                if k not in scan.taken and op.prim.name in pat.anchors and x_inputs(op, facts):
                    _take(scan, segs, pat.kind, k, pat.match(scan, k))
    for k, op in enumerate(ops):
        xs = x_inputs(op, facts)
        if k in scan.taken or not xs:
            continue
        refuse_training_mode(op, facts, shapes, x_batch)
        if all(is_float(shapes[o][1]) for o in op.outs):  # comparisons, indices: no signal flows
            _match_at(scan, segs, k, xs, anchored.get(op.prim.name, ()))
    return sorted(segs, key=lambda s: s.ops[0])


def _match_at(scan, segs, k, xs, patterns):
    op = scan.ops[k]
    for pat in patterns:
        m = pat.match(scan, k)
        if m is None:
            continue
        if pat.kind is None:  # no layer: a weight stays one through it
            if len(m.inputs) == 1 and m.inputs[0] in scan.weights:
                scan.weights.update((o, scan.weights[m.inputs[0]]) for o in op.outs)
        else:
            _take(scan, segs, pat.kind, k, m)
        return
    _take(scan, segs, "other", k, Match((k,), tuple(xs), op.outs[0]))


def _take(scan, segs, kind, k, m):
    if m is None:
        return
    segs.append(Segment(kind, m.ops, m.inputs, _params(scan, m), m.output, m.bias_op, m.feature))
    scan.taken.update(m.ops)
    if m.weighs is not None:
        scan.weights[m.output] = m.weighs


def _params(scan, m):
    """``((key, variable id), ...)``: the x-independent operands, named ones by their key, the others
    ``c0``, ``c1``, ... in operand order."""
    keys, out, n = dict(m.keys), {}, 0
    for a in (a for k in m.ops for a in scan.ops[k].ins):
        if isinstance(a, Lit) or scan.facts.depends_on_x(a) or a in out:
            continue
        out[a] = keys.get(a)
        if out[a] is None:
            out[a], n = f"c{n}", n + 1
    return tuple((key, a) for a, key in out.items())


def nonneg_layers(ops, facts, segs, owner) -> frozenset:
    """Segments whose inputs are all >= 0: made so by ``relu`` layers, kept by the kinds and shape
    operations that keep it (:data:`.ir.NONNEG_KINDS`, :data:`.ir.KEEPS_NONNEG`)."""
    values, out = set(), set()
    for k, op in enumerate(ops):
        i = owner.get(k)
        if i is not None and k == max(segs[i].ops):  # a segment runs where its last op stood
            s = segs[i]
            all_nn = all(v in values for v in s.inputs)
            if all_nn:
                out.add(i)
            if NONNEG_KINDS.get(s.kind) == "makes" or (NONNEG_KINDS.get(s.kind) == "keeps" and all_nn):
                values.add(s.output)
        elif i is None:
            xs = x_inputs(op, facts)
            if xs and op.prim.name in KEEPS_NONNEG and all(a in values for a in xs):
                values.update(op.outs)
    return frozenset(out)


def batchnorm_folds(ops, facts, shapes, segs, owner) -> dict:
    """``{linear segment: (batch-norm segment, shape ops between, the features' axis there)}``: a
    linear layer whose only consumer is a batch-norm chain, through single-consumer shape operations
    that keep each feature in place (:data:`.ir.FOLD_THROUGH`; a vmapped channels-first conv)."""
    by_input: dict = {}
    for i, s in enumerate(segs):
        if s.kind == "batchnorm":
            by_input.setdefault(s.inputs[0], []).append(i)
    folds = {}
    for i, s in enumerate(segs):
        if s.kind not in LINEAR or s.feature is None:
            continue
        v, path, axis = s.output, [], s.feature[1]
        while len(facts.consumers.get(v, [])) == 1 and v not in by_input:
            k = facts.consumers[v][0]
            op = ops[k]
            if k in owner or op.prim.name not in FOLD_THROUGH or len(op.outs) != 1:
                break
            axis = track_axis(axis, op, shapes[v][0])
            if axis is None:
                break
            path.append(k)
            v = op.outs[0]
        if v in by_input and len(facts.consumers.get(v, [])) == 1 and axis is not None:
            folds[i] = (by_input[v][0], tuple(path), axis)
    return folds


def layer_inputs(ops, facts, segs) -> list:
    """Per segment, the layer outputs (or program inputs) its inputs come from through shape operations
    and selections between one value and constants."""
    outs = {s.output for s in segs}

    def upstream(v):
        while v not in outs and v in facts.producer:
            op = ops[facts.producer[v]]
            xs = x_inputs(op, facts)
            carried = xs[0] if op.prim.name in SHAPE_OPS and len(xs) == 1 else selected_value(op, facts)
            if carried is None:
                break
            v = carried
        return v

    return [tuple(upstream(v) for v in s.inputs) for s in segs]
