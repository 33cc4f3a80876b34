"""Any torchvision (and timm) classifier in JAX through torchax (``converters.torch``).

Per architecture, random weights (seeded), batch 2, the smallest input the architecture takes:

- logits: ours in float32 against torch in float64 on the same weights, <= 1e-5 x max;
- layer names: every conv/dense layer of ``xa.layers`` is a module of the torch model, and a
  parameter-free module (a ReLU, an inception block) is a row of its own;
- gradient, input x gradient and integrated gradients (right Riemann sum, 4 steps, a random
  baseline, exact alpha = k/m grid on both sides) against Captum on the same torch module,
  float64 on both sides, <= 1e-4 x max. In float32, pre-activations within rounding of 0 flip a
  ReLU/max-pool decision on either side (see ``_parity.py``); that is rounding, not the route.

Measured errors and times are printed (``pytest -s``) and listed in ``docs/your_model.md``.
"""

from __future__ import annotations

import copy
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa

torchax = pytest.importorskip("torchax")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
captum_attr = pytest.importorskip("captum.attr")

from _nets import bias_free  # noqa: E402
from _parity import TOL, assert_close, nchw_to_nhwc  # noqa: E402
from converters.torch import flatten, from_torch, nest  # noqa: E402
from converters.torchvision import convert  # noqa: E402
from xattr_jax.composites import composite, epsilon_plus  # noqa: E402
from xattr_jax.composites import kind as kind_of  # noqa: E402
from xattr_jax.rules import epsilon  # noqa: E402

LOGIT_TOL = 1e-5  # ours float32 vs torch float64
TARGETS = [1, 3]
slow = pytest.mark.slow
# (architecture, input size, a parameter-free layer name that must be a row, its kind)
ARCHS = [
    pytest.param("squeezenet1_1", 64, "features.2", "maxpool"),
    pytest.param("shufflenet_v2_x1_0", 32, "maxpool", "maxpool", marks=slow),
    pytest.param("mnasnet0_5", 32, "layers.2", "relu", marks=slow),
    pytest.param("regnet_y_400mf", 32, "stem.2", "relu", marks=slow),
    pytest.param("alexnet", 64, "features.11", "relu", marks=slow),
    pytest.param("vgg11", 32, "features.19", "relu", marks=slow),
    pytest.param("vgg11_bn", 32, "features.27", "relu", marks=slow),
    pytest.param("resnet18", 32, "maxpool", "maxpool", marks=slow),
    pytest.param("resnext50_32x4d", 32, "maxpool", "maxpool", marks=slow),
    pytest.param("wide_resnet50_2", 32, "maxpool", "maxpool", marks=slow),
    pytest.param("googlenet", 64, "maxpool4", "maxpool", marks=slow),
    pytest.param("inception_v3", 80, "maxpool2", "maxpool", marks=slow),
    pytest.param("densenet121", 32, "features.pool0", "maxpool", marks=slow),
    pytest.param("mobilenet_v2", 32, "features.0", None, marks=slow),
    pytest.param("mobilenet_v3_small", 32, "features.0", None, marks=slow),
    pytest.param("efficientnet_b0", 32, "features.0", None, marks=slow),
    pytest.param("efficientnet_v2_s", 32, "features.0", None, marks=slow),
    pytest.param("convnext_tiny", 32, "features.0", None, marks=slow),
    pytest.param("swin_t", 64, "features.0", None, marks=slow),
    pytest.param("maxvit_t", 224, "stem", None, marks=slow),
    pytest.param("vit_b_16", 224, "conv_proj", "conv", marks=slow),
    pytest.param("timm:vit_small_patch16_224", 224, "patch_embed.proj", "conv", marks=slow),
]


def _build(arch):
    torch.manual_seed(0)
    with warnings.catch_warnings():  # GoogLeNet/Inception announce a future change of their init
        warnings.simplefilter("ignore", FutureWarning)
        if arch.startswith("timm:"):
            timm = pytest.importorskip("timm")
            tm = timm.create_model(arch[5:], pretrained=False).eval()
        else:
            tm = torchvision.models.get_model(arch, weights=None).eval()
    for w in tm.parameters():  # ViT's head starts at zero: logits and gradients would be zero
        if w.ndim > 1 and not w.any():
            torch.nn.init.normal_(w, std=0.02)
    return tm


@pytest.fixture(scope="module")
def case():
    cache = {}

    def get(arch, size):
        if arch not in cache:
            tm = _build(arch)
            model, variables = from_torch(tm)
            x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
            cache.clear()  # one architecture at a time: keep memory modest
            cache[arch] = (tm, copy.deepcopy(tm).double(), model, variables, x)
        return cache[arch]

    return get


def _nchw64(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).double()


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


@pytest.mark.parametrize("arch,size,name,kind", ARCHS)
def test_logits_and_layer_names(case, arch, size, name, kind):
    tm, tm64, model, variables, x = case(arch, size)
    with torch.no_grad():
        ref = tm64(_nchw64(x)).numpy()
    assert_close(model(variables, jnp.asarray(x)), ref, f"{arch} logits (float32) vs torch (float64)",
                 tol=LOGIT_TOL)
    modules = dict(tm.named_modules())
    rows = {r.name: r for r in xa.layers(model, variables, jnp.asarray(x))}
    linear = [n for n, r in rows.items() if r.kind in ("conv", "dense")]
    # a module's layer is its name, also when its parent calls it functionally (Swin's attention:
    # F.linear on attn.qkv's weight); one on a module's own parameter (nn.MultiheadAttention's
    # in_proj_weight) is a layer of that module: <module>.dense_<i>
    unnamed = [n for n in linear if n not in modules and n.rsplit(".", 1)[0] not in modules]
    assert linear and not unnamed, f"{arch}: conv/dense layers not named by a module: {unnamed[:5]}"
    for n in (n for n in linear if n not in modules):
        owner = n.rsplit(".", 1)[0]
        missing = [f"{owner}.{c}" for c, m in modules[owner].named_children()
                   if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and f"{owner}.{c}" not in rows]
        assert not missing, f"{arch}: {n} is named by its parent, not by its module among {missing}"
    assert name in rows and name in modules, f"{arch}: module {name!r} is not a layer row: {list(rows)[:12]}"
    if kind is not None:
        assert rows[name].kind == kind, f"{arch}: {name} is {rows[name].kind}, expected {kind}"


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("arch,size,name,kind", ARCHS)
def test_gradient_family_vs_captum(case, arch, size, name, kind, monkeypatch):
    tm, tm64, model, variables, x = case(arch, size)
    v64, xj, xt, t = _f64(variables), jnp.asarray(x, jnp.float64), _nchw64(x), torch.tensor(TARGETS)
    for method, ref in [
        ("gradient", captum_attr.Saliency(tm64).attribute(xt.clone().requires_grad_(), target=t, abs=False)),
        ("input_x_gradient", captum_attr.InputXGradient(tm64).attribute(xt.clone().requires_grad_(), target=t)),
    ]:
        res = xa.explain(model, v64, xj, jnp.asarray(TARGETS), method=method)
        assert_close(res.relevance, nchw_to_nhwc(ref), f"{method} (float64) vs Captum on {arch}")
    # Captum's alpha grid is a float32 linspace (k/m off by ~1e-8): make it float64 like ours
    from captum.attr._utils import approximation_methods as am

    linspace = torch.linspace
    monkeypatch.setattr(am.torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "dtype": torch.float64}))
    base = 0.3 * torch.randn(xt.shape, generator=torch.Generator().manual_seed(5), dtype=xt.dtype)
    ref = captum_attr.IntegratedGradients(tm64).attribute(xt, baselines=base, target=t, n_steps=4,
                                                          method="riemann_right")
    res = xa.explain(model, v64, xj, jnp.asarray(TARGETS), method="integrated_gradients", signal="logit",
                     baseline=jnp.asarray(nchw_to_nhwc(base)), steps=4, rule="right", chunk=4)
    assert_close(res.relevance, nchw_to_nhwc(ref), f"IG (float64) vs Captum on {arch}")


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("arch,size,name,kind", ARCHS)
def test_lrp_conserves_on_a_bias_free_copy(case, arch, size, name, kind):
    """LRP-ε on every linear layer (ε conserves on signed inputs too), float64: the input relevance
    sums to the seed, 1 per example, within 1e-6 — or LRP refuses the model, naming its operations.
    ε = 1e-30: a random bias-free network's activations shrink to ~1e-10 (mobilenet_v2's logits),
    where ε = 1e-6 would absorb all relevance."""
    _, _, model, variables, x = case(arch, size)
    v = bias_free(_f64(variables))
    comp = composite((kind_of("conv"), epsilon(1e-30)), *epsilon_plus(epsilon=1e-30, stabilizer=1e-30).entries)
    try:
        res = xa.explain(model, v, jnp.asarray(x, jnp.float64), jnp.asarray(TARGETS), method="lrp", composite=comp)
    except ValueError as err:
        assert "strict=False" in str(err) and "other" in str(err), f"{arch}: LRP failed without naming why: {err}"
        pytest.xfail(f"{arch}: LRP refuses operations without a rule: {str(err).splitlines()[1]}")
    total = np.asarray(jnp.sum(res.relevance, axis=(1, 2, 3)))
    print(f"{arch}: LRP total relevance {total} (seed 1)")
    np.testing.assert_allclose(total, 1.0, rtol=1e-6, err_msg=f"{arch}: input relevance != the seed 1 (rtol 1e-6)")


@pytest.mark.usefixtures("x64")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # TorchRay's probes at teardown
def test_excitation_backprop_on_googlenet_equals_torchray():
    """Excitation Backprop's signal at inception4e (the inception-4 output, the concatenation of its
    four branches) against TorchRay's ``excitation_backprop`` on the same torchvision GoogLeNet,
    both float64: <= 1e-4 x max (measured 5.3e-9; both conserve the seed, 1)."""
    ebm = pytest.importorskip("torchray.attribution.excitation_backprop")
    tm = _build("googlenet")
    model, variables = from_torch(tm)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3))
    _, probes = ebm.excitation_backprop(copy.deepcopy(tm).double(), _nchw64(x), TARGETS,
                                        saliency_layer="inception4e", resize=False, debug=True)
    ref = probes["inception4e"].data[0].grad.permute(0, 2, 3, 1).numpy()
    res = xa.explain(model, _f64(variables), jnp.asarray(x), jnp.asarray(TARGETS), method="excitation_backprop",
                     layer="inception4e")
    assert res.relevance.shape == ref.shape == (2, 4, 4, 832), "the whole concatenation, channels last"
    assert_close(res.relevance, ref, "EB signal at inception4e (float64) vs TorchRay (float64)", tol=1e-4)
    assert_close(res.map, ref.sum(-1), "EB map at inception4e (float64) vs TorchRay (float64)", tol=1e-4)


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def test_variables_are_the_modules_own_names():
    tm = _Tiny().eval()
    model, variables = from_torch(tm)
    floating = {k for k, v in tm.state_dict().items() if v.is_floating_point()}
    assert set(flatten(variables)) == floating, "variables are the floating state-dict entries"
    assert flatten(nest({"a.b": 1, "a.c.d": 2})) == {"a.b": 1, "a.c.d": 2}
    np.testing.assert_array_equal(np.asarray(variables["body"]["0"]["weight"]), tm.body[0].weight.detach().numpy())
    x = np.random.default_rng(1).normal(size=(2, 6, 7, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert_close(model(variables, jnp.asarray(x)), ref, "tiny logits vs torch (float32)", tol=LOGIT_TOL)
    names = [r.name for r in xa.layers(model, variables, jnp.asarray(x)) if r.kind in ("conv", "batchnorm", "relu", "dense")]
    assert names == ["body.0", "body.1", "body.2", "head"], names
    assert not tm._forward_hooks and not tm.body[0]._forward_pre_hooks, "hooks must not stay on the module"


def test_bad_input_is_refused_clearly():
    tm = _Tiny()  # training mode
    with pytest.raises(ValueError, match=r"training mode \(_Tiny, body, body.0.*call module.eval\(\)"):
        from_torch(tm)
    with pytest.raises(TypeError, match="needs a torch.nn.Module, got function"):
        from_torch(lambda x: x)
    model, variables = from_torch(tm.eval())
    with pytest.raises(ValueError, match=r"x must be NHWC images \[N, H, W, C\], got shape \(6, 7, 3\)"):
        model(variables, jnp.zeros((6, 7, 3)))
    with pytest.raises(ValueError, match=r"does not run on NHWC input of shape \(1, 6, 7, 5\).*pass the"):
        from_torch(tm, example_shape=(1, 6, 7, 5))
    from_torch(tm, example_shape=(1, 6, 7, 3))  # fits


def test_missing_torchax_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torchax", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"needs torchax .*pip install 'xattr-jax\[torch\]' \(torch 2.12.1"):
        from_torch(_Tiny().eval())


def test_convert_takes_every_torchvision_classifier():
    from xattr_jax.models import TORCHAX_ARCHITECTURES, TORCHVISION_ARCHITECTURES

    listed = set(torchvision.models.list_models(module=torchvision.models))
    assert set(TORCHAX_ARCHITECTURES) | set(TORCHVISION_ARCHITECTURES) == listed, (
        f"the command line's list is out of date: {sorted(listed ^ (set(TORCHAX_ARCHITECTURES) | set(TORCHVISION_ARCHITECTURES)))}")
    torch.manual_seed(0)
    tm = torchvision.models.get_model("mnasnet0_5", weights=None, num_classes=7).eval()
    model, variables = convert("mnasnet0_5", tm.state_dict())  # num_classes read from the weights
    x = np.random.default_rng(2).normal(size=(1, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert_close(model(variables, jnp.asarray(x)), ref, "convert(mnasnet0_5) logits vs torch", tol=LOGIT_TOL)
    with pytest.raises(ValueError, match="route 'flax' is not available for 'mnasnet0_5': use 'torchax'"):
        convert("mnasnet0_5", tm.state_dict(), route="flax")
    with pytest.raises(ValueError, match=r"does not match torchvision's mnasnet0_5 \(1000 classes\):\n  missing keys \(\d+\): layers.0.weight, .*\(\d+ more\)\n  unexpected keys \(1\): x$"):
        convert("mnasnet0_5", {"x": torch.zeros(1)})


def test_both_routes_agree_on_resnet18():
    torch.manual_seed(0)
    tm = torchvision.models.resnet18(weights=None, num_classes=6).eval()
    x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 32, 32, 3)).astype(np.float32))
    zoo, zv = convert("resnet18", tm.state_dict())
    fn, fv = convert("resnet18", tm.state_dict(), route="torchax")
    assert_close(fn(fv, x), zoo.apply(zv, x), "resnet18 logits: torchax route vs Flax zoo", tol=LOGIT_TOL)
    zoo_names = [r.name for r in xa.layers(zoo, zv, x) if r.kind in ("conv", "dense", "batchnorm")]
    torch_names = [r.name for r in xa.layers(fn, fv, x) if r.kind in ("conv", "dense", "batchnorm")]
    assert zoo_names == torch_names, "both routes name conv, batch-norm and dense layers alike"


def test_cli_convert_and_load_a_torchax_checkpoint(tmp_path, capsys):
    from converters.torchvision import load_checkpoint
    from xattr_jax import load_checkpoint as load_flax
    from xattr_jax.app.cli import main

    torch.manual_seed(0)
    tm = torchvision.models.get_model("squeezenet1_1", weights=None, num_classes=4).eval()
    torch.save(tm.state_dict(), tmp_path / "s.pth")
    out = tmp_path / "ckpt"
    assert main(["convert", "--arch", "squeezenet1_1", "--weights", str(tmp_path / "s.pth"), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "4 classes" in said and "converters.torchvision.load_checkpoint" in said, said
    model, variables = load_checkpoint(out)
    x = np.random.default_rng(4).normal(size=(1, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert_close(model(variables, jnp.asarray(x)), ref, "squeezenet1_1 from its checkpoint vs torch", tol=LOGIT_TOL)
    with pytest.raises(ValueError, match="torchax route: load it with converters.torchvision.load_checkpoint"):
        load_flax(out)
