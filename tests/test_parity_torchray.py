"""Parity with TorchRay's gradient, guided backprop, deconvnet and Grad-CAM at its benchmark layers.

TorchRay returns ``max_c |·|`` of the input signal for the first three and the ReLU'd Grad-CAM map at
the layer's resolution (``resize=False``). Tolerance: max abs error <= 1e-4 x max|TorchRay|.
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import xattr_jax as xa

torch = pytest.importorskip("torch")
pytest.importorskip("torchray")

pytestmark = pytest.mark.usefixtures("x64")

from _parity import assert_close  # noqa: E402

ARCHS = ["vgg16", "resnet50"]
TARGETS = [0, 2]  # classes whose random-weight Grad-CAM maps are partly positive on both nets
GRAD_CAM_LAYER = {"vgg16": "features.29", "resnet50": "layer4"}


def _torchray(fn_name, tm, xt, **kw):
    import importlib

    mod = importlib.import_module(f"torchray.attribution.{fn_name}")
    fn = getattr(mod, fn_name)
    out = [fn(tm, xt[i:i + 1].clone(), TARGETS[i], resize=False, **kw) for i in range(xt.shape[0])]
    return torch.cat(out)[:, 0].detach().numpy()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["gradient", "guided_backprop", "deconvnet"])
def test_input_saliency(torch_pair, image_batch, arch, method):
    tm, model, v = torch_pair(arch)
    xt, xj = image_batch
    ref = _torchray(method, tm, xt)
    res = xa.explain(model, v, xj, jnp.asarray(TARGETS), method=method)
    assert_close(res.map, ref, f"{method} vs TorchRay on {arch}")


@pytest.mark.parametrize("arch", ARCHS)
def test_grad_cam_at_the_benchmark_layer(torch_pair, image_batch, arch):
    tm, model, v = torch_pair(arch)
    xt, xj = image_batch
    layer = GRAD_CAM_LAYER[arch]
    ref = _torchray("grad_cam", tm, xt, saliency_layer=layer)
    res = xa.explain(model, v, xj, jnp.asarray(TARGETS), method="grad_cam", layer=layer)
    assert_close(res.map, ref, f"Grad-CAM vs TorchRay on {arch} at {layer}")
