"""Layer names (module paths, weight paths, places) and the layer table with its containers."""

from __future__ import annotations

import re

from .ir import LINEAR, LayerInfo


def _strip_common_top(stacks):
    firsts = {s.split("/")[0] for s in stacks if s}
    if len(firsts) == 1 and all(s for s in stacks if s is not None):
        return [s.split("/", 1)[1] if "/" in s else "" for s in stacks]
    return list(stacks)


_TRANSFORM = re.compile(r"^(?:[a-z_]+)\((.*)\)$")

_SCOPE = re.compile(r"^[A-Za-z0-9_-]+$")  # torch module names may hold "-" (RegNet's block1-0)


def _clean_stack(stack: str) -> str:
    parts = []
    for p in stack.split("/"):
        m = _TRANSFORM.match(p)
        while m:  # transformation wrappers: vmap(name), jvp(name), transpose(name)
            p = m.group(1)
            m = _TRANSFORM.match(p)
        if _SCOPE.match(p):  # module names; not class paths (eqx.nn.Conv) or einsum specs
            parts.append(p)
    return "/".join(parts)


def module_outputs(segs, ops, facts, outvars) -> dict:
    """``{module path: value}``: the value each module returns, read off the name stack as the last
    value made inside the module that is read outside it (an inception block's concatenation)."""
    stacks = [_clean_stack(op.stack) for op in ops]
    tops = {_clean_stack(ops[s.ops[0]].stack).split("/")[0] for s in segs}
    if len(tops) == 1 and all(_clean_stack(ops[s.ops[0]].stack) for s in segs):
        top = tops.pop() + "/"
        stacks = [st[len(top):] if st.startswith(top) else "" for st in stacks]
    internal = {o for s in segs for k in s.ops for o in ops[k].outs if o != s.output}
    outvars = set(outvars)
    out: dict = {}
    for k, op in enumerate(ops):
        if not stacks[k] or not any(o in facts.xdep for o in op.outs):
            continue
        parts = stacks[k].split("/")
        for o in op.outs:
            if o in internal:
                continue
            readers = [stacks[c].split("/") for c in facts.consumers.get(o, [])]
            for j in range(1, len(parts) + 1):
                if o in outvars or any(r[:j] != parts[:j] for r in readers):
                    out[".".join(parts[:j])] = o
    return out


def _param_name(seg, facts, leaf_paths):
    """The common pytree path of a layer's weights (``conv1``, ``blocks.0.conv``), or None."""
    srcs = set()
    for _, v in seg.params:
        srcs |= facts.sources.get(v, frozenset())
    if seg.kind in LINEAR:
        w = dict(seg.params).get("kernel")
        srcs = set(facts.sources.get(w, frozenset())) or srcs
    paths = [p for p in (leaf_paths[i] for i in sorted(srcs)) if p]
    if not paths:
        return None
    common = list(paths[0])
    for p in paths[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    if len(paths) == 1 or tuple(common) in {tuple(p) for p in paths}:
        common = common[:-1]
    return ".".join(common) if common else None


def layer_names(segs, ops, facts, leaf_paths):
    """Layer names per segment (see the module docstring)."""
    stacks = [_clean_stack(ops[s.ops[0]].stack) for s in segs]
    has_stack = any(stacks)
    if has_stack:
        stacks = _strip_common_top(stacks)

    names = [None] * len(segs)
    scope_of = [None] * len(segs)
    # named layers first
    for i, s in enumerate(segs):
        own = _param_name(s, facts, leaf_paths) if s.kind in LINEAR + ("batchnorm",) else None
        if stacks[i] and s.kind in LINEAR and own and own.startswith(stacks[i].replace("/", ".") + "."):
            names[i] = own  # a submodule's weights used by its parent (Swin's F.linear on attn.qkv)
        elif stacks[i]:
            scope_of[i] = stacks[i].replace("/", ".")
        elif own is not None:
            names[i] = own
        elif has_stack:  # called by the outermost module itself
            scope_of[i] = ""
    # a scope that holds exactly one layer (and no deeper ones) is that layer's name
    count = {}
    for sc in scope_of:
        if sc:
            count[sc] = count.get(sc, 0) + 1
    deeper = {sc.rsplit(".", 1)[0] for sc in count if "." in sc}
    funcs: dict = {}  # scope of weight-named layers -> the functions (``Block.__call__``) they run in
    for i, s in enumerate(segs):
        if scope_of[i] is None and names[i] is not None:
            funcs.setdefault(_parent(names[i]), set()).add(_function(ops[s.ops[0]].source))
    known = set().union(*funcs.values()) if funcs else set()
    anchor = ""
    counters: dict = {}
    for i, s in enumerate(segs):
        sc = scope_of[i]
        if sc and count[sc] == 1 and sc not in deeper:
            names[i] = sc
            anchor = sc
            continue
        if names[i] is not None:
            anchor = names[i]
            continue
        if sc is None:  # no name stack (NNX, Equinox): the module of the layer before it, or the
            sc = _parent(anchor)  # enclosing module whose __call__ runs it (a parent's pool after a block)
            f = _function(ops[s.ops[0]].source)
            while sc and _module_code(f) and f in known and f not in funcs.get(sc, ()) \
                    and all(_module_code(g) for g in funcs.get(sc, ())):
                sc = _parent(sc)
        key = (sc, s.kind)
        j = counters.get(key, 0)
        counters[key] = j + 1
        names[i] = f"{sc}.{s.kind}_{j}" if sc else f"{s.kind}_{j}"
    # the same name on layers of different kinds: tell them apart by kind
    kinds: dict = {}
    for n, s in zip(names, segs):
        kinds.setdefault(n, set()).add(s.kind)
    return [f"{n}.{s.kind}" if len(kinds[n]) > 1 else n for n, s in zip(names, segs)]


def concat_outputs(segs, names, ops, facts) -> dict:
    """``{container: value}`` without a name stack (NNX, Equinox): a container whose last layer's
    output is concatenated (an inception or dense block), the concatenation read by the next layer
    outside it, returns that concatenation."""
    out = {}
    prefixes = {".".join(n.split(".")[:j]) for n in names for j in range(1, n.count(".") + 1)}
    for c in sorted(prefixes):
        inside = {i for i, n in enumerate(names) if n.startswith(c + ".")}
        if len(inside) < 2:
            continue
        last = max(inside, key=lambda i: max(segs[i].ops))
        after = [i for i in range(len(segs)) if i not in inside and min(segs[i].ops) > max(segs[last].ops)]
        if not after:
            continue
        for v in segs[min(after, key=lambda i: min(segs[i].ops))].inputs:
            p = facts.producer.get(v)
            if p is not None and ops[p].prim.name == "concatenate" and segs[last].output in ops[p].ins:
                out[c] = v
    return out


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _module_code(f) -> bool:
    """A module's own code (``Block.__call__``), not a helper function (``_conv``) a plain-function
    model calls with a layer's weights."""
    return bool(f) and f.endswith(".__call__")


def _function(source: str):
    """``Block.__call__`` of a source string ``file:line (Block.__call__)``."""
    m = re.search(r"\(([^()]*)\)\s*$", source or "")
    return m.group(1) if m else None


def layer_rows(segs, names, ops, shapes, nonneg_segs, ins, channel, modules=None):
    calls: dict = {}
    for n in names:
        calls[n] = calls.get(n, 0) + 1
    leaves, seen = [], set()
    outputs = {}
    for i, (s, n) in enumerate(zip(segs, names)):
        if n in seen:
            continue
        seen.add(n)
        shape, dtype = shapes[s.output]
        main = ops[s.ops[0]]
        meta = (("nonnegative_input", i in nonneg_segs),)
        c = channel.get(s.output)
        view = shape if c is None else tuple(d for j, d in enumerate(shape) if j != c) + (shape[c],)
        leaves.append(LayerInfo(n, s.kind, main.prim.name, view, dtype, calls[n], ins[i], s.output,
                                meta, main.source, c, shape))
        outputs[n] = s.output
    # containers: every proper dotted prefix of two or more layers' names
    under: dict = {}
    for pos, l in enumerate(leaves):
        parts = l.name.split(".")
        for j in range(1, len(parts)):
            under.setdefault(".".join(parts[:j]), []).append(pos)
    rows = []
    first_of = {}
    for prefix, members in under.items():
        if prefix in outputs or len(members) < 2:
            continue
        last = leaves[max(members)]
        first_of[prefix] = min(members)
        o = (modules or {}).get(prefix, last.output)
        if o != last.output:  # the module returns another value than its last layer's (a concatenation)
            shape, c = shapes[o][0], channel.get(o)
            view = shape if c is None else tuple(d for j, d in enumerate(shape) if j != c) + (shape[c],)
            last = last._replace(shape=view, dtype=shapes[o][1], channel_axis=c, native_shape=shape)
        outputs[prefix] = o
        rows.append(last._replace(name=prefix, kind=None, type_name="container", calls=1, inputs=(), meta=(),
                                  source="", output=o))
    order = []
    for pos, l in enumerate(leaves):
        order.append(((pos, 0, 0), l))
    for r in rows:
        order.append(((first_of[r.name], -1, r.name.count(".")), r))
    order.sort(key=lambda t: t[0])
    return tuple(r for _, r in order), outputs
