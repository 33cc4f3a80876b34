"""Canonizers: output-preserving rewrites that put a network in the form a rule set expects.

``fold_batchnorm`` folds every batch-norm into the conv/dense layer that feeds it:

    W' = W · γ/√(σ² + ε),      b' = (b − μ) · γ/√(σ² + ε) + β,

so ``BN(conv(x; W, b)) = conv(x; W', b')``. The rewrite is applied where rules see it: the folded
parameters are handed to the conv/dense *rule* and the batch-norm passes the signal through, while
the forward pass runs the original layers untouched (so the model output is exactly unchanged).
This is what LRP's composites need on VGG-BN and ResNets (Zennit's ``SequentialMergeBatchNorm``).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from .interpret.interceptor import LayerInfo

__all__ = ["Folded", "fold_batchnorm", "layer_variables"]


class Folded(NamedTuple):
    """Result of :func:`fold_batchnorm`: folded parameters per conv/dense and the folded BN names."""

    params: Mapping[str, dict]  # {conv name: {'kernel': W', 'bias': b'}}
    batchnorms: tuple  # names of the batch-norm layers folded away


def layer_variables(variables, name: str, collection: str = "params") -> dict:
    """The variables of layer ``name`` (dotted) in ``collection``; ``{}`` if it has none."""
    node = variables.get(collection, {})
    for part in name.split("."):
        if part not in node:
            return {}
        node = node[part]
    return dict(node)


def fold_batchnorm(layers: Sequence[LayerInfo], variables) -> Folded:
    """Fold each batch-norm into the conv/dense layer whose output is its input.

    Args:
      layers: the traced layers (``trace_layers``), which carry the data flow between layers.
      variables: the model variables (``params`` and ``batch_stats``).

    Returns:
      :class:`Folded`. A batch-norm whose input is not a conv/dense output (or that feeds from a
      layer called more than once) is left alone.
    """
    by_out = {l.output: l for l in layers if l.kind in ("conv", "dense") and l.calls == 1}
    folded, bns = {}, []
    for bn in layers:
        if bn.kind != "batchnorm" or bn.calls != 1 or len(bn.inputs) != 1:
            continue
        lin = by_out.get(bn.inputs[0])
        if lin is None:
            continue
        eps = dict(bn.meta)["epsilon"]
        p = layer_variables(variables, lin.name)
        bp = layer_variables(variables, bn.name)
        st = layer_variables(variables, bn.name, "batch_stats")
        inv = jax.lax.rsqrt(st["var"] + eps)
        scale = bp.get("scale", jnp.ones_like(st["var"])) * inv
        kernel = p["kernel"] * scale.reshape((1,) * (p["kernel"].ndim - 1) + (-1,))
        bias = p.get("bias", jnp.zeros_like(st["mean"]))
        bias = (bias - st["mean"]) * scale + bp.get("bias", jnp.zeros_like(st["mean"]))
        folded[lin.name] = {"kernel": kernel, "bias": bias}
        bns.append(bn.name)
    return Folded(folded, tuple(bns))
