"""Tracing a model (any JAX callable or a linen Module) to a :class:`~.ir.Program`."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .axes import channel_axes
from .checks import check_channels_last
from .ir import Program, find_facts, flatten_jaxpr, key_name, path_parts
from .layers import batchnorm_folds, find_segments, layer_inputs, nonneg_layers
from .names import concat_outputs, layer_names, layer_rows, module_outputs


def call_model(model) -> Callable:
    """``model`` as a function ``(variables, x) -> output``."""
    return model_call(model)[0]


def checked_call(fn):
    """``fn(variables, x)`` with its failures told in our words: a Flax model in training mode,
    a function that takes ``(x, variables)``, or channels-first ``x`` given to an NHWC model."""

    def call(variables, x):
        try:
            return fn(variables, x)
        except Exception as err:
            hint = _training_mode(err) or _misuse(fn, variables, x)
            if hint:
                raise ValueError(hint) from err
            raise

    return call


def _training_mode(err) -> str | None:
    text = str(err)
    if "batch_stats" in text or "dropout" in text.lower() or "is immutable" in text:
        return (f"the model could not run in inference mode ({type(err).__name__}: {text.splitlines()[0]}); "
                "attribution calls it as model.apply(variables, x): build it with "
                "use_running_average=True / deterministic=True (or train=False)")
    return None


def _runs(fn, *args) -> bool:
    """Whether ``fn(*args)`` traces without an error, on shapes only."""
    spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), getattr(a, "dtype", None) or jnp.result_type(a))  # noqa: E731
    try:
        jax.eval_shape(fn, *jax.tree_util.tree_map(spec, args))  # also fails on non-array leaves
        return True
    except Exception:  # noqa: BLE001 -- any failure means "not this way either"
        return False


def _misuse(fn, variables, x) -> str | None:
    """Why ``fn(variables, x)`` failed when another reading of the arguments runs, else None."""
    if _runs(fn, x, variables):
        return ("model(variables, x) failed, but model(x, variables) runs: attribution calls "
                "model(variables, x); pass a function that takes the variables first, e.g. "
                "lambda v, x: f(x, v)")
    shape = np.shape(x) if hasattr(x, "dtype") else ()
    nhwc = jax.ShapeDtypeStruct((shape[0], shape[2], shape[3], shape[1]), x.dtype) if len(shape) == 4 else None
    if nhwc is not None and _runs(fn, variables, nhwc):
        return (f"model(variables, x) failed for x of shape {tuple(x.shape)}, but runs on "
                "x.transpose(0, 2, 3, 1): x must be NHWC [N, H, W, C], not channels-first; transpose it "
                "(or, for a channels-first model, transpose inside your function)")
    return None


def model_call(model):
    apply = getattr(model, "apply", None)
    try:
        import flax.linen as nn

        if isinstance(model, nn.Module):
            return checked_call(model.apply), True
    except ImportError:  # pragma: no cover
        pass
    if callable(model):
        return checked_call(model), False
    raise TypeError(
        f"model must be a flax.linen.Module or a callable model(variables, x) -> logits, got "
        f"{type(model).__name__}" + (" (it has .apply: pass model.apply)" if apply else "")
    )


def trace(model, variables, x) -> Program:
    """Trace ``model`` on ``(variables, x)`` (concrete or abstract) and find its layers."""
    fn, linen = model_call(model)
    closed = jax.make_jaxpr(lambda v, x: fn(v, x))(variables, x)
    flat, _ = jax.tree_util.tree_flatten_with_path((variables, x))
    leaf_paths = [path_parts(p, linen) if p and key_name(p[0]) == "0" else None for p, _ in flat]
    ops, consts, invars, outs, shapes = _flatten(closed)
    n_x = len(jax.tree_util.tree_leaves(x))
    x_ids, param_ids = invars[len(invars) - n_x:], invars[: len(invars) - n_x]
    facts = find_facts(ops, x_ids, param_ids, consts)
    # everything that does not depend on x runs first (parameter preparation), so a layer's rule
    # can read any parameter of the program (a canonizer folds the batch-norm after a conv into it)
    ops = [op for op in ops if not any(o in facts.xdep for o in op.outs)] + \
          [op for op in ops if any(o in facts.xdep for o in op.outs)]
    facts = find_facts(ops, x_ids, param_ids, consts)
    if not any(o in facts.xdep for o in outs):
        raise ValueError(
            "the model's output does not depend on x (the input): nothing to attribute; check that "
            "model(variables, x) uses its second argument"
        )
    x0 = jax.tree_util.tree_leaves(x)[0]
    segs = find_segments(ops, facts, shapes, int(np.shape(x0)[0]) if np.ndim(x0) else 1, x_ids, outs)
    names = layer_names(segs, ops, facts, leaf_paths)
    owner = {k: i for i, s in enumerate(segs) for k in s.ops}
    nonneg = nonneg_layers(ops, facts, segs, owner)
    folds = batchnorm_folds(ops, facts, shapes, segs, owner)
    axes = channel_axes(ops, facts, shapes, x_ids)
    check_channels_last(segs, names, ops, shapes, axes)
    table, outputs = layer_rows(segs, names, ops, shapes, nonneg, layer_inputs(ops, facts, segs), axes,
                                module_outputs(segs, ops, facts, outs) or concat_outputs(segs, names, ops, facts))
    segs = [s._replace(name=n, nonneg=i in nonneg, fold=folds.get(i)) for i, (s, n) in enumerate(zip(segs, names))]
    return Program(tuple(ops), tuple(invars), tuple(consts), tuple(outs), shapes, tuple(segs), owner, table, outputs)


def _flatten(closed):
    """``(ops, consts, invars, outvars, shapes)`` of a closed jaxpr, with sub-programs inlined."""
    ops, consts, counter, invars, env, shapes = [], [], [0], [], {}, {}
    for v in closed.jaxpr.invars:
        counter[0] += 1
        env[v] = counter[0]
        invars.append(counter[0])
        shapes[counter[0]] = (tuple(v.aval.shape), v.aval.dtype)
    outs = flatten_jaxpr(closed.jaxpr, closed.consts, env, ops, consts, counter, shapes)
    for i, c in consts:
        shapes[i] = (tuple(np.shape(c)), getattr(c, "dtype", None) or np.asarray(c).dtype)
    return ops, consts, invars, outs, shapes
