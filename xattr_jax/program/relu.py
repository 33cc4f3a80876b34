"""Rectifiers written as ``custom_jvp`` functions (``jax.nn.relu``, ``jax.nn.relu6``)."""

from __future__ import annotations

import numpy as np
from jax.extend import core as jcore

from .ir import INLINE_CALLS, VALUE_IDENTITY


def _is_literal_zero(a, zeros=()) -> bool:
    return (isinstance(a, jcore.Literal) and np.all(np.asarray(a.val) == 0)) or a in zeros


def _jaxpr(cj):
    return cj.jaxpr if hasattr(cj, "jaxpr") else cj


def is_relu_jaxpr(cj) -> bool:
    """``custom_jvp_call``'s program is a rectifier: ``max(x, 0)`` (``jax.nn.relu``), or
    ``min(max(x, 0), c)`` with a constant ``c > 0`` (``jax.nn.relu6``), possibly inside a ``jit``."""
    j = _jaxpr(cj)
    if len(j.invars) != 1 or not j.eqns:
        return False
    zeros = set()  # shard_map marks the literal 0 as varying first: pvary(0.0)
    eqns = list(j.eqns)
    while eqns and eqns[0].primitive.name in VALUE_IDENTITY:
        if not all(_is_literal_zero(a) for a in eqns[0].invars):
            return False
        zeros.update(eqns.pop(0).outvars)
    if len(eqns) == 1 and eqns[0].primitive.name in INLINE_CALLS:
        return is_relu_jaxpr(eqns[0].params[INLINE_CALLS[eqns[0].primitive.name]])
    if not eqns or eqns[0].primitive.name != "max" or len(eqns) > 2:
        return False
    a, b = eqns[0].invars
    other = b if a is j.invars[0] else a if b is j.invars[0] else None
    if other is None or not _is_literal_zero(other, zeros):
        return False
    if len(eqns) == 1:
        return True
    c, d = eqns[1].invars
    bound = d if c is eqns[0].outvars[0] else c
    return (eqns[1].primitive.name == "min" and isinstance(bound, jcore.Literal)
            and np.size(bound.val) == 1 and float(np.asarray(bound.val)) > 0)


def rectifier_bound(cj) -> bool:
    """A ``custom_jvp`` rectifier with an upper bound (``relu6``)."""
    return any(e.primitive.name == "min" or e.primitive.name in INLINE_CALLS and rectifier_bound(
        e.params[INLINE_CALLS[e.primitive.name]]) for e in _jaxpr(cj).eqns)
