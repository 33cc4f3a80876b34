"""Attention Backpropagation (AB) — **our interpretation**; the paper's rule is not public.

Dong, Liu, Lo et al., *Attention Backpropagation*, CCEAI 2021 (DOI 10.1145/3448218.3448227). The
paper is closed access and no description of its algorithm could be found (docs/methods.md#attention-backprop). What
is built here is the interpretation of docs/methods.md#attention-backprop and #decision-3, and results from it should
be labelled "AB (interpretation)": a conserving, top-down attention propagation that records a map
at **every** layer ("the whole inference process").

Seeds:

* ``seed="gradcam"`` (AB-II, default): at ``seed_layer`` (default: the last ReLU after the last conv,
  VGG ``features.29``) the Grad-CAM positive channel contributions
  ``A_{k,u} = ReLU(α_k · act_{k,u})``, ``α_k = mean_u ∂y_c/∂act_{k,u}``, normalised to sum 1 per
  sample; then propagated down. Layers above the seed keep their ordinary gradient (they only
  serve ``α``) and get no map.
* ``seed="logit"`` (AB-I): the one-hot target logit (or ``signal=``), propagated through every
  layer including the classifier. This is Excitation Backprop read at every layer.

Rules (``rule=``): ``"zplus"`` (default) — the Excitation Backprop rules: conv/dense
``A_in = x ⊙ f*(x, W⁺, A_out ⊘ f(x, W⁺))`` without bias, ReLU and max-pool ordinary (mask,
winner-take-all), average pools proportional, batch-norm identity, residual sum proportional —
or ``"alpha2beta1"``: LRP-α2β1 (Zennit's form, bias split by sign) on conv/dense layers, the other
layers as for ``"zplus"`` (a signed alternative; it does not conserve where biases absorb).

Output: ``layer_maps`` is an ordered mapping ``{name: [N, h, w] map}`` (``[N, K, h, w]`` for
``[N, K]`` targets), ``M(u) = Σ_channels A(·, u)``, in network order (input first):

* ``"input"`` — the attention at the input image, and then
* every leaf layer (conv, batch-norm, ReLU, pools, residual sums, ...) called once per forward
  whose output is spatial ``[N, h, w, C]``, from the bottom of the network up to the seed layer
  (``"gradcam"``) or to the last spatial layer (``"logit"``). Containers (``layer3``,
  ``features``) are left out: their output is that of their last leaf layer.

``conservation`` holds the total attention per sample at the same layers (≈ 1 with the default
``"gradcam"`` seed and ``"zplus"``). ``map``/``relevance`` are read at ``layer`` (the input when
None). Upsample a map with ``xattr_jax.metrics.resize_map`` or draw all of them with
:func:`xattr_jax.viz.layer_figure` (one labelled panel per layer).

Example:
  >>> res = xa.explain(model, variables, x, jnp.array([3]), method="attention_backprop")
  >>> list(res.layer_maps)[:3]   # ['input', 'features.0', 'features.1']
  >>> from xattr_jax import viz
  >>> viz.save(viz.layer_figure(viz.to_image(x[0]), res.layer_maps), "ab.png")
"""

from __future__ import annotations

from collections import OrderedDict

import jax
import jax.numpy as jnp

from ..composites.core import below, resolve_layers
from ..passes import modified_pass, onehots, seed_fn, two_phase_pass
from ..rules import library as R
from ..types import Attribution
from .base import NONNEGATIVE, Method, _t, options, register, total
from .cam import grad_cam_channels, last_feature_map
from .excitation import RESIDUAL, excitation_composite
from .option_types import Option, choice, layer_name
from .rsp import layers_below

__all__ = ["ATTENTION_BACKPROP", "gradcam_attention_seed", "SEEDS", "RULES"]

SEEDS = ("gradcam", "logit")
RULES = ("zplus", "alpha2beta1")


def gradcam_attention_seed(g, a):
    """AB-II's seed: ``ReLU(α_k A_{k,u})`` normalised to sum 1 per sample (``g [..., N, h, w, C]``)."""
    c = jnp.maximum(grad_cam_channels(g, a), 0)
    return R.safe_divide(c, jnp.sum(c, axis=(-3, -2, -1), keepdims=True))


def _ab(ctx, x, target):
    o = options(ctx, ATTENTION_BACKPROP)
    if o["seed"] not in SEEDS:
        raise ValueError(f"attention_backprop seed must be one of {list(SEEDS)}, got {o['seed']!r}")
    if o["rule"] not in RULES:
        raise ValueError(f"attention_backprop rule must be one of {list(RULES)}, got {o['rule']!r}")
    linear = R.excitation() if o["rule"] == "zplus" else R.alpha_beta(2.0, 1.0)
    names = [l.name for l in ctx.layers]
    if o["seed"] == "gradcam":
        seed_layer = o["seed_layer"] or last_feature_map(ctx.layers)
        if seed_layer is None or seed_layer not in names:
            raise ValueError(f"attention_backprop needs a seed layer; got {seed_layer!r}; valid: {names}")
        if len(ctx.info(seed_layer).shape) != 4:
            raise ValueError(f"the seed layer must be spatial [N, h, w, C]; {seed_layer!r} is not")
        scope = layers_below(ctx.layers, seed_layer)
    else:
        if o["seed_layer"] is not None:
            raise ValueError("seed_layer applies to seed='gradcam' only")
        seed_layer, scope = None, list(ctx.layers)
    comp = excitation_composite(o["residual"], linear=linear)
    if seed_layer is not None:  # the layers above the seed keep their gradients (they give α)
        comp = comp.where(below(seed_layer))
    rules = resolve_layers(comp, ctx.layers)
    spatial = [l.name for l in scope if l.kind is not None and l.calls == 1 and len(l.shape) == 4]
    if ctx.layer is not None and ctx.layer not in {l.name for l in scope}:
        raise ValueError(f"layer {ctx.layer!r} is above the seed layer {seed_layer!r}")
    at = spatial + ([ctx.layer] if ctx.layer is not None and ctx.layer not in spatial else [])
    sums = [n for n in spatial if n != ctx.layer]
    if seed_layer is None:
        p = modified_pass(ctx, x, target, rules=rules, at=at, input=True, sums=sums)
    else:
        def seed(grad, a, logits, target):
            oh = onehots(target, logits.shape, logits.dtype)
            cts = jax.vmap(seed_fn(ctx.signal), in_axes=(None, 0))(logits, oh)
            return gradcam_attention_seed(grad(cts), a)

        p = two_phase_pass(ctx, x, target, seed_layer=seed_layer, seed=seed, rules=rules, at=at, input=True,
                           sums=sums)
    maps = OrderedDict([("input", jnp.sum(_t(p.input), axis=-1))])
    cons = OrderedDict([("input", total(p.input))])
    for n in spatial:
        maps[n] = jnp.sum(_t(p.at[n]), axis=-1) if n == ctx.layer else _t(p.at[n])
        cons[n] = jnp.sum(maps[n], axis=(-2, -1))
    rel = _t(p.input if ctx.layer is None else p.at[ctx.layer])
    return Attribution(jnp.sum(rel, axis=-1), rel, p.logits, maps, cons)


ATTENTION_BACKPROP = register(
    Method(
        "attention_backprop",
        _ab,
        {
            "seed": Option("gradcam", choice(*SEEDS),
                           "top seed: Grad-CAM attention at seed_layer (AB-II) or the logit (AB-I)"),
            "rule": Option("zplus", choice(*RULES), "conv/dense rule: excitation (z+) or alpha2-beta1"),
            "seed_layer": Option(None, layer_name(), "layer of the Grad-CAM seed (None: the last conv ReLU)"),
            "residual": Option("proportional", choice(*RESIDUAL), "how a residual sum splits relevance"),
        },
        domain=NONNEGATIVE,
    )
)
