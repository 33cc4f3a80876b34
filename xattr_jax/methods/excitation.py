"""Excitation Backprop (MWP) and contrastive Excitation Backprop (c-MWP).

Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, *Top-down Neural Attention by Excitation Backprop*,
ECCV 2016 / IJCV 2018. docs/methods.md#excitation-backprop and #decision-1.

Rules (one modified backward pass, read at ``layer``):

============== ===============================================================================
conv / dense   ``p_in = x ⊙ f*(x, W⁺, p ⊘ f(x, W⁺))``, bias dropped, 0 where the normaliser is 0
ReLU           identity (the same as its mask for ReLU, whose zero units receive nothing; it
               keeps a ReLU6's saturated units, which would otherwise drop their signal)
max-pool       ordinary gradient (winner-take-all routing to the argmax)
gate           all to the value (squeeze-excitation: the gate is a constant)
average pools  proportional, ``p_in = x ⊙ f*(p ⊘ f(x))`` (adaptive pools included)
batch-norm     identity
residual add   ``residual="proportional"`` (default): ``p_k = x_k/(Σ x) · p``;
               ``"skip_ignored"``: all of ``p`` to the residual branch, none to the skip input
shape ops      the signal follows the values (flatten, reshape; dropout is not in an inference program)
============== ===============================================================================

* ``excitation_backprop``: map ``Σ_c p`` at ``layer`` (not clamped); ``relevance`` is ``p``.
* ``contrastive_excitation_backprop``: the contrast ``Δ = p − p̄`` at ``contrast_layer``, where
  ``p̄`` is EB with the classifier's weights negated; no clamping at the contrast layer; EB below;
  map ``max(Σ_c Δ_sal, 0)`` at ``layer``; ``relevance`` is the unclamped signal. EB is linear in
  ``p``, so the contrast is computed by one rule on the classifier (``p_in = EB_W(p) − EB_{−W}(p)``,
  :func:`~xattr_jax.rules.contrastive_excitation`) and the whole method costs one forward and one
  backward pass.

Default layers (TorchRay's benchmark): VGG ``features.23`` (pool4) / contrast ``classifier.4``;
ResNet ``layer3`` / contrast ``avgpool``. Other networks: the saliency layer is ``layer3`` if the
network has ``layer3`` and ``layer4`` stages, else the output of the second-to-last max-pool, else
the last ReLU after the last conv (Grad-CAM's layer); the contrast layer is the layer directly
below the classifier (the last conv/dense layer), through shape operations (flatten).

The top signal is ``signal=`` (one-hot logit by default; ``"pointing"`` weights a
fully-convolutional class score map by its spatial softmax, as TorchRay/Caffe's pointing game;
see :func:`xattr_jax.models.fully_conv.fully_convolutional`).

Example:
  >>> res = xa.explain(model, variables, x, jnp.array([3]), method="excitation_backprop")
  >>> res = xa.explain(model, variables, x, jnp.array([3]),
  ...                  method="contrastive_excitation_backprop", layer="features.23",
  ...                  contrast_layer="classifier.4")
"""

from __future__ import annotations

import jax.numpy as jnp

from ..composites.core import Composite, composite, kind, path, resolve_layers
from ..passes import modified_pass
from ..rules import library as R
from ..types import Attribution
from .base import NONNEGATIVE, Method, _t, options, register, total
from .cam import last_feature_map
from .option_types import Option, boolean, choice, layer_name

__all__ = [
    "EXCITATION_BACKPROP",
    "CONTRASTIVE_EXCITATION_BACKPROP",
    "excitation_composite",
    "default_saliency_layer",
    "default_contrast_layer",
    "classifier_layer",
    "RESIDUAL",
]

RESIDUAL = ("proportional", "skip_ignored")


def excitation_composite(residual: str = "proportional", linear=None) -> Composite:
    """Excitation Backprop's rules as a composite (see the module docstring).

    Args:
      residual: ``"proportional"`` or ``"skip_ignored"``.
      linear: the conv/dense rule (default :func:`~xattr_jax.rules.excitation`).
    """
    if residual not in RESIDUAL:
        raise ValueError(f"residual must be one of {list(RESIDUAL)}, got {residual!r}")
    eb = R.excitation()
    return composite(
        (kind("conv", "dense"), eb if linear is None else linear),
        (kind("avgpool"), eb),
        (kind("add"), eb if residual == "proportional" else R.skip_ignored()),
        (kind("batchnorm", "relu"), R.pass_rule()),
        (kind("gate"), R.take_all()),
        name="excitation_backprop",
    )


def default_saliency_layer(layers):
    """TorchRay's benchmark layers: ``layer3`` (ResNet), pool4 = ``features.23`` (VGG16).

    For any network: ``layer3`` when it has ``layer3`` and ``layer4``; else the output of the
    second-to-last max-pool outside inception/dense blocks (VGG's pool4, whatever the depth); else
    the last layer at the second-coarsest spatial resolution (a ResNet's third stage, however its
    layers are named);
    else Grad-CAM's layer (:func:`~xattr_jax.methods.cam.last_feature_map`).
    """
    names = {l.name for l in layers}
    if {"layer3", "layer4"} <= names:
        return "layer3"
    leaf_outs = {l.output for l in layers if l.kind is not None}
    concats = [c for c in layers if c.kind is None and c.output not in leaf_outs]  # inception/dense blocks
    pools = [l.name for l in layers if l.kind == "maxpool" and l.calls == 1
             and not any(l.name.startswith(c.name + ".") for c in concats)]  # not one branch of a block
    if len(pools) >= 2:
        return pools[-2]
    spatial = [l for l in layers if l.kind is not None and l.calls == 1 and len(l.shape) == 4]
    sizes = sorted({l.shape[1] * l.shape[2] for l in spatial})
    if len(sizes) >= 2:
        return [l.name for l in spatial if l.shape[1] * l.shape[2] == sizes[1]][-1]
    return last_feature_map(layers)


def classifier_layer(layers):
    """The classifier: the last conv/dense layer in call order (TorchRay's rule: last with weights)."""
    lin = [l for l in layers if l.kind in ("conv", "dense")]
    if not lin:
        raise ValueError("contrastive excitation backprop needs a network ending in a conv/dense layer")
    return lin[-1]


def _producer(layers, info):
    """The leaf layer whose output is ``info``'s (first) input (through shape operations), or None."""
    if not info.inputs:
        return None
    return next((l for l in layers if l.kind is not None and l.output == info.inputs[0]), None)


def default_contrast_layer(layers):
    """The layer directly below the classifier, through shape operations (VGG ``classifier.4``,
    ResNet ``avgpool``)."""
    below = _producer(layers, classifier_layer(layers))
    if below is None:
        raise ValueError("could not find the layer below the classifier; pass contrast_layer=")
    return below.name


def _check_contrast(layers, cls, contrast):
    below = _producer(layers, cls)
    # containers whose output is the same value are the same place
    same = {l.name for l in layers if below is not None and l.output == below.output}
    if contrast not in same:
        raise ValueError(
            f"contrast_layer {contrast!r} is not directly below the classifier {cls.name!r}: the "
            "contrast is injected by the classifier's rule, so only shape operations (flatten, "
            f"reshape) may lie between them; valid contrast layers: {sorted(same)}"
        )


def _layer_pass(ctx, x, target, rules, conservation):
    """One modified pass read at ``ctx.layer`` (the input when None): ``(relevance [N,K,...], logits, cons)``."""
    at = [ctx.layer] if ctx.layer is not None else []
    if conservation:
        at += [l.name for l in ctx.layers if l.calls == 1 and l.name not in at and l.dtype is not None]
    p = modified_pass(ctx, x, target, rules=rules, at=at, input=ctx.layer is None or conservation)
    cons = None
    if conservation:
        cons = {n: total(p.at[n]) for n in at}
        cons["input"] = total(p.input)
    rel = _t(p.input if ctx.layer is None else p.at[ctx.layer])
    return rel, p.logits, cons


def _eb(ctx, x, target):
    o = options(ctx, EXCITATION_BACKPROP)
    rules = resolve_layers(excitation_composite(o["residual"]), ctx.layers)
    rel, logits, cons = _layer_pass(ctx, x, target, rules, o["conservation"])
    return Attribution(jnp.sum(rel, axis=-1), rel, logits, None, cons)


def _ceb(ctx, x, target):
    o = options(ctx, CONTRASTIVE_EXCITATION_BACKPROP)
    cls = classifier_layer(ctx.layers)
    contrast = o["contrast_layer"]
    if contrast is None:
        contrast = default_contrast_layer(ctx.layers)
    names = [l.name for l in ctx.layers]
    if contrast not in names:
        raise ValueError(f"unknown contrast_layer {contrast!r}; valid layer names: {names}")
    _check_contrast(ctx.layers, cls, contrast)
    if ctx.layer is not None and names.index(ctx.layer) >= names.index(contrast):
        raise ValueError(
            f"the saliency layer {ctx.layer!r} must lie below the contrast layer {contrast!r}"
        )
    comp = composite((path(cls.name), R.contrastive_excitation())) + excitation_composite(o["residual"])
    rules = resolve_layers(comp, ctx.layers)
    rel, logits, cons = _layer_pass(ctx, x, target, rules, o["conservation"])
    return Attribution(jnp.maximum(jnp.sum(rel, axis=-1), 0), rel, logits, None, cons)


EXCITATION_BACKPROP = register(
    Method(
        "excitation_backprop",
        _eb,
        {
            "residual": Option("proportional", choice(*RESIDUAL), "how a residual sum splits relevance"),
            "conservation": Option(False, boolean(), "also return each layer's total relevance per sample"),
        },
        default_layer=default_saliency_layer,
        domain=NONNEGATIVE,
    )
)
CONTRASTIVE_EXCITATION_BACKPROP = register(
    Method(
        "contrastive_excitation_backprop",
        _ceb,
        {
            "residual": Option("proportional", choice(*RESIDUAL), "how a residual sum splits relevance"),
            "contrast_layer": Option(None, layer_name(),
                                     "layer where p - p_bar is taken (None: the classifier's input)"),
            "conservation": Option(False, boolean(), "also return each layer's total relevance per sample"),
        },
        default_layer=default_saliency_layer,
        domain=NONNEGATIVE,
    )
)
