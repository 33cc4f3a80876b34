"""The passes every method is built from: top signals, one modified forward + backward pass,
the two-phase pass of seeded methods, and the driver of path methods' plans.

A pass runs the model's traced program (:func:`xattr_jax.program.run`) with rules attached, seeds
the output, pulls the seed back once per target column (sharing the forward) and reads the
signal at probes added to layer outputs; read-outs have their channels last.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from .program import run, run_above, trace
from .rules.core import upcast
from .types import Context, PathPlan

__all__ = ["SIGNALS", "Pass", "seed_fn", "onehots", "modified_pass", "two_phase_pass", "path_chunks",
           "path_sums", "run_path"]

SIGNALS = ("logit", "prob", "log_prob", "pointing")


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


def onehots(target, logits_shape, dtype):
    """``[N, K]`` targets -> ``[K, *logits_shape]`` one-hots broadcast over spatial axes."""
    c = logits_shape[-1]
    oh = jax.nn.one_hot(target.T, c, dtype=dtype)  # [K, N, C]
    extra = len(logits_shape) - 2
    oh = oh.reshape(oh.shape[:2] + (1,) * extra + (c,))
    return jnp.broadcast_to(oh, (target.shape[1],) + tuple(logits_shape))


def _probes(x, infos, names):
    """Zeros added to the named layers' outputs, typed like ``x`` and batched like it: under
    ``shard_map`` a probe that were not varying over the mesh like the activations would be
    broadcast to them, and on a batch-sharded mesh a replicated probe's cotangent (the read-out)
    would be gathered from every device; a per-example zero broadcast from ``x`` keeps both local."""
    per_example = jnp.squeeze(jnp.zeros_like(x)[(slice(None),) + (slice(0, 1),) * (x.ndim - 1)],
                              axis=tuple(range(1, x.ndim)))

    def probe(info):
        shape = tuple(info.native_shape)
        if not shape or shape[0] != x.shape[0]:
            return jnp.zeros_like(x, shape=shape, dtype=info.dtype)
        return jax.lax.broadcast_in_dim(per_example.astype(info.dtype), shape, (0,))

    return {n: probe(infos[n]) for n in names}


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
    sums: Sequence[str] = (),
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
      sums: layers of ``at`` whose read-out is the sum over channels (as :func:`two_phase_pass`).
    """
    infos = {l.name: l for l in ctx.layers}
    probes = _probes(x, infos, at)

    def fwd(x, probes):
        return run(ctx.program, ctx.variables, x, rules=rules, probes=probes, capture=capture, fold=fold)

    # always with respect to x too: were x closed over here, a caller's grad w.r.t. x would go through
    # the custom_vjp of every layer below the probes with their *rules* as the derivative; unused,
    # the input cotangent is dead code in the compiled program
    logits, vjp, acts = jax.vjp(fwd, x, probes, has_aux=True)
    if seeds is None:
        seed = seed_fn(ctx.signal if signal is None else signal)
        cts = jax.vmap(seed, in_axes=(None, 0))(logits, onehots(target, logits.shape, logits.dtype))
    else:
        cts = seeds(logits, target)
    if cts.shape[0] == 1:
        x_ct, p_ct = jax.tree_util.tree_map(lambda a: a[None], vjp(cts[0]))
    else:
        x_ct, p_ct = jax.vmap(vjp)(cts)
    return _read_out(infos, logits, x_ct if input else None, p_ct, acts, sums)


def _read_out(infos, logits, x_ct, p_ct, acts, sums=()) -> Pass:
    """A pass's results with the layer read-outs' channels last; those named in ``sums`` summed
    over their channels instead (in the layout the program holds them: no transpose)."""
    p_ct = {n: _channel_sum(infos[n], a) if n in sums else infos[n].to_channels_last(a, lead=1)
            for n, a in p_ct.items()}
    acts = {n: infos[n].to_channels_last(a) for n, a in acts.items()}
    return Pass(logits, x_ct, p_ct, acts)


def _channel_sum(info, a):
    """``a [K, *native shape]`` summed over ``info``'s channel axis (the last where it is unknown,
    as :meth:`LayerInfo.to_channels_last` takes it), in the compute dtype."""
    c = info.channel_axis
    return jnp.sum(upcast(a), axis=-1 if c is None else 1 + c)


def two_phase_pass(ctx: Context, x, target, *, seed_layer: str, seed: Callable, rules=None,
                   at=(), input: bool = True, fold: bool = False, vmap_targets: bool = True, sums=()):
    """Seed at ``seed_layer`` from ordinary gradients, then propagate down with ``rules``; one forward.

    One forward pass with ``rules`` attached (give rules only to layers *below* ``seed_layer``, so the
    layers above it keep their ordinary gradient) is differentiated as
    ``f(x, probes) = (logits, A)`` with ``A`` the output of ``seed_layer``:

    1. ``grad(cts)`` pulls ``(cts_j, 0)`` back for logits cotangents ``cts [J, *logits.shape]`` and
       returns the signal at the ``seed_layer`` probe, ``[J, *A.shape]`` (for one-hot cotangents:
       ``∂y_c/∂A``, the ordinary gradient). Only the part above ``seed_layer`` is computed (under
       jit the rest is dead code).
    2. ``R0 = seed(grad, A, logits, target)``: ``[K, *A.shape]``, the seed for each target column.
    3. ``(0, R0_k)`` is pulled back (``vmap`` over k): the relevance at every ``at`` probe and the input.

    Args:
      ctx, x, target: as :func:`modified_pass` (``target`` ``[N, K]``).
      seed_layer: name of a layer called once per forward.
      seed: ``(grad, A, logits, target) -> R0 [K, *A.shape]``.
      rules: ``{layer name: Rule}``.
      at: layers whose output relevance is returned (``Pass.at``; ``seed_layer`` is always there and
        holds ``R0``).
      input: also return the relevance at the input.
      fold: fold batch-norms into the conv/dense before them for the rules (canonizer).
      vmap_targets: pull the K seeds back in one vmapped pass (default) or one pass per column,
        stacked (for rules whose backward builds per-sample kernels: batching those over K turns
        them into grouped convolutions, which XLA:CPU runs far slower).
      sums: layers of ``at`` (with a channel axis) whose read-out is the sum over channels,
        ``[K, N, *spatial]`` in the compute dtype (per-layer maps without transposing the signal).

    Returns:
      a ``Pass`` (``logits``, ``input [K, N, ...]``, ``at {name: [K, N, ...]}``, ``acts`` with
      ``seed_layer``'s output).
    """
    infos = {l.name: l for l in ctx.layers}
    names = [seed_layer] + [n for n in at if n != seed_layer]
    probes = _probes(x, infos, names)

    def fwd(x, probes):
        out, acts, values = run(ctx.program, ctx.variables, x, rules=rules, probes=probes,
                                capture=[seed_layer], fold=fold, keep=True)
        return (out, acts[seed_layer]), (acts, values)

    (logits, a), vjp, (acts, values) = jax.vjp(fwd, x, probes, has_aux=True)  # w.r.t. x: see modified_pass
    # the seed's gradient from the layers above the seed alone: pulled back through ``vjp`` it would
    # trace the (dead) backward of every rule below the seed as well
    _, above = jax.vjp(lambda a: run_above(ctx.program, values, seed_layer, a, rules=rules, fold=fold), a)
    r0 = _seed_relevance(lambda c: above(c)[0], infos[seed_layer], seed, logits, a, target)
    zero_l = jnp.zeros_like(logits)

    def pull(r):
        return vjp((zero_l, r.astype(a.dtype)))

    if vmap_targets:
        x_ct, p_ct = jax.vmap(pull)(r0)
    else:
        cols = [pull(r0[k]) for k in range(r0.shape[0])]
        x_ct, p_ct = jax.tree_util.tree_map(lambda *c: jnp.stack(c), *cols)
    return _read_out(infos, logits, x_ct if input else None, p_ct, acts, sums)


def _seed_relevance(pull, seed_info, seed: Callable, logits, a, target):
    """Steps 1 and 2 of :func:`two_phase_pass`: ``R0 [K, *A.shape]`` from ``seed(grad, A, logits,
    target)``, ``grad`` pulling logits cotangents back to the seed layer's output with ``pull``
    (ordinary gradients)."""

    def grad(cts):
        g = jax.vmap(lambda c: pull(c.astype(logits.dtype)))(cts)
        return seed_info.to_channels_last(g, lead=1)

    # not stop-gradiented: maps stay differentiable through the seed; computed in at least float32
    r0 = seed(lambda cts: upcast(grad(cts)), upcast(seed_info.to_channels_last(a)), upcast(logits), target)
    return seed_info.from_channels_last(r0, lead=1)


# ----------------------------------------------------------------------------------------------
# path methods


def path_chunks(plan: PathPlan):
    """``(params [C, c, ...], weights [C, c])``: the plan's points in ``C`` chunks of ``c``; the last
    chunk is padded with weight-0 copies of the first point."""
    chunk = int(plan.chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    params, weights = plan.params, plan.weights
    s = weights.shape[0]
    c = min(chunk, s)
    pad = (-s) % c
    if pad:
        params = jnp.concatenate([params, jnp.repeat(params[:1], pad, axis=0)], axis=0)
        weights = jnp.concatenate([weights, jnp.zeros((pad,), weights.dtype)])
    return params.reshape((-1, c) + params.shape[1:]), weights.reshape(-1, c)


def path_sums(ctx: Context, plan: PathPlan, target, params, weights, acc=None):
    """The weighted statistics of one chunk (``params [c, ...]``, ``weights [c]``) added to ``acc``.

    The chunk's ``c`` points of all ``N`` examples run as one batch of ``N·c`` inputs, example-major
    (example ``i``'s points are rows ``i·c … i·c + c − 1``; the model is traced at that batch), so a
    batch sharded over its examples stays sharded the same way and no data crosses devices. (A
    ``vmap`` over the points would have JAX's batching of a convolution fold the points axis into
    the batch axis points-major: a reshape across the sharded axis.)
    """
    xs = plan.points(params)  # [c, N, ...]
    c, n = xs.shape[:2]
    big = ctx
    xb = xs[0]
    if c > 1:
        xb = jnp.moveaxis(xs, 0, 1).reshape((n * c,) + xs.shape[2:])
        program = trace(ctx.model, ctx.variables, xb)
        big = ctx._replace(program=program, layers=program.layers)
    tb = jnp.broadcast_to(target[:, None], (n, c) + target.shape[1:]).reshape((n * c,) + target.shape[1:])
    g = modified_pass(big, xb, tb, rules=plan.rules, signal=plan.signal).input  # [K, N·c, ...]
    g = g.reshape((g.shape[0], n, c) + g.shape[2:])
    part = tuple(jnp.tensordot(s, weights.astype(s.dtype), axes=([2], [0])) for s in plan.stat(g))
    return part if acc is None else tuple(a + b for a, b in zip(acc, part))


def run_path(ctx: Context, x, target, plan: PathPlan):
    """Run a plan as one program: the chunks in a ``lax.scan`` whose carry is the running sum."""
    params, weights = path_chunks(plan)
    # zeros_like(x) carries x's type (under shard_map: varying over the mesh axes, as the body's sums)
    zero = jnp.broadcast_to(jnp.zeros_like(x)[None], (target.shape[1],) + x.shape)

    def body(acc, inp):
        return path_sums(ctx, plan, target, *inp, acc=acc), None

    sums, _ = jax.lax.scan(body, (zero,) * plan.n_stats, (params, weights))
    logits, _ = run(ctx.program, ctx.variables, x)
    return plan.finish(logits, sums)
