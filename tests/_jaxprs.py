"""Reading compiled-program structure in tests: how many times primitives occur in a jaxpr."""

from __future__ import annotations

import collections

import jax


def primitive_counts(jaxpr, names) -> collections.Counter:
    """How often each primitive in ``names`` occurs in ``jaxpr``, sub-jaxprs (jit, custom_jvp
    calls, ...) included."""
    out = collections.Counter({n: 0 for n in names})
    for e in jaxpr.eqns:
        if e.primitive.name in out:
            out[e.primitive.name] += 1
        for v in e.params.values():
            sub = v.jaxpr if isinstance(v, jax.extend.core.ClosedJaxpr) else v
            if isinstance(sub, jax.extend.core.Jaxpr):
                out.update(primitive_counts(sub, names))
    return out
