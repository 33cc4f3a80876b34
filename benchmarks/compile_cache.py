"""First calls with JAX's persistent compilation cache (``xa.use_compilation_cache``), cold and warm.

Every measurement is a new process (imports and model loading not counted): the method's program
traced and compiled with an empty cache folder (*cold*, a process's first call as
``benchmarks/families.py`` measures it), then in another new process with the folder the cold one
left (*warm*: the compile is a load), and ``jax.jit(jax.grad)``'s cold first call in a third, for
the ratio. torchvision modules through torchax, random weights, 224². Results go to
``benchmarks/results/compile_cache.{json,md}``.

    python benchmarks/compile_cache.py                       # needs the torch extra; ~10 min on 2 cores
    python benchmarks/compile_cache.py --archs mobilenet_v2 --methods rsp --batches 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from commands import run_meta, write_results  # noqa: E402

_ONE = """
import json, sys, time
sys.path.insert(0, {bench!r})
import jax, jax.numpy as jnp, numpy as np
import xattr_jax as xa
from families import load
from loading_routes import grad_of
from speed import OPTIONS, SIGNALS
arch, n, m, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if folder != "-":
    xa.use_compilation_cache(folder)
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
tm, model, v = load(arch)
x = jnp.asarray(np.random.default_rng(0).normal(size=(n, 224, 224, 3)).astype(np.float32))
t = jnp.arange(n, dtype=jnp.int32) % 1000
try:
    f = grad_of(model) if m == "jax.grad" else xa.attributor(model, m, signal=SIGNALS.get(m), **OPTIONS.get(m, {{}})).program
    t0 = time.perf_counter(); lowered = f.lower(v, x, t); trace = time.perf_counter() - t0
except ValueError as err:  # outside the method's domain
    print(json.dumps(dict(refused=str(err).splitlines()[0][:160]))); sys.exit(0)
t0 = time.perf_counter(); lowered.compile(); comp = time.perf_counter() - t0
print(json.dumps(dict(trace=trace, compile=comp, hits=len(hits))))
"""


def _run(arch, n, method, folder) -> dict:
    code = _ONE.format(bench=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code, arch, str(n), method, str(folder)], capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT.parent)))
    if proc.returncode != 0:
        raise SystemExit(f"{arch} b{n} {method} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["mobilenet_v2", "resnet50"])
    p.add_argument("--methods", nargs="+", default=["gradient", "lrp", "attention_backprop", "rsp"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=2, help="cold/warm pairs per program (median)")
    p.add_argument("--out", default=str(ROOT / "results" / "compile_cache"))
    a = p.parse_args(argv)
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.archs:
            for n in a.batches:
                grad = [_run(arch, n, "jax.grad", "-") for _ in range(a.repeats)]
                base = statistics.median(r["trace"] + r["compile"] for r in grad)
                print(f"{arch} b{n} jax.grad cold: {base:.2f} s", flush=True)
                for m in a.methods:
                    cold, warm = [], []
                    for r in range(a.repeats):
                        folder = Path(tmp) / f"{arch}-{n}-{m}-{r}"
                        cold.append(_run(arch, n, m, folder))
                        if "refused" in cold[-1]:
                            break
                        warm.append(_run(arch, n, m, folder))
                    if "refused" in cold[-1]:
                        print(f"{arch} b{n} {m}: refused", flush=True)
                        continue
                    if any(w["hits"] < 1 for w in warm):
                        raise SystemExit(f"{arch} b{n} {m}: the warm process did not load from the cache")
                    c = statistics.median(r["trace"] + r["compile"] for r in cold)
                    w = statistics.median(r["trace"] + r["compile"] for r in warm)
                    rows.append(dict(arch=arch, batch=n, method=m, grad_cold_s=round(base, 3), cold_s=round(c, 3),
                                     warm_s=round(w, 3), warm_trace_s=round(statistics.median(r["trace"] for r in warm), 3),
                                     cold_x_grad=round(c / base, 2), warm_x_grad=round(w / base, 2)))
                    print(f"{arch} b{n} {m}: cold {c:.2f} s ({c / base:.2f}x), warm {w:.2f} s "
                          f"({w / base:.2f}x jax.grad cold)", flush=True)
    meta = run_meta(a.repeats, load_start)
    lines = [f"# First calls with the compilation cache ({meta['cpu_count']} CPUs, {meta['date']}, median of "
             f"{a.repeats})", "",
             "Trace + compile of a method's program in a new process (`benchmarks/compile_cache.py`): *cold* "
             "with an empty cache folder, *warm* in a later process with the folder the cold one left "
             "(`xa.use_compilation_cache`; the `xattr` commands' default), over the cold first call of "
             "`jax.jit(jax.grad)` of the same model. torchvision modules through torchax, random weights, "
             f"224². Load average at the start {load_start[0]:.2f}, at the end {meta['loadavg_end'][0]:.2f}.", "",
             "| family | batch | method | jax.grad cold s | cold s | warm s (trace) | cold × grad | warm × grad |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['batch']} | {r['method']} | {r['grad_cold_s']:.2f} | {r['cold_s']:.2f} | "
              f"{r['warm_s']:.2f} ({r['warm_trace_s']:.2f}) | {r['cold_x_grad']:.2f} | {r['warm_x_grad']:.2f} |"
              for r in rows]
    write_results(a.out, meta, rows, lines)


if __name__ == "__main__":
    main()
