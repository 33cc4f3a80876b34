"""Speed of every attribution method against a plain ``jax.jit(jax.grad)`` and the peer libraries.

For each model (VGG16, ResNet50; random weights from torchvision through our converter), batch size
and method: trace, compile and steady-state time (median of ``--repeats`` runs, each ended with
``block_until_ready``), the ratio of the steady-state time to a plain jitted gradient of the same
model measured in the same run, the same for K targets per image, and the peer library's time for
the same method on the same weights when it is installed. Writes JSON and a markdown table to
``benchmarks/results/``.

    python benchmarks/speed.py                       # everything (~45 min on 2 CPU cores)
    python benchmarks/speed.py --models vgg16 --batches 1 --methods gradient lrp --repeats 3
    python benchmarks/speed.py --methods lrp rsp --update   # re-measure some rows in the results
    python benchmarks/speed.py --flops                      # add XLA's FLOP counts (compile only)
    python benchmarks/speed.py --batches 1 --no-peers --k 1 --baseline before.json --update
                          # trace + compile and × jax.grad against an earlier version's run (same flags)

Path methods (integrated gradients, GNL-IG, SmoothGrad) run with 8 points in chunks of 4 here (their
cost is linear in the points); the table also gives their cost per point. ``excitation_backprop@input``
is EB read at the image (``layer="input"``), the same backward as Attention Backpropagation's
``seed="logit"`` pass, for comparing the cost of a pass down to the pixels.

Path methods are timed as eager calls (the attributor's chunk-by-chunk driver; "compile s" is then
the first call's extra time and there is no separate trace time). The second table compares the
forms of the chunked path loop (``--ig-steps`` points, ``--ig-chunk`` at a time) on the plain
gradient: ``lax.scan`` (one program: the library's form for traced calls), ``lax.scan`` fully
unrolled, a Python loop over one jitted per-chunk function (the library's form for eager calls),
and all points vmapped at once, each with XLA's temporary-buffer size (``memory_analysis``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import xattr_jax as xa

ROOT = Path(__file__).resolve().parent
OPTIONS = {  # options per method for the benchmark (path methods: 8 points, cost is linear in them)
    "smoothgrad": {"samples": 8, "chunk": 4},
    "integrated_gradients": {"steps": 8, "chunk": 4},
    "gnl_integrated_gradients": {"steps": 8, "chunk": 4},
    "lrp": {"composite": "epsilon_plus_flat"},
}
POINTS = {"smoothgrad": "samples", "integrated_gradients": "steps", "gnl_integrated_gradients": "steps"}
SIGNALS = {"integrated_gradients": "logit", "gnl_integrated_gradients": "logit"}
VARIANTS = {  # extra rows: label -> (method, layer)
    "excitation_backprop@input": ("excitation_backprop", "input"),
}


def median_time(f, repeats):
    """Median wall time of ``f()`` over ``repeats`` calls, each ended with ``block_until_ready``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def lower_and_compile(fn_jitted, args, compiler_options=None):
    """``(trace s, compile s, compiled)``: ``fn_jitted`` lowered (traced) and compiled for ``args``."""
    t0 = time.perf_counter()
    lowered = fn_jitted.lower(*args)
    trace = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile(compiler_options)
    return trace, time.perf_counter() - t0, compiled


def time_jax(fn_jitted, args, repeats):
    trace, compile_, compiled = lower_and_compile(fn_jitted, args)
    jax.block_until_ready(compiled(*args))  # warm-up
    return trace, compile_, median_time(lambda: compiled(*args), repeats)


def time_eager(fn, args, repeats):
    """``(None, first call − steady, steady)`` for a function that compiles on its first call."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    steady = median_time(lambda: fn(*args), repeats)
    return None, max(first - steady, 0.0), steady


def plain_grad(model):
    def f(v, x, t):
        return jax.grad(lambda x: jnp.sum(model.apply(v, x)[jnp.arange(x.shape[0]), t]))(x)

    return jax.jit(f)


def _flops(fn_jitted, args):
    """XLA's FLOP count of the compiled program (``cost_analysis``), or None where not reported."""
    try:
        cost = fn_jitted.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"])
    except Exception:
        return None


def add_flops(path, models, batches, methods):
    """Add each row's FLOP count and its ratio to ``jax.grad``'s to an existing results JSON.

    Compiles only (no timing, a few minutes): the count says what a method must compute, which the
    time ratio then shows how close it comes to. Path methods (a loop of programs) are left out.
    """
    from converters.torchvision import convert

    import torchvision

    data = json.loads(path.with_suffix(".json").read_text())
    rows = {(r["model"], r["batch"], r["method"]): r for r in data["rows"]}
    for arch in models:
        model, v = convert(arch, getattr(torchvision.models, arch)(weights=None).eval())
        for n in batches:
            x = jnp.zeros((n, 224, 224, 3), jnp.float32)
            t = jnp.arange(n) % 1000
            g = _flops(plain_grad(model), (v, x, t))
            print(f"{arch} batch {n}: jax.grad {g:.3g} FLOPs", flush=True)
            for label in methods:
                method, layer = VARIANTS.get(label, (label, None))
                row = rows.get((arch, n, label))
                if row is None or "error" in row or method in POINTS:
                    continue
                fn = xa.attributor(model, method, layer, signal=SIGNALS.get(method), **OPTIONS.get(method, {}))
                f = _flops(fn.program, (v, x, t))
                if f is not None and g:
                    row.update(flops=f, jax_grad_flops=g, flops_ratio_to_jax_grad=f / g)
                    print(f"  {label}: {f:.3g} FLOPs = {f / g:.2f}x jax.grad", flush=True)
    path.with_suffix(".json").write_text(json.dumps(data, indent=1))
    path.with_suffix(".md").write_text(markdown(data["meta"], data["rows"], data.get("path_loop_forms", [])))


# ---------------------------------------------------------------------------------------------
# peers (same weights): each returns a zero-argument callable that runs the method once


def peer_runner(method, arch, tm, xt, targets, options):
    try:
        import torch
    except ImportError:
        return None, None
    t = torch.tensor(targets)
    try:
        if method in ("gradient", "input_x_gradient", "guided_backprop", "deconvnet", "smoothgrad",
                      "integrated_gradients", "grad_cam"):
            import captum.attr as ca
        if method == "gradient":
            a = ca.Saliency(tm)
            return "captum.Saliency", lambda: a.attribute(xt.clone().requires_grad_(), target=t, abs=False)
        if method in ("input_x_gradient", "guided_backprop", "deconvnet"):
            cls = {"input_x_gradient": "InputXGradient", "guided_backprop": "GuidedBackprop",
                   "deconvnet": "Deconvolution"}[method]
            a = getattr(ca, cls)(tm)
            return f"captum.{cls}", lambda: a.attribute(xt.clone().requires_grad_(), target=t)
        if method == "smoothgrad":
            a = ca.NoiseTunnel(ca.Saliency(tm))
            n = options["samples"]
            return "captum.NoiseTunnel(Saliency)", lambda: a.attribute(
                xt, nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=options["chunk"], stdevs=0.5,
                target=t, abs=False)
        if method == "integrated_gradients":
            a = ca.IntegratedGradients(tm)
            return "captum.IntegratedGradients", lambda: a.attribute(
                xt, target=t, n_steps=options["steps"], method="riemann_right",
                internal_batch_size=options["chunk"] * xt.shape[0])
        if method == "grad_cam":
            layer = {"vgg16": "features.29", "resnet50": "layer4"}[arch]
            a = ca.LayerGradCam(tm, tm.get_submodule(layer))
            return "captum.LayerGradCam", lambda: a.attribute(xt, target=t)
        if method == "lrp":
            from zennit.attribution import Gradient
            from zennit.composites import EpsilonPlusFlat
            from zennit.torchvision import ResNetCanonizer, VGGCanonizer

            canon = [ResNetCanonizer()] if arch.startswith("resnet") else [VGGCanonizer()]
            onehot = torch.eye(1000)[t]

            def run():
                with Gradient(model=tm, composite=EpsilonPlusFlat(canonizers=canon)) as attr:
                    return attr(xt.clone().requires_grad_(), onehot)

            return "zennit.EpsilonPlusFlat", run
        if method in ("excitation_backprop", "contrastive_excitation_backprop"):
            from torchray.attribution import excitation_backprop as eb

            fn = getattr(eb, method)
            layer = {"vgg16": "features.23", "resnet50": "layer3"}[arch]
            kw = {"saliency_layer": layer}
            if method.startswith("contrastive"):
                kw["contrast_layer"] = {"vgg16": "classifier.4", "resnet50": "avgpool"}[arch]
                if arch == "vgg16":
                    kw["classifier_layer"] = "classifier.6"
                else:
                    kw["classifier_layer"] = "fc"
            tm_eb = tm
            if arch.startswith("resnet"):  # TorchRay's benchmark ResNet: EltwiseSum skips, AvgPool2d(7, 1)
                import copy

                tm_eb = copy.deepcopy(tm)
                eb.update_resnet(tm_eb)
                tm_eb.avgpool = torch.nn.AvgPool2d(7, stride=1)

            def run():  # batched: TorchRay takes one target per sample
                return fn(tm_eb, xt.clone(), targets, resize=False, **kw)

            return f"torchray.{method}", run
    except ImportError:
        return None, None
    return None, None


def ig_forms(model, v, x, t, steps, chunk, repeats):
    """Time the forms of a chunked path loop over the plain gradient (``steps`` points, ``chunk`` at once).

    Every form computes ``Σ_s ∇_x y_t(α_s x)`` for ``α_s = s/steps``. Returns ``{form: {steady_s,
    temp_bytes, compile_s}}``; for the Python loop ``temp_bytes`` is that of the per-chunk program.
    """
    alphas = jnp.linspace(1.0 / steps, 1.0, steps, dtype=x.dtype).reshape(-1, chunk)
    n = x.shape[0]

    def grad_at(a, v, x, t):
        return jax.grad(lambda x: jnp.sum(model.apply(v, x)[jnp.arange(n), t]))(a * x)

    def chunk_sum(v, x, t, ac):
        return jnp.sum(jax.vmap(grad_at, in_axes=(0, None, None, None))(ac, v, x, t), axis=0)

    def scanned(unroll):
        def f(v, x, t):
            body = lambda acc, ac: (acc + chunk_sum(v, x, t, ac), None)  # noqa: E731
            return jax.lax.scan(body, jnp.zeros_like(x), alphas, unroll=unroll)[0]
        return jax.jit(f)

    def all_at_once(v, x, t):
        return chunk_sum(v, x, t, alphas.reshape(-1))

    out = {}
    forms = {
        "lax.scan over chunks (library, traced calls)": scanned(1),
        "lax.scan fully unrolled": scanned(alphas.shape[0]),
        "vmap of all points at once": jax.jit(all_at_once),
    }
    for name, f in forms.items():
        lowered = f.lower(v, x, t)
        t0 = time.perf_counter()
        comp = lowered.compile()
        c = time.perf_counter() - t0
        jax.block_until_ready(comp(v, x, t))
        out[name] = dict(steady_s=median_time(lambda: comp(v, x, t), repeats), compile_s=c,
                         temp_bytes=_temp_bytes(comp))
    step = jax.jit(chunk_sum)
    comp = step.lower(v, x, t, alphas[0]).compile()

    def loop():
        acc = jnp.zeros_like(x)
        for ac in alphas:
            acc = acc + comp(v, x, t, ac)
        return acc

    jax.block_until_ready(loop())
    out["Python loop over a jitted chunk (library, eager calls)"] = dict(steady_s=median_time(loop, repeats), compile_s=None,
                                                  temp_bytes=_temp_bytes(comp))
    return out


def _temp_bytes(compiled):
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def build_model(arch):
    """``(torch model, flax model, variables)``: random torchvision weights (seed 0) and their conversion."""
    import torch
    import torchvision

    from converters.torchvision import convert

    torch.manual_seed(0)
    tm = getattr(torchvision.models, arch)(weights=None).eval()
    for mod in tm.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    model, v = convert(arch, tm)
    return tm, model, v


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"default: every registered method and {list(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--k", type=int, default=20, help="targets per image for the multi-target column")
    p.add_argument("--k-batches", nargs="+", type=int, default=[1], help="batches that get the K column")
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--ig-chunk", type=int, default=8)
    p.add_argument("--ig-batches", nargs="+", type=int, default=[1], help="batches for the path-loop forms")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--compiler-options", type=json.loads, default=None,
                   help="JSON: XLA compiler options for our programs (xa.attributor(compiler_options=)); jax.grad "
                        "and the peers keep their defaults, e.g. '{\"xla_cpu_experimental_ynn_fusion_type\": \"\"}'")
    p.add_argument("--out", default=str(ROOT / "results" / "speed"))
    p.add_argument("--update", action="store_true",
                   help="replace only the rows this run measures in an existing --out JSON (rerunning a few methods)")
    p.add_argument("--baseline", default=None,
                   help="a JSON written by an earlier version with the same flags: adds its trace + compile time and "
                        "its × jax.grad per row, and our trace + compile over its")
    p.add_argument("--flops", action="store_true",
                   help="only add XLA's FLOP counts (and their ratio to jax.grad's) to the rows of an existing --out JSON")
    a = p.parse_args(argv)
    if a.flops:
        add_flops(Path(a.out), a.models, a.batches, a.methods or (list(xa.methods_available()) + list(VARIANTS)))
        return

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    methods = a.methods or (list(xa.methods_available()) + list(VARIANTS))
    rows, forms = [], []
    t_start = time.perf_counter()
    for arch in a.models:
        tm, model, v = build_model(arch)
        for n in a.batches:
            xt = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            x = jnp.asarray(xt.permute(0, 2, 3, 1).numpy())
            targets = [int(i) for i in np.arange(n) % 1000]
            t = jnp.asarray(targets)
            g_trace, g_comp, g_time = time_jax(plain_grad(model), (v, x, t), a.repeats)
            with torch.enable_grad():
                xg = xt.clone().requires_grad_()
                tg = torch.tensor(targets)

                def torch_grad():
                    xg.grad = None
                    out = tm(xg)
                    out[torch.arange(n), tg].sum().backward()
                    return xg.grad

                torch_time = median_time(torch_grad, a.repeats)
            print(f"{arch} batch {n}: jax.grad {g_time:.3f}s (compile {g_comp:.1f}s), torch grad {torch_time:.3f}s", flush=True)
            base = dict(model=arch, batch=n, jax_grad_s=g_time, torch_grad_s=torch_time)
            for label in methods:
                method, layer = VARIANTS.get(label, (label, None))
                opts = dict(OPTIONS.get(method, {}))
                try:
                    fn = xa.attributor(model, method, layer, signal=SIGNALS.get(method),
                                       compiler_options=a.compiler_options, **opts)
                    if method in POINTS:  # eager calls: the chunk-by-chunk driver (see xa.attributor)
                        tr, comp, st = time_eager(functools.partial(fn, key=jax.random.key(0)), (v, x, t), a.repeats)
                    else:
                        tr, comp, st = time_jax(fn.program, (v, x, t), a.repeats)
                except Exception as e:  # a method that cannot run on this model is reported, not fatal
                    rows.append(dict(base, method=label, error=f"{type(e).__name__}: {e}"[:300]))
                    print(f"  {label}: error {e}", flush=True)
                    continue
                row = dict(base, method=label, options={k: str(v_) for k, v_ in opts.items()},
                           trace_s=tr, compile_s=comp, steady_s=st, ratio_to_jax_grad=st / g_time)
                if method in POINTS:
                    row.update(points=opts[POINTS[method]], ratio_per_point=st / g_time / opts[POINTS[method]])
                if method not in POINTS and a.k > 1 and n in a.k_batches:
                    tk = jnp.asarray(np.stack([(np.arange(a.k) + i) % 1000 for i in range(n)]))
                    _, _, stk = time_jax(fn.program, (v, x, tk), a.repeats)
                    row.update(k=a.k, steady_k_s=stk, ratio_k_to_one=stk / st)
                if not a.no_peers and label == method:
                    name, run = peer_runner(method, arch, tm, xt, targets, opts)
                    if run is not None:
                        try:
                            with torch.enable_grad():
                                jax.block_until_ready(run())  # warm-up, as for ours
                                pt = median_time(run, a.repeats)
                            row.update(peer=name, peer_s=pt, ratio_to_peer=st / pt)
                        except Exception as e:
                            row.update(peer=name, peer_error=f"{type(e).__name__}: {e}"[:300])
                rows.append(row)
                print(f"  {label}: {st:.3f}s = {st / g_time:.2f}x jax.grad"
                      + (f", K={a.k}: {row['ratio_k_to_one']:.2f}x one target" if "ratio_k_to_one" in row else "")
                      + (f", peer {row['peer']} {row['peer_s']:.3f}s" if "peer_s" in row else ""), flush=True)
            if n in a.ig_batches and a.ig_steps % a.ig_chunk == 0:
                res = ig_forms(model, v, x, t, a.ig_steps, a.ig_chunk, a.repeats)
                for form, r in res.items():
                    forms.append(dict(model=arch, batch=n, steps=a.ig_steps, chunk=a.ig_chunk, form=form,
                                      jax_grad_s=g_time, ratio_per_point=r["steady_s"] / g_time / a.ig_steps, **r))
                    print(f"  path loop, {form}: {r['steady_s']:.3f}s, temp {r['temp_bytes']}", flush=True)
    if a.baseline:
        add_baseline(rows, json.loads(Path(a.baseline).read_text()))
    meta = dict(jax=jax.__version__, device=str(jax.devices()[0]), platform=platform.platform(),
                python=sys.version.split()[0], cpu_count=os.cpu_count(), torch=torch.__version__,
                repeats=a.repeats, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                seconds=round(time.perf_counter() - t_start, 1))
    if a.compiler_options:
        meta["compiler_options"] = a.compiler_options
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.update and out.with_suffix(".json").exists():
        old = json.loads(out.with_suffix(".json").read_text())
        key = lambda r: (r["model"], r["batch"], r["method"])  # noqa: E731
        new = {key(r): r for r in rows}
        rows = [new.pop(key(r), r) for r in old["rows"]] + list(new.values())
        forms = forms or old.get("path_loop_forms", [])
        meta = dict(old["meta"], updated=old["meta"].get("updated", []) + [
            dict(date=meta["date"], methods=sorted(methods), models=a.models, batches=a.batches,
                 seconds=meta["seconds"])])
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows, path_loop_forms=forms), indent=1))
    out.with_suffix(".md").write_text(markdown(meta, rows, forms))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def _trace_compile(r):
    return (r.get("trace_s") or 0.0) + r["compile_s"]


def add_baseline(rows, baseline) -> None:
    """Put a baseline run's trace + compile time and × jax.grad beside each row of this run."""
    old = {(r["model"], r["batch"], r["method"]): r for r in baseline["rows"] if "error" not in r}
    for r in rows:
        b = old.get((r["model"], r["batch"], r["method"]))
        if b is None or "error" in r:
            continue
        r.update(baseline_trace_compile_s=_trace_compile(b), baseline_ratio_to_jax_grad=b["ratio_to_jax_grad"],
                 trace_compile_to_baseline=_trace_compile(r) / _trace_compile(b))


def _f(v, fmt):
    return "–" if v is None else format(v, fmt)


def markdown(meta, rows, forms) -> str:
    """The results as markdown tables."""
    lines = [f"# Speed ({meta['device']}, jax {meta['jax']}, torch {meta['torch']}, {meta['cpu_count']} cores, "
             f"{meta['date']}, median of {meta['repeats']})", "",
             "Seconds per call at 224², random weights. `× jax.grad`: steady time over a jitted `jax.grad` of "
             "the same model, batch and targets, measured in the same run; path methods also per point. "
             "`K × one`: K targets per image in one call over one target. `× peer`: ours over the peer "
             "library's time on the same weights (< 1: we are faster). `FLOPs × jax.grad`: XLA's FLOP count "
             "of the compiled program (`cost_analysis`, `--flops`) over the plain gradient's: what the method "
             "must compute, against which `× jax.grad` shows how close the time comes.", "",
             *([f"Our programs compiled with XLA compiler options `{json.dumps(meta['compiler_options'])}` "
                "(`xa.attributor(compiler_options=)`); `jax.grad` and the peers with their defaults.", ""]
               if meta.get("compiler_options") else []),
             "| model | batch | method | trace s | compile s | steady s | × jax.grad | × jax.grad per point | "
             "FLOPs × jax.grad | K × one | peer | peer s | × peer |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['method']} | error: {r['error'][:80]} |||||||||")
            continue
        k = f"{r['ratio_k_to_one']:.2f} (K={r['k']})" if "ratio_k_to_one" in r else "–"
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['method']} | {_f(r['trace_s'], '.2f')} | {r['compile_s']:.1f} | "
            f"{r['steady_s']:.3f} | {r['ratio_to_jax_grad']:.2f} | {_f(r.get('ratio_per_point'), '.2f')} | "
            f"{_f(r.get('flops_ratio_to_jax_grad'), '.2f')} | {k} | "
            f"{r.get('peer', '–')} | {_f(r.get('peer_s'), '.3f')} | {_f(r.get('ratio_to_peer'), '.2f')} |")
    based = [r for r in rows if "trace_compile_to_baseline" in r]
    if based:
        lines += ["", "## Trace + compile against a baseline version (same flags, same machine)", "",
                  "`trace + compile` of the attributor (path methods: the first eager call's extra time), "
                  "this version and the baseline's; `× jax.grad` of both, each measured in its own run.", "",
                  "| model | batch | method | trace + compile s | baseline s | × baseline | × jax.grad | "
                  "× jax.grad baseline |", "|---|---|---|---|---|---|---|---|"]
        for r in based:
            lines.append(f"| {r['model']} | {r['batch']} | {r['method']} | {_trace_compile(r):.2f} | "
                         f"{r['baseline_trace_compile_s']:.2f} | {r['trace_compile_to_baseline']:.2f} | "
                         f"{r['ratio_to_jax_grad']:.2f} | {r['baseline_ratio_to_jax_grad']:.2f} |")
    if forms:
        lines += ["", "## Path-loop forms (plain gradient, Σ over the points)", "",
                  "| model | batch | points / chunk | form | steady s | × jax.grad per point | temp MB | compile s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in forms:
            mb = None if r["temp_bytes"] is None else r["temp_bytes"] / 2**20
            lines.append(f"| {r['model']} | {r['batch']} | {r['steps']} / {r['chunk']} | {r['form']} | "
                         f"{r['steady_s']:.3f} | {r['ratio_per_point']:.2f} | {_f(mb, '.0f')} | "
                         f"{_f(r['compile_s'], '.1f')} |")
    lines += ["", f"Total benchmark time {meta['seconds']:.0f} s."]
    for u in meta.get("updated", []):
        lines.append(f"Rows of {', '.join(u['methods'])} ({', '.join(u['models'])}, batches "
                     f"{', '.join(map(str, u['batches']))}) re-measured on {u['date']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
