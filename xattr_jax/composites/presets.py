"""LRP composites with the same meaning as Zennit's of the same names.

Every preset shares a base: activations and batch-norm pass the relevance through, residual sums
and average pools split it proportionally (``norm``), max-pools keep their gradient (winner takes
all). Then: ``epsilon_plus`` = z⁺ on conv, ε on dense; ``*_flat`` adds the flat rule on the first
linear layer; ``epsilon_gamma_box`` = γ on conv, ε on dense, zB on the first conv;
``epsilon_alpha2_beta1`` = α2β1 on conv, ε on dense. (Montavon et al., "Layer-wise relevance
propagation: an overview", 2019; Kohlbrenner et al. 2020.)
"""

from __future__ import annotations

from ..rules import library as R
from .core import Composite, composite, first_linear, kind

__all__ = [
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "PRESETS",
]


def _base(stabilizer):
    return [
        (kind("relu"), R.pass_rule()),
        (kind("add"), R.norm(stabilizer)),
        (kind("avgpool"), R.norm(stabilizer)),
        (kind("batchnorm"), R.pass_rule()),
    ]


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """z⁺ for conv, ε for dense layers."""
    return composite(
        *_base(stabilizer),
        (kind("conv"), R.zplus(stabilizer)),
        (kind("dense"), R.epsilon(epsilon)),
        name="epsilon_plus",
    )


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat for the first linear layer, z⁺ for conv, ε for dense layers."""
    return composite(
        (first_linear(), R.flat(stabilizer)),
        *epsilon_plus(epsilon, stabilizer).entries,
        name="epsilon_plus_flat",
    )


def epsilon_gamma_box(low, high, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6) -> Composite:
    """zB(low, high) for the first conv, γ for conv, ε for dense layers."""
    return composite(
        (first_linear("conv"), R.zbox(low, high, stabilizer)),
        *_base(stabilizer),
        (kind("conv"), R.gamma(gamma, stabilizer)),
        (kind("dense"), R.epsilon(epsilon)),
        name="epsilon_gamma_box",
    )


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """α2β1 for conv, ε for dense layers."""
    return composite(
        *_base(stabilizer),
        (kind("conv"), R.alpha_beta(2.0, 1.0, stabilizer)),
        (kind("dense"), R.epsilon(epsilon)),
        name="epsilon_alpha2_beta1",
    )


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat for the first linear layer, α2β1 for conv, ε for dense layers."""
    return composite(
        (first_linear(), R.flat(stabilizer)),
        *epsilon_alpha2_beta1(epsilon, stabilizer).entries,
        name="epsilon_alpha2_beta1_flat",
    )


PRESETS = {
    "epsilon_plus": epsilon_plus,
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
}
