"""Speed of every attribution method against a plain ``jax.jit(jax.grad)`` and the peer libraries.

For each model (VGG16, ResNet50; random weights from torchvision through our converter), batch size
and method: trace, compile and steady-state time (median of ``--repeats`` runs, each ended with
``block_until_ready``), the ratio of the steady-state time to a plain jitted gradient of the same
model measured in the same run, the same for K targets per image, and the peer library's time for
the same method on the same weights when it is installed. Writes JSON and a markdown table to
``benchmarks/results/``.

    python benchmarks/speed.py                       # everything (long on 2 CPU cores)
    python benchmarks/speed.py --models vgg16 --batches 1 --methods gradient lrp --repeats 3
"""

from __future__ import annotations

import argparse
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
OPTIONS = {  # options per method for the benchmark (the paper defaults where they are cheap enough)
    "smoothgrad": {"samples": 16, "chunk": 8},
    "integrated_gradients": {"steps": 32, "chunk": 8},
    "gnl_integrated_gradients": {"steps": 32, "chunk": 8},
    "lrp": {"composite": "epsilon_plus_flat"},
}
SIGNALS = {"integrated_gradients": "logit", "gnl_integrated_gradients": "logit"}


def _median_time(f, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_jax(fn_jitted, args, repeats):
    t0 = time.perf_counter()
    lowered = fn_jitted.lower(*args)
    trace = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_ = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm-up
    return trace, compile_, _median_time(lambda: compiled(*args), repeats)


def plain_grad(model):
    def f(v, x, t):
        return jax.grad(lambda x: jnp.sum(model.apply(v, x)[jnp.arange(x.shape[0]), t]))(x)

    return jax.jit(f)


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--k", type=int, default=20, help="targets per image for the multi-target row")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results" / "speed"))
    a = p.parse_args(argv)

    import torch
    import torchvision

    from converters.torchvision import convert

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    methods = a.methods or list(xa.methods_available())
    rows = []
    for arch in a.models:
        torch.manual_seed(0)
        tm = getattr(torchvision.models, arch)(weights=None).eval()
        for mod in tm.modules():
            if isinstance(mod, torch.nn.ReLU):
                mod.inplace = False
        model, v = convert(arch, tm)
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

                torch_time = _median_time(torch_grad, a.repeats)
            print(f"{arch} batch {n}: jax.grad {g_time:.3f}s (compile {g_comp:.1f}s), torch grad {torch_time:.3f}s", flush=True)
            base = dict(model=arch, batch=n, jax_grad_s=g_time, torch_grad_s=torch_time)
            for method in methods:
                opts = dict(OPTIONS.get(method, {}))
                try:
                    fn = xa.attributor(model, method, signal=SIGNALS.get(method), **opts)
                    tr, comp, st = time_jax(fn.jitted, (v, x, t), a.repeats)
                except Exception as e:  # a method that cannot run on this model is reported, not fatal
                    rows.append(dict(base, method=method, error=f"{type(e).__name__}: {e}"[:300]))
                    print(f"  {method}: error {e}", flush=True)
                    continue
                row = dict(base, method=method, options={k: str(v_) for k, v_ in opts.items()},
                           trace_s=tr, compile_s=comp, steady_s=st, ratio_to_jax_grad=st / g_time)
                if method not in ("smoothgrad", "integrated_gradients", "gnl_integrated_gradients") and a.k > 1:
                    tk = jnp.asarray(np.stack([(np.arange(a.k) + i) % 1000 for i in range(n)]))
                    _, _, stk = time_jax(fn.jitted, (v, x, tk), max(1, a.repeats // 2))
                    row.update(k=a.k, steady_k_s=stk, ratio_k_to_one=stk / st)
                if not a.no_peers:
                    name, run = peer_runner(method, arch, tm, xt, targets, opts)
                    if run is not None:
                        try:
                            with torch.enable_grad():
                                pt = _median_time(run, a.repeats)
                            row.update(peer=name, peer_s=pt, ratio_to_peer=st / pt)
                        except Exception as e:
                            row.update(peer=name, peer_error=f"{type(e).__name__}: {e}"[:300])
                rows.append(row)
                print(f"  {method}: {st:.3f}s = {st / g_time:.2f}x jax.grad"
                      + (f", K={a.k}: {row['ratio_k_to_one']:.2f}x one target" if "ratio_k_to_one" in row else "")
                      + (f", peer {row['peer']} {row['peer_s']:.3f}s" if "peer_s" in row else ""), flush=True)
    meta = dict(jax=jax.__version__, device=str(jax.devices()[0]), platform=platform.platform(),
                python=sys.version.split()[0], cpu_count=os.cpu_count(), torch=torch.__version__,
                date=time.strftime("%Y-%m-%d %H:%M:%S"))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [f"# Speed ({meta['device']}, jax {meta['jax']}, torch {meta['torch']}, {meta['cpu_count']} cores, {meta['date']})",
             "", "| model | batch | method | trace s | compile s | steady s | × jax.grad | K targets × one | peer | peer s | × peer |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['method']} | error: {r['error'][:80]} |||||||")
            continue
        lines.append("| {model} | {batch} | {method} | {trace_s:.2f} | {compile_s:.1f} | {steady_s:.3f} | {ratio_to_jax_grad:.2f} | {k} | {peer} | {peer_s} | {rp} |".format(
            **{k_: v_ for k_, v_ in r.items() if k_ not in ("k", "peer", "peer_s")}, k=f"{r['ratio_k_to_one']:.2f} (K={r['k']})" if "ratio_k_to_one" in r else "–",
            peer=r.get("peer", "–"), peer_s=f"{r['peer_s']:.3f}" if "peer_s" in r else "–",
            rp=f"{r['ratio_to_peer']:.2f}" if "ratio_to_peer" in r else "–"))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
