"""``xattr demo``: explain synthetic images with a shipped model using every available method.

Writes into ``--out``:

* ``inputs.png`` — the demo images (the held-out synthetic benchmark), each titled with its
  classes (also listed in ``demo.json``);
* ``<method>.png`` — one figure per method: the map of the first ground-truth class of each shown
  image over the image in grey, titled with the class and its softmax probability (the score
  everywhere in the library), each map scaled to its own range (weak maps labelled so) and a colour
  bar (diverging and centred at 0 for signed maps, sequential for unsigned ones; clipped at the
  99.5th percentile of ``|map|``). The maps are the pointing game's (resized to the image, smoothed
  for the gradient family);
* ``all_methods.png`` — every method × the shown images in one grid;
* ``attention_backprop_layers.png`` — Attention Backpropagation's map at every layer of the
  network for the first image, one panel per layer titled with its name, kind and shape
  (:func:`xattr_jax.viz.layer_figure`);
* ``pointing.md`` / ``pointing.json`` — pointing game (all / difficult), box accuracy and MaxBoxAcc
  per method on the demo images (the ``xattr eval`` harness, :mod:`xattr_jax.harness`);
* ``demo.json`` — what was run and written.

Progress (``rich``, on stderr): one bar over the methods with its ETA (each method's time includes
its compilation), one line per finished method, then one bar over the figures.

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

import xattr_jax as xa
from xattr_jax import viz
from xattr_jax.data import CLASS_NAMES, normalize
from xattr_jax.data.samples import synthetic_samples

__all__ = ["run_demo", "add_arguments", "run", "DEMO_OPTIONS"]

# Lighter settings than the methods' defaults so that the demo stays quick on a laptop CPU.
DEMO_OPTIONS = {
    "smoothgrad": {"samples": 8},
    "integrated_gradients": {"steps": 16},
    "gnl_integrated_gradients": {"steps": 16},
}


def _attributions(model, variables, samples, methods, bar, say, verbose: bool) -> dict:
    """The evaluation harness, one method at a time (a progress step per method, compile included)."""
    from xattr_jax.app.eval_cli import SYNTHETIC_TOLERANCE
    from xattr_jax.harness import evaluate

    task = bar.add_task("attributions", total=len(methods))
    result = None
    for method in methods:
        bar.update(task, description=f"attributions: {method}")
        t0 = time.perf_counter()
        r = evaluate(
            model, variables, samples, [method],
            preprocess="embedded", batch_size=32, tolerance=SYNTHETIC_TOLERANCE, deletion_images=0,
            keep_maps=True, options=DEMO_OPTIONS, progress=False, log=say,
        )  # fmt: skip
        if result is None:
            result = r
        else:
            result["methods"].update(r["methods"])
            result["maps"].update(r["maps"])
        if verbose:  # a line per method, also when stderr is a log file (no bar drawn there)
            state = "failed" if "error" in r["methods"][method] else "done"
            bar.console.print(f"  {method:<34} {state} in {time.perf_counter() - t0:5.1f} s")
        bar.advance(task)
    bar.update(task, description="attributions")
    return result


def run_demo(
    out,
    *,
    arch: str = "small_vgg",
    num_images: int = 16,
    num_shown: int = 6,
    methods: Optional[Sequence[str]] = None,
    progress: bool = True,
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
    """
    import jax
    import jax.numpy as jnp

    from xattr_jax.harness import write_report
    from xattr_jax.harness.progress import progress as progress_display
    from xattr_jax.models import load_embedded

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    model, variables = load_embedded(arch)
    samples = synthetic_samples(max(num_images, num_shown))
    methods = list(xa.methods_available() if methods is None else methods)
    if not methods:
        raise ValueError(f"no methods to run; give some of {list(xa.methods_available())} or 'all'")
    shown = min(num_shown, len(samples))
    files = []
    with progress_display(progress) as bar:
        say = bar.console.print if progress else (lambda s: print(s, file=sys.stderr, flush=True))
        result = _attributions(model, variables, samples, methods, bar, say, progress)
        kept = result.pop("maps")

        images = [s.pixels for s in samples[:shown]]
        classes = [s.trials[0].class_id for s in samples[:shown]]
        names = [CLASS_NAMES[c] for c in classes]
        xs = jnp.asarray(normalize(np.stack(images)))
        logits = np.asarray(jax.jit(model.apply)(variables, xs))
        probs = np.asarray(jax.nn.softmax(logits, axis=-1))
        scores = [float(probs[i, c]) for i, c in enumerate(classes)]
        done = {m: e for m, e in result["methods"].items() if "error" not in e}
        rows = {}
        for method, entry in done.items():
            rows[method] = [kept[method][(s.key, c)] for s, c in zip(samples[:shown], classes)]
        ab = "attention_backprop" in done
        figs = bar.add_task("figures", total=1 + len(rows) + int(bool(rows)) + int(ab))

        def write(name, fig):
            files.append(viz.save(fig, out / name).name)
            bar.advance(figs)

        all_classes = [", ".join(CLASS_NAMES[t.class_id] for t in s.trials) for s in samples[:shown]]
        write("inputs.png", viz.grid_figure(images, {}, class_names=all_classes,
                                            title="demo images (held-out synthetic) and their classes"))
        for method, ms in rows.items():
            bar.update(figs, description=f"figures: {method}")
            write(f"{method}.png", viz.grid_figure(
                images, {method: ms}, model=arch, class_names=names, scores=scores,
                title=f"{method} · {arch} · map of the first class of each image"))  # fmt: skip
        if rows:
            bar.update(figs, description="figures: all methods")
            write("all_methods.png", viz.grid_figure(images, rows, model=arch, class_names=names,
                                                     scores=scores))  # fmt: skip
        if ab:
            bar.update(figs, description="figures: attention_backprop layers")
            try:
                s = samples[0]
                x = jnp.asarray(normalize(s.pixels[None]))
                c = s.trials[0].class_id
                res = xa.explain(model, variables, x, jnp.asarray([c]), method="attention_backprop")
                layer_maps = {k: np.asarray(v)[0] for k, v in (res.layer_maps or {}).items()}
                write("attention_backprop_layers.png", viz.layer_figure(
                    s.pixels, layer_maps, model=arch, class_name=CLASS_NAMES[c],
                    score=float(jax.nn.softmax(res.logits[0])[c]),
                    layers=xa.layers(model, variables, x)))  # fmt: skip
            except Exception as err:  # a figure must not cost the table
                say(f"attention_backprop layer figure failed ({type(err).__name__}: {err}); skipped")
        bar.update(figs, description="figures")

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
    p.add_argument("--out", required=True, help="output folder for the figures and tables")
    p.add_argument("--arch", choices=("small_vgg", "small_resnet"), default="small_vgg",
                   help="embedded model (default small_vgg)")  # fmt: skip
    p.add_argument("--num-images", type=int, default=16, help="images in the pointing table")
    p.add_argument("--methods", default="all", help="comma-separated method names, or 'all'")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


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
    print(f"wrote {len(pngs)} PNG figures and pointing.md/json to {args.out} in {summary['seconds']} s")
    if summary["failed"]:
        print(f"methods that failed: {', '.join(summary['failed'])}")
    return 0
