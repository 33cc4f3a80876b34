"""``explain()``, ``attributor()``, the :class:`Attribution` result, top signals and the modified pass.

An *attributor* is one jit-compiled XLA program: forward pass with rules attached, seed at the
output, modified backward pass, read-out at a layer. The method, layer and options are static;
the target is a traced integer array, so a new target never retraces.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .program import LayerInfo, call_model, check_strict, run, trace

__all__ = [
    "Attribution",
    "explain",
    "attributor",
    "layers",
    "SIGNALS",
    "Context",
    "modified_pass",
    "seed_fn",
]

SIGNALS = ("logit", "prob", "log_prob", "pointing")
INPUT = "input"  # the layer name that always means the network's input


class Attribution(NamedTuple):
    """Result of an attribution.

    Attributes:
      map: ``[N, h, w]`` (``[N, K, h, w]`` for ``[N, K]`` targets), the method's 2-D map at
        ``layer`` (input resolution when ``layer`` is None).
      relevance: the signal at the output of ``layer`` (at the input when ``layer`` is None),
        ``[N, h, w, C]`` (``[N, K, h, w, C]``).
      logits: the model output ``[N, num_classes]`` (``[N, h, w, C]`` for fully-convolutional models).
      layer_maps: ``{layer name: map}`` in network order, for methods that explain every layer.
      conservation: ``{layer name: total relevance per sample}`` when ``conservation=True``.
    """

    map: jax.Array
    relevance: jax.Array
    logits: jax.Array
    layer_maps: Mapping[str, jax.Array] | None = None
    conservation: Mapping[str, jax.Array] | None = None


# ----------------------------------------------------------------------------------------------
# top signals


def seed_fn(signal) -> Callable:
    """``(logits, onehot) -> cotangent on the logits`` for a top signal.

    ``onehot`` has the shape of the logits (one-hot on the class axis, broadcast over any spatial
    axes). ``"logit"``: the one-hot itself; ``"prob"`` / ``"log_prob"``: the one-hot pulled back
    through ``softmax`` / ``log_softmax``; ``"pointing"``: the one-hot weighted by the class score's
    softmax over spatial positions (``exp(s_c(u)) / Σ_u exp(s_c(u))``; 1 for non-spatial outputs;
    the weights are constants for gradients *of* maps);
    a callable ``f(logits) -> scores`` (same shape): the one-hot pulled back through ``f``.
    """
    if callable(signal):
        def seed(logits, onehot):
            _, vjp = jax.vjp(signal, logits)
            (ct,) = vjp(onehot.astype(logits.dtype))
            return ct

        return seed
    if signal == "logit":
        return lambda logits, onehot: onehot.astype(logits.dtype)
    if signal in ("prob", "log_prob"):
        f = jax.nn.softmax if signal == "prob" else jax.nn.log_softmax
        return seed_fn(lambda z: f(z, axis=-1))
    if signal == "pointing":
        def seed(logits, onehot):
            if logits.ndim <= 2:
                return onehot.astype(logits.dtype)
            axes = tuple(range(1, logits.ndim - 1))
            w = jax.nn.softmax(jax.lax.stop_gradient(logits), axis=axes)
            return (onehot * w).astype(logits.dtype)

        return seed
    raise ValueError(f"unknown signal {signal!r}; valid: {list(SIGNALS)} or a callable on the logits")


def _onehots(target, logits_shape, dtype):
    """``[N, K]`` targets -> ``[K, *logits_shape]`` one-hots broadcast over spatial axes."""
    c = logits_shape[-1]
    oh = jax.nn.one_hot(target.T, c, dtype=dtype)  # [K, N, C]
    extra = len(logits_shape) - 2
    oh = oh.reshape(oh.shape[:2] + (1,) * extra + (c,))
    return jnp.broadcast_to(oh, (target.shape[1],) + tuple(logits_shape))


# ----------------------------------------------------------------------------------------------
# the modified pass


class Context(NamedTuple):
    """What a method's ``run`` needs: the model, its traced program and layers, the static options."""

    model: Any
    variables: Any
    program: Any
    layers: tuple[LayerInfo, ...]
    layer: str | None
    signal: Any
    options: Mapping[str, Any]
    path: Any = None  # a PathDrive when a path method runs chunk by chunk (see attributor)
    strict: bool = False

    def info(self, name: str) -> LayerInfo:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)


class PathDrive(NamedTuple):
    """How a path method's accumulation runs when the attributor drives it chunk by chunk.

    ``mode="chunk"``: compute only chunk ``index`` (traced) and raise :class:`ChunkDone` with its
    weighted sums; ``info["chunks"]`` receives the number of chunks (static). ``mode="finish"``: the
    accumulation returns ``sums`` (the totals over all chunks) and the method finishes its map.
    """

    mode: str
    index: Any
    sums: Any
    info: dict


class ChunkDone(Exception):
    """Raised while tracing one chunk of a path method; carries that chunk's weighted sums."""

    def __init__(self, sums):
        super().__init__("chunk traced")
        self.sums = sums


class Pass(NamedTuple):
    """A modified pass's results; layer read-outs have their channels last (``LayerInfo.shape``)."""

    logits: jax.Array
    input: jax.Array | None  # [K, N, ...] cotangent at the input
    at: Mapping[str, jax.Array]  # [K, ...] cotangents at layer outputs
    acts: Mapping[str, jax.Array]  # captured layer outputs


def modified_pass(
    ctx: Context,
    x,
    target,
    *,
    rules: Mapping | None = None,
    at: Sequence[str] = (),
    input: bool = True,
    capture: Sequence[str] = (),
    signal=None,
    seeds: Callable | None = None,
    fold: bool = False,
) -> Pass:
    """Forward with rules, seed the top, one backward per target column (sharing the forward).

    Args:
      ctx: the method context.
      x: ``[N, H, W, C]`` input.
      target: ``[N, K]`` int targets.
      rules: ``{layer name: Rule}``; layers without one keep their ordinary gradient.
      at: layers whose output cotangent is returned (``Pass.at``).
      input: return the cotangent at the input (else the backward stops at the lowest ``at``).
      capture: layers whose forward outputs are returned (``Pass.acts``).
      signal: overrides ``ctx.signal``.
      seeds: overrides the seed: ``(logits, target) -> [K, *logits.shape]``.
      fold: hand each conv/dense rule its parameters with the batch-norm after it folded in.
    """
    infos = {l.name: l for l in ctx.layers}
    probes = {n: jnp.zeros(infos[n].native_shape, infos[n].dtype) for n in at}

    def fwd(x, probes):
        return run(ctx.program, ctx.variables, x, rules=rules, probes=probes, capture=capture, fold=fold)

    if input:
        logits, vjp, acts = jax.vjp(fwd, x, probes, has_aux=True)
    else:
        logits, vjp_p, acts = jax.vjp(lambda p: fwd(x, p), probes, has_aux=True)
        vjp = lambda ct: (None, *vjp_p(ct))  # noqa: E731
    if seeds is None:
        seed = seed_fn(ctx.signal if signal is None else signal)
        onehots = _onehots(target, logits.shape, logits.dtype)
        cts = jax.vmap(seed, in_axes=(None, 0))(logits, onehots)
    else:
        cts = seeds(logits, target)
    if cts.shape[0] == 1:
        x_ct, p_ct = jax.tree_util.tree_map(lambda a: a[None], vjp(cts[0]))
    else:
        x_ct, p_ct = jax.vmap(vjp)(cts)
    p_ct = {n: infos[n].to_channels_last(a, lead=1) for n, a in p_ct.items()}
    acts = {n: infos[n].to_channels_last(a) for n, a in acts.items()}
    return Pass(logits, x_ct if input else None, p_ct, acts)


# ----------------------------------------------------------------------------------------------
# validation


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
    from .methods import get_method

    m = get_method(method)
    m.check_options(options)
    if signal is None:
        signal = m.default_signal
    seed_fn(signal)  # validate early
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be a dotted layer name (str) or None, got {layer!r}")
    traces = {"scan": 0, "chunk": 0, "finish": 0}
    path_info: dict = {}

    def build(variables, x, target, drive=None):
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
        ctx = Context(model, variables, program, layers, use_layer, signal, dict(options), drive, strict)
        t2 = target if target.ndim == 2 else target[:, None]
        res = m.run(ctx, x, t2)
        if target.ndim == 1:
            first = lambda t: jax.tree_util.tree_map(lambda a: a[:, 0], t)  # noqa: E731
            res = res._replace(
                map=first(res.map),
                relevance=first(res.relevance),
                layer_maps=first(res.layer_maps),
                conservation=first(res.conservation),
            )
        return res

    def core(variables, x, target):
        traces["scan"] += 1
        return build(variables, x, target)

    def chunk_core(variables, x, target, index):
        traces["chunk"] += 1
        try:
            build(variables, x, target, PathDrive("chunk", index, None, path_info))
        except ChunkDone as done:
            return done.sums
        raise RuntimeError(f"method {m.name!r} is marked as a path method but accumulated nothing")

    def finish_core(variables, x, target, sums):
        traces["finish"] += 1
        return build(variables, x, target, PathDrive("finish", None, sums, path_info))

    jitted = jax.jit(core)
    jitted_chunk = jax.jit(chunk_core)
    jitted_finish = jax.jit(finish_core)
    out_cache: dict = {}

    def run_chunked(variables, x, target):
        sums, i = None, 0
        while True:
            part = jitted_chunk(variables, x, target, np.int32(i))
            sums = part if sums is None else jax.tree_util.tree_map(jnp.add, sums, part)
            i += 1
            if i >= path_info["chunks"]:
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
    fn.jitted_chunk = jitted_chunk  # path methods: (variables, x, target, i) -> chunk i's sums
    fn.method = m.name
    fn.layer = layer
    return fn


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
