"""The engine's view of a model: its traced program, the layers found in it, and their evaluation.

This is the one module of the library that reads JAX programs (jaxprs). ``trace(model, variables,
x)`` traces ``model`` — a ``flax.linen.Module`` (called as ``model.apply(variables, x)``) or any
callable ``model(variables, x) -> logits`` (Flax NNX through ``nnx.merge``, Equinox through
``eqx.combine`` and ``jax.vmap``, Haiku's ``apply``, a plain function) — to a flat list of
primitive operations (``jit``, ``remat`` and call sub-programs inlined) and finds the *layers* in
it by what the operations compute, not by which class wrote them:

===========  ==============================================================================
kind         operations
===========  ==============================================================================
conv         ``conv_general_dilated`` with a kernel from the variables (+ its bias ``add``)
dense        ``dot_general`` with a weight from the variables (+ its bias ``add``)
batchnorm    a chain of ``sub``/``add``/``mul``/``div`` by values that do not depend on x, with
             per-channel arrays or values from the variables (inference batch-norm, input
             normalisation); scaling by constant scalars (``x / 255``) is no layer
relu         ``max(x, 0)``, also inside the ``custom_jvp`` of ``jax.nn.relu`` / ``nn.relu``;
             every spelling is differentiated as ``jax.nn.relu`` (gradient 0 at 0)
maxpool      ``reduce_window_max``
avgpool      ``reduce_window_sum`` or a ``reduce_sum`` that keeps the batch axis (global
             pooling, ``jnp.mean``), with its division; linear maps by constant non-negative
             matrices (adaptive average pooling)
add          ``add`` of two operands that both depend on x (residual sums)
other        anything else between x and the output (gelu, softmax, products of two
             x-dependent values, unknown custom ops): ordinary gradient, refused by ``strict``
===========  ==============================================================================

Shape operations (reshape, transpose, broadcast, slice, pad, concatenate, ...) are not layers: the
signal follows the values through them. Operations that do not depend on x (parameter
preparation) run as traced.

**Names.** A layer is named by the Flax module path in the program's name stack where it has one
(``features.23``, ``layer3.1.conv2``; the outermost module's own name is dropped), else by the
pytree path of its weight in ``variables`` (``conv1``, ``blocks.0.conv``, ``fc``; a leading Flax
collection such as ``params`` and trailing leaf names such as ``kernel`` dropped), and parameter-free
layers by their place: ``<scope>.<kind>_<i>``, the scope being the module that called them or, in a
program without module names, the parent of the last named layer before them (so ``layer1.0.relu_1``
is the second ReLU after ``layer1.0.conv1``), ``i`` counting that kind within the scope. A module
(name-stack or weight-path prefix) that holds several layers is a *container*: its output is the
output of its last layer.

Evaluation (:func:`run`) re-binds every operation as traced, so the forward values are
bit-identical to the plain call; a layer with a rule runs through
:func:`xattr_jax.rules.apply_rule` with its own operations as the pure forward function.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

__all__ = ["LayerInfo", "Program", "trace", "run", "layer_table", "call_model", "check_strict",
           "fold_params", "folded_batchnorms", "interpret", "layer_call", "LayerCall", "KINDS", "LINEAR"]

KINDS = ("conv", "dense", "batchnorm", "relu", "maxpool", "avgpool", "add", "other")
LINEAR = ("conv", "dense")

# inlined: their sub-program runs as the caller's operations
_INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
           "remat": "jaxpr", "checkpoint": "jaxpr", "remat2": "jaxpr"}
# the signal follows the values
_SHAPE = {"reshape", "transpose", "squeeze", "expand_dims", "broadcast_in_dim", "slice", "pad",
          "concatenate", "rev", "copy", "copy_p", "convert_element_type", "reduce_precision",
          "dynamic_slice", "gather", "optimization_barrier"}
# shape operations that keep x >= 0 (pad: only with a non-negative padding value)
_KEEPS_NONNEG_SHAPE = _SHAPE - {"pad"}
_AFFINE = {"add", "sub", "mul", "div"}
_RNG = {"random_bits", "random_seed", "random_wrap", "random_unwrap", "threefry2x32", "random_fold_in",
        "random_split", "rng_bit_generator", "rng_uniform"}
_BATCH_MIXING = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin",
                 "cumsum", "cumprod", "cummax", "cummin"}


class LayerInfo(NamedTuple):
    """One row of the layer table, in program order.

    Attributes:
      name: dotted layer name (see the module docstring).
      kind: one of :data:`KINDS`, or ``None`` for a container.
      type_name: the main primitive (``conv_general_dilated``), or ``container``.
      shape: output shape.
      dtype: output dtype.
      calls: how many times the layer runs in one forward (shared weights, a module called twice).
      inputs: ids of the layer outputs it reads (through shape operations; data flow within one
        program; the input x and values made by non-layer operations have ids of their own).
      output: id of the value it produces.
      meta: static facts, e.g. ``(("nonnegative_input", True),)``.
      source: ``file:line (function)`` of the operation in the user's code.
      channel_axis: the channel axis of the output as the program holds it (``None``: unknown,
        taken as the last); ``shape`` lists the channels last, as every read-out does.
      native_shape: the output shape as the program holds it (channels-first programs differ).
    """

    name: str
    kind: str | None
    type_name: str
    shape: tuple
    dtype: Any
    calls: int = 1
    inputs: tuple = ()
    output: int = 0
    meta: tuple = ()
    source: str = ""
    channel_axis: int | None = None
    native_shape: tuple = ()

    def to_channels_last(self, a, lead: int = 0):
        """``a`` (this layer's output, ``lead`` extra leading axes) with its channels last."""
        c = self.channel_axis
        if c is None or c == len(self.native_shape) - 1:
            return a
        return jnp.moveaxis(a, lead + c, -1)

    def from_channels_last(self, a, lead: int = 0):
        """The inverse of :meth:`to_channels_last`."""
        c = self.channel_axis
        if c is None or c == len(self.native_shape) - 1:
            return a
        return jnp.moveaxis(a, -1, lead + c)


class _Op(NamedTuple):
    prim: Any
    params: dict
    ins: tuple  # ints (variable ids) or ("lit", value)
    outs: tuple  # ints
    stack: str
    source: str
    ctx: Any  # the equation's context manager (compute placement, metadata)


class _Segment(NamedTuple):
    """A layer as the rules see it: ``ops`` evaluated in order turn ``inputs`` into ``output``."""

    kind: str
    ops: tuple  # indices into Program.ops
    inputs: tuple  # x-dependent variable ids, in operand order
    params: tuple  # ((key, variable id), ...) the x-independent operands
    output: int
    bias_op: int | None  # index (into ops) of the bias add, linear layers
    feature: tuple | None  # linear: (kernel axis of the output features, output axis) for folding


class Program(NamedTuple):
    """A traced model: flat operations, layer segments and the layer table."""

    ops: tuple
    invars: tuple
    consts: tuple  # ((variable id, value), ...)
    outvars: tuple
    in_tree: Any
    segments: tuple  # _Segment per layer, aligned with ``seg_names``
    seg_names: tuple
    seg_at: Mapping[int, int]  # op index where a segment runs (its last op) -> segment index
    in_segment: frozenset  # op indices owned by a segment
    layers: tuple  # LayerInfo table (leaves and containers)
    outputs: Mapping[str, int]  # layer name -> output variable id
    nonneg: frozenset  # segment indices whose inputs are all >= 0
    folds: Mapping[int, tuple]  # linear segment -> (batch-norm segment after it, shape ops between, its axis)
    shapes: Mapping[int, tuple]  # variable id -> (shape, dtype) as traced


# ----------------------------------------------------------------------------------------------
# tracing


def call_model(model) -> Callable:
    """``model`` as a function ``(variables, x) -> output``."""
    return _call(model)[0]


def check_strict(layers) -> None:
    """Refuse operations without a rule on the way from x to the output (``strict=True``)."""
    other = [l for l in layers if l.kind == "other"]
    if other:
        listed = "; ".join(f"{l.name} ({l.type_name} at {l.source or 'unknown source'})" for l in other)
        raise ValueError(
            f"strict mode: {len(other)} operation(s) between x and the output have no rule: {listed}. "
            "They would keep their ordinary gradient; rewrite them with conv/dense/ReLU/pool/sum "
            "operations, or pass strict=False to accept the gradient there."
        )


def _inference_only(fn):
    """``fn`` with Flax's refusals of a training-mode model told in our words."""

    def call(variables, x):
        try:
            return fn(variables, x)
        except Exception as err:
            text = str(err)
            if "batch_stats" in text or "dropout" in text.lower() or "is immutable" in text:
                raise ValueError(
                    f"the model could not run in inference mode ({type(err).__name__}: {text.splitlines()[0]}); "
                    "attribution calls it as model.apply(variables, x): build it with "
                    "use_running_average=True / deterministic=True (or train=False)"
                ) from err
            raise

    return call


def _call(model):
    apply = getattr(model, "apply", None)
    try:
        import flax.linen as nn

        if isinstance(model, nn.Module):
            return _inference_only(model.apply), True
    except ImportError:  # pragma: no cover
        pass
    if callable(model):
        return _inference_only(model), False
    raise TypeError(
        f"model must be a flax.linen.Module or a callable model(variables, x) -> logits, got "
        f"{type(model).__name__}" + (" (it has .apply: pass model.apply)" if apply else "")
    )


def _key_name(k) -> str | None:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


_LEAF_NAMES = {"value", "raw_value", "_value"}


def _path_parts(path, linen: bool) -> tuple:
    parts = [_key_name(k) for k in path[1:]]  # path[0] selects variables within (variables, x)
    parts = [p for p in parts if p not in _LEAF_NAMES]
    if linen and parts:
        parts = parts[1:]  # the collection: params, batch_stats, ...
    return tuple(parts)


def _flatten(jaxpr, consts, env_ids, ops, const_vals, counter, shapes, stack_prefix=""):
    """Append ``jaxpr``'s operations to ``ops`` with fresh integer ids; returns the output ids."""
    ids = dict(env_ids)

    def new():
        counter[0] += 1
        return counter[0]

    for v, c in zip(jaxpr.constvars, consts):
        i = new()
        ids[v] = i
        const_vals.append((i, c))

    def ref(a):
        if isinstance(a, jcore.Literal):
            return ("lit", a.val)
        return ids[a]

    for e in jaxpr.eqns:
        name = e.primitive.name
        stack = str(e.source_info.name_stack)
        stack = "/".join(s for s in (stack_prefix, stack) if s)
        sub = _INLINE.get(name)
        if sub is not None and sub in e.params:
            inner = e.params[sub]
            if hasattr(inner, "jaxpr"):
                ij, ic = inner.jaxpr, inner.consts
            else:
                ij, ic = inner, ()
            inner_env = {}
            for v, a in zip(ij.invars, e.invars):
                r = ref(a)
                if isinstance(r, tuple):  # a literal argument: bind it as a constant
                    i = new()
                    const_vals.append((i, r[1]))
                    r = i
                inner_env[v] = r
            outs = _flatten(ij, ic, inner_env, ops, const_vals, counter, shapes, stack)
            for v, o in zip(e.outvars, outs):
                if not isinstance(v, jcore.DropVar):
                    ids[v] = o
            continue
        outs = []
        for v in e.outvars:
            i = new()
            if not isinstance(v, jcore.DropVar):
                ids[v] = i
            shapes[i] = (tuple(v.aval.shape), v.aval.dtype)
            outs.append(i)
        ops.append(_Op(e.primitive, dict(e.params), tuple(ref(a) for a in e.invars), tuple(outs),
                       stack, _source(e), e.ctx.manager))
    return [ref(v) if not isinstance(ref(v), tuple) else _lit_const(ref(v), const_vals, new)
            for v in jaxpr.outvars]


def _lit_const(lit, const_vals, new):
    i = new()
    const_vals.append((i, lit[1]))
    return i


def _source(e) -> str:
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(e.source_info)
    except Exception:  # pragma: no cover - the summary is informative only
        return ""


def _is_relu_jaxpr(cj) -> bool:
    """``custom_jvp_call``'s program is ``max(x, 0)`` (``jax.nn.relu``), possibly inside a ``jit``."""
    j = cj.jaxpr if hasattr(cj, "jaxpr") else cj
    if len(j.eqns) != 1 or len(j.invars) != 1:
        return False
    e = j.eqns[0]
    if e.primitive.name in _INLINE:
        return _is_relu_jaxpr(e.params[_INLINE[e.primitive.name]])
    if e.primitive.name != "max":
        return False
    a, b = e.invars
    other = b if a is j.invars[0] else a if b is j.invars[0] else None
    return isinstance(other, jcore.Literal) and np.all(np.asarray(other.val) == 0)


class _Facts(NamedTuple):
    xdep: set
    sources: dict  # variable id -> frozenset of input leaf indices it depends on (x-independent)
    consumers: dict  # variable id -> [op indices]
    producer: dict  # variable id -> op index
    concrete: dict  # variable id -> numpy value of constants


def _facts(ops, x_ids, param_ids, const_vals) -> _Facts:
    xdep = set(x_ids)
    sources = {v: frozenset([k]) for k, v in enumerate(param_ids)}
    concrete = {}
    for i, c in const_vals:
        sources[i] = frozenset()
        if not isinstance(c, jax.core.Tracer):
            concrete[i] = np.asarray(c)
    consumers, producer = {}, {}
    for k, op in enumerate(ops):
        dep = False
        src = frozenset()
        for a in op.ins:
            if isinstance(a, tuple):
                continue
            consumers.setdefault(a, []).append(k)
            dep = dep or a in xdep
            src = src | sources.get(a, frozenset())
        for o in op.outs:
            producer[o] = k
            if dep:
                xdep.add(o)
            else:
                sources[o] = src
    return _Facts(xdep, sources, consumers, producer, concrete)


def _float(aval_dtype) -> bool:
    return jnp.issubdtype(aval_dtype, jnp.inexact)


def _is_zero(a, facts) -> bool:
    if isinstance(a, tuple):
        return bool(np.all(np.asarray(a[1]) == 0))
    v = facts.concrete.get(a)
    return v is not None and bool(np.all(v == 0))


def _nonneg_const(a, facts) -> bool:
    if isinstance(a, tuple):
        return bool(np.all(np.asarray(a[1]) >= 0))
    v = facts.concrete.get(a)
    return v is not None and bool(np.all(v >= 0))


def _only_consumer(v, facts):
    c = facts.consumers.get(v, [])
    return c[0] if len(c) == 1 else None


def _conv_feature(op):
    """(kernel axis, output axis) of a convolution's output features."""
    dn = op.params["dimension_numbers"]
    return (dn.rhs_spec[0], dn.out_spec[1])


def _dot_feature(op, shapes, x_pos):
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


def _track_axis(axis, op, in_shape):
    """Where output axis ``axis`` of the value entering shape op ``op`` ends up, or None."""
    name = op.prim.name
    p = op.params
    if name in ("convert_element_type", "copy", "copy_p", "reduce_precision", "optimization_barrier"):
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


def _segments(ops, facts, shapes, x_batch):
    """Group operations into layer segments (program order)."""
    segs, taken = [], set()

    def xins(op):
        return [a for a in op.ins if not isinstance(a, tuple) and a in facts.xdep]

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
            k = _only_consumer(cur, facts)
            if k is None or k in taken:
                return path, None
            op = ops[k]
            if op.prim.name in want and len(xins(op)) == 1:
                return path, k
            if op.prim.name in _SHAPE and len(xins(op)) == 1 and len(op.outs) == 1 and \
                    op.prim.name not in ("gather", "dynamic_slice", "pad", "concatenate", "slice"):
                path.append(k)
                cur = op.outs[0]
                continue
            return path, None

    def unit_squeeze(members, out):
        """Take in a ``squeeze`` of unit axes after a pool (a pool written over an added axis)."""
        k = _only_consumer(out, facts)
        if k is not None and k not in taken and ops[k].prim.name == "squeeze":
            return members + [k], ops[k].outs[0]
        return members, out

    def affine_ok(op, v):
        others = [a for a in op.ins if a != v]
        if op.prim.name in ("sub", "div") and op.ins[0] != v:
            return False
        return len(op.ins) == 2 and all(isinstance(a, tuple) or a not in facts.xdep for a in others)

    for k, op in enumerate(ops):
        if k in taken:
            continue
        xs = xins(op)
        if not xs:
            continue
        name = op.prim.name
        if name in _RNG:
            raise ValueError(
                "the model draws random numbers on the way from x to its output (dropout or noise in "
                "training mode); attribution needs the model in inference mode: linen "
                "deterministic=True / train=False, NNX model.eval(), Equinox eqx.nn.inference_mode(model)"
            )
        if not all(_float(shapes[o][1]) for o in op.outs):
            continue  # comparisons, indices: no signal flows
        if name in _BATCH_MIXING and op.ins[0] in facts.xdep:
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
                segs.append(_Segment("other", (k,), tuple(xs), params_of([k]), op.outs[0], None, None))
                taken.add(k)
                continue
            if const_w:
                kind = "avgpool" if _nonneg_const(w, facts) else "other"
                segs.append(_Segment(kind, (k,), tuple(xs), params_of([k]), op.outs[0], None, None))
                taken.add(k)
                continue
            if name == "conv_general_dilated":
                feat = _conv_feature(op)
            else:
                feat = _dot_feature(op, [shapes[a][0] if not isinstance(a, tuple) else np.shape(a[1])
                                         for a in op.ins], x_pos)
            members = [k]
            path, add_k = chain_shape_then(op.outs[0], {"add"})
            bias_op = None
            out = op.outs[0]
            if add_k is not None and affine_ok(ops[add_k], ops[path[-1]].outs[0] if path else op.outs[0]):
                for p in path:
                    if feat is not None:
                        ax = _track_axis(feat[1], ops[p], shapes[ops[p].ins[0]][0])
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
            segs.append(_Segment("conv" if name == "conv_general_dilated" else "dense", tuple(members),
                                 tuple(xs), params_of(members, keys), out, bias_op, feat))
            continue
        if name == "custom_jvp_call" and len(xs) == 1 and _is_relu_jaxpr(op.params["call_jaxpr"]):
            segs.append(_Segment("relu", (k,), tuple(xs), (), op.outs[0], None, None))
            taken.add(k)
            continue
        if name == "max" and len(xs) == 1 and len(op.ins) == 2 and _is_zero(
                [a for a in op.ins if a != xs[0]][0], facts):
            segs.append(_Segment("relu", (k,), tuple(xs), params_of([k]), op.outs[0], None, None))
            taken.add(k)
            continue
        if name == "reduce_window_max":
            members, out = unit_squeeze([k], op.outs[0])
            taken.update(members)
            segs.append(_Segment("maxpool", tuple(members), tuple(xs), params_of(members), out, None, None))
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
            segs.append(_Segment("avgpool", tuple(members), tuple(xs), params_of(members), out, None, None))
            continue
        if name == "add" and len(xs) == 2:
            segs.append(_Segment("add", (k,), tuple(xs), (), op.outs[0], None, None))
            taken.add(k)
            continue
        if name in _AFFINE and len(xs) == 1 and affine_ok(op, xs[0]):
            members = [k]
            cur = op.outs[0]
            while True:
                path, nk = chain_shape_then(cur, _AFFINE)
                if nk is None or not affine_ok(ops[nk], ops[path[-1]].outs[0] if path else cur):
                    break
                members += path + [nk]
                cur = ops[nk].outs[0]
            operands = [a for m in members for a in ops[m].ins if isinstance(a, tuple) or a not in facts.xdep]
            if all(_size(a, shapes) == 1 and (isinstance(a, tuple) or not facts.sources.get(a))
                   for a in operands):
                continue  # scaling by constant scalars (x / 255, gelu's 0.5·x): no layer, its gradient
            taken.update(members)
            segs.append(_Segment("batchnorm", tuple(members), tuple(xs), params_of(members), cur, None, None))
            continue
        if name in _SHAPE:
            continue
        segs.append(_Segment("other", (k,), tuple(xs), params_of([k]), op.outs[0], None, None))
        taken.add(k)
    return segs


def _size(a, shapes) -> int:
    return int(np.size(a[1])) if isinstance(a, tuple) else int(np.prod(shapes[a][0]))


def _strip_common_top(stacks):
    firsts = {s.split("/")[0] for s in stacks if s}
    if len(firsts) == 1 and all(s for s in stacks if s is not None):
        return [s.split("/", 1)[1] if "/" in s else "" for s in stacks]
    return list(stacks)


_TRANSFORM = re.compile(r"^(?:[a-z_]+)\((.*)\)$")
_SCOPE = re.compile(r"^[A-Za-z0-9_]+$")


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


def _names(segs, ops, facts, leaf_paths):
    """Layer names per segment (see the module docstring)."""
    stacks = [_clean_stack(ops[s.ops[0]].stack) for s in segs]
    has_stack = any(stacks)
    if has_stack:
        stacks = _strip_common_top(stacks)

    def param_name(seg):
        srcs = set()
        for _, v in seg.params:
            srcs |= facts.sources.get(v, frozenset())
        if seg.kind in LINEAR:
            w = dict(seg.params).get("kernel")
            srcs = set(facts.sources.get(w, frozenset())) or srcs
        paths = [leaf_paths[i] for i in sorted(srcs)]
        paths = [p for p in paths if p]
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

    names = [None] * len(segs)
    scope_of = [None] * len(segs)
    # named layers first
    for i, s in enumerate(segs):
        if stacks[i]:
            scope_of[i] = stacks[i].replace("/", ".")
        elif s.kind in LINEAR + ("batchnorm",):
            names[i] = param_name(s)
    # a scope that holds exactly one layer (and no deeper ones) is that layer's name
    count = {}
    for sc in scope_of:
        if sc is not None:
            count[sc] = count.get(sc, 0) + 1
    deeper = {sc.rsplit(".", 1)[0] for sc in count if "." in sc}
    anchor = ""
    counters: dict = {}
    for i, s in enumerate(segs):
        sc = scope_of[i]
        if sc is not None and count[sc] == 1 and sc not in deeper:
            names[i] = sc
            anchor = sc
            continue
        if names[i] is not None:
            anchor = names[i]
            continue
        if sc is None:
            sc = anchor.rsplit(".", 1)[0] if "." in anchor else ""
        key = (sc, s.kind)
        j = counters.get(key, 0)
        counters[key] = j + 1
        names[i] = f"{sc}.{s.kind}_{j}" if sc else f"{s.kind}_{j}"
    # the same name on layers of different kinds: tell them apart by kind
    kinds: dict = {}
    for n, s in zip(names, segs):
        kinds.setdefault(n, set()).add(s.kind)
    return [f"{n}.{s.kind}" if len(kinds[n]) > 1 else n for n, s in zip(names, segs)]


def trace(model, variables, x) -> Program:
    """Trace ``model`` on ``(variables, x)`` (concrete or abstract) and find its layers."""
    fn, linen = _call(model)
    closed = jax.make_jaxpr(lambda v, x: fn(v, x))(variables, x)
    flat, in_tree = jax.tree_util.tree_flatten_with_path((variables, x))
    leaf_paths = [_path_parts(p, linen) if p and _key_name(p[0]) == "0" else None for p, _ in flat]
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
    outs = _flatten(closed.jaxpr, closed.consts, env, ops, consts, counter, shapes)
    for i, c in consts:
        shapes[i] = (tuple(np.shape(c)), getattr(c, "dtype", None) or np.asarray(c).dtype)
    n_x = len(jax.tree_util.tree_leaves(x))
    x_ids = invars[len(invars) - n_x:]
    param_ids = invars[: len(invars) - n_x]
    facts = _facts(ops, x_ids, param_ids, consts)
    # everything that does not depend on x runs first (parameter preparation), so a layer's rule
    # can read any parameter of the program (a canonizer folds the batch-norm after a conv into it)
    ops = [op for op in ops if not any(o in facts.xdep for o in op.outs)] + \
          [op for op in ops if any(o in facts.xdep for o in op.outs)]
    facts = _facts(ops, x_ids, param_ids, consts)
    if not any(o in facts.xdep for o in outs):
        raise ValueError(
            "the model's output does not depend on x (the input): nothing to attribute; check that "
            "model(variables, x) uses its second argument"
        )
    xb = int(np.shape(jax.tree_util.tree_leaves(x)[0])[0]) if np.ndim(jax.tree_util.tree_leaves(x)[0]) else 1
    segs = _segments(ops, facts, shapes, xb)
    names = _names(segs, ops, facts, leaf_paths)
    # static non-negativity: ReLU outputs, kept by pools, sums and shape operations
    nonneg_vars: set = set()
    nonneg_segs = set()
    seg_by_first = {max(s.ops): i for i, s in enumerate(segs)}  # a segment runs where its last op stood
    in_seg = frozenset(k for s in segs for k in s.ops)
    for k, op in enumerate(ops):
        i = seg_by_first.get(k)
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
        xs = [a for a in op.ins if not isinstance(a, tuple) and a in facts.xdep]
        if xs and op.prim.name in _KEEPS_NONNEG_SHAPE and all(a in nonneg_vars for a in xs):
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
            if k in in_seg or op.prim.name not in _KEEPS_NONNEG_SHAPE or op.prim.name in (
                    "broadcast_in_dim", "slice", "dynamic_slice", "gather", "concatenate") or len(op.outs) != 1:
                break
            axis = _track_axis(axis, op, shapes[v][0])
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
            xs = [a for a in op.ins if not isinstance(a, tuple) and a in facts.xdep]
            if op.prim.name not in _SHAPE or len(xs) != 1:
                break
            v = xs[0]
        return v

    ins = [tuple(upstream(v) for v in s.inputs) for s in segs]
    table, outputs = _table(segs, names, ops, shapes, nonneg_segs, ins, _channel_axes(ops, facts, shapes, x_ids))
    return Program(tuple(ops), tuple(invars), tuple(consts), tuple(outs), in_tree, tuple(segs),
                   tuple(names), seg_by_first, in_seg, table, outputs, frozenset(nonneg_segs), folds, shapes)


def _bind(op, vals):
    bind_params = op.prim.get_bind_params(op.params)
    if isinstance(bind_params, tuple):  # older JAX: (subfuns, params)
        subfuns, bind_params = bind_params
        vals = [*subfuns, *vals]
    with op.ctx:
        out = op.prim.bind(*vals, **bind_params)
    return out if op.prim.multiple_results else [out]


def _channel_axes(ops, facts, shapes, x_ids):
    """The channel axis of every x-dependent value (``None`` where it is lost), in program order.

    The input's channels are last (NHWC); a convolution's output features are its ``out_spec``
    feature axis, a dense layer's the weight's free axis; element-wise operations and windowed
    reductions keep their input's; shape operations and reductions move it.
    """
    axis = {v: len(shapes[v][0]) - 1 for v in x_ids}
    for op in ops:
        xs = [a for a in op.ins if not isinstance(a, tuple) and a in facts.xdep]
        if not xs:
            continue
        name = op.prim.name
        a = axis.get(xs[0])
        out_rank = len(shapes[op.outs[0]][0])
        if name == "conv_general_dilated":
            a = op.params["dimension_numbers"].out_spec[1]
        elif name == "dot_general" and len(xs) == 1:
            f = _dot_feature(op, [shapes[v][0] if not isinstance(v, tuple) else np.shape(v[1]) for v in op.ins],
                             op.ins.index(xs[0]))
            a = None if f is None else f[1]
        elif name in _SHAPE:
            a = None if a is None else _track_axis(a, op, shapes[xs[0]][0])
        elif name in ("reduce_sum", "reduce_max", "reduce_min"):
            red = tuple(op.params["axes"])
            a = None if a is None or a in red else a - sum(r < a for r in red)
        elif out_rank != len(shapes[xs[0]][0]):
            a = None
        for o in op.outs:
            axis[o] = a
    return axis


def _table(segs, names, ops, shapes, nonneg_segs, ins, channel):
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
        outputs[prefix] = last.output
        rows.append(last._replace(name=prefix, kind=None, type_name="container", calls=1, inputs=(), meta=(),
                                  source=""))
    order = []
    for pos, l in enumerate(leaves):
        order.append(((pos, 0, 0), l))
    for r in rows:
        order.append(((first_of[r.name], -1, r.name.count(".")), r))
    order.sort(key=lambda t: t[0])
    return tuple(r for _, r in order), outputs


def layer_table(model, variables, x) -> tuple:
    """The layer table of ``model`` on inputs shaped like ``x`` (``xa.layers``)."""
    return trace(model, variables, x).layers


# ----------------------------------------------------------------------------------------------
# evaluation


def _rebatch(op, vals, traced_in):
    """Shape parameters of ``reshape``/``broadcast_in_dim`` for a different batch size (rules that
    run a layer on one sample at a time)."""
    name = op.prim.name
    if name not in ("reshape", "broadcast_in_dim"):
        return op
    shape = np.shape(vals[0])
    if not traced_in or not shape or shape[0] == traced_in[0]:
        return op
    key = "new_sizes" if name == "reshape" else "shape"
    sizes = tuple(op.params[key])
    if sizes and sizes[0] == traced_in[0]:
        p = dict(op.params)
        p[key] = (shape[0],) + sizes[1:]
        return op._replace(params=p)
    return op


def segment_fn(prog: Program, i: int, shapes=None) -> Callable:
    """The pure forward ``fn(params, *xs)`` of segment ``i``: its own operations, in order.

    Linear layers also take a ``"bias"`` they do not have (a canonizer's folded bias): it is
    added to the output.
    """
    seg = prog.segments[i]
    keyed = dict((v, k) for k, v in seg.params)
    main = prog.ops[seg.ops[0]]

    def fn(params, *xs):
        env = dict(zip(seg.inputs, xs))
        for j, k in enumerate(seg.ops):
            op = prog.ops[k]
            if seg.kind == "relu" and op.prim.name == "max":  # differentiated as jax.nn.relu (0 at 0)
                env[op.outs[0]] = jax.nn.relu(env[seg.inputs[0]])
                continue
            if j == seg.bias_op:
                cur = [a for a in op.ins if a in env and not isinstance(a, tuple)
                       and keyed.get(a) is None]
                y = env[cur[0]]
                if "bias" in params:
                    y = y + jnp.broadcast_to(params["bias"], y.shape).astype(y.dtype)
                env[op.outs[0]] = y
                continue
            vals = []
            for a in op.ins:
                if isinstance(a, tuple):
                    vals.append(a[1])
                elif a in env:
                    vals.append(env[a])
                else:
                    vals.append(params[keyed[a]])
            traced_in = _in_shape(prog, op)
            outs = _bind(_rebatch(op, vals, traced_in), vals)
            env.update(zip(op.outs, outs))
        y = env[seg.output]
        if seg.bias_op is None and seg.kind in LINEAR and "bias" in params:
            y = y + jnp.broadcast_to(params["bias"], y.shape).astype(y.dtype)
        return y

    if main.prim.name == "conv_general_dilated":
        spec = main.params["dimension_numbers"].rhs_spec
        kshape = prog.shapes[main.ins[1]][0] if not isinstance(main.ins[1], tuple) else np.shape(main.ins[1][1])
        fn.kernel_window = tuple(kshape[d] for d in spec[2:])  # the spatial window, any layout
    elif seg.kind == "dense":
        fn.kernel_window = ()
    return fn


def _in_shape(prog, op):
    if not op.ins or isinstance(op.ins[0], tuple):
        return None
    return prog.shapes[op.ins[0]][0]


def fold_params(prog: Program, lin: int, lin_params, bn_params):
    """``{kernel, bias}`` of linear segment ``lin`` with the batch-norm after it folded in.

    ``BN(z) = a ⊙ z + b`` per output feature (read off the chain at 0 and 1), so
    ``W' = W · a`` along the kernel's output-feature axis and ``b' = a ⊙ b_W + b``. Shape
    operations between the two (a vmapped channels-first conv) are undone on ``b'``.
    """
    bn, path, axis = prog.folds[lin]
    seg = prog.segments[lin]
    z_shape, dtype = prog.shapes[prog.segments[bn].inputs[0]]
    fn_bn = segment_fn(prog, bn)
    b = fn_bn(bn_params, jnp.zeros(z_shape, dtype))
    a = fn_bn(bn_params, jnp.ones(z_shape, dtype)) - b
    scale = a[tuple(slice(None) if d == axis else 0 for d in range(len(z_shape)))]
    kernel = lin_params["kernel"]
    shape = [1] * kernel.ndim
    shape[seg.feature[0]] = -1
    kernel = kernel * scale.reshape(shape).astype(kernel.dtype)
    if "bias" in lin_params:  # then the segment ends at its bias add, right before the batch-norm
        b = a * jnp.broadcast_to(lin_params["bias"], z_shape) + b
    if path:
        y_shape = prog.shapes[seg.output][0]

        def chain(y):
            for k in path:
                op = prog.ops[k]
                (y,) = _bind(op, [y])
            return y

        (b,) = jax.linear_transpose(chain, jax.ShapeDtypeStruct(y_shape, dtype))(b)
    return {"kernel": kernel, "bias": b}


def folded_batchnorms(prog: Program) -> tuple:
    """Names of the batch-norm layers that ``fold=True`` folds into the conv/dense before them."""
    return tuple(prog.seg_names[f[0]] for f in prog.folds.values())


class LayerCall(NamedTuple):
    """One layer as its rule sees it: ``fn(params, *inputs)`` is its exact forward."""

    fn: Callable
    params: dict
    inputs: tuple
    rule_params: dict  # the parameters a rule is given (``fold=True``: batch-norm folded in)


def layer_call(prog: Program, variables, x, name: str, *, fold: bool = False) -> LayerCall:
    """The first call of layer ``name`` in a plain evaluation of ``prog`` (for tests and tools)."""
    record: dict = {}
    run(prog, variables, x, fold=fold, _record=(name, record))
    if name not in record:
        raise ValueError(f"{name!r} is not a leaf layer; valid: {list(prog.seg_names)}")
    return record[name]


def run(prog: Program, variables, x, *, rules=None, probes=None, capture=(), fold=False, _record=None):
    """Evaluate ``prog`` on ``(variables, x)`` with rules attached, probes added, outputs captured.

    Args:
      prog: from :func:`trace` (the same structure and shapes as these arguments).
      rules: ``{layer name: Rule}``; other layers keep their ordinary gradient.
      probes: ``{layer name: zeros}`` added to that layer's output (differentiate w.r.t. them to
        read the signal arriving there).
      capture: layer names whose outputs are returned.
      fold: hand each linear layer's rule its parameters with the batch-norm after it folded in
        (the batch-norm keeps whatever rule it is given; the forward is unchanged).

    Returns:
      ``(output, {layer name: output})``.
    """
    from .rules.core import apply_rule

    rules = rules or {}
    probes = probes or {}
    leaves, tree = jax.tree_util.tree_flatten((variables, x))
    if len(leaves) != len(prog.invars):
        raise ValueError(f"variables/x have {len(leaves)} leaves; the traced program has {len(prog.invars)}")
    names = set(prog.outputs)
    unknown = (set(probes) | set(capture) | set(rules)) - names
    if unknown:
        raise ValueError(f"unknown layer name(s) {sorted(unknown)}; valid: {sorted(names)}")
    for n in set(probes) | set(capture):
        if _calls(prog, n) > 1:
            raise ValueError(
                f"layer {n!r} is called more than once per forward pass, so its output is ambiguous; "
                "read the signal at a layer that is called once"
            )
    by_var: dict = {}
    for n in set(probes) | set(capture):
        by_var.setdefault(prog.outputs[n], []).append(n)
    env = dict(zip(prog.invars, leaves))
    env.update(prog.consts)
    captured = {}

    def read(a):
        return a[1] if isinstance(a, tuple) else env[a]

    def write(v, val):
        for n in by_var.get(v, ()):
            if n in probes:
                p = probes[n]
                if p.shape != val.shape:
                    raise ValueError(f"probe for {n!r} has shape {p.shape}, output {val.shape}")
                val = val + p
        for n in by_var.get(v, ()):
            if n in capture:
                captured[n] = val
        env[v] = val

    fold_src = {bn: lin for lin, bn in prog.folds.items()} if fold else {}
    for k, op in enumerate(prog.ops):
        i = prog.seg_at.get(k)
        if i is not None:
            seg = prog.segments[i]
            name = prog.seg_names[i]
            xs = [env[v] for v in seg.inputs]
            params = {key: read(v) for key, v in seg.params}
            fn = segment_fn(prog, i)
            rule = rules.get(name)
            rp = None
            if fold and i in prog.folds and (rule is not None or _record is not None):
                bn_params = {key: read(v) for key, v in prog.segments[prog.folds[i][0]].params}
                rp = fold_params(prog, i, params, bn_params)
            if _record is not None and _record[0] == name and name not in _record[1]:
                _record[1][name] = LayerCall(fn, params, tuple(xs), params if rp is None else rp)
            if rule is None:
                y = fn(params, *xs)
            else:
                if seg.kind not in rule.kinds:
                    raise ValueError(
                        f"rule {rule.name} applies to {sorted(rule.kinds)} layers, but layer {name!r} is a "
                        f"{seg.kind} layer"
                    )
                if i in prog.nonneg and rule.nonnegative is not None:
                    rule = rule._replace(backward=rule.nonnegative)
                y = apply_rule(rule, fn, params, *xs, rule_params=rp)
            write(seg.output, y)
            continue
        if k in prog.in_segment:
            continue
        outs = _bind(op, [read(a) for a in op.ins])
        for o, val in zip(op.outs, outs):
            write(o, val)
    out = [env[v] for v in prog.outvars]
    out = out[0] if len(out) == 1 else out
    return out, captured


def _calls(prog, name):
    for l in prog.layers:
        if l.name == name:
            return l.calls
    return 1


def interpret(model, variables, x, *, rules=None, probes=None, capture=(), fold=False):
    """Trace ``model`` and :func:`run` it once: ``(output, {layer name: output})``."""
    return run(trace(model, variables, x), variables, x, rules=rules, probes=probes, capture=capture, fold=fold)
