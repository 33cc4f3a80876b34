"""How an attributor runs a method: as one program, chunk by chunk, or one example at a time.

Every strategy is made from a :class:`Setup` (the model, the method and the attributor's static
arguments) and jit-compiles its programs. A program that runs the model traces it once (a path
method's points again at their batch, :func:`~xattr_jax.passes.path_sums`), the program that
finishes a chunked path not at all; each counts its traces in a ``Counter`` the attributor reads
(``traces[name] += 1`` in its body):

* :func:`one_program`: the whole method as one program (path methods: their chunks in a
  ``lax.scan``); what runs inside the caller's ``jit``/``vmap``/``grad``, and for most eager calls.
* :class:`Chunked` (path methods called with concrete arrays): one compiled chunk program from a
  Python loop (on XLA:CPU a gradient inside a ``lax.scan`` body ran 1.4× (ResNet50) to 2.7×
  (VGG16) slower than at top level), each chunk also giving the logits, then a small program
  that finishes the map from the sums without the model.
* :func:`per_sample` (RSP called with concrete arrays on one device): one compiled batch-1 program
  per example, so compilation does not grow with the batch.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .passes import path_chunks, path_sums, run_path
from .program import check_strict, run, trace
from .types import Attribution, Context, PathPlan

__all__ = ["INPUT", "Setup", "one_program", "Chunked", "chunked", "per_sample"]

INPUT = "input"  # the layer name that always means the network's input


class Setup(NamedTuple):
    """What an attributor is built from, checked: the model, the method (a ``Method``), the layer
    asked for (``None``: the method's default), the top signal, ``strict`` and the method's options."""

    model: Any
    method: Any
    layer: str | None
    signal: Any
    strict: bool | None
    options: Mapping[str, Any]

    def context(self, variables, x, key) -> Context:
        """Trace the model on ``(variables, x)``, resolve the layer and check the model's domain.

        Raises:
          ValueError: unknown layer (lists the valid names); a model outside the method's domain.
        """
        program = trace(self.model, variables, x)
        layers = program.layers
        names = [l.name for l in layers]
        layer = self.layer if self.layer is not None else self.method.default_layer(layers)
        if layer == INPUT and INPUT not in names:
            layer = None  # the input, also for methods whose default is a hidden layer
        if layer is not None and layer not in names:
            raise ValueError(f"unknown layer {layer!r}; valid layer names: {[INPUT] + names}")
        if self.strict:
            check_strict(layers)
        if self.strict is not False:
            self.method.check_domain(layers)
        return Context(self.model, variables, program, layers, layer, self.signal, dict(self.options),
                       bool(self.strict), _example_keys(key, x.shape[0]))

    def plan_context(self, x, key) -> Context:
        """A context without the model's program, for a path plan's ``finish``, which reads ``x``, the
        options and the key only (path methods read the input; the chunk program checked the layer)."""
        return Context(self.model, None, None, (), None, self.signal, dict(self.options), bool(self.strict),
                       _example_keys(key, x.shape[0]))

    def result(self, res: Attribution, x, target, layer: str | None) -> Attribution:
        """``res`` (``[N, K]`` fields) as a call returns it for ``target`` ``[N]`` or ``[N, K]``."""
        return _squeeze(_finish(res, x, _columns(target), self.method.name, layer), target)


def _jit(f, compiler_options):
    """``jax.jit(f)``, with XLA ``compiler_options`` where given (they apply when the program is
    compiled on its own; under a caller's ``jit`` the caller's compilation decides)."""
    return jax.jit(f) if not compiler_options else jax.jit(f, compiler_options=dict(compiler_options))


def one_program(setup: Setup, traces: Counter, compiler_options=None) -> Callable:
    """The method as one jit-compiled program ``(variables, x, target, key=None) -> Attribution``,
    its arguments unchecked; a path method's plan runs as a ``lax.scan`` over its chunks."""

    def attribute(variables, x, target, key=None):
        traces["one"] += 1
        ctx = setup.context(variables, x, key)
        res = setup.method.run(ctx, x, _columns(target))
        if isinstance(res, PathPlan):
            res = run_path(ctx, x, _columns(target), res)
        return setup.result(res, x, target, ctx.layer)

    return _jit(attribute, compiler_options)


class Chunked(NamedTuple):
    """A path method run chunk by chunk (concrete arrays): ``chunk`` once per chunk of points from
    a Python loop that sums them, then ``finish``.

    Attributes:
      chunk: jit ``(variables, x, target, key, i) -> (chunk i's sums, logits at x, [C, 0] zeros
        whose shape tells the number of chunks C)``. Every chunk runs the forward at ``x`` (a few %
        of a chunk's time); selecting it for the first chunk only with ``lax.cond`` doubled the
        program's compile time on XLA:CPU (MobileNetV2: 2.9 s against 1.8 s).
      finish: jit ``(x, target, key, logits, sums) -> Attribution``; it does not run the model.
    """

    chunk: Callable
    finish: Callable

    def __call__(self, variables, x, target, key) -> Attribution:
        sums, logits, count = self.chunk(variables, x, target, key, np.int32(0))
        for i in range(1, count.shape[0]):
            part, _, _ = self.chunk(variables, x, target, key, np.int32(i))
            sums = jax.tree_util.tree_map(jnp.add, sums, part)
        return self.finish(x, target, key, logits, sums)


def chunked(setup: Setup, traces: Counter, compiler_options=None) -> Chunked:
    """The :class:`Chunked` programs of a path method."""

    def chunk(variables, x, target, key, index):
        traces["chunk"] += 1
        ctx = setup.context(variables, x, key)
        plan = setup.method.run(ctx, x, _columns(target))
        params, weights = path_chunks(plan)
        pick = lambda a: jax.lax.dynamic_index_in_dim(a, index, keepdims=False)  # noqa: E731
        sums = path_sums(ctx, plan, _columns(target), pick(params), pick(weights))
        return sums, run(ctx.program, ctx.variables, x)[0], jnp.zeros((weights.shape[0], 0), x.dtype)

    def finish(x, target, key, logits, sums):
        traces["finish"] += 1
        plan = setup.method.run(setup.plan_context(x, key), x, _columns(target))
        return setup.result(plan.finish(logits, sums), x, target, None)

    return Chunked(_jit(chunk, compiler_options), _jit(finish, compiler_options))


def per_sample(program: Callable, variables, x, target, key) -> Attribution:
    """``program`` on one example at a time (one compiled batch-1 program), results concatenated."""
    parts = [program(variables, x[i:i + 1], target[i:i + 1], key) for i in range(x.shape[0])]
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *parts)


# ----------------------------------------------------------------------------------------------
# the result


def _example_keys(key, n):
    """Example ``i``'s key: ``fold_in(key, i)`` for one key, ``fold_in(key[i], 0)`` for ``[n]`` keys, so
    a batch with keys ``[n]`` and a vmap of single-image calls with the same keys draw the same noise."""
    if key is None:
        return None
    if key.shape == ():
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return jax.vmap(lambda k: jax.random.fold_in(k, 0))(key)


def _finish(res: Attribution, x, target, method: str, layer: str | None) -> Attribution:
    """The result in ``x``'s dtype, named by its method and layer, with NaN maps for examples with a
    non-finite input or a target out of range (``[N, K]`` fields).

    Values are checked eagerly when they are concrete; under the caller's ``jit``/``vmap``/``grad``
    they are not, and this makes a bad example's map NaN instead of a plausible (e.g. all-zero) map.
    """
    c = res.logits.shape[-1]
    finite = jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))
    bad = ~finite[:, None] | (target < 0) | (target >= c)  # [N, K]

    def mask(a):
        a = a.astype(x.dtype)
        return jnp.where(bad.reshape(bad.shape + (1,) * (a.ndim - 2)), jnp.asarray(jnp.nan, a.dtype), a)

    t = lambda tree: jax.tree_util.tree_map(mask, tree)  # noqa: E731
    return res._replace(map=t(res.map), relevance=t(res.relevance), layer_maps=t(res.layer_maps),
                        conservation=t(res.conservation), method=method, layer=layer or INPUT)


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
