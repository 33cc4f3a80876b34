"""Draw the documentation's figures with the code the pages show.

    python docs/make_figures.py                           # random weights: what the tests run
    python docs/make_figures.py --weights IMAGENET1K_V1   # torchvision's ImageNet weights (downloads them)

Writes, into ``docs/figures/``:

* ``tutorial_maps.png`` — the Python blocks of ``docs/tutorial.md``, run in order in one namespace
  with the page's ``WEIGHTS = "IMAGENET1K_V1"`` line set to ``--weights`` (``None`` by default:
  random weights, as ``tests/test_tutorial.py`` runs them); the figure of its step 5.
* ``visualisation_grad_cam.png`` — the first example of ``docs/visualisation.md`` (a shipped
  model: nothing to download).

The pages' code writes full-size figures; here each is saved at 90 dpi with a 128-colour palette
(Pillow), so every PNG stays under 150 KB. Run from anywhere; needs the ``converters`` extra.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
FIGURES = DOCS / "figures"
WEIGHTS_LINE = 'WEIGHTS = "IMAGENET1K_V1"'
MAX_BYTES = 150_000
DPI = 90
COLOURS = 128


def python_blocks(page: str) -> list[str]:
    """The ```python blocks of ``docs/<page>``, in order."""
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), re.S)


def tutorial_code(weights: str | None = None) -> str:
    """``docs/tutorial.md``'s Python blocks as one program, with ``WEIGHTS`` set to ``weights``."""
    code = "\n".join(python_blocks("tutorial.md"))
    if code.count(WEIGHTS_LINE) != 1:
        raise ValueError(f"docs/tutorial.md must hold the line {WEIGHTS_LINE!r} exactly once")
    return code.replace(WEIGHTS_LINE, f"WEIGHTS = {weights!r}")


def run(code: str, name: str) -> dict:
    """Execute ``code`` in a fresh namespace inside a temporary folder; return the namespace."""
    scope: dict = {"__name__": "__docs__"}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            exec(compile(code, name, "exec"), scope)
        finally:
            os.chdir(cwd)
    return scope


def save_small(fig, path: Path) -> Path:
    """Save a matplotlib figure as a palette PNG at :data:`DPI`; refuse one over :data:`MAX_BYTES`."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    with Image.open(buffer) as im:
        small = im.convert("RGB").quantize(COLOURS)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, format="PNG", optimize=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{path} is {size} bytes, over {MAX_BYTES}: draw a smaller figure")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="none",
                   help="torchvision weights for the tutorial's ResNet18: 'none' (random, default) or "
                        "a torchvision weights name such as IMAGENET1K_V1 (downloaded by torchvision)")  # fmt: skip
    args = p.parse_args(argv)
    weights = None if args.weights.lower() == "none" else args.weights

    scope = run(tutorial_code(weights), "tutorial.md")
    print(save_small(scope["fig"], FIGURES / "tutorial_maps.png"))

    scope = run(python_blocks("visualisation.md")[0], "visualisation.md")
    print(save_small(scope["fig"], FIGURES / "visualisation_grad_cam.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
