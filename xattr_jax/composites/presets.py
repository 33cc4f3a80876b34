"""LRP composites with the same meaning as Zennit's of the same names.

Every preset shares a base: activations and batch-norm pass the relevance through, residual sums
and average pools split it proportionally (``norm``), max-pools keep their gradient (winner takes
all); normalisations take their statistic σ as a constant (``constant_statistics``), gates give all
to the value (``take_all``), other products half to each factor (``uniform_product``), and
attention follows ``attention=``: ``"cp"`` (default; the attention weights are constants, all
relevance to the values, Ali et al. 2022) or ``"attnlrp"`` (AttnLRP's softmax rule and the uniform
rule on ``A·V``, Achtibat et al. 2024). Then: ``epsilon_plus`` = z⁺ on conv, ε on dense; ``*_flat`` adds the flat rule on the first
linear layer; ``epsilon_gamma_box`` = γ on conv, ε on dense, zB on the first conv;
``epsilon_alpha2_beta1`` = α2β1 on conv, ε on dense. (Montavon et al., "Layer-wise relevance
propagation: an overview", 2019; Kohlbrenner et al. 2020.)
"""

from __future__ import annotations

from ..rules import library as R
from .core import Composite, composite, fed_by, first_linear, kind

ATTENTION = ("cp", "attnlrp")

__all__ = [
    "ATTENTION",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "PRESETS",
]


def _base(stabilizer, attention="cp"):
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {list(ATTENTION)}, got {attention!r}")
    cp = attention == "cp"
    return [
        (kind("relu", "activation"), R.pass_rule()),
        (kind("add"), R.norm(stabilizer)),
        (kind("avgpool"), R.norm(stabilizer)),
        (kind("batchnorm"), R.pass_rule()),
        (kind("norm"), R.constant_statistics(stabilizer)),
        (kind("gate") | (kind("product") & fed_by("softmax")) if cp else kind("gate"), R.take_all(stabilizer)),
        (kind("product"), R.uniform_product(stabilizer)),
        (kind("softmax"), R.block() if cp else R.attnlrp_softmax()),
    ]


def _flat_first(base: Composite, stabilizer, name: str) -> Composite:
    """``base`` with the flat rule on the first linear layer (matched before ``base``'s entries)."""
    return composite((first_linear(), R.flat(stabilizer)), *base.entries, name=name)


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6, attention: str = "cp") -> Composite:
    """z⁺ for conv, ε for dense layers."""
    return composite(
        *_base(stabilizer, attention),
        (kind("conv"), R.zplus(stabilizer)),
        (kind("dense"), R.epsilon(epsilon)),
        name="epsilon_plus",
    )


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6, attention: str = "cp") -> Composite:
    """Flat for the first linear layer, z⁺ for conv, ε for dense layers."""
    return _flat_first(epsilon_plus(epsilon, stabilizer, attention), stabilizer, "epsilon_plus_flat")


def epsilon_gamma_box(low, high, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6,
                      attention: str = "cp") -> Composite:
    """zB(low, high) for the first conv, γ for conv, ε for dense layers."""
    return composite(
        (first_linear("conv"), R.zbox(low, high, stabilizer)),
        *_base(stabilizer, attention),
        (kind("conv"), R.gamma(gamma, stabilizer)),
        (kind("dense"), R.epsilon(epsilon)),
        name="epsilon_gamma_box",
    )


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6, attention: str = "cp") -> Composite:
    """α2β1 for conv, ε for dense layers."""
    return composite(
        *_base(stabilizer, attention),
        (kind("conv"), R.alpha_beta(2.0, 1.0, stabilizer)),
        (kind("dense"), R.epsilon(epsilon)),
        name="epsilon_alpha2_beta1",
    )


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6, attention: str = "cp") -> Composite:
    """Flat for the first linear layer, α2β1 for conv, ε for dense layers."""
    return _flat_first(epsilon_alpha2_beta1(epsilon, stabilizer, attention), stabilizer, "epsilon_alpha2_beta1_flat")


PRESETS = {
    "epsilon_plus": epsilon_plus,
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
}
