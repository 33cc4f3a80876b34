"""ResNet50 through both loading routes: the native Flax zoo and torchvision's module via torchax.

Same random torchvision weights (seed 0), 224², batch 1 and 8. For ``jax.jit(jax.grad)`` of the
target logits and for three methods' one-program form (``fn.program``: gradient, Excitation
Backprop, LRP ε+flat) the script records trace (``.lower()``), compile (``.compile()``) and steady
time (median of ``--repeats`` calls with ``block_until_ready``), and the logits' agreement of the
two routes, into ``benchmarks/results/loading_routes.{json,md}``. Needs the ``torch`` extra.

    python benchmarks/loading_routes.py                      # ~15 min on 2 busy cores
    python benchmarks/loading_routes.py --batches 1 --repeats 2 --out /tmp/lr
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from commands import run_meta, write_results  # noqa: E402
from speed import time_jax  # noqa: E402

import xattr_jax as xa  # noqa: E402

ROOT = Path(__file__).resolve().parent
METHODS = {"gradient": {}, "excitation_backprop": {}, "lrp": {"composite": "epsilon_plus_flat"}}


def routes(arch):
    """``{route: (model, f(variables, x), variables)}`` on the same random torchvision weights."""
    import torch
    import torchvision

    from converters.torchvision import convert

    torch.manual_seed(0)
    tm = torchvision.models.get_model(arch, weights=None).eval()
    zoo, zv = convert(arch, tm, route="flax")
    fn, fv = convert(arch, tm, route="torchax")
    return {"flax": (zoo, zoo.apply, zv), "torchax": (fn, fn, fv)}


def grad_of(model):
    def f(v, x, t):
        return jax.grad(lambda x: jnp.sum(model(v, x)[jnp.arange(x.shape[0]), t]))(x)

    return jax.jit(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "loading_routes"))
    a = p.parse_args(argv)
    t_start, load_start = time.perf_counter(), os.getloadavg()
    models = routes(a.arch)
    rows, agreement = [], {}
    for n in a.batches:
        x = jnp.asarray(np.random.default_rng(0).normal(size=(n, 224, 224, 3)).astype(np.float32))
        t = jnp.arange(n, dtype=jnp.int32) % 1000
        logits = {r: np.asarray(f(v, x)) for r, (_, f, v) in models.items()}
        agreement[n] = float(np.max(np.abs(logits["flax"] - logits["torchax"])) / np.max(np.abs(logits["flax"])))
        for route, (model, f, v) in models.items():
            jobs = [("jax.grad", grad_of(f), (v, x, t))]
            jobs += [(m, xa.attributor(model, m, **kw).program, (v, x, t, jax.random.key(0)))
                     for m, kw in METHODS.items()]
            for what, program, args in jobs:
                trace, comp, steady = time_jax(program, args, a.repeats)
                rows.append(dict(route=route, batch=n, what=what, trace_s=trace, compile_s=comp, steady_s=steady))
                print(f"{route} b{n} {what}: trace {trace:.2f}s compile {comp:.2f}s steady {steady:.3f}s", flush=True)
    meta = dict(run_meta(a.repeats, load_start), arch=a.arch, jax=jax.__version__, device=str(jax.devices()[0]),
                seconds=round(time.perf_counter() - t_start, 1), logits_rel_diff=agreement)
    try:
        import torch
        import torchax

        meta.update(torch=torch.__version__, torchax=torchax.__version__)
    except ImportError:  # pragma: no cover
        pass
    write_results(a.out, meta, rows, markdown(meta, rows))


def markdown(meta, rows) -> list[str]:
    lines = [f"# Loading routes: {meta['arch']}, native Flax zoo vs torchvision through torchax",
             "",
             f"{meta['date']}, {meta['device']}, {meta['cpu_count']} CPUs (load average "
             f"{meta['loadavg_start'][0]:.1f} -> {meta['loadavg_end'][0]:.1f}), jax {meta['jax']}, "
             f"torch {meta.get('torch')}, torchax {meta.get('torchax')}; 224², random weights, median of "
             f"{meta['repeats']}. Logits of the two routes differ by "
             + ", ".join(f"{v:.1e} (batch {k})" for k, v in meta["logits_rel_diff"].items()) + " × max.",
             "",
             "| batch | program | route | trace s | compile s | steady s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['what']} | {r['route']} | {r['trace_s']:.2f} | {r['compile_s']:.2f} | "
                     f"{r['steady_s']:.3f} |")
    return lines


if __name__ == "__main__":
    main()
