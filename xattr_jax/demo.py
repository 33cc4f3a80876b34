"""``xattr demo``: explain synthetic images with a shipped model using every available method.

Writes into ``--out``:

* ``inputs.png`` — the demo images (the held-out synthetic benchmark) with their class names in
  ``demo.json``;
* ``<method>.png`` — one row per method: the map of the first ground-truth class of each image
  overlaid on it (maps resized to the image, smoothed for the gradient family as in the pointing
  game);
* ``attention_backprop_layers.png`` — Attention Backpropagation's map at every layer of the
  network for the first image (with ``xattr_jax.viz.save_layer_figure`` when that helper exists,
  else a plain grid);
* ``pointing.md`` / ``pointing.json`` — pointing game (all / difficult), box accuracy and MaxBoxAcc
  per method on the demo images (the ``xattr eval`` harness, :mod:`xattr_jax.evaluate`).

Needs only the core dependencies (no torch, no Pillow, no matplotlib).

Example:
  xattr demo --out demo_out
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["run_demo", "add_arguments", "run", "DEMO_OPTIONS"]

# Lighter settings than the methods' defaults so that the demo stays quick on a laptop CPU.
DEMO_OPTIONS = {
    "smoothgrad": {"samples": 8},
    "integrated_gradients": {"steps": 16},
    "gnl_integrated_gradients": {"steps": 16},
}


def _layer_grid(image: np.ndarray, layer_maps, scale: int = 2) -> np.ndarray:
    from xattr_jax.viz_overlay import overlay, tile, upscale

    panels = [upscale(image, scale)]
    for name, m in layer_maps.items():
        m = np.asarray(m, np.float32)
        panels.append(upscale(overlay(image, m, alpha=0.6), scale))
    cols = min(8, len(panels))
    return tile(panels, columns=cols)


def run_demo(
    out,
    *,
    arch: str = "small_vgg",
    num_images: int = 16,
    num_shown: int = 6,
    methods: Optional[Sequence[str]] = None,
    progress: bool = True,
    scale: int = 2,
) -> dict:
    """Run the demo; returns a summary (files written, pointing results, seconds).

    Args:
      out: output folder (created).
      arch: ``"small_vgg"`` or ``"small_resnet"``.
      num_images: held-out images for the pointing-game table.
      num_shown: images shown per method figure (the first ones).
      methods: method names (default: all of :func:`xattr_jax.methods_available`); SmoothGrad
        and the integrated gradients run with fewer samples/steps (:data:`DEMO_OPTIONS`).
      progress: progress bars on stderr.
      scale: nearest-neighbour enlargement of the 64×64 images in the figures.
    """
    import jax.numpy as jnp

    import xattr_jax as xa
    from xattr_jax.data import CLASS_NAMES
    from xattr_jax.evaluate import SYNTHETIC_TOLERANCE, evaluate, synthetic_samples, write_report
    from xattr_jax.models import load_embedded
    from xattr_jax.viz_overlay import overlay, tile, upscale, write_png

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, variables = load_embedded(arch)
    samples = synthetic_samples(max(num_images, num_shown))
    methods = list(xa.methods_available() if methods is None else methods)
    shown = min(num_shown, len(samples))
    # the first trial of each shown image comes first in the harness' batch order (trials are
    # grouped by input shape, then listed image by image), so keep enough maps to cover them
    first_trial = {}
    k = 0
    for i, s in enumerate(samples):
        for j in range(len(s.trials)):
            if j == 0 and i < shown:
                first_trial[k] = i
            k += 1
    keep = max(first_trial) + 1 if first_trial else 0

    result = evaluate(
        model, variables, samples, methods,
        batch_size=32, tolerance=SYNTHETIC_TOLERANCE, deletion_images=0, keep_maps=keep,
        options=DEMO_OPTIONS, progress=progress,
    )  # fmt: skip
    files = []
    images = [s.image for s in samples[:shown]]
    p = write_png(out / "inputs.png", tile([upscale(im, scale) for im in images]))
    files.append(p.name)
    for method, entry in result["methods"].items():
        if "error" in entry:
            continue
        by_image = {i: m for (i, j, m) in entry["maps"] if j == 0 and i < shown}
        panels = [upscale(overlay(images[i], by_image[i]), scale) for i in sorted(by_image)]
        files.append(write_png(out / f"{method}.png", tile(panels)).name)

    ab_file = None
    if "attention_backprop" in methods and "error" not in result["methods"].get(
        "attention_backprop", {"error": ""}
    ):
        try:
            s = samples[0]
            res = xa.explain(model, variables, jnp.asarray(s.x[None]),
                             jnp.asarray([s.trials[0].class_id]), method="attention_backprop")  # fmt: skip
            layer_maps = {k: np.asarray(v)[0] for k, v in (res.layer_maps or {}).items()}
            target = out / "attention_backprop_layers.png"
            try:
                from xattr_jax import viz  # written alongside; optional here
            except ImportError:
                viz = None
            helper = getattr(viz, "save_layer_figure", None) if viz is not None else None
            if helper is not None:
                try:
                    big = np.round(upscale(s.image, scale) * 255).astype(np.uint8)
                    helper(str(target), big, layer_maps)
                except Exception:  # fall back to the plain grid below
                    helper = None
            if helper is None or not target.is_file():
                write_png(target, _layer_grid(s.image, layer_maps, scale))
            ab_file = target.name
            files.append(ab_file)
        except Exception as err:
            print(f"attention_backprop layer figure failed ({type(err).__name__}: {err}); skipped",
                  file=sys.stderr)  # fmt: skip

    result.update(dataset="synthetic (held-out)", checkpoint=f"embedded:{arch}", arch=arch)
    js, md = write_report(result, out, name="pointing", title=f"Demo: synthetic · {arch}")
    files += [js.name, md.name]
    seconds = time.perf_counter() - t0
    summary = {
        "arch": arch,
        "images": [
            {"key": s.key, "classes": [CLASS_NAMES[t.class_id] for t in s.trials]}
            for s in samples[:shown]
        ],
        "methods": methods,
        "failed": {k: v["error"] for k, v in result["methods"].items() if "error" in v},
        "files": files,
        "seconds": round(seconds, 1),
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["pointing"] = result
    return summary


def add_arguments(p) -> None:
    """The ``xattr demo`` options."""
    p.add_argument("--out", required=True, help="output folder for the PNGs and tables")
    p.add_argument("--arch", choices=("small_vgg", "small_resnet"), default="small_vgg",
                   help="embedded model (default small_vgg)")  # fmt: skip
    p.add_argument("--num-images", type=int, default=16, help="images in the pointing table")
    p.add_argument("--methods", default="all", help="comma-separated method names, or 'all'")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """Handler of ``xattr demo``."""
    methods = None if args.methods.strip() == "all" else [
        m.strip() for m in args.methods.split(",") if m.strip()]  # fmt: skip
    try:
        summary = run_demo(args.out, arch=args.arch, num_images=args.num_images, methods=methods,
                           progress=not args.no_progress)  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        print(f"xattr demo: error: {err}", file=sys.stderr)
        return 1
    print((Path(args.out) / "pointing.md").read_text())
    pngs = [f for f in summary["files"] if f.endswith(".png")]
    print(f"wrote {len(pngs)} PNGs and pointing.md/json to {args.out} in {summary['seconds']} s")
    if summary["failed"]:
        print(f"methods that failed: {', '.join(summary['failed'])}")
    return 0
