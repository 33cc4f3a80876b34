"""Parity with TorchRay's gradient, guided backprop, deconvnet and Grad-CAM at its benchmark layers.

TorchRay returns ``max_c |·|`` of the input signal for the first three and the ReLU'd Grad-CAM map at
the layer's resolution (``resize=False``). Ours runs in float32, TorchRay in float64 on the same
weights and input (see conftest.torch_pair). Tolerance: max abs error <= 1e-4 x max|TorchRay|,
except the plain gradient (ReLU pre-activations of this input within float32 rounding of 0, see
``_parity``): ours in float64 against TorchRay in float64, and ours in float32 against the float64
gradient under this machine's float32 ReLU masks, both at 1e-4.

Measured max abs error / max|TorchRay| (VGG16, ResNet50): gradient float64 2.7e-15, 2.6e-15 (float32
vs TorchRay 3.7e-2, 8.0e-3 on the machine that measured it); guided backprop 1.9e-7, 3.6e-7; deconvnet 6.7e-7, 6.8e-7; Grad-CAM
3.9e-6, 1.1e-6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa

torch = pytest.importorskip("torch")
pytest.importorskip("torchray")

from _parity import assert_close, float32  # noqa: E402

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
def test_input_saliency(torch_pair, image_batch, kinked_gradient, arch, method):
    tm, model, v = torch_pair(arch)
    xt, xj = image_batch
    ref = _torchray(method, tm, xt)
    res = xa.explain(model, float32(v), float32(xj), jnp.asarray(TARGETS), method=method)
    if method != "gradient":
        assert_close(res.map, ref, f"{method} (float32) vs TorchRay on {arch}")
        return
    # ReLU kinks (see _parity): the algorithm in float64, the precision under float32's own masks
    g32 = kinked_gradient(arch, TARGETS)[1]
    assert_close(res.map, np.max(np.abs(g32), axis=-1), f"{method} (float32) vs the float64 gradient "
                 f"under float32 ReLU masks on {arch}", scale=float(np.max(np.abs(ref))))
    with jax.enable_x64(True):
        res = xa.explain(model, v, xj, jnp.asarray(TARGETS), method=method)
    assert_close(res.map, ref, f"{method} (float64) vs TorchRay on {arch}")


@pytest.mark.parametrize("arch", ARCHS)
def test_grad_cam_at_the_benchmark_layer(torch_pair, image_batch, arch):
    tm, model, v = torch_pair(arch)
    xt, xj = image_batch
    layer = GRAD_CAM_LAYER[arch]
    ref = _torchray("grad_cam", tm, xt, saliency_layer=layer)
    res = xa.explain(model, float32(v), float32(xj), jnp.asarray(TARGETS), method="grad_cam", layer=layer)
    assert_close(res.map, ref, f"Grad-CAM vs TorchRay on {arch} at {layer}")
