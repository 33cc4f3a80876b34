"""`xattr demo` in a fresh process where torch cannot be imported: time bound and outputs."""

import json
import subprocess
import sys
import time
from pathlib import Path

from xattr_jax.viz.imageio import read_image

_NO_TORCH = """
import sys
for name in ("torch", "torchvision", "captum", "zennit", "torchray"):
    sys.modules[name] = None  # any import of these raises ImportError
from xattr_jax.app.cli import main
sys.exit(main(["demo", "--out", sys.argv[1], "--no-progress"]))
"""


def test_demo_without_torch_within_five_minutes(tmp_path):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(out)], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wall < 300, f"the demo took {wall:.0f} s (bound: 300 s)"
    pngs = sorted(Path(out).glob("*.png"))
    assert len(pngs) >= 5, [p.name for p in pngs]
    for p in pngs:
        assert read_image(p).ndim == 3
    summary = json.loads((out / "demo.json").read_text())
    assert not summary["failed"], summary["failed"]
    table = (out / "pointing.md").read_text()
    assert "| grad_cam |" in table and "pointing all" in table
    assert "grad_cam" in json.loads((out / "pointing.json").read_text())["methods"]
    if "attention_backprop" in summary["methods"]:
        assert (out / "attention_backprop_layers.png").is_file()
