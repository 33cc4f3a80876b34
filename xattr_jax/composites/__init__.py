"""Composites: which rule goes on which layer."""

from . import core, presets
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

__all__ = [*core.__all__, *presets.__all__]
