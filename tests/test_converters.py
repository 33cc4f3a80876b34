"""converters.torchvision: input forms (dict, .pth path, nn.Module) and refusal of bad weights."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from converters.torchvision import (  # noqa: E402
    ARCHITECTURES,
    convert,
    convert_state_dict,
    expected_shapes,
    load_state_dict,
)
from xattr_jax.models import TORCHVISION_ARCHITECTURES as ZOO  # noqa: E402


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    return [p for p, _ in la] == [p for p, _ in lb] and all(
        np.array_equal(x, y) for (_, x), (_, y) in zip(la, lb, strict=True)
    )


def test_architectures_are_the_zoo():
    assert ARCHITECTURES == ZOO


def test_module_dict_and_path_give_the_same_variables(resnet18, tmp_path):
    _, from_module = convert("resnet18", resnet18)
    _, from_dict = convert("resnet18", resnet18.state_dict())
    path = tmp_path / "w.pth"
    torch.save(resnet18.state_dict(), path)
    _, from_path = convert("resnet18", path)
    _, from_str = convert("resnet18", str(path))
    torch.save({"state_dict": resnet18.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    _, from_training_ckpt = convert("resnet18", tmp_path / "ckpt.pth")
    prefixed = {f"module.{k}": v for k, v in resnet18.state_dict().items()}  # DataParallel
    _, from_prefixed = convert("resnet18", prefixed)
    for other in (from_dict, from_path, from_str, from_training_ckpt, from_prefixed):
        assert _leaves_equal(from_module, other)


def test_variable_layout(resnet18):
    model, variables = convert("resnet18", resnet18)
    assert set(variables) == {"params", "batch_stats"}
    p, s = variables["params"], variables["batch_stats"]
    assert p["conv1"]["kernel"].shape == (7, 7, 3, 64) and "bias" not in p["conv1"]
    assert set(p["bn1"]) == {"scale", "bias"} and set(s["bn1"]) == {"mean", "var"}
    assert p["layer2"]["0"]["downsample"]["0"]["kernel"].shape == (1, 1, 64, 128)
    assert p["fc"]["kernel"].shape == (512, 1000)
    np.testing.assert_array_equal(
        p["fc"]["kernel"], resnet18.fc.weight.detach().numpy().T, err_msg="Linear transpose"
    )
    np.testing.assert_array_equal(s["bn1"]["var"], resnet18.bn1.running_var.numpy())
    for leaf in jax.tree_util.tree_leaves(variables):
        assert leaf.dtype == np.float32


def test_vgg_flatten_permutation():
    """classifier.0 of a VGG sees (H, W, C)-ordered inputs; torch's are (C, H, W)-ordered."""
    shapes = expected_shapes("vgg11")
    state = {k: torch.zeros(v) for k, v in shapes.items()}
    w = torch.arange(4096 * 25088, dtype=torch.float32).reshape(4096, 25088)
    state["classifier.0.weight"] = w
    variables, num_classes = convert_state_dict("vgg11", state)
    assert num_classes == 1000 and "batch_stats" not in variables
    kernel = np.asarray(variables["params"]["classifier"]["0"]["kernel"])
    c, h, x, o = 17, 3, 5, 9  # channel, row, column, output unit
    assert kernel[(h * 7 + x) * 512 + c, o] == w[o, c * 49 + h * 7 + x].item()


def test_mismatched_state_dict_is_refused_with_every_problem(resnet18):
    state = dict(resnet18.state_dict())
    del state["layer1.0.conv1.weight"]
    del state["layer4.1.bn2.running_var"]
    state["head.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(ValueError) as info:
        convert("resnet18", state)
    msg = str(info.value)
    for needle in (
        "missing keys (2)",
        "layer1.0.conv1.weight",
        "layer4.1.bn2.running_var",
        "unexpected keys (1)",
        "head.weight",
        "shape mismatches (1)",
        "conv1.weight: expected (64, 3, 7, 7), got (64, 3, 5, 5)",
    ):
        assert needle in msg, f"{needle!r} not in the error:\n{msg}"


def test_partial_state_dict_is_refused(resnet18):
    state = {k: v for k, v in resnet18.state_dict().items() if not k.startswith("layer4")}
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): layer4\.0\.conv1\.weight"):
        convert("resnet18", state)


def test_wrong_architecture_is_refused(resnet18):
    with pytest.raises(ValueError, match="(?s)resnet34.*missing keys.*layer1.2.conv1.weight"):
        convert("resnet34", resnet18)


def test_non_float_value_is_refused(resnet18):
    state = dict(resnet18.state_dict())
    state["fc.bias"] = torch.zeros(1000, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"not floating-point tensors \(1\): fc.bias"):
        convert("resnet18", state)


def test_unknown_arch_lists_supported():
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'.*vgg16.*resnet18"):
        convert("resnet19", {})


def test_missing_path_and_unpicklable_file(tmp_path, resnet18):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        convert("resnet18", tmp_path / "nope.pth")
    torch.save(resnet18, tmp_path / "whole_model.pth")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match="weights_only"):
        convert("resnet18", tmp_path / "whole_model.pth")
    with pytest.raises(ValueError, match="state dict"):
        load_state_dict(42)
