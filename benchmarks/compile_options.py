"""XLA:CPU compiler options against compile time and steady time, per model family.

Each program (a method's, or ``jax.jit(jax.grad)``'s) is traced once, then compiled with each set
of options in turn, ``--repeats`` times (every compile afresh: a no-op option changes the cache
key), and its steady call timed. ``cnn-preset`` is ``{"xla_cpu_use_fusion_emitters": False,
"xla_backend_optimization_level": 1}``: XLA's older per-fusion LLVM emitters and LLVM at -O1,
which users can pass as ``xa.attributor(..., compiler_options=...)``. The maps and logits of the
two compilations are compared (largest difference over the largest value). torchvision modules
through torchax, random weights, 224². Results go to ``benchmarks/results/compile_options.{json,md}``.

    python benchmarks/compile_options.py                      # needs the torch extra; ~25 min on 2 cores
    python benchmarks/compile_options.py --runs mobilenet_v2:1:rsp,lrp
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from commands import run_meta, write_results  # noqa: E402
from families import _fresh, load  # noqa: E402
from loading_routes import grad_of  # noqa: E402
from speed import OPTIONS, SIGNALS, median_time  # noqa: E402

import xattr_jax as xa  # noqa: E402

PRESETS = {"xla-defaults": {},
           "cnn-preset": {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 1}}
RUNS = ["mobilenet_v2:1:jax.grad,rsp,attention_backprop,lrp", "mobilenet_v2:8:jax.grad,rsp,attention_backprop,lrp",
        "efficientnet_b0:8:jax.grad,lrp", "resnet50:8:jax.grad,lrp,rsp", "vgg16:8:jax.grad,lrp",
        "convnext_tiny:1:jax.grad,lrp", "vit_b_16:1:jax.grad,lrp"]


def _output(res):
    """The arrays to compare: the gradient, or an Attribution's map and logits."""
    return (res,) if isinstance(res, jax.Array) else (res.map, res.logits)


def _rel_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(p - q)) / jnp.maximum(jnp.max(jnp.abs(p)), 1e-30))
               for p, q in zip(_output(a), _output(b)))


def measure(arch, n, methods, repeats, steady_repeats) -> list[dict]:
    _, model, v = load(arch)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(n, 224, 224, 3)).astype(np.float32))
    t = jnp.arange(n, dtype=jnp.int32) % 1000
    rows = []
    for m in methods:
        f = grad_of(model) if m == "jax.grad" else xa.attributor(
            model, m, signal=SIGNALS.get(m), **OPTIONS.get(m, {})).program
        lowered = f.lower(v, x, t)
        comp = {k: [] for k in PRESETS}
        compiled = {}
        for _ in range(repeats):  # alternated, so that drift hits both
            for k, o in PRESETS.items():
                t0 = time.perf_counter()
                compiled[k] = lowered.compile(dict(o, **_fresh()))
                comp[k].append(time.perf_counter() - t0)
        out = {k: jax.block_until_ready(c(v, x, t)) for k, c in compiled.items()}
        steady = {k: median_time(lambda c=c: c(v, x, t), steady_repeats) for k, c in compiled.items()}
        row = dict(arch=arch, batch=n, program=m, rel_diff=_rel_diff(out["xla-defaults"], out["cnn-preset"]))
        for k in PRESETS:
            row[k] = dict(compile=statistics.median(comp[k]), steady=steady[k])
        rows.append(row)
        print(f"{arch} b{n} {m}: compile {row['xla-defaults']['compile']:.2f} -> {row['cnn-preset']['compile']:.2f} s, "
              f"steady {row['xla-defaults']['steady']:.3f} -> {row['cnn-preset']['steady']:.3f} s, "
              f"diff {row['rel_diff']:.1e}", flush=True)
    return rows


def markdown(meta, rows) -> list[str]:
    lines = [f"# XLA:CPU compiler options: compile and steady time ({meta['device']}, jax {meta['jax']}, "
             f"{meta['cpu_count']} cores, {meta['date']})", "",
             "Each program traced once and compiled afresh with each set of options (alternated, median of "
             f"{meta['repeats']}); steady: median of {meta['steady_repeats']} calls. `cnn-preset`: "
             "`xa.attributor(..., compiler_options={\"xla_cpu_use_fusion_emitters\": False, "
             "\"xla_backend_optimization_level\": 1})` (XLA's older fusion emitters, LLVM at -O1); for "
             "`jax.jit(jax.grad)` the same options given to its compile. `diff`: largest difference of the "
             "maps (and logits) of the two compilations over the largest value. torchvision modules through "
             f"torchax, random weights, 224². Load average {meta['loadavg_start'][0]:.1f} -> "
             f"{meta['loadavg_end'][0]:.1f}.", "",
             "| family | batch | program | compile s, XLA defaults | compile s, cnn-preset | compile × | "
             "steady s, XLA defaults | steady s, cnn-preset | steady × | diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, p = r["xla-defaults"], r["cnn-preset"]
        lines.append(f"| {r['arch']} | {r['batch']} | {r['program']} | {d['compile']:.2f} | {p['compile']:.2f} | "
                     f"{p['compile'] / d['compile']:.2f} | {d['steady']:.3f} | {p['steady']:.3f} | "
                     f"{p['steady'] / d['steady']:.2f} | {r['rel_diff']:.1e} |")
    lines += ["", f"Total benchmark time {meta['seconds']:.0f} s."]
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=RUNS, help="ARCH:BATCH:PROGRAM,PROGRAM,... (jax.grad or a method)")
    p.add_argument("--repeats", type=int, default=2, help="compiles per set of options (median)")
    p.add_argument("--steady-repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "compile_options"))
    a = p.parse_args(argv)
    if jax.default_backend() != "cpu":
        raise SystemExit("these are XLA:CPU options: run on a CPU backend (JAX_PLATFORMS=cpu)")
    t_start, load_start = time.perf_counter(), os.getloadavg()
    rows = []
    for spec in a.runs:
        arch, n, methods = spec.split(":")
        rows += measure(arch, int(n), methods.split(","), a.repeats, a.steady_repeats)
    meta = dict(run_meta(a.repeats, load_start), steady_repeats=a.steady_repeats, jax=jax.__version__,
                device=str(jax.devices()[0]), presets=PRESETS, seconds=time.perf_counter() - t_start)
    write_results(a.out, meta, rows, markdown(meta, rows))


if __name__ == "__main__":
    main()
