"""Where the time goes, per operation kind: XLA (jax.grad and methods) against PyTorch autograd.

For each model and batch, on the same random torchvision weights through the converter:

* XLA: ``jax.profiler`` traces ``repeats`` calls of the compiled program; every executed HLO thunk is
  put in a kind by what its (fused) computation contains — convolution, dot, max-pool backward
  (``select-and-scatter``), max-pool forward (``reduce-window``), reduction, layout
  (transpose/copy only), elementwise (other fusions) — and its time summed per call;
* PyTorch: ``torch.profiler`` over the same number of autograd calls (``x.grad`` of the target
  logit, as Captum's Saliency), self CPU time per aten op, put in the same kinds.

Times are per call, summed over threads (two threads working at once count twice), so compare
kinds, not totals against wall time. JSON + markdown under ``benchmarks/results/``.

Usage::

    python benchmarks/profile_ops.py [--models vgg16 resnet50] [--batches 1 8] [--methods gradient excitation_backprop lrp]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import platform
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import xattr_jax as xa

KINDS = ("convolution", "dot", "maxpool backward", "maxpool forward", "batch norm", "relu mask",
         "reduction", "layout", "elementwise", "other")


def _computations(hlo: str) -> dict:
    """``{computation name: [opcodes]}`` and ``{instruction name: (opcode, called computation)}``."""
    comps, insts, cur = {}, {}, None
    for line in hlo.splitlines():
        m = re.match(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(.*\))?.*\{\s*$", line)
        if m and "=" not in line.split("{")[0]:
            cur = m.group(1)
            comps[cur] = []
            continue
        tup = False
        m = re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+(?:\[[^\]]*\])?(?:\{[^}]*\})?\s+([\w\-]+)\(", line)
        if not m:
            m = re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\(.*?\)\s+([\w\-]+)\(", line)
            tup = m is not None
        if m and cur is not None:
            name, op = m.group(1), m.group(2)
            if op == "reduce-window" and tup:  # variadic (value, index): XLA:CPU's select-and-scatter
                op = "select-and-scatter"
            calls = re.search(r"calls=%?([\w.\-]+)", line)  # fusions; to_apply= is a reducer
            comps[cur].append(op)
            insts[name] = (op, calls.group(1) if calls else None)
    return comps, insts


def _kind_of(ops) -> str:
    s = set(ops)
    if "convolution" in s:
        return "convolution"
    if "dot" in s:
        return "dot"
    if s & {"select-and-scatter", "scatter"}:
        return "maxpool backward"
    if "reduce-window" in s:
        return "maxpool forward"
    if "reduce" in s:
        return "reduction"
    if s and s <= {"transpose", "copy", "bitcast", "reshape", "parameter", "tuple", "get-tuple-element",
                   "broadcast"}:
        return "layout"
    if s & {"rsqrt", "sqrt"}:
        return "batch norm"
    if "select" in s and "compare" in s and not (s & {"divide", "exponential", "log"}):
        return "relu mask"
    return "elementwise" if s else "other"


def xla_profile(fn, args, repeats) -> dict:
    from jax.profiler import ProfileData

    compiled = fn.lower(*args).compile()
    comps, insts = _computations(compiled.as_text())

    def kind(name):
        base = name[len("end: "):] if name.startswith("end: ") else name
        op, called = insts.get(base, (None, None))
        if op is None:
            m = re.match(r"wrapped_([a-z\-]+)", base)
            return _kind_of([m.group(1)]) if m else "other"
        if called and called in comps:
            ops = list(comps[called])
            for o in list(comps[called]):  # one level of nesting (fusions calling computations)
                ops += comps.get(o, [])
            return _kind_of(ops)
        return _kind_of([op])

    jax.block_until_ready(compiled(*args))
    d = tempfile.mkdtemp()
    with jax.profiler.trace(d):
        for _ in range(repeats):
            jax.block_until_ready(compiled(*args))
    path = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)[0]
    times = collections.Counter()
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            for e in line.events:
                stats = dict(e.stats)
                if "hlo_op" in stats:
                    times[kind(str(stats["hlo_op"]))] += e.duration_ns / 1e6 / repeats
    return dict(times)


TORCH_KINDS = [
    ("convolution", ("conv", "mkldnn_convolution")),
    ("dot", ("addmm", "mm", "linear", "matmul")),
    ("maxpool backward", ("max_pool2d_with_indices_backward",)),
    ("maxpool forward", ("max_pool2d",)),
    ("batch norm", ("batch_norm",)),
    ("relu mask", ("threshold_backward", "relu")),
    ("reduction", ("sum", "mean", "adaptive_avg_pool")),
    ("layout", ("copy_", "contiguous", "transpose", "permute", "clone", "view", "reshape", "t")),
]


def torch_kind(name: str) -> str:
    n = name.replace("aten::", "")
    for k, keys in TORCH_KINDS:
        if any(n == key or n.startswith(key) for key in keys):
            return k
    return "elementwise" if n in ("add", "add_", "mul", "mul_", "fill_", "zero_", "zeros", "ones_like",
                                  "empty_like", "empty", "div", "sub") else "other"


def torch_profile(tm, xt, target, repeats) -> dict:
    import torch

    def step():
        x = xt.clone().requires_grad_(True)
        out = tm(x)
        (g,) = torch.autograd.grad(out[torch.arange(out.shape[0]), target].sum(), x)
        return g

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    times = collections.Counter()
    for ev in prof.key_averages():
        times[torch_kind(ev.key)] += ev.self_cpu_time_total / 1e3 / repeats
    return dict(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--methods", nargs="+", default=["gradient", "excitation_backprop", "lrp"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/profile_ops")
    a = p.parse_args(argv)
    import torch
    import torchvision

    from converters.torchvision import convert

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for arch in a.models:
        torch.manual_seed(0)
        tm = getattr(torchvision.models, arch)(weights=None).eval()
        model, v = convert(arch, tm)
        for n in a.batches:
            x = jnp.asarray(np.random.default_rng(0).standard_normal((n, 224, 224, 3)), jnp.float32)
            t = jnp.arange(n) % 1000
            progs = {"jax.grad": (jax.jit(jax.grad(lambda xx: jnp.sum(model.apply(v, xx)[jnp.arange(n), t]))), (x,))}
            for m in a.methods:
                progs[m] = (xa.attributor(model, m).program, (v, x, t))
            for name, (fn, args) in progs.items():
                rows.append(dict(model=arch, batch=n, program=name, ms=xla_profile(fn, args, a.repeats)))
                print(json.dumps(rows[-1]), flush=True)
            xt = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous()
            rows.append(dict(model=arch, batch=n, program="torch autograd",
                             ms=torch_profile(tm, xt, torch.from_numpy(np.asarray(t)), a.repeats)))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(jax=jax.__version__, torch=torch.__version__, machine=platform.machine(), cpu_count=os.cpu_count(),
                repeats=a.repeats)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = ["# Time per operation kind (ms per call, summed over threads)", "",
             f"jax {meta['jax']} (XLA:CPU, jax.profiler), torch {meta['torch']} (torch.profiler, self CPU time), "
             f"{meta['cpu_count']} cores, 224², random torchvision weights, mean of {a.repeats} calls.", "",
             "| model | batch | program | " + " | ".join(KINDS) + " | total |",
             "|---|---|---|" + "---|" * (len(KINDS) + 1)]
    for r in rows:
        ms = r["ms"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['program']} | "
                     + " | ".join(f"{ms.get(k, 0):.0f}" for k in KINDS) + f" | {sum(ms.values()):.0f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
    main()
