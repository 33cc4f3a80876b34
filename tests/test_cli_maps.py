"""What a dataset job writes is what ``xa.explain`` computes, and ``--layer`` / ``--signal`` reach it.

``xattr explain FOLDER`` is run as a user runs it (a subprocess) with ``--layer`` and ``--signal``;
every map it stores is compared with ``xa.explain`` on the same decoded, preprocessed image and the
record's target, with the same layer and signal. The maps must be at the layer's resolution, equal
to ``explain`` (max abs error <= 1e-5 x max), and differ from the default signal's maps, so a flag that
was silently dropped fails the test.
"""

from __future__ import annotations

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import xattr_jax as xa
from xattr_jax.data.preprocess import preprocess
from xattr_jax.data.synthetic import make_dataset
from xattr_jax.harness.records import load_map, read_records
from xattr_jax.models import load_embedded

LAYER = "features.13"  # small_vgg's relu at 1/4 resolution: 16 x 16
METHODS = ["gradient", "excitation_backprop"]
REL = 1e-5


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_maps")
    imgs = root / "images"
    imgs.mkdir()
    for i, im in enumerate(make_dataset(3, 64, seed=4).images):
        Image.fromarray(np.round(im * 255).astype(np.uint8)).save(imgs / f"img_{i}.png")
    out = root / "out"
    cmd = [sys.executable, "-m", "xattr_jax.app.cli", "explain", str(imgs), "--checkpoint", "embedded:small_vgg",
           "--method", ",".join(METHODS), "--layer", LAYER, "--signal", "prob", "--top-k", "2",
           "--batch-size", "2", "--no-progress", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"xattr explain failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return imgs, out


def test_job_maps_equal_explain_with_the_layer_and_signal(job):
    _, out = job
    model, variables = load_embedded("small_vgg")
    recs = read_records(out)
    assert len(recs) == 3 * len(METHODS) * 2, f"expected 12 records, got {len(recs)}"
    for r in recs:
        assert r["status"] == "ok", r
        img = np.asarray(Image.open(r["file"]).convert("RGB"), np.float32) / 255.0
        x = jnp.asarray(preprocess(img, "embedded")[0])[None]
        t = jnp.asarray([r["target"]])
        want = np.asarray(xa.explain(model, variables, x, t, method=r["method"], layer=LAYER, signal="prob").map[0])
        got = load_map(out, r)
        what = f"{r['image']} {r['method']} target {r['target']}"
        assert got.shape == (16, 16), f"{what}: map {got.shape}, expected {LAYER}'s 16 x 16"
        scale = float(np.max(np.abs(want)))
        assert scale > 0, f"{what}: explain's map is all zero"
        err = float(np.max(np.abs(got - want)))
        assert err <= REL * scale, f"{what}: job map vs explain {err:.3g} > {REL} x {scale:.3g}"
        logit = np.asarray(xa.explain(model, variables, x, t, method=r["method"], layer=LAYER).map[0])
        if r["method"] == "gradient":  # EB normalises its seed, so only the gradient tells the signals apart
            diff = float(np.max(np.abs(logit / np.max(np.abs(logit)) - got / scale)))
            assert diff > 1e-3, f"{what}: --signal prob gave the logit signal's map (difference {diff:.3g})"
