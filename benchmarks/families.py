"""Cost of every method per model family, against ``jax.jit(jax.grad)`` of the same model and Captum.

For each torchvision architecture (random weights, seed 0, through torchax: ``converters.torch``),
batch size (224²) and method: trace (``.lower()``), compile (``.compile()``) and steady time
(median of ``--repeats`` calls, ``block_until_ready``) of the method's one-program form
(``xa.attributor(...).program``), each as a ratio to the same numbers for ``jax.jit(jax.grad)`` of
the target logits measured in the same run; the first call's ratio is the median of ratios to a
``jax.grad`` first call made just before each of the method's (a single baseline per family let
methods measured minutes later read up to 1.4× "slower" on a drifting machine). A method outside
the model's domain (Excitation Backprop on a ViT) is recorded as refused. Path methods (integrated
gradients, GNL-IG, SmoothGrad) run with 8 points in chunks of 4 as in ``speed.py`` (their cost is
linear in the points): trace and compile of the two programs an eager call compiles (the chunk
program and the one that finishes the map), steady time of the eager call (the chunk-by-chunk
driver). The peer row is Captum's ``Saliency`` on the same torch module in float32 (first call and steady).

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
from speed import OPTIONS, POINTS, SIGNALS, lower_and_compile, median_time, time_eager  # noqa: E402

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


_FRESH = iter(range(10**9))


def _fresh():
    """Compiler options that change no code but the compilation cache's key, so that every first
    call measured compiles afresh (XLA caches a program compiled with the same options)."""
    return {"xla_dump_max_hlo_modules": 10**6 + next(_FRESH)}


def first_call(make, args, repeats, before=None):
    """``(trace s, compile s, compiled)``: medians over ``repeats`` first calls of ``make()`` (a new
    jitted function each time, so each is traced and compiled afresh); a first call on a 2-core
    machine varies by ±20 %. With ``before`` (a function returning seconds), it runs before each
    first call and the median ratio ``first / before()`` is returned as well."""
    runs = []
    for _ in range(repeats):
        b = before() if before else None
        runs.append((*lower_and_compile(make(), args, _fresh()), b))
    out = float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs])), runs[-1][2]
    return out + ((_paired(runs),) if before else ())


def _paired(runs):
    """The median over repeats of ``(trace + compile) / baseline`` (each run's own baseline)."""
    return float(np.median([(r[0] + r[1]) / r[-1] for r in runs]))


def first_path_call(make, v, x, t, repeats, before=None):
    """``(trace s, compile s)`` of what an eager path-method call compiles: its chunk program and the
    program that finishes the map (from the first chunk's sums and logits), medians over
    ``repeats`` fresh attributors ``make()``; with ``before``, also the paired ratio (:func:`first_call`)."""
    key = jax.random.key(0)
    args = (v, x, t, key, np.int32(0))
    runs = []
    for _ in range(repeats):
        b = before() if before else None
        fn = make()
        trace, comp, chunk = lower_and_compile(fn.chunk_program, args, _fresh())
        sums, logits, _ = jax.block_until_ready(chunk(*args))  # not running while the next compiles
        trace2, comp2, _ = lower_and_compile(fn.finish_program, (x, t, key, logits, sums), _fresh())
        runs.append((trace + trace2, comp + comp2, b))
    out = float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs]))
    return out + ((_paired(runs),) if before else ())


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


def timed(make, args, repeats, first_repeats, before=None):
    """``(trace s, compile s, steady s)``: first-call medians (:func:`first_call`) and the steady
    call's median over ``repeats`` after a warm-up; with ``before``, also the paired first-call ratio."""
    trace, comp, compiled, *paired = first_call(make, args, first_repeats, before)
    jax.block_until_ready(compiled(*args))  # warm-up
    return (trace, comp, median_time(lambda: compiled(*args), repeats), *paired)


def measure(arch, batches, methods, batch8_methods, repeats, peers, first_repeats=3, compiler_options=None):
    tm, model, v = load(arch)
    rows = []
    for n in batches:
        x = jnp.asarray(np.random.default_rng(0).normal(size=(n, 224, 224, 3)).astype(np.float32))
        t = jnp.arange(n, dtype=jnp.int32) % 1000
        trace, comp, steady = timed(lambda: grad_of(model), (v, x, t), repeats, first_repeats)
        base = dict(arch=arch, batch=n, what="jax.grad", trace_s=trace, compile_s=comp, steady_s=steady)
        rows.append(base)
        print(f"{arch} b{n} jax.grad: trace {trace:.2f}s compile {comp:.2f}s steady {steady:.3f}s", flush=True)
        def grad_first():  # jax.grad's first call just before each of a method's, paired with it: the
            # ratio is then immune to the process and the machine slowing down over the many minutes
            # a family takes (a baseline taken once left methods measured late up to 1.4x "slower")
            tr, co, _ = lower_and_compile(grad_of(model), (v, x, t), _fresh())
            return tr + co

        for m in (methods if n == 1 or batch8_methods is None else batch8_methods):
            row = dict(arch=arch, batch=n, what=m)
            try:
                make = functools.partial(xa.attributor, model, m, signal=SIGNALS.get(m),
                                         compiler_options=compiler_options, **OPTIONS.get(m, {}))
                if m in POINTS:  # eager calls: the chunk-by-chunk driver, as speed.py times them
                    trace, comp, ratio = first_path_call(make, v, x, t, first_repeats, grad_first)
                    steady = time_eager(functools.partial(make(), key=jax.random.key(0)), (v, x, t), repeats)[2]
                else:
                    trace, comp, steady, ratio = timed(lambda: make().program, (v, x, t), repeats, first_repeats,
                                                       grad_first)
            except ValueError as err:  # outside the method's domain
                row.update(refused=str(err).splitlines()[0][:160])
                print(f"{arch} b{n} {m}: refused", flush=True)
            else:
                row.update(trace_s=trace, compile_s=comp, steady_s=steady, first_x_grad=ratio,
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
    p.add_argument("--repeats", type=int, default=2, help="steady calls timed (median)")
    p.add_argument("--first-repeats", type=int, default=3,
                   help="first calls (trace + compile afresh) per program, jax.grad's included (median)")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of the families not measured now from the existing results")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--compiler-options", type=json.loads, default=None,
                   help="JSON: XLA compiler options for our programs (xa.attributor(compiler_options=)); "
                        "jax.jit(jax.grad) keeps XLA's defaults")
    p.add_argument("--out", default=str(ROOT / "results" / "families"))
    a = p.parse_args(argv)
    methods = a.methods or list(xa.methods_available())
    t_start, load_start = time.perf_counter(), os.getloadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept, runs = [], []
    if a.merge and out.with_suffix(".json").exists():
        old = json.loads(out.with_suffix(".json").read_text())
        kept = [r for r in old["rows"] if r["arch"] not in a.archs]
        before = old["meta"]["runs"] if "runs" in old["meta"] else [
            _run_of(old["meta"], sorted({r["arch"] for r in old["rows"]}))]
        runs = [dict(r, archs=[x for x in r["archs"] if x not in a.archs]) for r in before]
        runs = [r for r in runs if r["archs"]]
    meta = dict(jax=jax.__version__, device=str(jax.devices()[0]), platform=platform.platform(),
                python=sys.version.split()[0], cpu_count=os.cpu_count())
    try:
        import torch
        import torchax

        meta.update(torch=torch.__version__, torchax=torchax.__version__)
    except ImportError:  # pragma: no cover
        pass
    run = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), archs=list(a.archs), repeats=a.repeats,
               first_repeats=a.first_repeats, first_paired=True, loadavg_start=list(load_start),
               **({"compiler_options": a.compiler_options} if a.compiler_options else {}))
    rows = []
    for arch in a.archs:
        rows += measure(arch, a.batches, methods, a.batch8_methods, a.repeats, not a.no_peers, a.first_repeats,
                        a.compiler_options)
        run.update(seconds=round(time.perf_counter() - t_start, 1), loadavg_end=list(os.getloadavg()))
        meta["runs"] = runs + [run]
        order = {arch: i for i, arch in enumerate(ARCHS)}
        both = sorted(kept + rows, key=lambda r: order.get(r["arch"], len(order)))  # stable: rows keep their order
        out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=both), indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(meta, both))  # after each family: a partial run keeps its rows
    print(f"wrote {out}.json and {out}.md")


def _run_of(meta, archs):
    """A results file from before ``runs`` were recorded, as one run."""
    return dict(date=meta["date"], archs=archs, repeats=meta.get("repeats"), first_repeats=1,
                loadavg_start=meta["loadavg_start"], loadavg_end=meta["loadavg_end"], seconds=meta["seconds"])


def markdown(meta, rows) -> str:
    runs = meta.get("runs") or [_run_of(meta, sorted({r["arch"] for r in rows}))]
    said = [f"{r['date']}: {', '.join(r['archs'])} (load average {r['loadavg_start'][0]:.1f} -> "
            f"{r['loadavg_end'][0]:.1f}; first calls: median of {r['first_repeats']}, each traced and compiled "
            f"afresh{', each over a `jax.grad` first call made just before it' if r.get('first_paired') else ''}; "
            f"steady: median of {r['repeats']}; {r['seconds']:.0f} s"
            + (f"; our programs compiled with XLA compiler options `{json.dumps(r['compiler_options'])}`, "
               "`jax.jit(jax.grad)` with XLA's defaults" if r.get("compiler_options") else "") + ")"
            for r in runs]
    lines = ["# Cost per model family: every method × `jax.jit(jax.grad)` and × Captum",
             "",
             f"{meta['device']}, {meta['cpu_count']} CPUs, jax {meta['jax']}, torch {meta.get('torch')}, "
             f"torchax {meta.get('torchax')}; torchvision modules through torchax, 224², random weights. "
             "`first` = trace + compile of the method's one program over the same for `jax.jit(jax.grad)` "
             "(measured in the same run, with the same number of first calls; in runs marked so, the median "
             "of the ratios to a `jax.grad` first call made just before each, immune to the machine's drift "
             "over a run); "
             "`steady` = the steady call over `jax.grad`'s. Path methods: 8 points in chunks of 4; first = "
             "trace + compile of the chunk program and the finishing program, steady = the eager call. Runs:",
             "", *[f"- {s}" for s in said],
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
