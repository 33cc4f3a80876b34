"""Trace, compile and steady time of every attribution method at batch 1, 8 and 32, and program size.

For each model (VGG16, ResNet50 at 224²; random torchvision weights through our converter), method
(``xa.methods_available()``) and batch, the script measures the program(s) a call compiles:

* ``jit``: the attributor's one-program form ``fn.program`` (what an eager call runs for most
  methods, and what every method runs inside a caller's ``jax.jit``/``vmap``; for path methods the
  ``lax.scan`` over chunks). ``trace s``: ``.lower()`` (tracing to a jaxpr and lowering to
  StableHLO); ``compile s``: ``.compile()``; size: the number of HLO instructions in the compiled
  program's text (``compiled.as_text()``), its length in characters and XLA's temporary-buffer
  size (``memory_analysis``).
* ``jit-unroll``, RSP only: the same with ``batch="unroll"`` (its per-example kernels as batch-1
  convolutions unrolled over the batch, the program growing with it; ``jit`` is RSP's default
  ``batch="batched"``, batched matrix products over the receptive fields).
* ``eager``, RSP only: an eager call with concrete single-device arrays, which runs one compiled
  batch-1 program per example. Measured on the first call of a fresh attributor with
  ``jax.monitoring``'s compile events: ``trace s`` is the sum of jaxpr tracing and StableHLO
  lowering, ``compile s`` the sum of XLA compilation, over every program the call compiles (the
  batch-1 program and the small slicing, stacking and input-check programs; their number is
  listed); ``first − steady`` is the first call's extra wall time over a steady call. Its size
  columns are those of the batch-1 program it runs.
* ``chunk``, path methods (integrated gradients, GNL-IG, SmoothGrad) only: ``fn.chunk_program``,
  the per-chunk program an eager call runs from its Python loop (with the forward pass at x that
  its first chunk runs for the logits; the small finishing program, the read-out from the sums, is
  not measured separately), lowered and compiled as ``jit``.

Steady time (median of ``--repeats`` calls, each ended with ``block_until_ready``; for ``jit``
forms the calls of the compiled program, the first of them included in the median; for RSP's
eager form the calls after the first) is measured for ``--steady`` methods only (default: rsp,
excitation_backprop, gradient, grad_cam, lrp) to keep the run short; RSP has one per form. Nothing needs to run to measure compilation, so path methods keep the options of
``speed.py`` (8 points in chunks of 4). For each (model, method, form) the markdown gives
compile(b32) / compile(b1) and the HLO size ratio, and flags a compile ratio above
``--max-ratio`` (1.5) or a program that grows with the batch (size ratio above ``--grow``, 1.2).

    python benchmarks/compile_batch.py                 # everything (~20 min on 2 cores)
    python benchmarks/compile_batch.py --models vgg16 --methods gradient --batches 1 8 --repeats 1
    python benchmarks/compile_batch.py --methods rsp --forms eager --steady --out /tmp/cb   # RSP eager only
    python benchmarks/compile_batch.py --methods rsp --forms eager --steady rsp --repeats 2 --update
                                                    # re-measure RSP's eager rows in the results
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from commands import run_meta  # noqa: E402
from speed import OPTIONS, POINTS, SIGNALS, build_model, median_time  # noqa: E402

import xattr_jax as xa  # noqa: E402

ROOT = Path(__file__).resolve().parent
STEADY = ("rsp", "excitation_backprop", "gradient", "grad_cam", "lrp")
_INSTR = re.compile(r"\s*(ROOT\s+)?%?[\w.\-]+ = ")
_EVENTS = collections.defaultdict(list)
jax.monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: _EVENTS[name].append(secs))
TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def program_size(compiled) -> dict:
    """HLO instruction count and text length of a compiled program, and XLA's temporary bytes."""
    text = compiled.as_text()
    size = dict(hlo_instructions=sum(1 for line in text.splitlines() if _INSTR.match(line)), hlo_chars=len(text))
    try:
        size["temp_bytes"] = int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # not every backend reports it
        size["temp_bytes"] = None
    return size


def measure_lowered(jitted, args, run, repeats):
    """Trace + lowering, compile, program size and (``run``) steady time of ``jitted`` at ``args``."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    trace = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    comp = time.perf_counter() - t0
    row = dict(trace_s=trace, compile_s=comp, **program_size(compiled))
    if run:
        row["steady_s"] = median_time(lambda: compiled(*args), repeats)
    return row


def measure_eager(fn, args, run, repeats):
    """The first eager call's traced, lowered and compiled programs (``jax.monitoring``) and wall time."""
    _EVENTS.clear()
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    events = {k: list(v) for k, v in _EVENTS.items()}
    row = dict(trace_s=sum(sum(events.get(e, [])) for e in TRACE_EVENTS),
               compile_s=sum(events.get(COMPILE_EVENT, [])), programs_compiled=len(events.get(COMPILE_EVENT, [])),
               first_call_s=first)
    if run:
        row["steady_s"] = median_time(lambda: fn(*args), repeats)
        row["first_minus_steady_s"] = max(first - row["steady_s"], 0.0)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    p.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--steady", nargs="*", default=list(STEADY), help="methods whose steady time is measured")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--forms", nargs="+", default=["jit", "jit-unroll", "chunk", "eager"],
                   choices=["jit", "jit-unroll", "chunk", "eager"],
                   help="which forms to measure (default all that apply)")
    p.add_argument("--max-ratio", type=float, default=1.5, help="flag compile(largest batch)/compile(1) above this")
    p.add_argument("--grow", type=float, default=1.2, help="flag an HLO size ratio above this as growing")
    p.add_argument("--out", default=str(ROOT / "results" / "compile_batch"))
    p.add_argument("--update", action="store_true",
                   help="replace only the rows this run measures in an existing --out JSON (re-measuring a few)")
    a = p.parse_args(argv)
    methods = a.methods or list(xa.methods_available())
    load_start = os.getloadavg()
    rows = []
    t_start = time.perf_counter()
    for arch in a.models:
        tm, model, v = build_model(arch)
        del tm
        for n in a.batches:
            x = jax.random.normal(jax.random.key(0), (n, 224, 224, 3), jnp.float32)
            t = jnp.asarray(np.arange(n) % 1000)
            for method in methods:
                path = method in POINTS
                opts = dict(OPTIONS.get(method, {}))
                run = method in a.steady
                key = jax.random.key(0) if method == "smoothgrad" else None
                forms = ["jit"] + (["chunk"] if path else []) + (["jit-unroll", "eager"] if method == "rsp" else [])
                forms = [f for f in forms if f in a.forms]
                for form in forms:
                    form_opts = dict(opts, batch="unroll") if form == "jit-unroll" else opts
                    base = dict(model=arch, method=method, form=form, batch=n,
                                options={k: str(o) for k, o in form_opts.items()})
                    try:
                        fn = xa.attributor(model, method, signal=SIGNALS.get(method), **form_opts)  # fresh: nothing cached
                        if form in ("jit", "jit-unroll"):
                            r = measure_lowered(fn.program, (v, x, t, key), run, a.repeats)
                        elif form == "chunk":
                            r = measure_lowered(fn.chunk_program, (v, x, t, key, np.int32(0)), False, a.repeats)
                        else:
                            r = measure_eager(fn, (v, x, t), run, a.repeats)
                    except Exception as e:  # a method that cannot run on this model is reported, not fatal
                        rows.append(dict(base, error=f"{type(e).__name__}: {e}"[:300]))
                        print(f"{arch} b{n} {method} [{form}]: error {e}"[:200], flush=True)
                        continue
                    rows.append(dict(base, **r))
                    print(f"{arch} b{n} {method} [{form}]: trace {r['trace_s']:.2f}s compile {r['compile_s']:.2f}s"
                          + (f" hlo {r['hlo_instructions']}" if "hlo_instructions" in r else
                             f" ({r['programs_compiled']} programs)")
                          + (f" steady {r['steady_s']:.3f}s" if "steady_s" in r else ""), flush=True)
    meta = dict(run_meta(a.repeats, load_start), jax=jax.__version__, device=str(jax.devices()[0]),
                device_kind=jax.devices()[0].device_kind, batches=a.batches, steady_methods=list(a.steady),
                max_ratio=a.max_ratio, grow=a.grow, seconds=round(time.perf_counter() - t_start, 1))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.update and out.with_suffix(".json").exists():
        old = json.loads(out.with_suffix(".json").read_text())
        key = lambda r: (r["model"], r["method"], r["form"], r["batch"])  # noqa: E731
        new = {key(r): r for r in rows}
        rows = [new.pop(key(r), r) for r in old["rows"]] + list(new.values())
        meta = dict(old["meta"], updated=old["meta"].get("updated", []) + [
            dict(date=meta["date"], models=a.models, methods=methods, forms=a.forms, batches=a.batches,
                 repeats=a.repeats, seconds=meta["seconds"], loadavg_start=meta["loadavg_start"],
                 loadavg_end=meta["loadavg_end"])])
    # RSP's eager form runs the batch-1 program: give it that program's size
    b1 = {(r["model"], r["method"]): r for r in rows if r["form"] == "jit" and r["batch"] == 1 and "error" not in r}
    for r in rows:
        if r["form"] == "eager" and "error" not in r and (r["model"], r["method"]) in b1:
            src = b1[(r["model"], r["method"])]
            r.update({k: src[k] for k in ("hlo_instructions", "hlo_chars", "temp_bytes")})
    summary = summarize(rows, meta["max_ratio"], meta["grow"])
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows, summary=summary), indent=1))
    out.with_suffix(".md").write_text(markdown(meta, rows, summary))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def summarize(rows, max_ratio, grow):
    """Per (model, method, form): compile and size at the largest batch over batch 1, with flags."""
    groups = collections.defaultdict(dict)
    for r in rows:
        if "error" not in r:
            groups[(r["model"], r["method"], r["form"])][r["batch"]] = r
    out = []
    for (arch, method, form), by in groups.items():
        if 1 not in by or len(by) < 2:
            continue
        top = max(by)
        lo, hi = by[1], by[top]
        s = dict(model=arch, method=method, form=form, batch=top,
                 compile_ratio=hi["compile_s"] / lo["compile_s"] if lo["compile_s"] else None,
                 trace_compile_ratio=(hi["trace_s"] + hi["compile_s"]) / (lo["trace_s"] + lo["compile_s"]),
                 size_ratio=(hi["hlo_instructions"] / lo["hlo_instructions"]
                             if lo.get("hlo_instructions") and hi.get("hlo_instructions") else None))
        s["compile_flag"] = s["compile_ratio"] is not None and s["compile_ratio"] > max_ratio
        s["grows"] = s["size_ratio"] is not None and s["size_ratio"] > grow
        out.append(s)
    return out


def _f(v, fmt):
    return "–" if v is None else format(v, fmt)


FORM_TEXT = {"jit": "one program (`fn.program`)", "eager": "eager call (batch-1 program per example)",
             "chunk": "eager call's chunk program (`fn.chunk_program`)"}


def markdown(meta, rows, summary) -> str:
    """The results as markdown tables."""
    la0, la1 = meta["loadavg_start"], meta["loadavg_end"]
    top = max(meta["batches"])
    lines = [f"# Compile cost against batch size ({meta['device']}, jax {meta['jax']}, {meta['cpu_count']} cores, "
             f"{meta['date']})", "",
             f"VGG16 / ResNet50 at 224², random weights, batches {', '.join(map(str, meta['batches']))}. Forms: "
             "`jit` = the attributor's one program `fn.program` (an eager call of most methods, and every method "
             "inside a caller's `jit`; path methods: the `lax.scan` over chunks), `.lower()` timed as trace, "
             "`.compile()` as compile (for RSP this is the program of traced calls and of a batch sharded over "
             "several devices; RSP's default `batch=\"batched\"`); `jit-unroll` (RSP) = the same with "
             "`batch=\"unroll\"` (batch-1 convolutions unrolled over the batch); `eager` (RSP) = an eager call with concrete single-device arrays, which "
             "runs one compiled batch-1 program per example: trace and compile are the sums of `jax.monitoring`'s "
             "tracing + lowering and XLA-compile events over every program its first call compiles (`progs`), "
             "and its size columns are the batch-1 program's; `chunk` (path methods) = the per-chunk program an "
             "eager call runs (`fn.chunk_program`; its small finishing program is not measured). `HLO instr`: "
             "instructions in the compiled program's text; `temp MB`: XLA's temporary buffers.", "",
             f"Steady time (median of {meta['repeats']}) only for {', '.join(meta['steady_methods'])} "
             "(RSP: each form), to keep the run short; the other methods are traced and compiled only. "
             "Nothing runs to measure compilation, so path methods keep `speed.py`'s options (8 points in "
             "chunks of 4): no cheaper options were needed.", "",
             f"Load average (1, 5, 15 min) at the start {la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}, at the end "
             f"{la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f}: other jobs shared the 2 cores, so single timings "
             "carry their noise; the instruction counts do not.", "",
             f"## Summary: batch {top} over batch 1", "",
             f"Flags: compile ratio above {meta['max_ratio']} (`SLOW`), HLO instruction ratio above "
             f"{meta['grow']} (`GROWS`).", "",
             f"| model | method | form | compile b1 s | compile b{top} s | compile ratio | trace + compile ratio | "
             f"HLO b1 | HLO b{top} | size ratio | flags |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    by = {(r["model"], r["method"], r["form"], r["batch"]): r for r in rows if "error" not in r}
    for s in summary:
        lo = by[(s["model"], s["method"], s["form"], 1)]
        hi = by[(s["model"], s["method"], s["form"], s["batch"])]
        flags = " ".join(f for f, on in (("SLOW", s["compile_flag"]), ("GROWS", s["grows"])) if on) or "ok"
        lines.append(f"| {s['model']} | {s['method']} | {s['form']} | {lo['compile_s']:.2f} | {hi['compile_s']:.2f} | "
                     f"{_f(s['compile_ratio'], '.2f')} | {s['trace_compile_ratio']:.2f} | "
                     f"{_f(lo.get('hlo_instructions'), 'd')} | {_f(hi.get('hlo_instructions'), 'd')} | "
                     f"{_f(s['size_ratio'], '.2f')} | {flags} |")
    flagged = [s for s in summary if s["compile_flag"] or s["grows"]]
    lines += ["", "Flagged: " + ("; ".join(
        f"{s['model']} {s['method']} [{s['form']}] compile ×{_f(s['compile_ratio'], '.2f')}, size ×"
        f"{_f(s['size_ratio'], '.2f')}" for s in flagged) if flagged else "none") + "."]
    rsp = [s for s in summary if s["method"] == "rsp" and s["form"] == "eager"]
    if rsp:
        lines += ["", f"RSP, eager calls, compile(b{top}) / compile(b1): " + ", ".join(
            f"{s['model']} {_f(s['compile_ratio'], '.2f')} (trace + compile {s['trace_compile_ratio']:.2f})"
            for s in rsp) + f" (limit {meta['max_ratio']})."]
    lines += ["", "## All rows", "",
              "| model | method | form | batch | trace s | compile s | progs | HLO instr | HLO chars | temp MB | "
              "steady s | first − steady s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | {r['form']} | {r['batch']} | error: {r['error'][:80]} "
                         "||||||||")
            continue
        mb = None if r.get("temp_bytes") is None else r["temp_bytes"] / 2**20
        lines.append(f"| {r['model']} | {r['method']} | {r['form']} | {r['batch']} | {r['trace_s']:.2f} | "
                     f"{r['compile_s']:.2f} | {r.get('programs_compiled', 1)} | {_f(r.get('hlo_instructions'), 'd')} | "
                     f"{_f(r.get('hlo_chars'), 'd')} | {_f(mb, '.0f')} | {_f(r.get('steady_s'), '.3f')} | "
                     f"{_f(r.get('first_minus_steady_s'), '.2f')} |")
    lines += ["", "Form: " + "; ".join(f"`{k}` {v}" for k, v in FORM_TEXT.items()) + ".",
              "", f"Total benchmark time {meta['seconds']:.0f} s."]
    for u in meta.get("updated", []):
        l0, l1 = u["loadavg_start"][0], u["loadavg_end"][0]
        lines.append(f"Rows of {', '.join(u['methods'])} [{', '.join(u['forms'])}] ({', '.join(u['models'])}, batches "
                     f"{', '.join(map(str, u['batches']))}) re-measured on {u['date']} (median of {u['repeats']}, "
                     f"{u['seconds']:.0f} s, 1-min load {l0:.2f} → {l1:.2f}).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
