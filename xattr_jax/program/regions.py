"""Layers of many operations: element-wise activations (SiLU, GELU, leaky ReLU, hardswish, Mish,
...), normalisations over each sample (LayerNorm, RMSNorm, GroupNorm, instance norm) and softmaxes,
each found as a single-entry, single-exit region of the program around an *anchor* operation.

The region of an anchor is the largest one that (a) is entered by one x-dependent value which
dominates its exit (every path from x to the exit passes through it), (b) lets no intermediate
value out, and (c) holds only the operations its kind allows. Knowledge lives in the tables below:
which primitives anchor which kind, which a region of a kind may hold.
"""

from __future__ import annotations

from .ir import size_of, x_inputs

# element-wise operations (bool comparisons included: they build masks inside activations)
ELEMENTWISE = frozenset({
    "neg", "add", "sub", "mul", "div", "max", "min", "abs", "sign", "exp", "exp2", "log", "log1p", "expm1",
    "logistic", "tanh", "erf", "erfc", "integer_pow", "pow", "square", "sqrt", "rsqrt", "select_n", "ge", "gt",
    "le", "lt", "eq", "ne", "and", "or", "not", "convert_element_type", "copy", "copy_p", "stop_gradient",
    "reduce_precision", "custom_jvp_call", "custom_vjp_call", "clamp", "sin", "cos", "pvary"})
# statistics over each sample and the broadcasts that bring them back
STATISTICS = frozenset({"reduce_sum", "reduce_max", "broadcast_in_dim", "reshape", "squeeze", "expand_dims"})

_SCALING = frozenset({"mul", "div", "add", "sub", "broadcast_in_dim", "reshape", "convert_element_type", "copy"})

#: kind -> (anchor primitives, primitives its region may hold, primitives the region must hold,
#: primitives allowed after the anchor)
REGION_KINDS = {
    "norm": (frozenset({"rsqrt", "sqrt"}), ELEMENTWISE | STATISTICS, frozenset({"reduce_sum"}), _SCALING),
    "softmax": (frozenset({"exp"}), ELEMENTWISE | STATISTICS, frozenset({"reduce_sum", "div"}),
                _SCALING | {"reduce_sum"}),
    "activation": (frozenset({"logistic", "tanh", "erf", "erfc", "exp", "log", "log1p", "expm1", "select_n",
                              "custom_jvp_call", "custom_vjp_call", "max", "sin", "cos"}),
                   ELEMENTWISE, frozenset(), ELEMENTWISE),
}
# kind -> test of the operation that ends a region (a softmax ends at its division by the sum)
_EXITS = {"softmax": lambda op, facts: op.prim.name == "div" and len(x_inputs(op, facts)) == 2}
# what a region may take in before its entry: element-wise scaling, softmax's max shift (no pooling)
_UPSTREAM = ELEMENTWISE | {"reduce_max", "broadcast_in_dim"}
_SUMS = frozenset({"add", "sub"})
_PRODUCTS = frozenset({"mul", "div"})
_REDUCTIONS = frozenset({"reduce_sum", "reduce_max"})  # never over the batch axis
_CUSTOM_CALLS = frozenset({"custom_jvp_call", "custom_vjp_call"})  # element-wise only


class Flow:
    """Dominator and post-dominator trees of the x-dependent values of a flat program."""

    ROOT, SINK = -1, -2

    def __init__(self, ops, facts, x_ids, outvars):
        self.ops, self.facts = ops, facts
        self.outvars = set(outvars)
        self.dom, self.ddepth = {}, {self.ROOT: 0}
        for v in x_ids:
            self.dom[v], self.ddepth[v] = self.ROOT, 1
        for op in ops:
            xs = x_inputs(op, facts)
            if not xs:
                continue
            d = xs[0]
            for a in xs[1:]:
                d = self._lca(d, a, self.dom, self.ddepth)
            for o in op.outs:
                self.dom[o], self.ddepth[o] = d, self.ddepth[d] + 1
        self.pdom, self.pdepth = {}, {self.SINK: 0}
        for op in reversed(ops):
            if not x_inputs(op, facts):
                continue
            for o in op.outs:
                self._post(o)
        for v in x_ids:
            self._post(v)

    def _post(self, v):
        nxt = [self.ops[c].outs[0] for c in self.facts.consumers.get(v, [])]
        if v in self.outvars or not nxt:
            nxt.append(self.SINK)
        p = nxt[0]
        for a in nxt[1:]:
            p = self._lca(p, a, self.pdom, self.pdepth)
        self.pdom[v], self.pdepth[v] = p, self.pdepth[p] + 1

    @staticmethod
    def _lca(a, b, up, depth):
        while a != b:
            if depth[a] >= depth[b]:
                a = up[a]
            else:
                b = up[b]
        return a

    def common_dominator(self, a, b):
        return self._lca(a, b, self.dom, self.ddepth)

    def region(self, entry, exit_):
        """Op indices between ``entry`` (excluded) and ``exit_`` (its producer included), or None."""
        prod = self.facts.producer
        if exit_ not in prod:
            return None
        todo, seen = [prod[exit_]], set()
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            for a in x_inputs(self.ops[k], self.facts):
                if a == entry:
                    continue
                if a not in prod:
                    return None
                todo.append(prod[a])
        return seen

    def closed(self, region, exit_):
        """No value made inside ``region`` but ``exit_`` is read outside it."""
        for k in region:
            for o in self.ops[k].outs:
                if o == exit_:
                    continue
                if o in self.outvars or any(c not in region for c in self.facts.consumers.get(o, [])):
                    return False
        return True


def _scalar_consts(op, facts, shapes):
    """Every x-independent operand of ``op`` is a scalar (``x / 255``, ``0.5 · x``)."""
    return all(facts.depends_on_x(a) or size_of(a, shapes) == 1 for a in op.ins)


def _fits(kind, region, entry, ops, facts, shapes, taken):
    """``region`` may be a layer of ``kind``: allowed primitives, required ones, no batch mixing."""
    _, allowed, required, _ = REGION_KINDS[kind]
    names = set()
    for k in region:
        op = ops[k]
        name = op.prim.name
        if k in taken or name not in allowed:
            return False
        if name in _REDUCTIONS and 0 in tuple(op.params.get("axes", ())):
            return False
        if name in _CUSTOM_CALLS and (
                len(x_inputs(op, facts)) != 1 or shapes[op.outs[0]][0] != shapes[x_inputs(op, facts)[0]][0]):
            return False
        if kind == "activation" and any(shapes[o][0] != shapes[entry][0] for o in op.outs):
            return False
        names.add(name)
    return required <= names


def has_product(region, ops, facts):
    return any(ops[k].prim.name in _PRODUCTS and len(x_inputs(ops[k], facts)) == 2 for k in region)


def _downstream(v, region, ops, facts):
    """The ops of ``region`` that read ``v``, directly or through other ops of ``region`` (not a
    parallel branch: a LayerNorm that computes its centring mean apart from its variance's)."""
    todo, seen = [v], set()
    while todo:
        for c in facts.consumers.get(todo.pop(), []):
            if c in region and c not in seen:
                seen.add(c)
                todo.extend(ops[c].outs)
    return seen


def grow(kind, k, ops, facts, shapes, flow, taken):
    """The largest region of ``kind`` around anchor op ``k``: walk the post-dominators of its output
    (never past a sum of two x-dependent values), then move the entry up while it still fits."""
    allowed, after = REGION_KINDS[kind][1], REGION_KINDS[kind][3]
    anchor = ops[k].outs[0]
    best = None
    cur = anchor
    while cur in facts.producer:
        op = ops[facts.producer[cur]]
        if cur != anchor and (op.prim.name not in allowed or (
                op.prim.name in _SUMS and len(x_inputs(op, facts)) == 2)):
            break
        entry = flow.common_dominator(flow.dom[anchor], flow.dom[cur])
        region = flow.region(entry, cur)
        if region is not None and flow.closed(region, cur) and _fits(kind, region, entry, ops, facts, shapes, taken):
            ok_exit = _EXITS.get(kind, lambda op, facts: True)(op, facts)
            if any(ops[j].prim.name not in after for j in _downstream(anchor, region, ops, facts)):
                break
            if ok_exit:
                best = (region, entry, cur)
        cur = flow.pdom.get(cur, flow.SINK)
    if best is None:
        return None
    region, entry, exit_ = best
    while entry in facts.producer:  # through the operations before the anchor (softmax's max shift)
        up = flow.dom.get(entry)
        if up is None or up == flow.ROOT:
            break
        wider = flow.region(up, exit_)
        if wider is None or not flow.closed(wider, exit_) or not _fits(kind, wider, up, ops, facts, shapes, taken) \
                or not all(_scalar_consts(ops[j], facts, shapes) and ops[j].prim.name in _UPSTREAM
                           and ops[j].stack == ops[k].stack for j in wider - region):
            break
        region, entry = wider, up
    return region, entry, exit_
