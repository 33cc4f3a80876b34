"""Max-pool backward alone: the library's routed backward against XLA's select_and_scatter and PyTorch.

For each pool shape (VGG's 2x2/2 and ResNet's 3x3/2 pad 1 at the sizes where the zoo's networks
use them), the median time of a jitted ``jax.vjp`` (forward + backward) of

* ``reduce_window_max`` (JAX's own: the backward is ``select_and_scatter``),
* :func:`xattr_jax.program.max_route.max_pool` (what every attribution now runs),

and of PyTorch's ``max_pool2d`` forward + backward (NCHW, ``torch.set_num_threads`` = the cores),
all in one run. JSON + markdown under ``benchmarks/results/``.

Usage::

    python benchmarks/maxpool.py [--repeats 9] [--out benchmarks/results/maxpool]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

from xattr_jax.program.max_route import max_pool

SHAPES = [  # (N, H, W, C, kernel, stride, padding)
    (1, 224, 224, 64, 2, 2, 0),
    (8, 112, 112, 128, 2, 2, 0),
    (8, 56, 56, 256, 2, 2, 0),
    (1, 112, 112, 64, 3, 2, 1),
    (8, 112, 112, 64, 3, 2, 1),
]


def _median(f, repeats):
    f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", default="benchmarks/results/maxpool")
    a = p.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        torch = None
    rows = []
    for n, h, w, c, k, s, pad in SHAPES:
        window, strides, padding = (1, k, k, 1), (1, s, s, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0))
        x = jax.random.normal(jax.random.key(0), (n, h, w, c))

        def run_with(pool):
            @jax.jit
            def f(x):
                y, vjp = jax.vjp(pool, x)
                return vjp(y)[0]

            return lambda: jax.block_until_ready(f(x))

        xla = _median(run_with(lambda v: lax.reduce_window(v, -jnp.inf, lax.max, window, strides, padding)), a.repeats)
        ours = _median(run_with(lambda v: max_pool(v, window, strides, padding)), a.repeats)
        row = dict(shape=[n, h, w, c], kernel=k, stride=s, padding=pad, select_and_scatter_ms=xla * 1e3,
                   routed_ms=ours * 1e3, speedup=xla / ours)
        if torch is not None:
            xt = torch.randn(n, c, h, w, requires_grad=True)

            def torch_step():
                y = torch.nn.functional.max_pool2d(xt, k, s, pad)
                (g,) = torch.autograd.grad(y, xt, y)
                return g

            row["torch_ms"] = _median(torch_step, a.repeats) * 1e3
            row["routed_over_torch"] = row["routed_ms"] / row["torch_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(jax=jax.__version__, backend=jax.default_backend(), machine=platform.machine(),
                cpu_count=os.cpu_count(), torch=getattr(torch, "__version__", None), repeats=a.repeats)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = ["# Max-pool forward + backward", "",
             f"Median of {a.repeats}, jitted `jax.vjp` (forward + backward), float32, {meta['backend']} "
             f"({meta['cpu_count']} cores), jax {meta['jax']}, torch {meta['torch']}.", "",
             "| input NHWC | pool | select_and_scatter ms | routed ms | speed-up | torch ms | routed / torch |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'x'.join(map(str, r['shape']))} | {r['kernel']}x{r['kernel']}/{r['stride']} pad "
                     f"{r['padding']} | {r['select_and_scatter_ms']:.1f} | {r['routed_ms']:.1f} | {r['speedup']:.1f}x | "
                     f"{r.get('torch_ms', float('nan')):.1f} | {r.get('routed_over_torch', float('nan')):.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
    main()
