"""Rules: backward-pass replacements that keep each layer's forward pass exact."""

from .core import ALL_KINDS, LINEAR_KINDS, Rule, Term, apply_rule, linear_rule, safe_divide, stabilize
from .library import (
    alpha_beta,
    deconvnet_relu,
    epsilon,
    excitation,
    flat,
    gamma,
    guided_relu,
    norm,
    pass_rule,
    positive_maxpool,
    wsquare,
    zbox,
    zero,
    zplus,
)

__all__ = [
    "Rule",
    "Term",
    "apply_rule",
    "linear_rule",
    "stabilize",
    "safe_divide",
    "LINEAR_KINDS",
    "ALL_KINDS",
    "epsilon",
    "zero",
    "zplus",
    "alpha_beta",
    "gamma",
    "zbox",
    "flat",
    "wsquare",
    "norm",
    "excitation",
    "pass_rule",
    "guided_relu",
    "deconvnet_relu",
    "positive_maxpool",
]
