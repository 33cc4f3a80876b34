"""Quality benchmark: every method on both embedded models over held-out synthetic images.

Pointing game (all / difficult), box accuracy at 15 % and MaxBoxAcc, deletion / insertion AUC, by
the harness of ``xattr eval`` (:mod:`xattr_jax.harness`; protocols in :mod:`xattr_jax.harness.protocols`). Writes
``benchmarks/results/quality.json`` and ``quality.md`` and checks the Excitation-Backprop paper's
ordering of pointing accuracy (c-EB ≥ EB ≥ gradient ≥ deconvnet; Grad-CAM strong). Rows named
``method@layer`` read a method at another layer (:data:`VARIANTS`).

Usage::

    python benchmarks/quality.py                 # ~10 min on 2 CPU cores
    python benchmarks/quality.py --num-images 40 --out /tmp/q   # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

# Cheaper than the defaults (50 steps / 25 samples) to keep the run within ~10 minutes on a CPU;
# recorded in the JSON.
OPTIONS = {
    "smoothgrad": {"samples": 10},
    "integrated_gradients": {"steps": 16},
    "gnl_integrated_gradients": {"steps": 16},
}
# Extra rows: the same method read at another layer. ``"eb"`` = Excitation Backprop's default layer
# (TorchRay's benchmark choice; small_vgg ``features.7``, small_resnet ``layer3``), ``"input"`` = the image.
VARIANTS = {
    "attention_backprop@eb_layer": ("attention_backprop", "eb"),
    "lrp@eb_layer": ("lrp", "eb"),
    "excitation_backprop@input": ("excitation_backprop", "input"),
}
ORDER = ("contrastive_excitation_backprop", "excitation_backprop", "gradient", "deconvnet")
SHORT = {
    "contrastive_excitation_backprop": "c-EB",
    "excitation_backprop": "EB",
    "gradient": "gradient",
    "deconvnet": "deconvnet",
    "grad_cam": "Grad-CAM",
}


def ordering(methods: dict, key: str) -> dict:
    """Whether c-EB ≥ EB ≥ gradient ≥ deconvnet on ``key``, pair by pair, and Grad-CAM's rank."""
    vals = {m: methods.get(m, {}).get(key) for m in ORDER}
    pairs = []
    for a, b in zip(ORDER, ORDER[1:]):
        if vals[a] is None or vals[b] is None:
            pairs.append({"pair": f"{SHORT[a]} >= {SHORT[b]}", "holds": None})
        else:
            pairs.append({"pair": f"{SHORT[a]} >= {SHORT[b]}", "holds": bool(vals[a] >= vals[b]),
                          "values": [vals[a], vals[b]]})  # fmt: skip
    ranked = sorted(
        (m for m, e in methods.items() if e.get(key) is not None), key=lambda m: -methods[m][key]
    )
    gc = ranked.index("grad_cam") + 1 if "grad_cam" in ranked else None
    return {
        "pairs": pairs,
        "holds": all(p["holds"] for p in pairs) if all(p["holds"] is not None for p in pairs) else None,
        "grad_cam_rank": gc,
        "num_ranked": len(ranked),
    }


def main(argv=None) -> int:
    import jax

    import xattr_jax as xa
    from xattr_jax.app.eval_cli import SYNTHETIC_TOLERANCE
    from xattr_jax.data.samples import synthetic_samples
    from xattr_jax.harness import evaluate, markdown_table
    from xattr_jax.methods.excitation import default_saliency_layer
    from xattr_jax.models import EMBEDDED, load_embedded
    from xattr_jax.models.small import embedded_info

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=80)
    p.add_argument("--deletion-images", type=int, default=24)
    p.add_argument("--deletion-steps", type=int, default=32)
    p.add_argument("--methods", default="all")
    p.add_argument("--archs", default=",".join(EMBEDDED))
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    methods = (list(xa.methods_available()) + list(VARIANTS) if args.methods == "all"
               else [m for m in args.methods.split(",") if m])  # fmt: skip
    t0 = time.perf_counter()
    samples = synthetic_samples(args.num_images)
    report = {
        "benchmark": "synthetic held-out set (xattr_jax.data.make_dataset, seed "
        "xattr_jax.data.synthetic.HELD_OUT_SEED), 64x64",
        "num_images": args.num_images,
        "method_options": OPTIONS,
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "numpy": np.__version__, "device": str(jax.devices()[0])},  # fmt: skip
        "models": {},
    }
    md = ["# Quality on the synthetic benchmark", "",
          "Pointing game (hit within 15·64/224 ≈ 4.3 px, per-class mean, in %), box accuracy at "
          "15 % of the max and MaxBoxAcc (IoU ≥ 0.5, in %), deletion (↓) and insertion (↑) AUC of "
          "the top-1 class's sigmoid probability. Produced by `python benchmarks/quality.py`.", ""]  # fmt: skip
    for arch in [a for a in args.archs.split(",") if a]:
        model, variables = load_embedded(arch)
        kw = dict(batch_size=32, preprocess="embedded", tolerance=SYNTHETIC_TOLERANCE,
                  deletion_images=args.deletion_images, deletion_steps=args.deletion_steps, progress=not args.no_progress)
        base = [m for m in methods if m not in VARIANTS]
        res = evaluate(model, variables, samples, base, options=OPTIONS, **kw)
        eb_layer = default_saliency_layer(xa.layers(model, variables, samples[0].x[None]))
        for label in [m for m in methods if m in VARIANTS]:
            method, where = VARIANTS[label]
            layer = eb_layer if where == "eb" else where
            opts = {method: {**OPTIONS.get(method, {}), "layer": layer}}
            extra = evaluate(model, variables, samples, [method], options=opts, **kw)["methods"][method]
            res["methods"][label] = dict(extra, layer=layer)
        res["held_out_map"] = embedded_info(arch)["held_out_map"]
        res["ordering_all"] = ordering(res["methods"], "pointing_all")
        res["ordering_difficult"] = ordering(res["methods"], "pointing_difficult")
        report["models"][arch] = res
        md.append(markdown_table(res, f"{arch} (held-out mAP {res['held_out_map']:.3f})"))
        for key, label in (("ordering_all", "all"), ("ordering_difficult", "difficult")):
            o = res[key]
            pairs = ", ".join(
                f"{q['pair']}: {'yes' if q['holds'] else 'no' if q['holds'] is not None else 'n/a'}"
                for q in o["pairs"]
            )
            md.append(f"- Paper ordering c-EB ≥ EB ≥ gradient ≥ deconvnet ({label}): "
                      f"{'holds' if o['holds'] else 'does not hold'} ({pairs}); Grad-CAM ranks "
                      f"{o['grad_cam_rank']} of {o['num_ranked']}.")  # fmt: skip
        md.append("")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    md.append(f"Total time {report['seconds']:.0f} s on {report['versions']['device']}.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "quality.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
