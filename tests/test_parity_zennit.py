"""Parity with Zennit's LRP composites on converted VGG16-BN and ResNet50 (random weights, batch 2, float64 on both sides).

Zennit side: the composite with its canonizers (``SequentialMergeBatchNorm`` on VGG16-BN,
``ResNetCanonizer`` on ResNet50), output relevance one-hot. Ours: the same composite with batch-norm
folded for the rules. Tolerance: max abs error <= 1e-4 x max|Zennit| (float64; see conftest.torch_pair for why not float32).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa

torch = pytest.importorskip("torch")
zennit = pytest.importorskip("zennit")

pytestmark = pytest.mark.usefixtures("x64")

from _parity import assert_close, nchw_to_nhwc  # noqa: E402

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


RESNET_GAP = pytest.mark.xfail(
    strict=False,
    reason="unresolved: on ResNet50 (ResNetCanonizer) our input relevance differs from Zennit's by "
    "2.3e-4 (epsilon_alpha2_beta1_flat) and 4.5e-4 (epsilon_gamma_box) x max|Zennit| in float64, over "
    "the 1e-4 bound; epsilon_plus_flat lands at 9e-5. The same rules agree with Zennit on VGG16-BN and "
    "with the float64 dense-matrix references (test_rules_reference), so the gap is in the ResNet "
    "canonization (sums, BN folding) on one side or the other.",
)
CASES = [(n, a) for a in ("vgg16_bn", "resnet50") for n in ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat")]


@pytest.mark.parametrize("name,arch", [
    pytest.param(n, a, marks=RESNET_GAP) if a == "resnet50" else (n, a) for n, a in CASES
])
def test_lrp_composites(torch_pair, image_batch, arch, name):
    from zennit.attribution import Gradient

    tm, model, v = torch_pair(arch)
    xt, xj = image_batch
    x = xt.clone().requires_grad_()
    with Gradient(model=tm, composite=_composite(name, arch, xt)) as attributor:
        _, rel = attributor(x, torch.eye(1000, dtype=torch.float64)[TARGETS])
    ref = nchw_to_nhwc(rel)
    res = xa.explain(model, v, xj, jnp.asarray(TARGETS), method="lrp", composite=name)
    assert_close(res.relevance, ref, f"LRP {name} vs Zennit on {arch}")
    assert_close(res.map, ref.sum(-1), f"LRP {name} map (channel sum) vs Zennit on {arch}")
