"""The zoo against torchvision: logits for every architecture, every named layer for VGG16 and
ResNet50, layer naming, and the pooling arithmetic of ``xattr_jax.nn`` against torch."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
F = torch.nn.functional

from converters.torchvision import convert  # noqa: E402
from xattr_jax import nn as xnn  # noqa: E402
from xattr_jax.models import TORCHVISION_ARCHITECTURES as ARCHITECTURES  # noqa: E402
from xattr_jax.models import build  # noqa: E402

RTOL = 1e-4  # max |ours - torch| <= RTOL * max |torch|, float32 throughout
SIZES = [(224, 224), (193, 257)]


def _torch_model(arch: str):
    """torchvision ``arch`` with seeded random weights, eval mode, non-trivial batch norm."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _input(h: int, w: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, h, w, generator=g)
    return x, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def _nhwc(t) -> np.ndarray:
    a = t.detach().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def _assert_close(ours, ref, what: str):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != torch {ref.shape}"
    scale = float(np.abs(ref).max())
    err = float(np.abs(ours - ref).max())
    assert err <= RTOL * scale, (
        f"{what}: max abs diff {err:.3g} > {RTOL:g} x max|torch| = {RTOL * scale:.3g} (float32)"
    )


# --------------------------------------------------------------------------------------- logits


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_match_torchvision(arch):
    tmodel = _torch_model(arch)
    model, variables = convert(arch, tmodel)
    assert model == build(arch)
    apply = jax.jit(model.apply)
    for h, w in SIZES:
        x_t, x_j = _input(h, w)
        with torch.no_grad():
            ref = tmodel(x_t).numpy()
        out = apply(variables, x_j)
        assert out.dtype == jnp.float32
        _assert_close(out, ref, f"{arch} logits at {h}x{w}")


def test_num_classes_is_read_from_the_weights():
    torch.manual_seed(0)
    tmodel = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    model, variables = convert("resnet18", tmodel)
    assert model.num_classes == 7
    x_t, x_j = _input(64, 80)
    with torch.no_grad():
        ref = tmodel(x_t).numpy()
    _assert_close(jax.jit(model.apply)(variables, x_j), ref, "resnet18 (7 classes) logits")


# ---------------------------------------------------------------------------------- layer names


def _module_paths(model, shape=(1, 224, 224, 3)) -> list[str]:
    """Dotted paths of every module whose ``__call__`` runs, in call order (abstractly traced)."""
    paths = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            paths.append(".".join(context.module.path))
        return next_fun(*args, **kwargs)

    def init(x):
        with nn.intercept_methods(record):
            return model.init(jax.random.key(0), x)

    jax.eval_shape(init, jax.ShapeDtypeStruct(shape, jnp.float32))
    return [p for p in paths if p]


def _ours_only(path: str) -> bool:
    """Layers only we have: ``flatten``, ``add``, ``relu1``/``relu2`` (torch reuses one relu)."""
    return path == "flatten" or path.rsplit(".", 1)[-1] in ("add", "relu1", "relu2")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_layer_names_are_torchvision_names(arch):
    with torch.device("meta"):
        tmodel = getattr(torchvision.models, arch)(weights=None)
    torch_names = {name for name, _ in tmodel.named_modules() if name}
    paths = _module_paths(build(arch))
    assert len(paths) == len(set(paths)), "every module instance is called exactly once"
    ours = {p for p in paths if not _ours_only(p)}
    assert ours == torch_names, (
        f"only ours: {sorted(ours - torch_names)}; only torchvision: {sorted(torch_names - ours)}"
    )


def test_build_rejects_unknown_arch():
    with pytest.raises(ValueError, match="resnet18.*vgg16|vgg16.*resnet18"):
        build("resnet19")


def test_model_rejects_nchw_input():
    model = build("resnet18")
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 64, 64)))


# ------------------------------------------------------------------------------ every activation


def _torch_activations(tmodel, x):
    """Outputs and inputs of every named module, a list per module (a block's relu runs 2-3x)."""
    outputs, inputs = {}, {}
    for m in tmodel.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False  # keep each hooked tensor as it was produced

    def hook(name, module, args, out):
        outputs.setdefault(name, []).append(out.detach().clone())
        inputs.setdefault(name, []).append(args[0].detach().clone())

    handles = [
        m.register_forward_hook(functools.partial(hook, n)) for n, m in tmodel.named_modules() if n
    ]
    try:
        with torch.no_grad():
            tmodel(x)
    finally:
        for h in handles:
            h.remove()
    return outputs, inputs


def _expected_from_torch(outputs, inputs, flatten_consumer, chw_flatten: bool):
    """Our layer name -> torch reference activation (NHWC)."""
    expected = {}
    for name, outs in outputs.items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0].startswith("layer") and parts[2] == "relu":
            block = ".".join(parts[:2])
            ours = ["relu1", "relu2"][: len(outs) - 1] + ["relu"]
            for our_name, out in zip(ours, outs, strict=True):
                expected[f"{block}.{our_name}"] = _nhwc(out)
            expected[f"{block}.add"] = _nhwc(inputs[name][-1])  # input of the relu after the sum
        else:
            assert len(outs) == 1, f"torch module {name} ran {len(outs)} times"
            expected[name] = _nhwc(outs[0])
    flat = inputs[flatten_consumer][0].numpy()
    if chw_flatten:  # torch flattens (C, H, W); ours is (H, W, C)
        c, hw = outputs["avgpool"][0].shape[1], outputs["avgpool"][0].shape[2:]
        flat = flat.reshape(flat.shape[0], c, *hw).transpose(0, 2, 3, 1).reshape(flat.shape[0], -1)
    expected["flatten"] = flat
    return expected


def _our_activations(model, variables, x):
    @jax.jit
    def run(variables, x):
        acts = {}

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.path:
                name = ".".join(context.module.path)
                assert name not in acts, f"{name} called twice"
                acts[name] = out
            return out

        with nn.intercept_methods(record):
            logits = model.apply(variables, x)
        return logits, acts

    return run(variables, x)


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, flatten_consumer, chw_flatten",
    [("vgg16", "classifier.0", True), ("resnet50", "fc", False)],
)
def test_every_layer_matches_torchvision(arch, flatten_consumer, chw_flatten):
    tmodel = _torch_model(arch)
    model, variables = convert(arch, tmodel)
    x_t, x_j = _input(193, 257, seed=2)
    outputs, inputs = _torch_activations(tmodel, x_t)
    expected = _expected_from_torch(outputs, inputs, flatten_consumer, chw_flatten)
    logits, acts = _our_activations(model, variables, x_j)

    assert set(acts) == set(expected), (
        f"only ours: {sorted(set(acts) - set(expected))}; "
        f"only torch: {sorted(set(expected) - set(acts))}"
    )
    for container in (
        ("features", "classifier", "avgpool")
        if arch == "vgg16"
        else ("layer1", "layer3", "layer4.2", "layer2.0.downsample", "avgpool")
    ):
        assert container in acts, f"container {container} not compared"
    for name in expected:
        _assert_close(acts[name], expected[name], f"{arch} layer {name}")


# ------------------------------------------------------------------- pooling arithmetic (nn.py)


def _pool_input(h, w, c=3, seed=0):
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(seed))
    return x, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def _apply(module, x):
    return module.apply({}, x)


@pytest.mark.parametrize("h, w", [(7, 9), (8, 8), (13, 5), (3, 4), (112, 97)])
@pytest.mark.parametrize(
    "kernel, stride, padding",
    [(3, 2, 1), (2, 2, 0), (3, 2, 0), ((3, 2), (2, 1), (1, 0)), (3, 3, 1)],
)
@pytest.mark.parametrize("ceil_mode", [True, False])
def test_max_pool_matches_torch(h, w, kernel, stride, padding, ceil_mode):
    x_t, x_j = _pool_input(h, w)
    ref = F.max_pool2d(x_t, kernel, stride, padding, ceil_mode=ceil_mode)
    out = _apply(xnn.MaxPool(kernel, stride, padding, ceil_mode), x_j)
    np.testing.assert_array_equal(np.asarray(out), _nhwc(ref), err_msg="max pool must be exact")


@pytest.mark.parametrize("h, w", [(5, 5), (7, 7), (13, 17), (14, 14), (1, 3), (193, 257)])
@pytest.mark.parametrize("output_size", [7, 6, 1, (3, 5), (2, 1)])
def test_adaptive_avg_pool_matches_torch(h, w, output_size):
    x_t, x_j = _pool_input(h, w)
    ref = F.adaptive_avg_pool2d(x_t, output_size)
    out = _apply(xnn.AdaptiveAvgPool(output_size), x_j)
    np.testing.assert_allclose(np.asarray(out), _nhwc(ref), rtol=1e-5, atol=1e-6,
                               err_msg="adaptive avg pool (rtol 1e-5, atol 1e-6)")  # fmt: skip


@pytest.mark.parametrize("h, w", [(7, 9), (8, 8), (13, 5), (33, 20)])
@pytest.mark.parametrize(
    "kernel, stride, padding", [(3, 2, 1), (2, 2, 0), (3, 1, 1), ((3, 5), (1, 2), (1, 2))]
)
def test_avg_pool_with_padding_matches_torch(h, w, kernel, stride, padding):
    x_t, x_j = _pool_input(h, w)
    ref = F.avg_pool2d(x_t, kernel, stride, padding, count_include_pad=True)
    out = _apply(xnn.AvgPool(kernel, stride, padding), x_j)
    np.testing.assert_allclose(np.asarray(out), _nhwc(ref), rtol=1e-5, atol=1e-6,
                               err_msg="avg pool (rtol 1e-5, atol 1e-6)")  # fmt: skip
