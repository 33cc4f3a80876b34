"""Cost of every method per model family, against ``jax.jit(jax.grad)`` of the same model and Captum.

For each torchvision architecture (random weights, seed 0, through torchax: ``converters.torch``),
batch size (224²) and method: trace (``.lower()``), compile (``.compile()``) and steady time
(median of ``--repeats`` calls, ``block_until_ready``) of the method's one-program form
(``xa.attributor(...).program``), each as a ratio to the same numbers for ``jax.jit(jax.grad)`` of
the target logits measured in the same run. A method outside the model's domain (Excitation
Backprop on a ViT) is recorded as refused. Path methods (integrated gradients, GNL-IG, SmoothGrad)
run with 8 points in chunks of 4 as in ``speed.py`` (their cost is linear in the points): trace and
compile of the two programs an eager call compiles (the chunk program and the one that finishes the
map), steady time of the eager call (the chunk-by-chunk driver). The peer
row is Captum's ``Saliency`` on the same torch module in float32 (first call and steady).

Writes ``benchmarks/results/families.{json,md}``. Needs the ``torch`` extra (torchax).

    python benchmarks/families.py                                      # ~1.5 h on 2 cores
    python benchmarks/families.py --archs googlenet vit_b_16 --batches 1 --methods gradient lrp
    python benchmarks/families.py --batch8-methods gradient lrp   # every method at batch 1, these at 8
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loading_routes import grad_of  # noqa: E402
from speed import OPTIONS, POINTS, SIGNALS, lower_and_compile, median_time, time_eager, time_jax  # noqa: E402

import xattr_jax as xa  # noqa: E402

ROOT = Path(__file__).resolve().parent
ARCHS = ["googlenet", "densenet121", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t"]


def load(arch):
    """``(torch module, model, variables)`` on seeded random weights."""
    import torch
    import torchvision

    from converters.torch import from_torch

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        tm = torchvision.models.get_model(arch, weights=None).eval()
    for w in tm.parameters():  # ViT's head starts at zero
        if w.ndim > 1 and not w.any():
            torch.nn.init.normal_(w, std=0.02)
    model, variables = from_torch(tm)
    return tm, model, variables


def first_path_call(fn, v, x, t):
    """``(trace s, compile s)`` of what an eager path-method call compiles: its chunk program and the
    program that finishes the map (from the first chunk's sums and logits), as ``time_jax`` times one."""
    key = jax.random.key(0)
    args = (v, x, t, key, np.int32(0))
    trace, comp, chunk = lower_and_compile(fn.chunk_program, args)
    sums, logits, _ = chunk(*args)
    trace2, comp2, _ = lower_and_compile(fn.finish_program, (x, t, key, logits, sums))
    return trace + trace2, comp + comp2


def captum_saliency(tm, x, t, repeats):
    """``(first call s, steady s)`` of Captum's Saliency on the torch module, float32 NCHW."""
    import torch
    from captum.attr import Saliency

    xt = torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
    tt = torch.from_numpy(np.asarray(t)).long()
    sal = Saliency(tm)

    def call():
        return sal.attribute(xt.clone().requires_grad_(), target=tt, abs=False)

    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    return first, median_time(call, repeats)


def measure(arch, batches, methods, batch8_methods, repeats, peers):
    tm, model, v = load(arch)
    rows = []
    for n in batches:
        x = jnp.asarray(np.random.default_rng(0).normal(size=(n, 224, 224, 3)).astype(np.float32))
        t = jnp.arange(n, dtype=jnp.int32) % 1000
        trace, comp, steady = time_jax(grad_of(model), (v, x, t), repeats)
        base = dict(arch=arch, batch=n, what="jax.grad", trace_s=trace, compile_s=comp, steady_s=steady)
        rows.append(base)
        print(f"{arch} b{n} jax.grad: trace {trace:.2f}s compile {comp:.2f}s steady {steady:.3f}s", flush=True)
        for m in (methods if n == 1 or batch8_methods is None else batch8_methods):
            row = dict(arch=arch, batch=n, what=m)
            try:
                fn = xa.attributor(model, m, signal=SIGNALS.get(m), **OPTIONS.get(m, {}))
                if m in POINTS:  # eager calls: the chunk-by-chunk driver, as speed.py times them
                    trace, comp = first_path_call(fn, v, x, t)
                    steady = time_eager(functools.partial(fn, key=jax.random.key(0)), (v, x, t), repeats)[2]
                else:
                    trace, comp, steady = time_jax(fn.program, (v, x, t), repeats)
            except ValueError as err:  # outside the method's domain
                row.update(refused=str(err).splitlines()[0][:160])
                print(f"{arch} b{n} {m}: refused", flush=True)
            else:
                row.update(trace_s=trace, compile_s=comp, steady_s=steady,
                           first_x_grad=(trace + comp) / (base["trace_s"] + base["compile_s"]),
                           steady_x_grad=steady / base["steady_s"])
                print(f"{arch} b{n} {m}: trace {trace:.2f}s compile {comp:.2f}s steady {steady:.3f}s "
                      f"(first {row['first_x_grad']:.2f}x, steady {row['steady_x_grad']:.2f}x jax.grad)", flush=True)
            rows.append(row)
        if peers:
            first, steady = captum_saliency(tm, x, t, repeats)
            rows.append(dict(arch=arch, batch=n, what="captum Saliency", first_s=first, steady_s=steady,
                             steady_x_grad=steady / base["steady_s"]))
            print(f"{arch} b{n} captum Saliency: first {first:.2f}s steady {steady:.3f}s", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=ARCHS)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--methods", nargs="+", default=None, help="default: every method")
    p.add_argument("--batch8-methods", nargs="+", default=None,
                   help="methods for batches other than 1 (default: the same as --methods)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results" / "families"))
    a = p.parse_args(argv)
    methods = a.methods or list(xa.methods_available())
    t_start, load_start = time.perf_counter(), os.getloadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    meta = dict(jax=jax.__version__, device=str(jax.devices()[0]), platform=platform.platform(),
                python=sys.version.split()[0], cpu_count=os.cpu_count(), repeats=a.repeats,
                date=time.strftime("%Y-%m-%d %H:%M:%S"), loadavg_start=list(load_start))
    try:
        import torch
        import torchax

        meta.update(torch=torch.__version__, torchax=torchax.__version__)
    except ImportError:  # pragma: no cover
        pass
    for arch in a.archs:
        rows += measure(arch, a.batches, methods, a.batch8_methods, a.repeats, not a.no_peers)
        meta.update(seconds=round(time.perf_counter() - t_start, 1), loadavg_end=list(os.getloadavg()))
        out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(meta, rows))  # after each family: a partial run keeps its rows
    print(f"wrote {out}.json and {out}.md")


def markdown(meta, rows) -> str:
    lines = ["# Cost per model family: every method × `jax.jit(jax.grad)` and × Captum",
             "",
             f"{meta['date']}, {meta['device']}, {meta['cpu_count']} CPUs (load average "
             f"{meta['loadavg_start'][0]:.1f} -> {meta['loadavg_end'][0]:.1f}), jax {meta['jax']}, "
             f"torch {meta.get('torch')}, torchax {meta.get('torchax')}; torchvision modules through "
             f"torchax, 224², random weights, median of {meta['repeats']}, {meta['seconds']:.0f} s in all. "
             "`first` = trace + compile of the method's one program over the same for `jax.jit(jax.grad)`; "
             "`steady` = the steady call over `jax.grad`'s. Path methods: 8 points in chunks of 4; first = trace + compile of the chunk program and the finishing program, steady = the eager call.",
             "",
             "| family | batch | program | trace s | compile s | steady s | first × grad | steady × grad |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['arch']} | {r['batch']} | {r['what']} | refused | | | | |")
        elif r["what"] == "captum Saliency":
            lines.append(f"| {r['arch']} | {r['batch']} | {r['what']} (first call {r['first_s']:.2f} s) | | | "
                         f"{r['steady_s']:.3f} | | {r['steady_x_grad']:.2f} |")
        else:
            lines.append(f"| {r['arch']} | {r['batch']} | {r['what']} | {r['trace_s']:.2f} | {r['compile_s']:.2f} | "
                         f"{r['steady_s']:.3f} | {r.get('first_x_grad', 1.0):.2f} | {r.get('steady_x_grad', 1.0):.2f} |")
    firsts = [r["first_x_grad"] for r in rows if "first_x_grad" in r]
    if firsts:
        worst = max((r for r in rows if "first_x_grad" in r), key=lambda r: r["first_x_grad"])
        lines += ["", f"First call (trace + compile) × `jax.jit(jax.grad)`: median {np.median(firsts):.2f}, "
                  f"worst {worst['first_x_grad']:.2f} ({worst['arch']} batch {worst['batch']} {worst['what']}); "
                  f"{sum(f <= 2 for f in firsts)} of {len(firsts)} programs within 2×."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
