"""Parity with Captum on converted VGG16 and ResNet50 (random weights, batch 2, 64x64).

Ours runs in float32, Captum in float64 on the same weights and input (see conftest.torch_pair).
Tolerance: max abs error <= 1e-4 x max|Captum|, with two stated exceptions:

- integrated gradients runs float64 on both sides (ours in float32 against Captum in float64 measured
  1.4e-3 to 1.2e-2 x max on the eight cases: path points on ReLU kinks);
- gradient and input x gradient: some ReLU pre-activations of this input batch lie within float32
  rounding of 0, and which ones flip depends on the CPU's float32 kernels (see ``_parity``). So ours in
  float64 is compared with Captum in float64, and ours in float32 with the float64 gradient under this
  machine's float32 ReLU masks (``kinked_gradient``, itself checked against Captum with float64
  masks), both at 1e-4.

Measured max abs error / max|Captum| (VGG16, ResNet50):
  gradient             float64 2.7e-15, 2.3e-15; float32 vs float32 masks 8.8e-7, 1.3e-6
                       (float32 vs Captum 4.0e-2, 8.4e-3 on the machine that measured it)
  input x gradient     float64 2.0e-15, 2.5e-15
  guided backprop      float32 1.9e-7, 3.6e-7
  deconvnet            float32 6.9e-7, 6.9e-7
  SmoothGrad           float32 9.0e-7, 1.5e-6 (squared 6.5e-7, 1.2e-6; VarGrad 9.2e-7, 1.8e-6)
  Grad-CAM             float32 3.9e-6, 1.1e-6 (explicit and default layer alike)
  IG, four rules       float64 3.0e-8 to 4.5e-8 (Captum multiplies by its step sizes as a float32
                       tensor, 1/n off by ~3e-8 relative; ours is within 1.5e-15 of a float64 sum)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

from _parity import TOL, assert_close, float32, nchw_to_nhwc  # noqa: E402

ARCHS = ["vgg16", "resnet50"]
TARGETS = [0, 2]  # classes whose random-weight Grad-CAM maps are partly positive on both nets


def _t():
    return torch.tensor(TARGETS)


def _ours(model, variables, x, method, **kw):
    return xa.explain(model, variables, x, jnp.asarray(TARGETS), method=method, **kw)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method,cls", [
    ("gradient", "Saliency"),
    ("input_x_gradient", "InputXGradient"),
    ("guided_backprop", "GuidedBackprop"),
    ("deconvnet", "Deconvolution"),
])
def test_gradient_family(torch_pair, image_batch, kinked_gradient, arch, method, cls):
    tm, model, v = torch_pair(arch)
    xt, xj = image_batch
    attr = getattr(captum_attr, cls)(tm)
    kw = {"abs": False} if cls == "Saliency" else {}
    ref = nchw_to_nhwc(attr.attribute(xt.clone().requires_grad_(), target=_t(), **kw))
    res = _ours(model, float32(v), float32(xj), method)
    if method not in ("gradient", "input_x_gradient"):
        assert_close(res.relevance, ref, f"{method} (float32) vs Captum {cls} on {arch}")
        return
    # ReLU kinks (see _parity): the algorithm in float64, the precision under float32's own masks
    times = np.asarray(xj) if method == "input_x_gradient" else 1.0
    g64, g32 = kinked_gradient(arch, TARGETS)
    assert_close(g64 * times, ref, f"float64-mask reference vs Captum {cls} on {arch}")
    assert_close(res.relevance, g32 * times, f"{method} (float32) vs the float64 gradient under float32 "
                 f"ReLU masks on {arch}", scale=float(np.max(np.abs(ref))))
    with jax.enable_x64(True):
        res = _ours(model, v, xj, method)
    assert_close(res.relevance, ref, f"{method} (float64) vs Captum {cls} on {arch}")


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("rule", ["right", "left", "middle", "trapezoid"])
def test_integrated_gradients_each_riemann_rule(torch_pair, image_batch, arch, rule, monkeypatch):
    """Float64 on both sides, unlike the other parity tests: IG evaluates the gradient at m points on
    the straight path, and in float32 one of them can sit on a ReLU kink (a pre-activation within
    rounding of 0), where either side may take either one-sided gradient; that is rounding, not the
    algorithm. In float64 and with an exact α = k/m grid on both sides the sums agree (to 4.5e-8 x max:
    Captum's step weights 1/n are a float32 tensor)."""
    tm, model, v = torch_pair(arch)
    # Captum builds its alpha grid with torch.linspace in float32 (k/n off by ~1e-8), enough to flip
    # a ReLU on VGG16 and move the left-rule result by 0.8 %; make its grid float64 like ours.
    from captum.attr._utils import approximation_methods as am

    linspace = torch.linspace
    monkeypatch.setattr(am.torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "dtype": torch.float64}))
    xt, xj = image_batch
    m = 6
    ig = captum_attr.IntegratedGradients(tm)
    # A non-constant baseline: at a constant image, max-pool windows hold values equal to the last
    # ulp and each framework's rounding picks its own argmax, which no algorithm comparison can fix.
    base = 0.3 * torch.randn(xt.shape, generator=torch.Generator().manual_seed(5), dtype=xt.dtype)
    # Captum's "riemann_trapezoid" with n points uses weights 1/n (ends 1/(2n)), which sum to
    # (n-1)/n; the trapezoid rule over m intervals uses n = m + 1 points with weights 1/m. So ours
    # equals Captum's times (m+1)/m — the only difference is that normalisation.
    n, scale = (m + 1, (m + 1) / m) if rule == "trapezoid" else (m, 1.0)
    ref = ig.attribute(xt, baselines=base, target=_t(), n_steps=n, method=f"riemann_{rule}")
    ref = nchw_to_nhwc(ref) * scale
    base_j = jnp.asarray(base.permute(0, 2, 3, 1).numpy())
    res = _ours(model, v, xj, "integrated_gradients", signal="logit", baseline=base_j, steps=m, rule=rule, chunk=4)
    assert_close(res.relevance, ref, f"IG ({rule}) vs Captum on {arch}")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant,nt_type", [("plain", "smoothgrad"), ("square", "smoothgrad_sq"), ("var", "vargrad")])
def test_smoothgrad_with_a_shared_noise_draw(torch_pair, image_batch, arch, variant, nt_type, monkeypatch):
    tm, model, v = torch_pair(arch)
    xt, xj = image_batch
    n, noise = 3, 0.15
    # float32 values, so both sides draw the same noise; sigma is computed in each side's precision
    eps = np.random.default_rng(0).standard_normal((n,) + tuple(xj.shape)).astype(np.float32).astype(np.float64)
    sigma = noise * (np.asarray(xj).max(axis=(1, 2, 3)) - np.asarray(xj).min(axis=(1, 2, 3)))
    # Captum draws torch.normal noise for input.repeat_interleave(n): row b*n + s is sample s of
    # image b. Replace the draw with ours, sigma_b * eps[s, b] (NHWC -> NCHW).
    shared = np.transpose(eps, (1, 0, 4, 2, 3)) * sigma[:, None, None, None, None]
    shared = torch.from_numpy(shared.reshape((-1,) + tuple(xt.shape[1:])))

    def add_noise(inp, stdev, parts):
        assert parts == n
        return inp.repeat_interleave(parts, dim=0) + shared

    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input", staticmethod(add_noise))
    nt = captum_attr.NoiseTunnel(captum_attr.Saliency(tm))
    ref = nchw_to_nhwc(nt.attribute(xt, nt_type=nt_type, nt_samples=n, stdevs=1.0, target=_t(), abs=False))
    res = xa.attributor(model, "smoothgrad", noise=noise, samples=n, variant=variant, draws=float32(eps), chunk=2)(
        float32(v), float32(xj), jnp.asarray(TARGETS))
    assert_close(res.relevance, ref, f"smoothgrad ({variant}) vs Captum NoiseTunnel {nt_type} on {arch}")


@pytest.mark.parametrize("arch,layer,torch_layer", [("vgg16", "features.29", "features.29"), ("resnet50", "layer4", "layer4")])
def test_grad_cam(torch_pair, image_batch, arch, layer, torch_layer):
    tm, model, v = torch_pair(arch)
    xt, xj = image_batch
    gc = captum_attr.LayerGradCam(tm, tm.get_submodule(torch_layer))
    ref = torch.clamp(gc.attribute(xt, target=_t()), min=0)[:, 0].detach().numpy()  # ReLU as Grad-CAM
    v32, x32 = float32(v), float32(xj)
    res = _ours(model, v32, x32, "grad_cam", layer=layer)
    assert_close(res.map, ref, f"Grad-CAM vs Captum LayerGradCam on {arch} at {layer}")
    default = _ours(model, v32, x32, "grad_cam")  # default layer: the last conv ReLU
    assert_close(default.map, ref, f"Grad-CAM at the default layer on {arch}")
