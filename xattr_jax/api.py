"""The public entry points: :func:`explain`, :func:`attributor` (an :class:`Attributor`) and :func:`layers`.

An *attributor* is one jit-compiled XLA program: forward pass with rules attached, seed at the
output, modified backward pass, read-out at a layer. The method, layer and options are static;
the target is a traced integer array, so a new target never retraces.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from types import MappingProxyType
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .methods import available, get_method
from .passes import seed_fn
from .program import call_model, trace
from .strategies import INPUT, Chunked, Setup, chunked, one_program, per_sample
from .types import Attribution, LayerTable

__all__ = ["explain", "attributor", "Attributor", "layers", "method_options", "INPUT"]


def _is_concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _check_order(variables, x):
    """Refuse ``(x, variables)`` given in place of ``(variables, x)``."""
    if getattr(variables, "ndim", None) == 4 and not hasattr(x, "ndim"):
        raise ValueError(
            f"x is a {type(x).__name__} and variables an array of shape {tuple(variables.shape)}: the arguments "
            "look swapped; call explain(model, variables, x, target) or fn(variables, x, target)"
        )


def _check_x(x):
    if not hasattr(x, "ndim") or x.ndim != 4:
        raise ValueError(
            f"x must be a rank-4 NHWC batch [N, H, W, C], got shape {getattr(x, 'shape', None)}; "
            "add a batch axis with x[None] for a single image"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be floating point (float32, bfloat16, float16, float64), got {x.dtype}; "
                        "convert with x.astype('float32')")
    if x.shape[0] == 0:
        raise ValueError(f"x is an empty batch (shape {tuple(x.shape)}); pass at least one image")
    if _is_concrete(x):
        with jax.ensure_compile_time_eval():
            bad = np.asarray(~jnp.all(jnp.isfinite(x), axis=(1, 2, 3)))
        if bad.any():
            raise ValueError(f"x contains NaN or Inf values (samples {np.flatnonzero(bad).tolist()[:8]}); "
                             "attribution needs finite inputs")


def _num_classes(out, n: int) -> int:
    """The number of classes of a model output ``out`` for a batch of ``n``, which must be one
    array ``[n, classes]`` (or ``[n, h, w, classes]``)."""
    if isinstance(out, Mapping):
        got = f"a dict with keys {sorted(map(str, out))}"
        fix = "return one entry, e.g. lambda v, x: f(v, x)['logits']"
    elif isinstance(out, (tuple, list)):
        shapes = ", ".join(str(tuple(getattr(o, "shape", ()))) for o in out)
        got = f"a {type(out).__name__} of {len(out)} ({shapes})"
        fix = "return the logits only, e.g. lambda v, x: f(v, x)[0]"
    elif not hasattr(out, "shape"):
        got, fix = f"a {type(out).__name__}", "return a JAX array of class scores"
    elif out.ndim < 2:
        got, fix = f"an array of shape {tuple(out.shape)}", "for one score per example return out[:, None] and target 0"
    elif out.shape[0] != n:
        got, fix = (f"an array of shape {tuple(out.shape)} for a batch of {n}",
                    "its first axis must be the batch (a model written for one example needs jax.vmap)")
    else:
        return out.shape[-1]
    raise ValueError(f"the model returned {got}; attribution needs one array of class scores [N, classes] "
                     f"(or [N, h, w, classes]): {fix}")


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
        with jax.ensure_compile_time_eval():
            t = np.asarray(target)
        if t.size and (t.min() < 0 or t.max() >= num_classes):
            bad = t[(t < 0) | (t >= num_classes)]
            raise ValueError(
                f"target out of range: {bad.tolist()[:8]} not in [0, {num_classes}) "
                f"(the model has {num_classes} outputs)"
            )


# ----------------------------------------------------------------------------------------------
# public API


@dataclasses.dataclass(frozen=True, eq=False)
class Attributor:
    """A method at a layer, jit-compiled: ``fn(variables, x, target, key=None) -> Attribution``.

    Made by :func:`attributor`. ``x`` float ``[N, H, W, C]`` (float32, bfloat16, float16 or float64;
    the map comes back in the dtype the model computes in), ``target`` int ``[N]`` or ``[N, K]``;
    ``key``: for methods that draw noise (SmoothGrad), one PRNG key for the batch (example ``i``
    draws from ``fold_in(key, i)``) or one per example ``[N]`` (example ``i`` draws exactly as a
    single-image call with ``key[i]``, so a ``vmap`` over examples with per-example keys equals the
    batched call); other methods ignore it.

    Inside the caller's transformations: ``fn`` works under ``jax.jit``, ``vmap``, ``grad``,
    ``lax.scan``/``lax.map``, with any argument traced or closed over; it is hashable (by identity)
    and not a pytree, like a function. Values are checked when they are concrete (a ``ValueError``
    for a non-finite input or a target out of range); under tracing they cannot be, and the map,
    relevance, layer maps and conservation totals of such an example are NaN instead, never a
    plausible map. The forward pass is the model's, so its logits are too.

    How a call runs (:mod:`xattr_jax.strategies`): traced arguments, one program (``program``).
    Concrete arrays: path methods (integrated gradients, GNL-IG, SmoothGrad) run one compiled
    program per chunk of points from a Python loop (``chunk_program``; every chunk also gives
    the logits), then a small program that finishes the map: on XLA:CPU a gradient inside a
    ``lax.scan`` body ran 1.4× (ResNet50) to 2.7× (VGG16) slower than the same gradient at top
    level (the loop body keeps the backward convolutions' kernels in a non-canonical layout), and
    an unrolled loop's memory grows with the points; both forms keep memory flat in the number of
    points and give the same numbers. RSP, whose rules build per-example kernels, runs one
    compiled batch-1 program per example on one device (compilation independent of the batch);
    sharded, one program for the whole batch. Every other call runs ``program``.

    Attributes:
      method: the method's name.
      layer: the layer asked for (``None``: the method's default; the result's ``layer`` names the
        layer read).
      program: the one-program form, ``jax.jit`` of ``(variables, x, target, key=None) ->
        Attribution`` with unchecked arguments (path methods: the chunks in a ``lax.scan``).
      chunk_program: path methods: the program an eager call runs per chunk, ``jax.jit`` of
        ``(variables, x, target, key, i) -> (chunk i's sums, logits at x, [C, 0] zeros for C
        chunks)``; ``None`` for other methods.
      finish_program: path methods: the program that then finishes the map, ``jax.jit`` of ``(x,
        target, key, logits, sums) -> Attribution`` (it does not run the model); ``None`` else.

    ``fn.lower(variables, x, target, key=None)`` lowers ``program`` for a call's arguments (checked
    and converted as the call does); ``fn.trace_count()`` tells how many times a program traced.

    Example:
      >>> fn = xa.attributor(model, "excitation_backprop", layer="features.23")
      >>> res = fn(variables, x, jnp.array([3, 7]))
      >>> fn.lower(variables, x, jnp.array([3, 7])).as_text()  # the one program's StableHLO
    """

    method: str
    layer: str | None
    program: Callable = dataclasses.field(repr=False)
    _setup: Setup = dataclasses.field(repr=False)
    _chunked: Chunked | None = dataclasses.field(repr=False)
    _traces: Counter = dataclasses.field(repr=False)
    _classes: dict = dataclasses.field(repr=False)  # (x shape, dtype) -> the model's number of classes

    @property
    def chunk_program(self) -> Callable | None:
        """Path methods' per-chunk program (see the class docstring); ``None`` for other methods."""
        return None if self._chunked is None else self._chunked.chunk

    @property
    def finish_program(self) -> Callable | None:
        """Path methods' program that finishes the map (see the class docstring); ``None`` else."""
        return None if self._chunked is None else self._chunked.finish

    def __call__(self, variables, x, target, key=None) -> Attribution:
        """The attribution of ``target`` at ``x``, its arguments checked (see the class docstring)."""
        variables, x, target, key = self._arguments(variables, x, target, key)
        leaves = jax.tree_util.tree_leaves((variables, x, target, key))
        if not any(isinstance(a, jax.core.Tracer) for a in leaves):
            if self._chunked is not None:
                return self._chunked(variables, x, target, key)
            m = self._setup.method
            if m.per_sample(self._setup.options) and x.shape[0] > 1 and len(x.sharding.device_set) == 1:
                return per_sample(self.program, variables, x, target, key)
        return self.program(variables, x, target, key)

    def lower(self, variables, x, target, key=None):
        """``program`` lowered for a call's arguments, checked and converted as the call does
        (``jax.jit``'s ``Lowered``: ``.as_text()``, ``.compile()``)."""
        return self.program.lower(*self._arguments(variables, x, target, key))

    def trace_count(self) -> int:
        """How many times a program was traced (the most over the programs): 1 after any number of
        calls with new target values."""
        return max(self._traces.values(), default=0)

    def _arguments(self, variables, x, target, key):
        """The call's arguments checked (their values too where concrete) and converted."""
        _check_order(variables, x)
        x = jnp.asarray(x) if _is_concrete(x) else x
        target = jnp.asarray(target) if _is_concrete(target) else target
        _check_x(x)
        _check_target(target, x.shape[0], self._num_classes(variables, x))
        return variables, x, target, _keys(self._setup.method, self._setup.options, key, x.shape[0])

    def _num_classes(self, variables, x) -> int:
        shape = (tuple(x.shape), str(x.dtype))
        if shape not in self._classes:
            out = jax.eval_shape(call_model(self._setup.model), variables, jax.ShapeDtypeStruct(x.shape, x.dtype))
            self._classes[shape] = _num_classes(out, x.shape[0])
        return self._classes[shape]


def attributor(model, method: str, layer: str | None = None, *, signal=None, strict: bool | None = None,
               compiler_options: Mapping[str, str | bool | int | float] | None = None, **options) -> Attributor:
    """An :class:`Attributor`: ``fn(variables, x, target, key=None) -> Attribution`` for ``method``
    at ``layer``, one jit-compiled program (forward with rules, seed, modified backward, read-out).

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
      strict: ``None`` (default): the relevance methods (``lrp``, ``excitation_backprop``,
        ``contrastive_excitation_backprop``, ``rsp``, ``attention_backprop``) refuse a model with
        operations outside their domain — ``lrp`` those of kind ``"other"``, the other four every
        kind but conv, dense, batch-norm, ReLU, pools, sums and gates — naming each group with its
        source line; the gradient family runs on any model. ``False``: every method runs, such
        operations keeping their ordinary gradient. ``True``: every method also refuses ``"other"``
        operations, and ``lrp`` conv/dense/ReLU/pool layers its composite leaves without a rule.
      compiler_options: XLA compiler options for the programs the attributor compiles (as
        ``jax.jit(..., compiler_options=)``; XLA rejects an unknown one when it compiles); under
        your own ``jit`` your compilation's options apply. On XLA:CPU,
        ``{"xla_cpu_experimental_ynn_fusion_type": ""}`` runs convolutions through XLA's older
        kernels instead of YNNPACK: measured faster for channels-last networks and slower for
        channels-first ones on a 2-core CPU (docs/accuracy.md#speed); docs/your_model.md#compilation
        gives a set that compiles convolutional networks faster (and transformers slower).
      **options: method options (static); unknown ones raise ``ValueError`` listing the valid ones.

    Returns:
      an :class:`Attributor` (the call, its arguments and how it runs are described there); the
      method, layer and options are static, the target a traced array, so a new target never
      retraces (``fn.trace_count()``).

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
    if compiler_options is not None and (
            not isinstance(compiler_options, Mapping)
            or not all(isinstance(k, str) and isinstance(v, (str, bool, int, float)) for k, v in compiler_options.items())):
        raise TypeError(f"compiler_options must map XLA option names (str) to str, bool, int or float values, "
                        f"e.g. {{'xla_cpu_experimental_ynn_fusion_type': ''}}; got {compiler_options!r}")
    setup = Setup(model, m, layer, signal, strict, MappingProxyType(dict(options)))
    traces = Counter()
    return Attributor(m.name, layer, one_program(setup, traces, compiler_options), setup,
                      chunked(setup, traces, compiler_options) if m.path else None, traces, {})


def _keys(m, options, key, n):
    """The call's ``key=`` as one PRNG key (``[]``) or one per example (``[n]``), checked; ``None``
    for methods that draw no noise (they ignore a key, so one loop can call every method)."""
    if not m.random or options.get("draws") is not None:
        return None
    if key is None:
        raise ValueError(
            f"method {m.name!r} draws noise: pass key=jax.random.key(seed) (one key for the batch) or "
            f"one key per example, shape [{n}] (as under jax.vmap)")
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jax.random.key(int(key))
    key = jnp.asarray(key) if _is_concrete(key) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
            key = jax.random.wrap_key_data(key)
        else:
            raise TypeError(f"key must be a PRNG key (jax.random.key(seed)) or an int seed, got {key.dtype} "
                            f"{tuple(key.shape)}")
    if key.shape not in ((), (n,)):
        raise ValueError(f"key must be one key or one per example (shape [{n}]), got shape {tuple(key.shape)}")
    return key


def _hashable(obj) -> bool:
    try:
        hash(obj)
        return True
    except TypeError:
        return False


@functools.lru_cache(maxsize=64)
def _cached_attributor(model, method, layer, signal, strict, items):
    return attributor(model, method, layer, signal=signal, strict=strict, **dict(items))


def explain(model, variables, x, target, method: str = "gradient", layer: str | None = None, *, signal=None,
            key=None, strict: bool | None = None, **options) -> Attribution:
    """Explain ``model`` on ``x`` for ``target`` with ``method``; see :func:`attributor`.

    ``key`` is the PRNG key of methods that draw noise (SmoothGrad); other methods ignore it.
    Attributors are cached per (model, method, layer, options) when those are hashable, so calling
    ``explain`` in a loop compiles once; options compare by value (composites and rules by their
    hyperparameters), so different composites never share a program.

    Example:
      >>> res = xa.explain(model, variables, x, jnp.array([3]), method="excitation_backprop",
      ...                  layer="features.23")
      >>> res.map.shape  # [1, 14, 14]
    """
    items = tuple(sorted(options.items()))
    if _hashable((model, signal, items)):
        fn = _cached_attributor(model, method, layer, signal, strict, items)
    else:
        fn = attributor(model, method, layer, signal=signal, strict=strict, **options)
    return fn(variables, x, target, key=key)


def layers(model, variables, x) -> LayerTable:
    """The layer table of ``model`` on inputs shaped like ``x``: one :class:`~xattr_jax.program.LayerInfo`
    per layer in program order (``name``, ``kind``, ``shape``, ``source``, ...), containers included.
    It prints as a table and iterates as a tuple of rows.

    The names are what ``layer=``, composites' ``path()`` globs and every method's default layer
    refer to (naming scheme: :mod:`xattr_jax.program`). Layers of kind ``"other"`` have no rule:
    they keep their ordinary gradient, and ``strict=True`` refuses them.

    Example:
      >>> xa.layers(model, variables, x)           # the table
      >>> [l.name for l in xa.layers(model, variables, x) if l.kind == "conv"]
    """
    _check_order(variables, x)
    return LayerTable(trace(model, variables, x).layers)


def method_options(method: str) -> str:
    """``method``'s options as a text table: name, default, meaning (checked when an attributor is built).

    Example:
      >>> print(xa.method_options("smoothgrad"))
    """
    return get_method(method).option_table()


def _options_doc() -> str:
    parts = ["\n    Method options (``xa.method_options(name)``)::\n"]
    for name in available():
        parts.append(f"      {name}:")
        parts += [f"        {line}" for line in get_method(name).option_table().splitlines()]
    return "\n".join(parts) + "\n"


explain.__doc__ += _options_doc()
