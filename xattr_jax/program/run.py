"""Evaluating a traced program with rules attached, probes added and outputs captured."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..rules.core import ConvPatches, LayerFn, apply_rule
from .ir import LINEAR, Lit, Program, bind, operand_shape
from .max_route import is_plain, max_pool, reshape_batch
from .pointwise import is_pointwise, pointwise_conv
from .regions import REGION_KINDS
from .trace import trace

STATISTIC_ANCHORS = REGION_KINDS["norm"][0]


#: shape operations whose parameters hold the batch size, and the parameter that holds it
BATCH_SHAPE_PARAM = {"reshape": "new_sizes", "broadcast_in_dim": "shape"}


def _rebatch(op, vals, traced_in):
    """Shape parameters of ``reshape``/``broadcast_in_dim`` for a different batch size (rules that
    run a layer on one sample at a time)."""
    key = BATCH_SHAPE_PARAM.get(op.prim.name)
    shape = np.shape(vals[0])
    if key is None or not traced_in or not shape or shape[0] == traced_in[0]:
        return op
    sizes = tuple(op.params[key])
    if sizes and sizes[0] == traced_in[0]:
        return op._replace(params={**op.params, key: (shape[0],) + sizes[1:]})
    return op


def segment_fn(prog: Program, i: int) -> LayerFn:
    """The pure forward ``fn(params, *xs)`` of segment ``i`` (its own operations, in order), with
    its kernel window, constant-statistics form (norms) and patches (convolutions).

    Linear layers also take a ``"bias"`` they do not have (a canonizer's folded bias): it is
    added to the output.
    """
    seg = prog.segments[i]
    frozen = None
    if seg.kind == "norm":  # the same function with its statistic σ a constant
        frozen = lambda params, *xs: _run_ops(prog, seg, params, xs, True)  # noqa: E731
    main = prog.ops[seg.ops[0]]
    window, patches, stacked = (() if seg.kind == "dense" else None), None, None
    if seg.kind == "conv":
        kshape = operand_shape(main.ins[1], prog.shapes)
        window = tuple(kshape[d] for d in main.params["dimension_numbers"].rhs_spec[2:])  # any layout
        if len(seg.ops) - (seg.bias_op is not None) == 1:
            patches = _patches(main.params, window, kshape[main.params["dimension_numbers"].rhs_spec[1]])
            stacked = _stacked(prog, seg, main)
    return LayerFn(lambda params, *xs: _run_ops(prog, seg, params, xs, False), window, frozen, patches, stacked)


def _stacked(prog, seg, op):
    """``stacked(params_list, x_list) = Σ_t fn(params_t, x_t)`` of a convolution that is the whole
    layer (see ``LayerFn.stacked``), or ``None`` where it has feature groups, the kernel is not a
    parameter or the input not its only layer input. The inputs are concatenated along their
    features and the kernels along their input features, so it is one convolution over ``T·C``
    input features; the biases add up."""
    keyed = {v: k for k, v in seg.params}
    if len(seg.inputs) != 1 or op.ins[0] != seg.inputs[0] or op.ins[1] not in keyed:
        return None
    key, dn = keyed[op.ins[1]], op.params["dimension_numbers"]
    if op.params["batch_group_count"] != 1 or op.params["feature_group_count"] != 1:
        # feature groups: T inputs per group turn a depthwise convolution into a grouped one, which
        # XLA:CPU runs far slower (ConvNeXt-T LRP at batch 8: 5.7 -> 11.1 s)
        return None

    def stacked(params_list, x_list):
        params = dict(params_list[0])
        params[key] = jnp.concatenate([p[key] for p in params_list], axis=dn.rhs_spec[1])
        biases = [p["bias"] for p in params_list if "bias" in p]
        if biases:
            params["bias"] = sum(biases[1:], biases[0])
        x = jnp.concatenate(x_list, axis=dn.lhs_spec[1])
        return _run_ops(prog, seg, params, (x,), False)

    return stacked


def _run_ops(prog, seg, params, xs, freeze):
    """Segment ``seg``'s operations on ``xs`` (``freeze``: a norm's statistics held constant)."""
    keyed = {v: k for k, v in seg.params}
    env = dict(zip(seg.inputs, xs))
    read = lambda a: a.val if isinstance(a, Lit) else env[a] if a in env else params[keyed[a]]  # noqa: E731
    for j, k in enumerate(seg.ops):
        op = prog.ops[k]
        if j == seg.bias_op:  # the bias add: the layer's bias, or a canonizer's folded one
            y = env[[a for a in op.ins if not isinstance(a, Lit) and a in env and a not in keyed][0]]
            env[op.outs[0]] = _add_bias(y, params)
            continue
        vals = [read(a) for a in op.ins]
        special = LAYER_FORWARD.get((seg.kind, op.prim.name))
        if special is not None:
            outs = special(op, vals, [not isinstance(a, Lit) and a in env for a in op.ins])
        else:
            outs = bind(_rebatch(op, vals, _in_shape(prog, op)), vals)
        if freeze and op.prim.name in STATISTIC_ANCHORS:
            outs = [jax.lax.stop_gradient(o) for o in outs]
        env.update(zip(op.outs, outs))
    y = env[seg.output]
    return _add_bias(y, params) if seg.bias_op is None and seg.kind in LINEAR else y


def _add_bias(y, params):
    return y + jnp.broadcast_to(params["bias"], y.shape).astype(y.dtype) if "bias" in params else y


def _relu_max(op, vals, live):
    """``max(x, 0)`` differentiated as ``jax.nn.relu`` (0 at 0)."""
    return [jax.nn.relu(vals[live.index(True)])]


def _relu_min(op, vals, live):
    """``min(v, c)`` with the same values and gradient 0 at the bound."""
    v, c = vals[live.index(True)], vals[live.index(False)]
    return [jnp.where(v < c, v, jnp.asarray(c, v.dtype))]


def _routed_max_pool(op, vals, live):
    """A plain ``reduce_window_max`` whose backward routes to the first maximum exactly
    (:mod:`.max_route`); dilated ones as traced."""
    if not is_plain(op.params):
        return bind(op, vals)
    p = op.params
    with op.ctx:
        return [max_pool(vals[0], tuple(p["window_dimensions"]), tuple(p["window_strides"]),
                         tuple(tuple(q) for q in p["padding"]))]


def _conv(op, vals, live):
    """A 1×1 convolution differentiated as the matrix product it is (:mod:`.pointwise`)."""
    if not is_pointwise(op.params, np.shape(vals[1])):
        return bind(op, vals)
    return [pointwise_conv(op, *vals)]


#: (layer kind, primitive) -> ``(op, operand values, which are layer values) -> outputs``: how a layer evaluates an
#: operation where it differs from binding the primitive (same values, the layer's derivative)
LAYER_FORWARD = {
    ("relu", "max"): _relu_max,
    ("relu", "min"): _relu_min,
    ("maxpool", "reduce_window_max"): _routed_max_pool,
    ("conv", "conv_general_dilated"): _conv,
}


def _patches(p, window, per_group):
    """The :class:`ConvPatches` of a convolution with parameters ``p`` (see ``LayerFn.patches``),
    or ``None`` where its receptive fields are not plain windows (batch groups, input dilation).

    The patches are strided slices of the padded input, one spatial axis at a time (no
    convolution), so their transpose is padding and adding: every example stays where it is on a
    sharded batch. They keep the features where the layer's layout has them (first or last), so no
    activation is transposed for an ungrouped convolution."""
    dn = p["dimension_numbers"]
    if p["batch_group_count"] != 1 or any(d != 1 for d in (p["lhs_dilation"] or ())):
        return None
    groups, nd, size = p["feature_group_count"], len(window), int(np.prod(window))
    strides, dil = tuple(p["window_strides"]), tuple(p["rhs_dilation"] or (1,) * nd)
    pads = p["padding"]
    pfirst, rfirst = _features_first(dn.lhs_spec), _features_first(dn.out_spec)

    def outer(y, m):  # out layout [.., F·O, ..] x m [H] -> [.., F·H·O, ..]: y·m_h side by side per group
        ax, h = dn.out_spec[1], m.shape[0]
        y = y.reshape(y.shape[:ax] + (groups, 1, -1) + y.shape[ax + 1:])
        y = y * m.reshape((1,) * (ax + 1) + (h,) + (1,) * (y.ndim - ax - 2))
        return y.reshape(y.shape[:ax] + (-1,) + y.shape[ax + 3:])

    def rows(y):  # out layout -> [N, F, Q, O/F] (or [N, F, O/F, Q])
        return _group_rows(_batch_features_spatial(y, dn.out_spec, rfirst), groups, rfirst, 1)

    def patches(x):
        x = _batch_features_spatial(x, dn.lhs_spec, pfirst)
        sp = 2 if pfirst else 1  # the first spatial axis
        x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] * sp + [(lo, hi, 0) for lo, hi in pads]
                        + [(0, 0, 0)] * (2 - sp))
        spatial = x.shape[sp:sp + nd]
        out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(spatial, window, strides, dil)]
        for i, (k, m, s, d) in enumerate(zip(window, out, strides, dil)):  # one spatial axis at a time
            ax = sp + 2 * i if pfirst else sp + i
            x = jnp.stack([jax.lax.slice_in_dim(x, o * d, o * d + (m - 1) * s + 1, s, axis=ax) for o in range(k)],
                          axis=2 + i if pfirst else -2)
        return _group_rows(x, groups, pfirst, size)  # from [N, C, *window, *out] or [N, *out, *window, C]

    def conv(x, w):  # the layer's convolution with kernels w [F, K/F, O'] in the patches' basis
        c = x.shape[dn.lhs_spec[1]] // groups
        inner = (c,) + window if pfirst else window + (c,)
        w = jnp.moveaxis(w.reshape((groups,) + inner + w.shape[-1:]), 0, -2)  # [*inner, F, O']
        w = w.reshape(inner + (-1,))
        rhs = (nd + 1, 0) + tuple(range(1, nd + 1)) if pfirst else (nd + 1, nd) + tuple(range(nd))
        return jax.lax.conv_general_dilated(
            x, w, strides, pads, rhs_dilation=dil, feature_group_count=groups, precision=p.get("precision"),
            dimension_numbers=jax.lax.ConvDimensionNumbers(dn.lhs_spec, rhs, dn.out_spec))

    def kernels(x, y):  # one example: Σ_q patches(x)_q ⊗ rows(y)_q as [F, K, O'], one convolution whose kernel
        # is y (a weight gradient's correlation), for one input feature per group (no patches formed)
        g = jax.lax.conv_general_dilated(
            x, y, dil, pads, rhs_dilation=strides, feature_group_count=groups, precision=p.get("precision"),
            dimension_numbers=jax.lax.ConvDimensionNumbers(  # y's batch axis (size 1) as the kernel's inputs
                dn.lhs_spec, (dn.out_spec[1], dn.out_spec[0]) + tuple(dn.out_spec[2:]), dn.lhs_spec))
        g = _batch_features_spatial(g, dn.lhs_spec, True)  # [1, F·O', *span ≥ window]
        g = g[(0, slice(None)) + tuple(slice(0, k) for k in window)]
        return jnp.swapaxes(g.reshape(groups, -1, size), 1, 2)

    return ConvPatches(patches, rows, outer, conv, pfirst, rfirst, kernels if per_group == 1 else None)


def _group_rows(a, groups, first, size):
    """``[N, C, *window, *positions]`` (``first``) or ``[N, *positions, *window, C]`` as
    ``[N, F, C/F·window, Q]`` or ``[N, F, Q, window·C/F]`` (``F = groups``, window ``size``)."""
    n, c = a.shape[0], a.shape[1 if first else -1]
    q = a.size // (n * c * size)
    if first:
        return reshape_batch(a, (n, groups, c // groups * size, q))
    if groups == 1:
        return reshape_batch(a, (n, 1, q, size * c))
    a = jnp.moveaxis(reshape_batch(a, (n, q, size, groups, c // groups)), 3, 1)
    return reshape_batch(a, (n, groups, q, size * (c // groups)))


def _features_first(spec):
    """Whether a layout ``spec`` (batch, feature, spatial axes) has its features before its spatial axes."""
    return spec[1] < min(spec[2:])


def _batch_features_spatial(a, spec, first):
    """``a`` in a convolution's layout ``spec`` as ``[N, C, *spatial]`` (``first``) or ``[N, *spatial, C]``."""
    order = (spec[0], spec[1]) + tuple(spec[2:]) if first else (spec[0],) + tuple(spec[2:]) + (spec[1],)
    return jnp.transpose(a, order) if order != tuple(range(a.ndim)) else a


def _in_shape(prog, op):
    if not op.ins or isinstance(op.ins[0], Lit):
        return None
    return prog.shapes[op.ins[0]][0]


def fold_params(prog: Program, lin: int, lin_params, bn_params, like=None):
    """``{kernel, bias}`` of linear segment ``lin`` with the batch-norm after it folded in.

    ``BN(z) = a ⊙ z + b`` per output feature (read off the chain at 0 and 1), so
    ``W' = W · a`` along the kernel's output-feature axis and ``b' = a ⊙ b_W + b``. Shape
    operations between the two (a vmapped channels-first conv, torch's permute back to NCHW before a
    layer scale) carry ``b_W`` to the batch-norm's layout and ``b'`` back. ``like``: an
    activation whose type the read-off inputs take (under ``shard_map``: varying over the mesh).
    """
    seg = prog.segments[lin]
    bn, path, axis = seg.fold
    z_shape, dtype = prog.shapes[prog.segments[bn].inputs[0]]
    fn_bn = segment_fn(prog, bn)
    zeros = jnp.zeros(z_shape, dtype) if like is None else jnp.zeros_like(like, shape=z_shape, dtype=dtype)
    b = fn_bn(bn_params, zeros)
    a = fn_bn(bn_params, zeros + 1) - b
    scale = a[tuple(slice(None) if d == axis else 0 for d in range(len(z_shape)))]
    kernel = lin_params["kernel"]
    shape = [1] * kernel.ndim
    shape[seg.feature[0]] = -1
    kernel = kernel * scale.reshape(shape).astype(kernel.dtype)
    y_shape = prog.shapes[seg.output][0]

    def chain(y):  # the shape operations from the linear layer's output to the batch-norm's input
        for k in path:
            (y,) = bind(prog.ops[k], [y])
        return y

    if "bias" in lin_params:  # then the segment ends at its bias add, in the layer's output layout
        b = a * chain(jnp.broadcast_to(lin_params["bias"], y_shape)) + b
    if path:
        (b,) = jax.linear_transpose(chain, jax.ShapeDtypeStruct(y_shape, dtype))(b)
    return {"kernel": kernel, "bias": b}


def folded_batchnorms(prog: Program) -> tuple:
    """Names of the batch-norm layers that ``fold=True`` folds into the conv/dense before them."""
    return tuple(prog.segments[s.fold[0]].name for s in prog.segments if s.fold is not None)


class LayerCall(NamedTuple):
    """One layer as its rule sees it: ``fn(params, *inputs)`` is its exact forward."""

    fn: Callable
    params: dict
    inputs: tuple
    rule_params: dict  # the parameters a rule is given (``fold=True``: batch-norm folded in)


def layer_call(prog: Program, variables, x, name: str, *, fold: bool = False) -> LayerCall:
    """The first call of layer ``name`` in a plain evaluation of ``prog`` (for tests and tools)."""
    env = _Env(prog, variables, x, {}, ())
    call = next(_evaluate(prog, env, {}, fold, wanted=name), None)
    if call is None:
        raise ValueError(f"{name!r} is not a leaf layer; valid: {[s.name for s in prog.segments]}")
    return call


def run(prog: Program, variables, x, *, rules=None, probes=None, capture=(), fold=False, keep=False):
    """Evaluate ``prog`` on ``(variables, x)`` with rules attached, probes added, outputs captured.

    Args:
      prog: from :func:`trace` (the same structure and shapes as these arguments).
      rules: ``{layer name: Rule}``; other layers keep their ordinary gradient.
      probes: ``{layer name: zeros}`` added to that layer's output (differentiate w.r.t. them to
        read the signal arriving there).
      capture: layer names whose outputs are returned.
      fold: hand each linear layer's rule its parameters with the batch-norm after it folded in
        (the batch-norm keeps whatever rule it is given; the forward is unchanged).
      keep: also return every value of the evaluation, ``{variable: value}`` (for :func:`run_above`).

    Returns:
      ``(output, {layer name: output})``, and the values when ``keep``.
    """
    rules, probes = rules or {}, probes or {}
    unknown = (set(probes) | set(capture) | set(rules)) - set(prog.outputs)
    if unknown:
        raise ValueError(f"unknown layer name(s) {sorted(unknown)}; valid: {sorted(prog.outputs)}")
    for n in set(probes) | set(capture):
        if _calls(prog, n) > 1:
            raise ValueError(
                f"layer {n!r} is called more than once per forward pass, so its output is ambiguous; "
                "read the signal at a layer that is called once"
            )
    env = _Env(prog, variables, x, probes, capture)
    for _ in _evaluate(prog, env, rules, fold):
        pass
    out = [env.values[v] for v in prog.outvars]
    out = out[0] if len(out) == 1 else out
    return (out, env.captured, dict(env.values)) if keep else (out, env.captured)


def run_above(prog: Program, values, layer: str, a, *, rules=None, fold=False):
    """The output of ``prog`` as a function of layer ``layer``'s output ``a``.

    Only the operations after ``layer`` that depend on its output run again, from ``a`` (with their
    rules); every other value is read from ``values``, an evaluation's ``{variable: value}``
    (:func:`run` with ``keep=True``). Differentiating it w.r.t. ``a`` gives the signal at
    ``layer`` without building the backward of the layers below (a seed's ordinary gradient).
    """
    if _calls(prog, layer) > 1:
        raise ValueError(f"layer {layer!r} is called more than once per forward pass")
    v = prog.outputs[layer]
    k = next(k for k, op in enumerate(prog.ops) if v in op.outs)
    i = prog.owner.get(k)
    env = _Env.of(values)
    env.values[v] = a
    for _ in _evaluate(prog, env, rules or {}, fold, after=k if i is None else max(prog.segments[i].ops),
                       dirty={v}):
        pass
    out = [env.values[u] for u in prog.outvars]
    return out[0] if len(out) == 1 else out


class _Env:
    """The values of one evaluation, with probes added and captures taken as they are written."""

    def __init__(self, prog, variables, x, probes, capture):
        leaves, _ = jax.tree_util.tree_flatten((variables, x))
        if len(leaves) != len(prog.invars):
            raise ValueError(f"variables/x have {len(leaves)} leaves; the traced program has {len(prog.invars)}")
        self.values = dict(zip(prog.invars, leaves))
        self.values.update(prog.consts)
        self.probes, self.capture, self.captured = probes, capture, {}
        self.names: dict = {}
        for n in dict.fromkeys([*probes, *capture]):  # in the callers' order: the same program in every
            # process (a set's order of names follows the string hash seed; so did the probes' sum)
            self.names.setdefault(prog.outputs[n], []).append(n)

    @classmethod
    def of(cls, values):
        """An environment holding ``values`` (no probes, no captures)."""
        env = cls.__new__(cls)
        env.values, env.probes, env.capture, env.captured, env.names = dict(values), {}, (), {}, {}
        return env

    def read(self, a):
        return a.val if isinstance(a, Lit) else self.values[a]

    def write(self, v, val):
        for n in self.names.get(v, ()):
            if n in self.probes:
                if self.probes[n].shape != val.shape:
                    raise ValueError(f"probe for {n!r} has shape {self.probes[n].shape}, output {val.shape}")
                val = val + self.probes[n]
        for n in self.names.get(v, ()):
            if n in self.capture:
                self.captured[n] = val
        self.values[v] = val


def _evaluate(prog, env, rules, fold, wanted=None, after=-1, dirty=None):
    """Run ``prog``'s operations into ``env``, each layer through its rule; yields the
    :class:`LayerCall` of layer ``wanted`` (its first call) before running it. With ``dirty`` (a
    set of variables), only the operations after op ``after`` that read one of them run, and add
    their outputs to it; the other values stay as ``env`` holds them."""
    for k, op in enumerate(prog.ops):
        if k <= after:
            continue
        i = prog.owner.get(k)
        if i is None:
            if dirty is not None:
                if not any(not isinstance(a, Lit) and a in dirty for a in op.ins):
                    continue
                dirty.update(op.outs)
            for o, val in zip(op.outs, bind(op, [env.read(a) for a in op.ins])):
                env.write(o, val)
            continue
        seg, name = prog.segments[i], prog.segments[i].name
        if k != max(seg.ops):  # a segment runs where its last op stood
            continue
        if dirty is not None:
            if not any(a in dirty for a in seg.inputs):  # parameters never depend on x
                continue
            dirty.add(seg.output)
        rule = rules.get(name)
        xs = [env.values[v] for v in seg.inputs]
        params = {key: env.read(v) for key, v in seg.params}
        fn = segment_fn(prog, i)
        rp = None
        if fold and seg.fold is not None and (rule is not None or name == wanted):
            bn_params = {key: env.read(v) for key, v in prog.segments[seg.fold[0]].params}
            rp = fold_params(prog, i, params, bn_params, like=xs[0])
        if name == wanted:
            yield LayerCall(fn, params, tuple(xs), params if rp is None else rp)
            wanted = None
        env.write(seg.output, fn(params, *xs) if rule is None else _with_rule(prog, i, name, rule, fn, params, xs, rp))


def _with_rule(prog, i, name, rule, fn, params, xs, rp):
    if prog.segments[i].kind not in rule.kinds:
        raise ValueError(
            f"rule {rule!r} applies to {sorted(rule.kinds)} layers, but layer {name!r} is a "
            f"{prog.segments[i].kind} layer"
        )
    if prog.segments[i].nonneg and rule.nonnegative is not None:
        rule = rule.on_nonnegative()
    return apply_rule(rule, fn, params, *xs, rule_params=rp)


def _calls(prog, name):
    for l in prog.layers:
        if l.name == name:
            return l.calls
    return 1


def interpret(model, variables, x, *, rules=None, probes=None, capture=(), fold=False):
    """Trace ``model`` and :func:`run` it once: ``(output, {layer name: output})``."""
    return run(trace(model, variables, x), variables, x, rules=rules, probes=probes, capture=capture, fold=fold)
