"""The public entry points: :func:`explain`, :func:`attributor` and :func:`layers`.

An *attributor* is one jit-compiled XLA program: forward pass with rules attached, seed at the
output, modified backward pass, read-out at a layer. The method, layer and options are static;
the target is a traced integer array, so a new target never retraces.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .methods import get_method
from .passes import path_chunks, path_sums, run_path, seed_fn
from .program import call_model, check_strict, run, trace
from .types import Attribution, Context, PathPlan

__all__ = ["explain", "attributor", "layers", "INPUT"]

INPUT = "input"  # the layer name that always means the network's input


def _is_concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _check_x(x):
    if not hasattr(x, "ndim") or x.ndim != 4:
        raise ValueError(
            f"x must be a rank-4 NHWC batch [N, H, W, C], got shape {getattr(x, 'shape', None)}; "
            "add a batch axis with x[None] for a single image"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be floating point (float32), got {x.dtype}; convert with x.astype('float32')")
    if _is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x contains NaN or Inf values; attribution needs finite inputs")


def _check_target(target, n, num_classes):
    if not hasattr(target, "ndim") or target.ndim not in (1, 2):
        raise ValueError(
            f"target must be an int array [N] or [N, K], got shape {getattr(target, 'shape', None)}"
        )
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise TypeError(f"target must be an integer array (class indices), got dtype {target.dtype}")
    if target.shape[0] != n:
        raise ValueError(f"target has {target.shape[0]} rows but x has batch size {n}")
    if target.ndim == 2 and target.shape[1] == 0:
        raise ValueError("target [N, K] needs K >= 1")
    if num_classes is not None and _is_concrete(target):
        t = np.asarray(target)
        if t.size and (t.min() < 0 or t.max() >= num_classes):
            bad = t[(t < 0) | (t >= num_classes)]
            raise ValueError(
                f"target out of range: {bad.tolist()[:8]} not in [0, {num_classes}) "
                f"(the model has {num_classes} outputs)"
            )


# ----------------------------------------------------------------------------------------------
# public API


def attributor(model, method: str, layer: str | None = None, *, signal=None, strict: bool = False,
               **options) -> Callable:
    """A jit-compiled ``fn(variables, x, target) -> Attribution`` for ``method`` at ``layer``.

    Args:
      model: a ``flax.linen.Module`` (called as ``model.apply(variables, x)``) or any callable
        ``model(variables, x) -> logits`` (Flax NNX via ``nnx.merge``, Equinox via ``eqx.combine``
        and ``jax.vmap``, Haiku's ``apply``, a plain function); unmodified: its program is traced and
        rules attach to the operations found in it (:mod:`xattr_jax.program`).
      method: a method name (``xattr_jax.methods.available()`` lists them).
      layer: dotted layer name whose output is read (``None``: the method's default — the input for
        most methods; ``"input"``: the input, also for methods that default to a hidden layer, such
        as Excitation Backprop).
      signal: the top signal (``"logit"`` default, ``"prob"``, ``"log_prob"``, ``"pointing"``, or a
        callable on the logits); some methods have their own default (integrated gradients: ``"prob"``).
      strict: refuse a model with operations between x and the output that no rule understands
        (``kind == "other"`` in :func:`xattr_jax.layers`: gelu, softmax, products of two x-dependent
        values, unknown custom ops); the error names each with its layer name and source line.
        Without it such operations keep their ordinary gradient. For ``lrp`` it also refuses
        conv/dense/ReLU/pool layers that the composite leaves without a rule.
      **options: method options (static); unknown ones raise ``ValueError`` listing the valid ones.

    Returns:
      ``fn(variables, x, target)``: ``x`` float ``[N, H, W, C]``, ``target`` int ``[N]`` or ``[N, K]``.
      ``fn.trace_count()`` tells how many times the program was traced (the most over its programs).

    Path methods (integrated gradients, GNL-IG, SmoothGrad) called with concrete arrays run one
    jit-compiled program per chunk of points from a Python loop, then one program that finishes
    the map: on XLA:CPU a gradient inside a ``lax.scan`` body ran 1.4× (ResNet50) to 2.7× (VGG16)
    slower than the same gradient at top level (the loop body keeps the backward convolutions' kernels in a
    non-canonical layout), and an unrolled loop's memory grows with the points. Under
    ``jax.jit``/``vmap``/``grad`` (traced arrays) they run as one program with the chunks in a
    ``lax.scan`` (``fn.jitted``). Both keep memory flat in the number of points and give the same
    numbers.

    Raises:
      ValueError: unknown method (lists them), unknown layer (lists the valid names), unknown option,
        bad signal; at call time wrong rank/shape/dtype, non-finite input, target out of range.

    Example:
      >>> fn = xa.attributor(model, "excitation_backprop", layer="features.23")
      >>> res = fn(variables, x, jnp.array([3, 7]))
    """
    m = get_method(method)
    m.check_options(options)
    if signal is None:
        signal = m.default_signal
    seed_fn(signal)  # validate early
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be a dotted layer name (str) or None, got {layer!r}")
    traces = {"scan": 0, "chunk": 0, "finish": 0}

    def build(variables, x, target):
        """``(ctx, Attribution or PathPlan)`` for ``[N, K]`` targets."""
        program = trace(model, variables, x)
        layers = program.layers
        names = [l.name for l in layers]
        use_layer = layer if layer is not None else m.default_layer(layers)
        if use_layer == INPUT and INPUT not in names:
            use_layer = None  # the input, also for methods whose default is a hidden layer
        if use_layer is not None and use_layer not in names:
            raise ValueError(f"unknown layer {use_layer!r}; valid layer names: {[INPUT] + names}")
        if strict:
            check_strict(layers)
        ctx = Context(model, variables, program, layers, use_layer, signal, dict(options), strict)
        return ctx, m.run(ctx, x, _columns(target))

    def core(variables, x, target):
        traces["scan"] += 1
        ctx, res = build(variables, x, target)
        if isinstance(res, PathPlan):
            res = run_path(ctx, x, _columns(target), res)
        return _squeeze(res, target)

    def chunk_core(variables, x, target, index):
        """Chunk ``index``'s sums, and ``[C, 0]`` zeros whose shape tells the number of chunks."""
        traces["chunk"] += 1
        ctx, plan = build(variables, x, target)
        params, weights = path_chunks(plan)
        pick = lambda a: jax.lax.dynamic_index_in_dim(a, index, keepdims=False)  # noqa: E731
        sums = path_sums(ctx, plan, _columns(target), pick(params), pick(weights))
        return sums, jnp.zeros((weights.shape[0], 0), x.dtype)

    def finish_core(variables, x, target, sums):
        traces["finish"] += 1
        ctx, plan = build(variables, x, target)
        logits, _ = run(ctx.program, variables, x)
        return _squeeze(plan.finish(logits, sums), target)

    jitted = jax.jit(core)
    jitted_chunk = jax.jit(chunk_core)
    jitted_finish = jax.jit(finish_core)
    out_cache: dict = {}

    def run_chunked(variables, x, target):
        sums, count = jitted_chunk(variables, x, target, np.int32(0))
        for i in range(1, count.shape[0]):
            part, _ = jitted_chunk(variables, x, target, np.int32(i))
            sums = jax.tree_util.tree_map(jnp.add, sums, part)
        return jitted_finish(variables, x, target, sums)

    def num_classes(variables, x):
        key = (tuple(x.shape), str(x.dtype))
        if key not in out_cache:
            out = jax.eval_shape(call_model(model), variables, jax.ShapeDtypeStruct(x.shape, x.dtype))
            out_cache[key] = out.shape[-1]
        return out_cache[key]

    @functools.wraps(core)
    def fn(variables, x, target):
        x = jnp.asarray(x) if not isinstance(x, jax.core.Tracer) else x
        target = jnp.asarray(target) if not isinstance(target, jax.core.Tracer) else target
        _check_x(x)
        _check_target(target, x.shape[0], num_classes(variables, x))
        traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves((variables, x, target)))
        if m.path and not traced:
            return run_chunked(variables, x, target)
        return jitted(variables, x, target)

    fn.trace_count = lambda: max(traces.values())
    fn.jitted = jitted  # the one-program form (path methods: lax.scan), unvalidated: for lowering in benchmarks
    fn.jitted_chunk = jitted_chunk  # path methods: (variables, x, target, i) -> (chunk i's sums, [C, 0])
    fn.method = m.name
    fn.layer = layer
    return fn


def _columns(target):
    """``[N]`` or ``[N, K]`` targets as ``[N, K]``."""
    return target if target.ndim == 2 else target[:, None]


def _squeeze(res: Attribution, target) -> Attribution:
    """Drop the ``K`` axis again for ``[N]`` targets."""
    if target.ndim == 2:
        return res
    first = lambda t: jax.tree_util.tree_map(lambda a: a[:, 0], t)  # noqa: E731
    return res._replace(map=first(res.map), relevance=first(res.relevance),
                        layer_maps=first(res.layer_maps), conservation=first(res.conservation))


def _hashable(obj) -> bool:
    try:
        hash(obj)
        return True
    except TypeError:
        return False


@functools.lru_cache(maxsize=64)
def _cached_attributor(model, method, layer, signal, items):
    return attributor(model, method, layer, signal=signal, **dict(items))


def explain(model, variables, x, target, method: str = "gradient", layer: str | None = None, *, signal=None, **options) -> Attribution:
    """Explain ``model`` on ``x`` for ``target`` with ``method``; see :func:`attributor`.

    Attributors are cached per (model, method, layer, options) when those are hashable, so calling
    ``explain`` in a loop compiles once.

    Example:
      >>> res = xa.explain(model, variables, x, jnp.array([3]), method="excitation_backprop",
      ...                  layer="features.23")
      >>> res.map.shape  # [1, 14, 14]
    """
    items = tuple(sorted(options.items()))
    if _hashable((model, signal, items)):
        fn = _cached_attributor(model, method, layer, signal, items)
    else:
        fn = attributor(model, method, layer, signal=signal, **options)
    return fn(variables, x, target)


def layers(model, variables, x) -> tuple:
    """The layer table of ``model`` on inputs shaped like ``x``: one :class:`~xattr_jax.program.LayerInfo`
    per layer in program order (``name``, ``kind``, ``shape``, ``source``, ...), containers included.

    The names are what ``layer=``, composites' ``path()`` globs and every method's default layer
    refer to (naming scheme: :mod:`xattr_jax.program`). Layers of kind ``"other"`` have no rule:
    they keep their ordinary gradient, and ``strict=True`` refuses them.

    Example:
      >>> for l in xa.layers(model, variables, x):
      ...     print(l.name, l.kind, l.shape, l.source)
    """
    return trace(model, variables, x).layers
