"""Rules: backward-pass replacements that keep each layer's forward pass exact."""

from . import library
from .core import ALL_KINDS, LINEAR_KINDS, LayerFn, Rule, Term, apply_rule, linear_rule, safe_divide, stabilize
from .library import (
    PURGES,
    alpha_beta,
    attnlrp_softmax,
    block,
    constant_statistics,
    contrastive_excitation,
    deconvnet_relu,
    epsilon,
    excitation,
    flat,
    gamma,
    guided_relu,
    norm,
    pass_rule,
    positive_maxpool,
    rsp_add,
    rsp_batchnorm,
    rsp_conv,
    skip_ignored,
    take_all,
    uniform_product,
    wsquare,
    zbox,
    zbox_global,
    zero,
    zplus,
)

__all__ = [
    "Rule",
    "LayerFn",
    "Term",
    "apply_rule",
    "linear_rule",
    "stabilize",
    "safe_divide",
    "LINEAR_KINDS",
    "ALL_KINDS",
    *library.__all__,
]
