"""Every refusal the engine makes while reading a program, in one place: operations that need
the model in inference mode, channels-first inputs, operations outside a method's domain."""

from __future__ import annotations

import re

from .ir import BATCH_MIXING_OPS, LINEAR, RNG_OPS


def refuse_training_mode(op, facts, shapes, x_batch) -> None:
    """Refuse random numbers and reductions over the batch axis on the way from x to the output."""
    name = op.prim.name
    if name in RNG_OPS:
        raise ValueError(
            "the model draws random numbers on the way from x to its output (dropout or noise in "
            "training mode); attribution needs the model in inference mode: linen "
            "deterministic=True / train=False, NNX model.eval(), Equinox eqx.nn.inference_mode(model)"
        )
    if name not in BATCH_MIXING_OPS or not facts.depends_on_x(op.ins[0]):
        return
    axes = op.params.get("axes", (op.params.get("axis"),))
    in_shape = shapes[op.ins[0]][0]
    if 0 in tuple(a for a in axes if a is not None) and in_shape and in_shape[0] == x_batch and x_batch > 1:
        raise ValueError(
            f"the model reduces over the batch axis ({name} at {op.source}): its output for one "
            "sample depends on the others, as batch-norm in training mode does; call the model in "
            "inference mode (linen use_running_average=True / train=False, NNX model.eval(), "
            "Equinox eqx.nn.inference_mode(model))"
        )


def describe(layers, limit: int = 8) -> str:
    """Layers grouped by kind, main primitive and source line, one group per line:
    ``12× activation (integer_pow) at model.py:40 (blocks.*.mlp.activation_0)``."""
    groups: dict = {}
    for l in layers:
        groups.setdefault((l.kind, l.type_name, l.source), []).append(l.name)
    lines = []
    for (k, t, src), names in groups.items():
        pats = sorted({re.sub(r"\d+", "*", n) for n in names})
        where = ", ".join(names) if len(names) <= 3 else ", ".join(pats[:3]) + (", ..." if len(pats) > 3 else "")
        lines.append(f"  {len(names)}× {k} ({t}) at {src or 'unknown source'} ({where})")
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more groups"]
    return "\n".join(lines)


def check_strict(layers) -> None:
    """Refuse operations without a rule on the way from x to the output (``strict=True``)."""
    other = [l for l in layers if l.kind == "other"]
    if other:
        raise ValueError(
            f"strict mode: {len(other)} operation(s) between x and the output have no rule:\n{describe(other)}\n"
            "They would keep their ordinary gradient; rewrite them with operations of a known kind "
            "(xattr_jax.program.KINDS), or pass strict=False to accept the gradient there."
        )


def check_domain(layers, kinds, method: str, reason: str, fix: str) -> None:
    """Refuse layers whose kind is not in ``kinds`` (a method's domain), naming each group."""
    out = [l for l in layers if l.kind is not None and l.kind not in kinds]
    if out:
        raise ValueError(f"{method} {reason}; this model has {len(out)} layer(s) outside it:\n{describe(out)}\n{fix}")


def check_channels_last(segs, names, ops, shapes, axes) -> None:
    """Refuse an input whose last axis the model's first convolution reads as a spatial axis.

    ``axes`` holds each value's channel axis with x's taken as last (NHWC); an NCHW model given
    NCHW ``x`` feeds x's last axis (width) to its first convolution as a spatial axis, and every
    map would come back ``[N, C, W]``.
    """
    first = next((i for i, s in enumerate(segs) if s.kind in LINEAR), None)
    if first is None or segs[first].kind != "conv":
        return
    seg = segs[first]
    op = ops[seg.ops[0]]
    lhs = op.params["dimension_numbers"].lhs_spec
    a = axes.get(seg.inputs[0])
    if a is None or a == lhs[1]:
        return
    shape = shapes[seg.inputs[0]][0]
    raise ValueError(
        f"x must be NHWC [N, H, W, C]: the model's first convolution ({names[first]} at "
        f"{op.source or 'unknown source'}) reads x's last axis as a spatial axis and the axis of size "
        f"{shape[lhs[1]]} as its channels, so x is laid out channels-first (NCHW) and every map would be "
        "[N, C, W]. Pass x as NHWC and transpose inside your function, e.g. "
        "lambda v, x: f(v, x.transpose(0, 3, 1, 2))"
    )
