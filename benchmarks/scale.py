"""Throughput (images/s) of attribution over 1, 2, 4 and 8 devices, beside per-image peer loops.

For each model (VGG16, ResNet50 at 224²; random torchvision weights through our converter) and
method (Excitation Backprop, gradient, Grad-CAM; each at its default layer) the script calls
``xa.attributor(model, method)`` on one global batch (``--batch``, divisible by every device
count) sharded over ``k`` devices: a ``Mesh`` over ``jax.devices()[:k]`` with axis ``"batch"``, the
images and targets placed with ``NamedSharding(mesh, P("batch"))``, the variables replicated
(``NamedSharding(mesh, P())``). It checks that the output map is sharded over the ``k`` devices
and times the median of ``--repeats`` steady calls after a warm-up call (each ended with
``block_until_ready``). Beside it, on the same machine and images:

* the peer library's method (Captum ``Saliency``, TorchRay ``excitation_backprop``, Captum
  ``LayerGradCam``; the same converted weights, ``torch.set_num_threads`` at the core count) called
  one image at a time in a Python loop, as the peers' examples do;
* our attributor called one image at a time on one device.

All configurations of one (model, method) are warmed up first and then timed in turn within each
repeat, so a change in the load of a shared machine falls on all of them alike (the load average at
the start and end is recorded). Reported: images/s, speed-up over one device, scaling efficiency
(speed-up / k) and our images/s over the peer loop's. Writes ``benchmarks/results/scale.{json,md}``.

On a CPU host the script sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before jax is
imported (unless ``XLA_FLAGS`` already sets a device count or a GPU platform is selected): the
eight "devices" are then threads sharing the host's cores, so the efficiency measures the overhead
of sharding, not parallel hardware. On a machine with GPUs the same script uses them (device
counts beyond those present are skipped and recorded).

    python benchmarks/scale.py                                    # everything (~5 min on 2 quiet cores)
    python benchmarks/scale.py --models vgg16 --methods gradient --batch 8 --repeats 1   # smoke
    python benchmarks/scale.py --devices 1 2 --batch 16 --out /tmp/scale
"""

from __future__ import annotations

import importlib.util
import os
import sys


def _force_host_devices(count: int = 8) -> bool:
    """Ask XLA:CPU for ``count`` host devices unless the user chose a count or a GPU platform."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms and platforms.split(",")[0] != "cpu":
        return False
    if not platforms and any(importlib.util.find_spec(p) for p in (
            "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    return True


# before jax is imported (here and through speed.py / xattr_jax); only when run, not when imported
FORCED = _force_host_devices(8) if __name__ == "__main__" else False

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import build_model, peer_runner  # noqa: E402

import xattr_jax as xa  # noqa: E402

ROOT = Path(__file__).resolve().parent
METHODS = ("excitation_backprop", "gradient", "grad_cam")


def sharded_call(fn, v, x, t, k):
    """``(call, devices holding the map, its spec)``: the batch sharded over the first ``k`` devices, warmed up."""
    mesh = Mesh(np.array(jax.devices()[:k]), ("batch",))
    xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
    ts = jax.device_put(t, NamedSharding(mesh, P("batch")))
    vs = jax.device_put(v, NamedSharding(mesh, P()))
    out = jax.block_until_ready(fn(vs, xs, ts))  # warm-up (compiles for this sharding)
    devices = len(out.map.sharding.device_set)
    assert devices == k, f"map on {devices} devices, expected {k}"
    return (lambda: fn(vs, xs, ts)), devices, str(out.map.sharding.spec)


def loop_call(call, items):
    """A callable running ``call(item)`` over ``items`` one at a time, warmed up on the first item."""
    jax.block_until_ready(call(items[0]))
    return lambda: [jax.block_until_ready(call(it)) for it in items]


def interleaved_times(calls, repeats):
    """``{name: (median, min)}`` seconds of each of ``calls`` ({name: callable}), timed in turn within each repeat.

    The configurations of one row take turns, so a change in the load of a shared machine falls on all
    of them alike rather than on whichever ran last.
    """
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(ts), min(ts)) for name, ts in times.items()}


def torch_grad_on(call):
    import torch

    with torch.enable_grad():
        return call()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--devices", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--batch", type=int, default=8, help="global batch; divisible by every device count")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results" / "scale"))
    a = p.parse_args(argv)
    bad = [k for k in a.devices if a.batch % k]
    if bad:
        p.error(f"--batch {a.batch} is not divisible by device counts {bad}")

    import torch

    load_start = os.getloadavg()
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    available = len(jax.devices())
    counts = [k for k in a.devices if k <= available]
    skipped = [k for k in a.devices if k > available]
    rows = []
    t_start = time.perf_counter()
    for arch in a.models:
        tm, model, v = build_model(arch)
        xt = torch.randn(a.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        x = jnp.asarray(xt.permute(0, 2, 3, 1).numpy())
        targets = [int(i) for i in np.arange(a.batch) % 1000]
        t = jnp.asarray(targets)
        for method in a.methods:
            fn = xa.attributor(model, method)
            row = dict(model=arch, method=method, batch=a.batch, devices={})
            calls, peer = {}, None
            for k in counts:
                calls[k], on, spec = sharded_call(fn, v, x, t, k)
                row["devices"][str(k)] = dict(map_devices=on, map_spec=spec)
            d0 = jax.devices()[0]  # our own batch-1 loop on one device
            v1 = jax.device_put(v, d0)
            singles = [(jax.device_put(x[i:i + 1], d0), jax.device_put(t[i:i + 1], d0)) for i in range(a.batch)]
            calls["ours_loop"] = loop_call(lambda it: fn(v1, *it), singles)
            if not a.no_peers:
                runs = [peer_runner(method, arch, tm, xt[i:i + 1], targets[i:i + 1], {}) for i in range(a.batch)]
                peer = runs[0][0]
                if runs[0][1] is not None:
                    try:
                        with torch.enable_grad():
                            loop = loop_call(lambda r: r[1](), runs)
                        calls["peer_loop"] = lambda: torch_grad_on(loop)
                    except Exception as e:
                        row["peer_loop"] = dict(peer=peer, error=f"{type(e).__name__}: {e}"[:300])
            load_before = os.getloadavg()[0]
            secs = interleaved_times(calls, a.repeats)
            row["loadavg_1min"] = [load_before, os.getloadavg()[0]]  # before and after the timed repeats
            rate = lambda name: dict(seconds=secs[name][0], images_per_s=a.batch / secs[name][0],  # noqa: E731
                                     best_seconds=secs[name][1], best_images_per_s=a.batch / secs[name][1])
            for k in counts:
                row["devices"][str(k)].update(rate(k))
            row["ours_loop"] = rate("ours_loop")
            if "peer_loop" in secs:
                row["peer_loop"] = dict(peer=peer, **rate("peer_loop"))
            one = row["devices"].get("1")
            for k, d in row["devices"].items():
                if one:
                    d["speedup"] = d["images_per_s"] / one["images_per_s"]
                    d["efficiency"] = d["speedup"] / int(k)
                    d["best_speedup"] = d["best_images_per_s"] / one["best_images_per_s"]
                    d["best_efficiency"] = d["best_speedup"] / int(k)
                print(f"{arch} {method} k={k}: {d['images_per_s']:.2f} img/s, speed-up {_f(d.get('speedup'), '.2f')}, "
                      f"efficiency {_f(d.get('efficiency'), '.2f')} (map on {d['map_devices']} devices "
                      f"{d['map_spec']})", flush=True)
            print(f"  ours, one image at a time on 1 device: {row['ours_loop']['images_per_s']:.2f} img/s", flush=True)
            if "images_per_s" in row.get("peer_loop", {}):
                peer_ips = row["peer_loop"]["images_per_s"]
                print(f"  peer {peer}, one image at a time: {peer_ips:.2f} img/s", flush=True)
                row["ours_loop"]["ratio_to_peer"] = row["ours_loop"]["images_per_s"] / peer_ips
                best_ips = row["peer_loop"]["best_images_per_s"]
                row["ours_loop"]["best_ratio_to_peer"] = row["ours_loop"]["best_images_per_s"] / best_ips
                for d in row["devices"].values():
                    d["ratio_to_peer"] = d["images_per_s"] / peer_ips
                    d["best_ratio_to_peer"] = d["best_images_per_s"] / best_ips
            rows.append(row)
    meta = dict(jax=jax.__version__, torch=torch.__version__, backend=jax.default_backend(),
                device=str(jax.devices()[0]), device_kind=jax.devices()[0].device_kind,
                devices_available=available, forced_host_devices=FORCED,
                xla_flags=os.environ.get("XLA_FLAGS", ""), platform=platform.platform(),
                python=sys.version.split()[0], cpu_count=cores, torch_threads=torch.get_num_threads(),
                batch=a.batch, repeats=a.repeats, device_counts=counts, device_counts_skipped=skipped,
                date=time.strftime("%Y-%m-%d %H:%M:%S"), seconds=round(time.perf_counter() - t_start, 1),
                loadavg_start=list(load_start), loadavg_end=list(os.getloadavg()))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    out.with_suffix(".md").write_text(markdown(meta, rows))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def _f(v, fmt):
    return "–" if v is None else format(v, fmt)


def markdown(meta, rows) -> str:
    """The results as markdown tables."""
    if meta["backend"] == "cpu":
        machine = (f"one CPU host with {meta['cpu_count']} cores; "
                   + (f"the {meta['devices_available']} devices are forced host devices "
                      "(`--xla_force_host_platform_device_count`) that share those cores, so the efficiency "
                      "here measures the overhead of sharding, not parallel hardware"
                      if meta["forced_host_devices"] or "force_host" in meta["xla_flags"]
                      else f"{meta['devices_available']} host device(s)"))
    else:
        machine = f"{meta['devices_available']} × {meta['device_kind']} ({meta['backend']})"
    la0, la1 = meta["loadavg_start"], meta["loadavg_end"]
    lines = [f"# Scaling over devices ({meta['device_kind']}, jax {meta['jax']}, torch {meta['torch']}, "
             f"{meta['date']}, median of {meta['repeats']})", "",
             f"Machine: {machine}. GPU numbers come from the same script (`python benchmarks/scale.py`) when "
             "a GPU machine is lent; device counts beyond those present are skipped"
             + (f" (skipped here: {meta['device_counts_skipped']})" if meta["device_counts_skipped"] else "") + ".",
             "",
             f"Load average (1, 5, 15 min) at the start {la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}, at the end "
             f"{la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f} (other jobs shared the cores).", "",
             f"Images/s at 224², random weights, global batch {meta['batch']} sharded over k devices (images and "
             "targets `P('batch')`, variables replicated), each method at its default layer; median of the "
             "repeats, and `best` from each configuration's fastest repeat. `speed-up`: over k = 1; "
             "`efficiency`: speed-up / k. `map on`: the number of devices the output map is sharded over "
             "(checked to equal k). `× peer`: our images/s over the peer library called one image at a time in "
             "a Python loop (> 1: we are faster); `ours, 1 img/call`: our attributor called one image at a time "
             "on one device. The configurations of a row were timed in turn within each repeat; `load`: the "
             "1-minute load average before / after a row's timed repeats.", ""]
    loads = [la0[0], la1[0]] + [x for r in rows for x in r.get("loadavg_1min", [])]
    if max(loads) > meta["cpu_count"]:
        lines += [f"The load exceeded the {meta['cpu_count']} cores during the run: the peer's torch threads "
                  "(OpenMP) slow down more under such oversubscription than XLA's, so `× peer` here is less "
                  "reliable than on a quiet machine; compare the `best` columns.", ""]
    lines += ["| model | method | k | images/s | best images/s | speed-up | efficiency | best efficiency | map on | "
              "× peer | best × peer | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        load = "{:.1f} / {:.1f}".format(*r["loadavg_1min"]) if "loadavg_1min" in r else "–"
        for k, d in r["devices"].items():
            lines.append(f"| {r['model']} | {r['method']} | {k} | {d['images_per_s']:.2f} | "
                         f"{d['best_images_per_s']:.2f} | {_f(d.get('speedup'), '.2f')} | "
                         f"{_f(d.get('efficiency'), '.2f')} | {_f(d.get('best_efficiency'), '.2f')} | "
                         f"{d['map_devices']} | {_f(d.get('ratio_to_peer'), '.2f')} | "
                         f"{_f(d.get('best_ratio_to_peer'), '.2f')} | {load} |")
        o = r["ours_loop"]
        lines.append(f"| {r['model']} | {r['method']} | ours, 1 img/call | {o['images_per_s']:.2f} | "
                     f"{o['best_images_per_s']:.2f} | – | – | – | 1 | {_f(o.get('ratio_to_peer'), '.2f')} | "
                     f"{_f(o.get('best_ratio_to_peer'), '.2f')} | {load} |")
        pl = r.get("peer_loop")
        if pl and "images_per_s" in pl:
            lines.append(f"| {r['model']} | {r['method']} | {pl['peer']}, 1 img/call | {pl['images_per_s']:.2f} | "
                         f"{pl['best_images_per_s']:.2f} | – | – | – | – | 1.00 | 1.00 | {load} |")
        elif pl:
            lines.append(f"| {r['model']} | {r['method']} | {pl['peer']} | error: {pl['error'][:80]} |||||||||")
    effs = [(r["model"], r["method"], k, d["efficiency"], d["best_efficiency"]) for r in rows
            for k, d in r["devices"].items() if k != "1" and "efficiency" in d]
    if effs:
        kmax = max(int(e[2]) for e in effs)
        at = [e for e in effs if int(e[2]) == kmax]
        lines += ["", f"Scaling efficiency at k = {kmax} (median; best): "
                  + ", ".join(f"{m} {meth} {e:.2f}; {eb:.2f}" for m, meth, _, e, eb in at)
                  + f" (mean {np.mean([e[3] for e in at]):.2f}; {np.mean([e[4] for e in at]):.2f})."]
    lines += ["", f"Total benchmark time {meta['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
