"""Composites: which rule goes on which layer."""

from .core import (STRICT_KINDS, Composite, Matcher, above, below, composite, custom, fed_by, first_linear, kind,
                   path,
                   resolve, resolve_layers)
from .presets import (
    ATTENTION,
    PRESETS,
    epsilon_alpha2_beta1,
    epsilon_alpha2_beta1_flat,
    epsilon_gamma_box,
    epsilon_plus,
    epsilon_plus_flat,
)

__all__ = [
    "Composite",
    "Matcher",
    "composite",
    "kind",
    "path",
    "first_linear",
    "fed_by",
    "below",
    "above",
    "custom",
    "resolve",
    "resolve_layers",
    "STRICT_KINDS",
    "PRESETS",
    "ATTENTION",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
]
