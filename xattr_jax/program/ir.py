"""The flat program the engine works on: operations with integer value ids, the facts
of its data flow, layer segments, and the layer table's row type."""

from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

KINDS = ("conv", "dense", "batchnorm", "relu", "activation", "norm", "maxpool", "avgpool", "add", "gate", "product",
         "softmax", "other")

LINEAR = ("conv", "dense")
# inlined: their sub-program runs as the caller's operations
INLINE_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
                "remat": "jaxpr", "checkpoint": "jaxpr", "remat2": "jaxpr"}
# the signal follows the values
SHAPE_OPS = {"reshape", "transpose", "squeeze", "expand_dims", "broadcast_in_dim", "slice", "pad",
             "concatenate", "rev", "copy", "copy_p", "convert_element_type", "reduce_precision",
             "dynamic_slice", "gather", "optimization_barrier", "split"}
# shape operations that keep x >= 0 (pad: only with a non-negative padding value)
KEEPS_NONNEG = SHAPE_OPS - {"pad"}
# shape operations a batch-norm folds back through onto the linear layer before it (each feature kept)
FOLD_THROUGH = KEEPS_NONNEG - {"broadcast_in_dim", "slice", "dynamic_slice", "gather", "concatenate"}
# layer kinds whose output is >= 0 ("makes"), or >= 0 when all their inputs are ("keeps")
NONNEG_KINDS = {"relu": "makes", "maxpool": "keeps", "avgpool": "keeps", "add": "keeps"}
# operations that return their operands' values (shard_map marks replicated values as varying)
VALUE_IDENTITY = {"pvary", "pbroadcast", "pcast"}
AFFINE_OPS = {"add", "sub", "mul", "div"}


def _broadcast(val, p):
    shape = [1] * len(p["shape"])
    for i, d in enumerate(p["broadcast_dimensions"]):
        shape[d] = val.shape[i]
    return np.broadcast_to(val.reshape(shape), p["shape"])


# x-independent operations whose constant results the facts carry (to recognise ``max(x, 0)``
# written as ``jnp.clip(x, 0)``, whose 0 is an int converted inside)
CONST_FOLD = {
    "convert_element_type": lambda v, p: v.astype(p["new_dtype"]),
    "broadcast_in_dim": _broadcast,
    "reshape": lambda v, p: v.reshape(p["new_sizes"]),
}
RNG_OPS = {"random_bits", "random_seed", "random_wrap", "random_unwrap", "threefry2x32", "random_fold_in",
           "random_split", "rng_bit_generator", "rng_uniform"}
BATCH_MIXING_OPS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin",
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


class Lit(NamedTuple):
    """A literal operand (a Python or NumPy constant written into the program)."""

    val: Any


class Op(NamedTuple):
    prim: Any
    params: dict
    ins: tuple  # variable ids (int) or Lit
    outs: tuple  # ints
    stack: str
    source: str
    ctx: Any  # the equation's context manager (compute placement, metadata)


class Segment(NamedTuple):
    """A layer as the rules see it: ``ops`` evaluated in order turn ``inputs`` into ``output``."""

    kind: str
    ops: tuple  # indices into Program.ops
    inputs: tuple  # x-dependent variable ids, in operand order
    params: tuple  # ((key, variable id), ...) the x-independent operands
    output: int
    bias_op: int | None  # index (into ops) of the bias add, linear layers
    feature: tuple | None  # linear: (kernel axis of the output features, output axis) for folding
    name: str = ""  # the layer's name
    nonneg: bool = False  # every input is >= 0 (statically known)
    fold: tuple | None = None  # linear: (the batch-norm segment after it, shape ops between, its axis)


class Program(NamedTuple):
    """A traced model: flat operations, its layers as segments of them, and the layer table."""

    ops: tuple
    invars: tuple
    consts: tuple  # ((variable id, value), ...)
    outvars: tuple
    shapes: Mapping[int, tuple]  # variable id -> (shape, dtype) as traced
    segments: tuple  # Segment per leaf layer, in program order
    owner: Mapping[int, int]  # op index -> the segment that holds it (it runs at its last op)
    layers: tuple  # LayerInfo table (leaves and containers)
    outputs: Mapping[str, int]  # layer name -> output variable id


# ----------------------------------------------------------------------------------------------
# tracing

def key_name(k) -> str | None:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


_LEAF_NAMES = {"value", "raw_value", "_value"}


def path_parts(path, linen: bool) -> tuple:
    parts = [key_name(k) for k in path[1:]]  # path[0] selects variables within (variables, x)
    parts = [p for p in parts if p not in _LEAF_NAMES]
    if linen and parts:
        parts = parts[1:]  # the collection: params, batch_stats, ...
    return tuple(parts)


def flatten_jaxpr(jaxpr, consts, env_ids, ops, const_vals, counter, shapes, stack_prefix="", call_source=""):
    """Append ``jaxpr``'s operations to ``ops`` with fresh integer ids; returns the output ids.
    Operations of an inlined call without a user frame of their own get the call's source line."""
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
            return Lit(a.val)
        return ids[a]

    for e in jaxpr.eqns:
        name = e.primitive.name
        stack = str(e.source_info.name_stack)
        stack = "/".join(s for s in (stack_prefix, stack) if s)
        sub = INLINE_CALLS.get(name)
        if sub is not None and sub in e.params:
            inner = e.params[sub]
            if hasattr(inner, "jaxpr"):
                ij, ic = inner.jaxpr, inner.consts
            else:
                ij, ic = inner, ()
            inner_env = {}
            for v, a in zip(ij.invars, e.invars):
                r = ref(a)
                if isinstance(r, Lit):  # a literal argument: bind it as a constant
                    i = new()
                    const_vals.append((i, r.val))
                    r = i
                inner_env[v] = r
            outs = flatten_jaxpr(ij, ic, inner_env, ops, const_vals, counter, shapes, stack,
                                 source_line(e) or call_source)
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
        ops.append(Op(e.primitive, dict(e.params), tuple(ref(a) for a in e.invars), tuple(outs),
                       stack, source_line(e) or call_source, e.ctx.manager))
    return [ref(v) if not isinstance(ref(v), Lit) else _lit_const(ref(v), const_vals, new)
            for v in jaxpr.outvars]


def _lit_const(lit, const_vals, new):
    i = new()
    const_vals.append((i, lit.val))
    return i


_FRAMEWORKS = re.compile(r"[/\\](flax|equinox|haiku|optax|jax|xattr_jax)[/\\]")


def source_line(e) -> str:
    """``file:line (function)`` of the innermost frame outside the frameworks (the user's call)."""
    try:
        from jax._src import source_info_util

        frames = list(source_info_util.user_frames(e.source_info.traceback))
        for f in frames:
            if not _FRAMEWORKS.search(f.file_name):
                return f"{f.file_name}:{f.start_line} ({f.function_name})"
        return ""
    except Exception:  # pragma: no cover - the summary is informative only
        return ""


class Facts(NamedTuple):
    """What the data flow says about every value."""

    xdep: set
    sources: dict  # variable id -> frozenset of input leaf indices it depends on (x-independent)
    consumers: dict  # variable id -> [op indices]
    producer: dict  # variable id -> op index
    concrete: dict  # variable id -> numpy value of constants

    def value(self, a):
        """The concrete value of a literal or constant operand, else None."""
        return np.asarray(a.val) if isinstance(a, Lit) else self.concrete.get(a)

    def from_params(self, a) -> bool:
        """``a`` is made from the variables (not a literal, not a constant of the program)."""
        return not isinstance(a, Lit) and bool(self.sources.get(a))

    def depends_on_x(self, a) -> bool:
        return not isinstance(a, Lit) and a in self.xdep


def find_facts(ops, x_ids, param_ids, const_vals) -> Facts:
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
            if isinstance(a, Lit):
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
        if op.prim.name in VALUE_IDENTITY and len(op.ins) == len(op.outs):  # shard_map's pvary(0.0)
            for a, o in zip(op.ins, op.outs):
                val = np.asarray(a.val) if isinstance(a, Lit) else concrete.get(a)
                if val is not None:
                    concrete[o] = val
        elif not dep and op.prim.name in CONST_FOLD and len(op.ins) == 1:  # jnp.clip's 0 as an int
            val = np.asarray(op.ins[0].val) if isinstance(op.ins[0], Lit) else concrete.get(op.ins[0])
            if val is not None:
                concrete[op.outs[0]] = CONST_FOLD[op.prim.name](val, op.params)
    return Facts(xdep, sources, consumers, producer, concrete)


def is_float(aval_dtype) -> bool:
    return jnp.issubdtype(aval_dtype, jnp.inexact)


def is_zero(a, facts) -> bool:
    v = facts.value(a)
    return v is not None and bool(np.all(v == 0))


def nonneg_const(a, facts) -> bool:
    v = facts.value(a)
    return v is not None and bool(np.all(v >= 0))


def x_inputs(op, facts) -> list:
    """The operands of ``op`` that depend on x (variable ids, in operand order)."""
    return [a for a in op.ins if facts.depends_on_x(a)]


def only_consumer(v, facts):
    c = facts.consumers.get(v, [])
    return c[0] if len(c) == 1 else None


def operand_shape(a, shapes) -> tuple:
    return np.shape(a.val) if isinstance(a, Lit) else shapes[a][0]


def size_of(a, shapes) -> int:
    return int(np.prod(operand_shape(a, shapes)))


def bind(op, vals):
    """Re-bind ``op`` on ``vals`` as traced."""
    bind_params = op.prim.get_bind_params(op.params)
    if isinstance(bind_params, tuple):  # older JAX: (subfuns, params)
        subfuns, bind_params = bind_params
        vals = [*subfuns, *vals]
    with op.ctx:
        out = op.prim.bind(*vals, **bind_params)
    return out if op.prim.multiple_results else [out]
