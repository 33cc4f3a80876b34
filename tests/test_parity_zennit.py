"""Parity with Zennit's LRP composites on converted VGG16-BN and ResNet50 (random weights, batch 2, 64x64).

Zennit side: the composite with its canonizers (``SequentialMergeBatchNorm`` on VGG16-BN,
``ResNetCanonizer`` on ResNet50), output relevance one-hot. Ours: the same composite with batch-norm
folded for the rules. Zennit's merged batch-norms keep their ``eps``, which we zero inside its context
(:func:`_exact_bn_merge`) so both sides explain the same function.

Ours runs in float32, Zennit in float64 on the same weights and input (see conftest.torch_pair).
Tolerance: max abs error <= 1e-4 x max|Zennit|. Measured (relevance; the channel-sum map alike),
VGG16-BN / ResNet50: EpsilonPlusFlat 1.2e-6 / 7.9e-6, EpsilonGammaBox 9.7e-7 / 4.5e-5,
EpsilonAlpha2Beta1Flat 1.1e-6 / 2.9e-5. The ResNet50 figures are our own float32 rounding: ours in
float32 against ours in float64 gives the same three numbers.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa

torch = pytest.importorskip("torch")
zennit = pytest.importorskip("zennit")

from _parity import assert_close, float32, nchw_to_nhwc  # noqa: E402

TARGETS = [0, 2]  # classes whose random-weight Grad-CAM maps are partly positive on both nets
MEAN, STD = np.array(xa.IMAGENET_MEAN), np.array(xa.IMAGENET_STD)


def _canonizers(arch):
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer

    return [ResNetCanonizer()] if arch.startswith("resnet") else [SequentialMergeBatchNorm()]


def _composite(name, arch, xt):
    from zennit import composites as zc

    canon = _canonizers(arch)
    if name == "epsilon_gamma_box":
        low = torch.tensor(((0 - MEAN) / STD))[None, :, None, None].expand_as(xt)
        high = torch.tensor(((1 - MEAN) / STD))[None, :, None, None].expand_as(xt)
        return zc.EpsilonGammaBox(low=low, high=high, canonizers=canon)
    cls = {"epsilon_plus_flat": zc.EpsilonPlusFlat, "epsilon_alpha2_beta1_flat": zc.EpsilonAlpha2Beta1Flat}[name]
    return cls(canonizers=canon)


def _exact_bn_merge(tm):
    """Zero every batch-norm's ``eps`` inside Zennit's context; returns a function that restores them.

    Zennit's ``MergeBatchNorm`` folds ``γ/√(σ²+ε)`` into the conv and resets the batch-norm to
    mean 0, variance 1, γ 1, β 0, but leaves its ``eps`` in place, so the canonized network still
    divides every batch-norm output by ``√(1+ε)`` (1 − 5e-6 at ε = 1e-5). Through the 53 batch-norms of
    ResNet50 that scaled Zennit's relevance by ~2.6e-4 (measured gaps 2.3e-4 αβ-flat, 4.5e-4 γ-box before
    this); with ``eps = 0`` the canonized network computes the original function, as ours does.
    """
    bns = [m for m in tm.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    eps = [m.eps for m in bns]
    for m in bns:
        m.eps = 0.0

    def restore():
        for m, e in zip(bns, eps):
            m.eps = e

    return restore


CASES = [(n, a) for a in ("vgg16_bn", "resnet50") for n in ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat")]


@pytest.mark.parametrize("name,arch", CASES)
def test_lrp_composites(torch_pair, image_batch, arch, name):
    from zennit.attribution import Gradient

    tm, model, v = torch_pair(arch)
    xt, xj = image_batch
    x = xt.clone().requires_grad_()
    with Gradient(model=tm, composite=_composite(name, arch, xt)) as attributor:
        restore = _exact_bn_merge(tm)  # after the canonizers merged the batch-norms
        try:
            _, rel = attributor(x, torch.eye(1000, dtype=torch.float64)[TARGETS])
        finally:
            restore()
    ref = nchw_to_nhwc(rel)
    res = xa.explain(model, float32(v), float32(xj), jnp.asarray(TARGETS), method="lrp", composite=name)
    assert_close(res.relevance, ref, f"LRP {name} vs Zennit on {arch}")
    assert_close(res.map, ref.sum(-1), f"LRP {name} map (channel sum) vs Zennit on {arch}")
