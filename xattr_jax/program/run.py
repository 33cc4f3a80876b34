"""Evaluating a traced program with rules attached, probes added and outputs captured."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..rules.core import LayerFn, apply_rule
from .ir import LINEAR, Program, bind
from .regions import REGION_KINDS
from .trace import trace

STATISTIC_ANCHORS = REGION_KINDS["norm"][0]


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


def segment_fn(prog: Program, i: int) -> LayerFn:
    """The pure forward ``fn(params, *xs)`` of segment ``i`` (its own operations, in order), with
    its kernel window.

    Linear layers also take a ``"bias"`` they do not have (a canonizer's folded bias): it is
    added to the output.
    """
    seg = prog.segments[i]
    keyed = dict((v, k) for k, v in seg.params)
    main = prog.ops[seg.ops[0]]

    def run_ops(params, xs, freeze):
        env = dict(zip(seg.inputs, xs))
        for j, k in enumerate(seg.ops):
            op = prog.ops[k]
            if seg.kind == "relu" and op.prim.name == "max":  # differentiated as jax.nn.relu (0 at 0)
                env[op.outs[0]] = jax.nn.relu(env[seg.inputs[0]])
                continue
            if seg.kind == "relu" and op.prim.name == "min":  # the same values; gradient 0 at the bound
                v = env[prog.ops[seg.ops[0]].outs[0]]
                c = [a for a in op.ins if a != prog.ops[seg.ops[0]].outs[0]][0]
                c = jnp.asarray(c[1] if isinstance(c, tuple) else params[keyed[c]], v.dtype)
                env[op.outs[0]] = jnp.where(v < c, v, c)
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
            outs = bind(_rebatch(op, vals, traced_in), vals)
            if freeze and op.prim.name in STATISTIC_ANCHORS:
                outs = [jax.lax.stop_gradient(o) for o in outs]
            env.update(zip(op.outs, outs))
        y = env[seg.output]
        if seg.bias_op is None and seg.kind in LINEAR and "bias" in params:
            y = y + jnp.broadcast_to(params["bias"], y.shape).astype(y.dtype)
        return y

    def fn(params, *xs):
        return run_ops(params, xs, False)

    window = None
    if main.prim.name == "conv_general_dilated":
        spec = main.params["dimension_numbers"].rhs_spec
        kshape = prog.shapes[main.ins[1]][0] if not isinstance(main.ins[1], tuple) else np.shape(main.ins[1][1])
        window = tuple(kshape[d] for d in spec[2:])  # the spatial window, any layout
    elif seg.kind == "dense":
        window = ()
    frozen = None
    if seg.kind == "norm":  # the same function with its statistic σ a constant
        frozen = lambda params, *xs: run_ops(params, xs, True)  # noqa: E731
    patches = None
    if (main.prim.name == "conv_general_dilated" and main.ins[0] == seg.inputs[0]
            and len(seg.ops) - (seg.bias_op is not None) == 1):
        patches = _patches(main.params, window)
    return LayerFn(fn, window, frozen, patches)


def _patches(p, window):
    """``(patches, rows)`` of a convolution with parameters ``p`` (see ``LayerFn.patches``), or
    ``None`` where its receptive fields are not plain windows (feature groups, input dilation).

    The patches are strided slices of the padded input, one per window offset (no convolution), so
    their transpose is padding and adding: every example stays where it is on a sharded batch."""
    dn = p["dimension_numbers"]
    if (p["feature_group_count"] != 1 or p["batch_group_count"] != 1
            or any(d != 1 for d in (p["lhs_dilation"] or ()))):
        return None
    strides, dil = tuple(p["window_strides"]), tuple(p["rhs_dilation"] or (1,) * len(window))
    pads = p["padding"]

    def rows(y):  # out layout -> [N, Q, features]
        y = _batch_spatial_features(y, dn.out_spec)
        return _batch_rows(y, y.shape[-1])

    def patches(x):
        x = _batch_spatial_features(x, dn.lhs_spec)
        x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)])
        n, c, spatial = x.shape[0], x.shape[-1], x.shape[1:-1]
        out = [(size - d * (k - 1) - 1) // s + 1 for size, k, s, d in zip(spatial, window, strides, dil)]
        cuts = []
        for offset in np.ndindex(*window):
            start = [0] + [o * d for o, d in zip(offset, dil)] + [0]
            stop = [n] + [st + (m - 1) * s + 1 for st, m, s in zip(start[1:], out, strides)] + [c]
            cuts.append(jax.lax.slice(x, start, stop, [1] + list(strides) + [1]))
        pt = jnp.stack(cuts, axis=-2)  # [N, *out, window positions, C]
        return _batch_rows(pt, pt.shape[-2] * c)

    return patches, rows


def _batch_spatial_features(a, spec):
    """``a`` in a convolution's layout ``spec`` (batch, feature, spatial axes) as ``[N, *spatial, C]``."""
    return jnp.moveaxis(a, (spec[0],) + tuple(spec[2:]) + (spec[1],), tuple(range(a.ndim)))


def _batch_rows(a, k):
    """``a [N, ...]`` as ``[N, Q, k]``; a batch axis sharded over an explicit mesh stays sharded
    (JAX does not infer the sharding of such a reshape)."""
    shape = (a.shape[0], a.size // (a.shape[0] * k), k)
    spec = getattr(jax.typeof(a).sharding, "spec", None)
    if spec and spec[0] is not None:
        return jax.lax.reshape(a, shape, out_sharding=jax.sharding.PartitionSpec(spec[0], None, None))
    return a.reshape(shape)


def _in_shape(prog, op):
    if not op.ins or isinstance(op.ins[0], tuple):
        return None
    return prog.shapes[op.ins[0]][0]


def fold_params(prog: Program, lin: int, lin_params, bn_params, like=None):
    """``{kernel, bias}`` of linear segment ``lin`` with the batch-norm after it folded in.

    ``BN(z) = a ⊙ z + b`` per output feature (read off the chain at 0 and 1), so
    ``W' = W · a`` along the kernel's output-feature axis and ``b' = a ⊙ b_W + b``. Shape
    operations between the two (a vmapped channels-first conv) are undone on ``b'``. ``like``: an
    activation whose type the read-off inputs take (under ``shard_map``: varying over the mesh).
    """
    bn, path, axis = prog.folds[lin]
    seg = prog.segments[lin]
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
    if "bias" in lin_params:  # then the segment ends at its bias add, right before the batch-norm
        b = a * jnp.broadcast_to(lin_params["bias"], z_shape) + b
    if path:
        y_shape = prog.shapes[seg.output][0]

        def chain(y):
            for k in path:
                op = prog.ops[k]
                (y,) = bind(op, [y])
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
                rp = fold_params(prog, i, params, bn_params, like=xs[0])
            if _record is not None and _record[0] == name and name not in _record[1]:
                _record[1][name] = LayerCall(fn, params, tuple(xs), params if rp is None else rp)
            if rule is None:
                y = fn(params, *xs)
            else:
                if seg.kind not in rule.kinds:
                    raise ValueError(
                        f"rule {rule!r} applies to {sorted(rule.kinds)} layers, but layer {name!r} is a "
                        f"{seg.kind} layer"
                    )
                if i in prog.nonneg and rule.nonnegative is not None:
                    rule = rule.on_nonnegative()
                y = apply_rule(rule, fn, params, *xs, rule_params=rp)
            write(seg.output, y)
            continue
        if k in prog.in_segment:
            continue
        outs = bind(op, [read(a) for a in op.ins])
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
