"""The values the engine passes around: the :class:`Attribution` result, a method's
:class:`Context`, and the :class:`PathPlan` of a path method."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax

from .program import LayerInfo
from .tables import text_table

__all__ = ["Attribution", "Context", "PathPlan", "LayerTable"]


class LayerTable(tuple):
    """The layer table (:func:`xattr_jax.layers`): a tuple of :class:`~xattr_jax.program.LayerInfo`
    rows that prints as a table (name, kind, output shape, source line)."""

    def __repr__(self) -> str:
        rows = [(l.name, l.kind or "container", "×".join(map(str, l.shape)), l.source) for l in self]
        return text_table(rows, header=("name", "kind", "shape", "source")) or "(no layers)"

    __str__ = __repr__


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
      method: the method's name.
      layer: the layer that was read (``"input"`` for the input), also when it was the method's
        default.

    ``method`` and ``layer`` are static: they travel as the pytree's auxiliary data, not as leaves,
    so an ``Attribution`` passes through ``jit``, ``vmap`` and ``tree_map`` like its arrays.
    """

    map: jax.Array
    relevance: jax.Array
    logits: jax.Array
    layer_maps: Mapping[str, jax.Array] | None = None
    conservation: Mapping[str, jax.Array] | None = None
    method: str | None = None
    layer: str | None = None


_ARRAY_FIELDS = Attribution._fields[:5]
jax.tree_util.register_pytree_with_keys(
    Attribution,
    lambda a: (tuple((jax.tree_util.GetAttrKey(f), getattr(a, f)) for f in _ARRAY_FIELDS), (a.method, a.layer)),
    lambda aux, children: Attribution(*children, *aux),
    flatten_func=lambda a: (tuple(getattr(a, f) for f in _ARRAY_FIELDS), (a.method, a.layer)),
)


class Context(NamedTuple):
    """What a method's ``run`` needs: the model, its traced program and layers, the static options."""

    model: Any
    variables: Any
    program: Any
    layers: tuple[LayerInfo, ...]
    layer: str | None
    signal: Any
    options: Mapping[str, Any]
    strict: bool = False
    key: Any = None  # [N] per-example PRNG keys for methods that draw noise

    def info(self, name: str) -> LayerInfo:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)


class PathPlan(NamedTuple):
    """What a path method computes, declared; one driver runs it (:func:`xattr_jax.passes.run_path`).

    ``Σ_s w_s stat(∇_x S(x_s))`` over ``S`` points ``x_s``, ``chunk`` points at a time (memory
    ∝ ``chunk``, not ``S``), then ``finish(logits, sums) -> Attribution`` with ``[N, K, ...]``
    fields. Under tracing the chunks run in one ``lax.scan``; called with concrete arrays the
    attributor runs one compiled chunk program from a Python loop (faster on XLA:CPU).

    Attributes:
      points: ``params [c, ...] -> [c, *x.shape]``, the inputs of a chunk's ``c`` points, at
        which the gradients are taken.
      params: ``[S, ...]`` per-point parameters (path coefficients, noise keys or draws).
      weights: ``[S]`` quadrature weights.
      finish: ``(logits at x, tuple of [K, N, ...] sums) -> Attribution``.
      stat: ``g -> tuple`` of ``n_stats`` statistics of each gradient to sum.
      n_stats: how many statistics ``stat`` returns.
      chunk: points per vectorised step.
      rules: rules of the modified gradient (``None``: the ordinary gradient).
      signal: top signal (``None``: the context's).
    """

    points: Callable
    params: Any
    weights: Any
    finish: Callable
    stat: Callable = lambda g: (g,)
    n_stats: int = 1
    chunk: int = 8
    rules: Any = None
    signal: Any = None
