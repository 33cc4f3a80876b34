"""Layer-wise relevance propagation with a composite (Bach et al., PLOS ONE 2015).

``composite=`` is a :class:`~xattr_jax.composites.Composite` or the name of a preset
(``epsilon_plus``, ``epsilon_plus_flat`` (default), ``epsilon_gamma_box``, ``epsilon_alpha2_beta1``,
``epsilon_alpha2_beta1_flat``; same meaning as Zennit's composites of those names). With
``canonize=True`` (default) every batch-norm is folded into the conv/dense before it for the rules
(:func:`xattr_jax.program.fold_params`) and passes the relevance through; the forward is unchanged. ``low``/``high`` are zB's bounds for
``epsilon_gamma_box`` (default: the ImageNet-normalised pixel box). The map is ``Σ_c R``.
"""

from __future__ import annotations

from ..composites.core import Composite, resolve_layers
from ..composites.presets import ATTENTION, PRESETS
from ..program import folded_batchnorms
from ..rules import library as R
from .base import RELEVANCE, Method, options, register, single_pass
from .option_types import Option, boolean, choice, optional, real
from .._constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["LRP", "lrp_composite"]


def lrp_composite(o) -> Composite:
    """The composite an ``lrp`` call uses, from its options."""
    c = o["composite"]
    if isinstance(c, Composite):
        return c
    if c not in PRESETS:
        raise ValueError(f"unknown LRP composite {c!r}; presets: {sorted(PRESETS)} (or pass a Composite)")
    if c == "epsilon_gamma_box":
        low = o["low"] if o["low"] is not None else tuple((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        high = o["high"] if o["high"] is not None else tuple((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        return PRESETS[c](low, high, attention=o.get("attention", "cp"))
    return PRESETS[c](attention=o.get("attention", "cp"))


def _lrp(ctx, x, target):
    o = options(ctx, LRP)
    comp = lrp_composite(o)
    rules = dict(resolve_layers(comp, ctx.layers, strict=ctx.strict, require_match=True))
    if o["canonize"]:
        for bn in folded_batchnorms(ctx.program):
            rules[bn] = R.pass_rule()
    return single_pass(ctx, x, target, rules=rules, reduce="sum", fold=o["canonize"],
                       conservation=o["conservation"])


def _check_composite(name, value):
    if not isinstance(value, Composite) and (not isinstance(value, str) or value not in PRESETS):
        raise ValueError(f"{name} must be a Composite or a preset name {sorted(PRESETS)}, got {value!r}")


def _check_bound(name, value):
    vals = value if isinstance(value, (tuple, list)) else (value,)
    for v in vals:
        real()(name, v)


LRP = register(Method("lrp", _lrp, {
    "composite": Option("epsilon_plus_flat", _check_composite, "a Composite or a preset name"),
    "attention": Option("cp", choice(*ATTENTION), "attention: 'cp' (weights constant, Ali et al. 2022) or "
                        "'attnlrp' (Achtibat et al. 2024); presets only"),
    "canonize": Option(True, boolean(), "fold each batch-norm into the conv/dense before it for the rules"),
    "conservation": Option(False, boolean(), "also return each layer's total relevance per sample"),
    "low": Option(None, optional(_check_bound), "zB's lower bound (number or per-channel tuple; None: ImageNet box)"),
    "high": Option(None, optional(_check_bound), "zB's upper bound (number or per-channel tuple; None: ImageNet box)"),
}, domain=RELEVANCE))
