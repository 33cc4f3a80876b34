"""The values the engine passes around: the :class:`Attribution` result, a method's
:class:`Context`, and the :class:`PathPlan` of a path method."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax

from .program import LayerInfo

__all__ = ["Attribution", "Context", "PathPlan"]


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

    ``Σ_s w_s stat(∇_x S(point(params_s)))`` over ``S`` points, ``chunk`` points at a time (memory
    ∝ ``chunk``, not ``S``), then ``finish(logits, sums) -> Attribution`` with ``[N, K, ...]``
    fields. Under tracing the chunks run in one ``lax.scan``; called with concrete arrays the
    attributor runs one compiled chunk program from a Python loop (faster on XLA:CPU).

    Attributes:
      point: ``params_s -> x_s``, the input at which the gradient is taken.
      params: ``[S, ...]`` per-point parameters (path coefficients, noise keys or draws).
      weights: ``[S]`` quadrature weights.
      finish: ``(logits at x, tuple of [K, N, ...] sums) -> Attribution``.
      stat: ``g -> tuple`` of ``n_stats`` statistics of each gradient to sum.
      n_stats: how many statistics ``stat`` returns.
      chunk: points per vectorised step.
      rules: rules of the modified gradient (``None``: the ordinary gradient).
      signal: top signal (``None``: the context's).
    """

    point: Callable
    params: Any
    weights: Any
    finish: Callable
    stat: Callable = lambda g: (g,)
    n_stats: int = 1
    chunk: int = 8
    rules: Any = None
    signal: Any = None
