"""Relative Sectional Propagation (RSP): bi-polar relevance from a Grad-CAM channel seed.

Nam, Choi & Lee, *Relative Sectional Propagation: Interpreting Deep Networks as a Whole*,
AAAI 2021 (arXiv 2012.03434). The released algorithm, docs/methods.md#rsp and #decision-2:

1. **Seed** at ``seed_layer`` (default: the last ReLU after the last conv — VGG ``features.29``,
   ResNet ``layer4.2.relu``, the output of ``layer4``): the Grad-CAM *channel* map
   ``R0_{k,u} = A_{k,u} · α_k``, ``α_k = mean_u ∂y_c/∂A_{k,u}`` (``y_c`` the pre-softmax logit, or
   the ``signal=``), signed, not summed over channels, divided by ``max R0 + 1e-9`` per sample.
   With ``hostile=`` classes, the multi-class seed of steps 1–7 (below) instead.
2. **Rules** below the seed: ReLU identity; max-pool winner-take-all (ordinary gradient); conv
   layers the bipolar surrogate-kernel rule (:func:`~xattr_jax.rules.rsp_conv`: kernels
   ``G± = ∂⟨R±, conv(x⁺, W)⟩/∂W`` per sample, ``×2`` and a uniform shift for kernels larger than
   1×1, ``C1 − C2`` for 1×1; the layer's weights are never used); the first conv zB with the
   per-sample image min/max as bounds (:func:`~xattr_jax.rules.zbox_global`); average pools
   proportional; dense layers below the seed are treated as 1×1 convs.
3. **Map** ``Σ_RGB R_in``: signed, at input resolution (``relevance`` is ``R_in``). With ``layer=``
   (below the seed) the signal at that layer is read instead.

**ResNet** (our extension, docs/methods.md#rsp-on-resnet; the released code cannot run RSP on ResNet): batch-norm
is the identity masked where ``x·γ/√(σ²+ε) = 0`` (:func:`~xattr_jax.rules.rsp_batchnorm`); the
residual sum splits ``R`` in proportion to ``max(a, 0) + 1e-9`` and ``max(b, 0) + 1e-9``
(:func:`~xattr_jax.rules.rsp_add`); at a fan-out (clone) the branch relevances add up.

**Multi-class "hostile" seed** (``relative_GAM`` of the released ``main.py``, §2.3a), per sample and
target ``g`` with hostile classes ``m ≠ g`` (``N − 1`` of them):

1. ``cam_m`` = the channel map above for every class, each divided by its own ``max + 1e-9``;
2. ``T = (N−1)·cam_g − Σ_{m≠g} cam_m``;
3. ``P = max(T, 0)``, normalised to sum 1;
4. ``Q = min(T, 0)``; ``Q ← Q / min(Q)``; ``Q ← Q/ΣQ · ΣP``;
5. ``T2 = P − Q``;
6. ``s_u = Σ_k T2_{k,u}``; ``pos_u = [s_u > 0]·s_u`` rescaled to sum 2, ``neg_u = [s_u ≤ 0]·s_u``
   rescaled to magnitude sum 1, ``r_u = pos_u − neg_u``;
7. ``R0_{k,u} = r_u / C`` (so ``ΣR0 = 1``).

Divisions are safe (0 where the denominator is 0). A sample/target with no hostile class gets the
plain seed. ``hostile=`` is ``None`` (plain seed, the released path), a sequence with one entry per
sample, each a sequence of class ids (the target itself is skipped), or ``"predicted"``: the other
classes the model predicts present, ``sigmoid(logit) ≥ 0.5`` (the successor's VOC harness), at most
``max_hostile`` of them — the highest-scoring ones (a static bound, needed for compilation; our
choice, documented).

``purge=`` (docs/methods.md#rsp-purge; applied to the relevance entering every conv rule): ``"none"``
(default; the released purge line is a no-op), ``"sign_consistent"`` (zero the units whose sign
differs from the channel sum at their position; our reading of the paper) or ``"uniform_spread"``
(replace each position's channels by their mean, as the multi-class seed does).

Conservation: the total relevance is the seed's at every cut through the network (each layer of a
VGG; block outputs of a ResNet, where branch + skip share it), except that the released conv rule
drops the relevance of an output whose receptive field has no positive input (``conv(x⁺, G) = 0``;
for 1×1 kernels there is no shift to spread it back). ``conservation=True`` reports the totals.

All reductions (max normalisation, the shift's ``T`` and ``N``, the zB bounds, the surrogate
kernels) are per sample, so a batch equals its samples run one at a time.

Example:
  >>> res = xa.explain(model, variables, x, jnp.array([3]), method="rsp")
  >>> res = xa.explain(model, variables, x, jnp.array([3]), method="rsp", hostile=((5, 9),))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..composites.core import Composite, below, composite, first_linear, kind, resolve_layers
from ..passes import onehots, seed_fn, two_phase_pass
from ..rules import library as R
from ..types import Attribution
from .base import NONNEGATIVE, Method, _t, options, register, total
from .cam import grad_cam_channels, last_feature_map
from .option_types import Option, anything, boolean, choice, integer, layer_name

__all__ = ["RSP", "rsp_composite", "rsp_seed", "hostile_seed", "layers_below"]


def layers_below(layers, seed_layer):
    """The layers :func:`~xattr_jax.composites.below` ``(seed_layer)`` matches, in program order:
    the seed layer, those called before it, and its own sub-layers (the seed enters at the seed
    layer's output, so its own rule, the identity for the seed ReLU, is part of the propagation)."""
    m = below(seed_layer)
    return [l for l in layers if m.test(l, layers)]


def rsp_composite(seed_layer, purge="none", batch="batched") -> Composite:
    """RSP's rules on every layer below ``seed_layer`` (the layers above keep their gradients)."""
    under = below(seed_layer)
    return composite(
        (under & first_linear(), R.zbox_global()),
        (under & kind("conv", "dense"), R.rsp_conv(purge, batch=batch)),
        (under & kind("relu"), R.pass_rule()),
        (under & kind("avgpool"), R.excitation()),
        (under & kind("batchnorm"), R.rsp_batchnorm()),
        (under & kind("gate"), R.take_all()),
        (under & kind("add"), R.rsp_add()),
        name="rsp",
    )


def _max_normalise(cam):
    """``cam / (max cam + 1e-9)`` per leading index over the trailing (h, w, C) axes."""
    m = jnp.max(cam, axis=(-3, -2, -1), keepdims=True)
    return cam / (m + jnp.asarray(1e-9, cam.dtype))


def rsp_seed(g, a):
    """The released single-class seed: ``R0 = A·α / (max(A·α) + 1e-9)`` per sample."""
    return _max_normalise(grad_cam_channels(g, a))


def _sdiv(a, b):
    return R.safe_divide(a, b)


def hostile_seed(cam_g, cams_h, valid):
    """Steps 2–7 of the multi-class seed for one sample and target.

    Args:
      cam_g: ``[h, w, C]`` the target's channel map, already max-normalised (step 1).
      cams_h: ``[M, h, w, C]`` the hostile classes' maps, each max-normalised.
      valid: ``[M]`` bool, which of the ``M`` slots are hostile classes.

    Returns:
      ``[h, w, C]`` the seed (``Σ = 1``); ``cam_g`` itself when no slot is valid.
    """
    w = valid.astype(cam_g.dtype)
    n1 = jnp.sum(w)
    t = n1 * cam_g - jnp.tensordot(w, cams_h, axes=1)  # step 2
    p = jnp.maximum(t, 0)
    p = _sdiv(p, jnp.sum(p))  # step 3
    q = jnp.minimum(t, 0)
    q = _sdiv(q, jnp.min(q))  # step 4
    q = _sdiv(q, jnp.sum(q)) * jnp.sum(p)
    t2 = p - q  # step 5
    s = jnp.sum(t2, axis=-1, keepdims=True)  # step 6
    pos = jnp.where(s > 0, s, 0.0)
    pos = _sdiv(pos, jnp.sum(pos)) * 2.0
    neg = jnp.where(s <= 0, s, 0.0)
    neg = _sdiv(neg, jnp.sum(neg))
    r = pos - neg
    seed = jnp.broadcast_to(r / cam_g.shape[-1], cam_g.shape)  # step 7
    return jnp.where(n1 > 0, seed, cam_g)


def _hostile_table(hostile, n):
    """``hostile`` (one sequence of class ids per sample) -> padded ``[N, M]`` int array (-1 = none)."""
    if isinstance(hostile, (str, bytes)) or not hasattr(hostile, "__len__"):
        raise ValueError(
            f"hostile must be None, 'predicted' or one sequence of class ids per sample, got {hostile!r}"
        )
    rows = [list(np.atleast_1d(np.asarray(h)).reshape(-1)) for h in hostile]
    if len(rows) != n:
        raise ValueError(f"hostile has {len(rows)} entries but the batch has {n} samples; give one per sample")
    m = max([len(r) for r in rows] + [1])
    tab = np.full((n, m), -1, dtype=np.int32)
    for i, r in enumerate(rows):
        for j, c in enumerate(r):
            if not float(c).is_integer() or c < 0:
                raise ValueError(f"hostile class ids must be non-negative integers, got {c!r} (sample {i})")
            tab[i, j] = int(c)
    return tab


def _rsp(ctx, x, target):
    o = options(ctx, RSP)
    if o["purge"] not in R.PURGES:
        raise ValueError(f"unknown purge {o['purge']!r}; valid: {list(R.PURGES)}")
    seed_layer = o["seed_layer"] or last_feature_map(ctx.layers)
    names = [l.name for l in ctx.layers]
    if seed_layer is None or seed_layer not in names:
        raise ValueError(f"rsp needs a seed layer (the last conv ReLU); got {seed_layer!r}; valid: {names}")
    info = ctx.info(seed_layer)
    if len(info.shape) != 4:
        raise ValueError(f"rsp's seed layer must be spatial [N, h, w, C]; {seed_layer!r} has shape {info.shape}")
    under = layers_below(ctx.layers, seed_layer)
    under_names = {l.name for l in under}
    if ctx.layer is not None and ctx.layer not in under_names:
        raise ValueError(f"layer {ctx.layer!r} is not below the seed layer {seed_layer!r}")
    hostile, max_hostile = o["hostile"], o["max_hostile"]
    if isinstance(hostile, str) and hostile != "predicted":
        raise ValueError(f"hostile must be None, 'predicted' or class ids per sample, got {hostile!r}")
    predicted = isinstance(hostile, str)
    if predicted and (isinstance(max_hostile, bool) or not isinstance(max_hostile, int) or max_hostile < 1):
        raise ValueError(f"max_hostile must be an int >= 1, got {max_hostile!r}")
    table = None
    if hostile is not None and not predicted:
        table = jnp.asarray(_hostile_table(hostile, x.shape[0]))

    sig = seed_fn(ctx.signal)

    def cotangents(logits, classes):  # classes [N, J] -> [J, *logits.shape]
        oh = onehots(classes, logits.shape, logits.dtype)
        return jax.vmap(sig, in_axes=(None, 0))(logits, oh)

    def seed(grad, a, logits, target):
        cam_t = rsp_seed(grad(cotangents(logits, target)), a)  # [K, N, h, w, C]
        if hostile is None:
            return cam_t
        if predicted:
            scores = logits.reshape(logits.shape[0], -1, logits.shape[-1]).max(axis=1)
            top = jax.lax.top_k(scores, max_hostile + 1)[1]  # [N, M+1]
            present = jax.nn.sigmoid(jnp.take_along_axis(scores, top, axis=1)) >= 0.5
            cand, ok = top, present
        else:
            cand, ok = jnp.maximum(table, 0), table >= 0
        cams_h = rsp_seed(grad(cotangents(logits, cand)), a)  # [M, N, h, w, C]
        valid = ok[None] & (cand[None] != target.T[:, :, None])  # [K, N, M]
        if predicted:
            valid = valid & (jnp.cumsum(valid, axis=-1) <= max_hostile)
        per = jax.vmap(hostile_seed, in_axes=(0, 1, 0))  # over N
        return jax.vmap(per, in_axes=(0, None, 0))(cam_t, cams_h, valid)  # over K

    at = [ctx.layer] if ctx.layer is not None else []
    if o["conservation"]:
        at += [l.name for l in under if l.kind is not None and l.calls == 1 and l.name not in at]
    rules = resolve_layers(rsp_composite(seed_layer, o["purge"], o["batch"]), ctx.layers)
    p = two_phase_pass(ctx, x, target, seed_layer=seed_layer, seed=seed, rules=rules, at=at,
                       input=ctx.layer is None or o["conservation"], vmap_targets=False)
    rel = _t(p.input if ctx.layer is None else p.at[ctx.layer])
    cons = None
    if o["conservation"]:
        cons = {n: total(p.at[n]) for n in [seed_layer] + [n for n in at if n != seed_layer]}
        cons["input"] = total(p.input)
    return Attribution(jnp.sum(rel, axis=-1), rel, p.logits, None, cons)


RSP = register(
    Method(
        "rsp",
        _rsp,
        {
            "hostile": Option(None, anything(),
                              "hostile classes: None, 'predicted' or class ids per sample (-1 pads)"),
            "max_hostile": Option(5, integer(1), "most predicted hostile classes (hostile='predicted')"),
            "purge": Option("none", choice(*R.PURGES), "purge of the per-sample kernels"),
            "seed_layer": Option(None, layer_name(), "layer of the seed (None: the last conv ReLU)"),
            "conservation": Option(False, boolean(), "also return each layer's total relevance per sample"),
            "batch": Option("batched", choice(*R.RSP_BATCH),
                            "a traced or sharded batch's per-sample kernels: 'batched' (matrix products over "
                            "receptive fields: one program whatever the batch, no communication when sharded), "
                            "'unroll' (batch-1 convolutions; compile grows with the batch) or 'map' (a lax.map)"),
        },
        # per-example hostile class lists index the batch: those runs stay batched
        per_sample=lambda o: o.get("hostile") is None or isinstance(o.get("hostile"), str),
        domain=NONNEGATIVE,
    )
)
