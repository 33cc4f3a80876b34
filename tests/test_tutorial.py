"""docs/tutorial.md runs end to end, and the documentation pages it adds are linked and their figures small.

The tutorial's Python blocks run in order in one namespace with one substitution: its
``WEIGHTS = "IMAGENET1K_V1"`` line becomes ``WEIGHTS = None`` (random weights: nothing can be
downloaded here). The test then checks what the page claims: the converted model's logits equal
torchvision's on the photograph, the maps are real maps at the photograph's input size, the figure
is a PNG of the figure's size, and the deletion/insertion scores are probabilities consistent with
the model.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
WEIGHTS_LINE = 'WEIGHTS = "IMAGENET1K_V1"'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """The tutorial's namespace after running all its blocks with random weights, and its folder."""
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    pytest.importorskip("matplotlib")
    import os

    code = "\n".join(_blocks(DOCS / "tutorial.md"))
    assert code.count(WEIGHTS_LINE) == 1, f"the tutorial holds {WEIGHTS_LINE!r} once: the one line the test changes"
    code = code.replace(WEIGHTS_LINE, "WEIGHTS = None")
    folder = tmp_path_factory.mktemp("tutorial")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        scope: dict = {"__name__": "__tutorial__"}
        exec(compile(code, str(DOCS / "tutorial.md"), "exec"), scope)
    finally:
        os.chdir(cwd)
    return scope, folder


@pytest.mark.slow
def test_tutorial_converted_logits_equal_torchvision(tutorial):
    import torch

    scope, _ = tutorial
    assert scope["WEIGHTS"] is None, "the test runs random weights"
    x = np.asarray(scope["x"])
    assert scope["photo"].shape == (600, 512, 3), "matplotlib's grace_hopper.jpg, 512x600"
    assert x.shape == (1, 224, 224, 3) and x.dtype == np.float32, x.shape
    assert scope["image"].shape == (224, 224, 3) and 0 <= scope["image"].min() and scope["image"].max() <= 1
    ours = np.asarray(scope["model"].apply(scope["variables"], scope["x"]), np.float64)
    with torch.no_grad():
        ref = scope["torch_model"](torch.from_numpy(x.copy()).permute(0, 3, 1, 2)).numpy().astype(np.float64)
    assert ours.shape == ref.shape == (1, 1000)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= 1e-4, f"converted logits {err:.2e} x max off torchvision's (tolerance 1e-4, both float32)"
    assert scope["error"] <= 1e-4, "the page's own check prints the same comparison"
    top3 = np.asarray(scope["top3"])
    np.testing.assert_array_equal(top3[0], np.argsort(-ref[0], kind="stable")[:3],
                                  err_msg="the three most probable classes are torchvision's")  # fmt: skip


@pytest.mark.slow
def test_tutorial_maps_are_real_maps_of_the_photo(tutorial):
    scope, _ = tutorial
    assert tuple(scope["METHODS"]) == ("gradient", "grad_cam", "lrp")
    layers = {m: r.layer for m, r in scope["results"].items()}
    assert layers == {"gradient": "input", "grad_cam": "layer4", "lrp": "input"}, layers
    assert scope["results"]["grad_cam"].map.shape == (1, 3, 7, 7), "Grad-CAM at layer4 of ResNet18"
    for m, maps in scope["maps"].items():
        maps = np.asarray(maps, np.float64)
        assert maps.shape == (1, 3, 224, 224), (m, maps.shape)
        assert np.isfinite(maps).all(), f"{m}: non-finite values"
        for k in range(3):
            assert np.abs(maps[0, k]).max() > 0, f"{m}, class {k}: an all-zero map"
            assert maps[0, k].std() > 1e-3 * np.abs(maps[0, k]).max(), f"{m}, class {k}: a constant map"
    assert not np.allclose(scope["maps"]["grad_cam"][0, 0], scope["maps"]["grad_cam"][0, 1]), \
        "one map per class: Grad-CAM's differ between classes"  # fmt: skip
    for m in ("gradient", "grad_cam"):
        assert np.asarray(scope["results"][m].map).min() >= 0, f"{m}'s map is unsigned (max_c |g|; a ReLU)"
    assert not np.allclose(scope["maps"]["gradient"], scope["maps"]["lrp"]), "different methods, different maps"


@pytest.mark.slow
def test_tutorial_figure_is_a_png_of_the_figure_size(tutorial):
    from PIL import Image

    scope, folder = tutorial
    path = folder / "tutorial_maps.png"
    assert path.is_file(), "step 5 writes tutorial_maps.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    fig = scope["fig"]
    want = tuple(int(round(v)) for v in fig.get_size_inches() * fig.dpi)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == want, (im.format, im.size, want)
    assert len(fig.axes) >= 12, "input row and three method rows of three classes, with colour bars"


@pytest.mark.slow
def test_tutorial_deletion_and_insertion_scores(tutorial):
    import jax

    scope, _ = tutorial
    scores = scope["scores"]
    assert set(scores) == {"gradient", "grad_cam", "lrp", "random order"}, set(scores)
    for name, (d, i) in scores.items():
        assert 0 <= d <= 1 and 0 <= i <= 1, (name, d, i)
    # the curves start (deletion) and end (insertion) at the target's probability on the photo
    p = float(jax.nn.softmax(scope["model"].apply(scope["variables"], scope["x"]))[0, int(scope["target"][0])])
    assert abs(p - float(scope["probs"][0, int(scope["top3"][0, 0])])) < 1e-6
    d, i = scope["d"], scope["i"]
    assert d.curve.shape == i.curve.shape == (1, 33), "32 steps: 33 points"
    assert abs(d.curve[0, 0] - p) < 1e-5 and abs(i.curve[0, -1] - p) < 1e-5, (d.curve[0, 0], i.curve[0, -1], p)
    assert np.isfinite(d.curve).all() and np.isfinite(i.curve).all()


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_new_pages_are_linked_and_their_links_resolve():
    for page in (ROOT / "README.md", DOCS / "index.md"):
        targets = {t.split("#")[0] for t in _links(page)}
        prefix = "docs/" if page.name == "README.md" else ""
        for new in ("tutorial.md", "which_method.md"):
            assert prefix + new in targets, f"{page.name} links {prefix + new}"
    for page in (DOCS / "tutorial.md", DOCS / "which_method.md"):
        for target in _links(page):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file) if file else page
            assert path.is_file(), f"{page.name}: broken link {target}"
            if anchor and path.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
                assert anchor in slugs, f"{page.name}: no heading for #{anchor} in {file or page.name}"


def test_documentation_figures_are_small_pngs_that_pages_show():
    from PIL import Image

    figures = sorted((DOCS / "figures").glob("*.png"))
    assert {f.name for f in figures} >= {"tutorial_maps.png", "visualisation_grad_cam.png"}
    shown = {t for page in DOCS.glob("*.md") for t in _links(page) if t.startswith("figures/")}
    for f in figures:
        assert f.stat().st_size < 150_000, f"{f.name}: {f.stat().st_size} bytes (docs figures stay under 150 KB)"
        assert f.read_bytes()[:8] == PNG_SIGNATURE, f.name
        with Image.open(f) as im:
            im.verify()
        assert f"figures/{f.name}" in shown, f"{f.name} is shown by no page of docs/"
