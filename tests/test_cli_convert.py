"""`xattr convert`: a torchvision .pth becomes a checkpoint that loads and reproduces the logits."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from xattr_jax.app.cli import main  # noqa: E402
from xattr_jax.checkpoint import load_checkpoint  # noqa: E402

RTOL = 1e-4  # max |ours - torch| <= RTOL * max |torch|, float32


@pytest.fixture(scope="module")
def resnet18_pth(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_convert_then_load_reproduces_torchvision(resnet18_pth, tmp_path, capsys):
    tmodel, pth = resnet18_pth
    out = tmp_path / "ckpt"
    assert main(["convert", "--arch", "resnet18", "--weights", str(pth), "--out", str(out)]) == 0
    summary = capsys.readouterr().out.strip()
    assert (
        len(summary.splitlines()) == 1
        and "converted resnet18" in summary
        and "10 classes" in summary
    )

    model, variables = load_checkpoint(out)
    assert model.num_classes == 10
    x = torch.randn(2, 3, 97, 131, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = tmodel(x).numpy()
    logits = np.asarray(
        jax.jit(model.apply)(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
    )
    err, scale = np.abs(logits - ref).max(), np.abs(ref).max()
    assert err <= RTOL * scale, f"max abs diff {err:.3g} > {RTOL:g} x max|logit| {scale:.3g}"


def test_existing_output_needs_overwrite(resnet18_pth, tmp_path, capsys):
    _, pth = resnet18_pth
    args = ["convert", "--arch", "resnet18", "--weights", str(pth), "--out", str(tmp_path / "c")]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_mismatched_weights_fail_cleanly(resnet18_pth, tmp_path, capsys):
    _, pth = resnet18_pth
    rc = main(
        ["convert", "--arch", "resnet34", "--weights", str(pth), "--out", str(tmp_path / "c")]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("xattr convert: error:") and "missing keys" in err
    assert not (tmp_path / "c").exists()


def test_unknown_arch_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", "--arch", "resnet19", "--weights", "w.pth", "--out", str(tmp_path)])
    assert info.value.code == 2 and "resnet18" in capsys.readouterr().err


def test_missing_torch_is_explained(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(
        sys.modules, "converters.torchvision", None
    )  # import now raises ImportError
    rc = main(["convert", "--arch", "resnet18", "--weights", "w.pth", "--out", str(tmp_path / "c")])
    assert rc == 1
    assert "pip install 'xattr-jax[converters]'" in capsys.readouterr().err
