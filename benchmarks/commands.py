"""Wall time of each ``xattr`` command as a user runs it (a fresh process, compilation included).

Each command runs in a subprocess on this machine, ``--repeats`` times (median; each run in a new
output folder, so nothing resumes), twice per repeat: *cold*, with an empty compilation cache
(``$XATTR_JAX_CACHE`` set to a new folder, as on a first run), then *warm*, the same command again
with the programs the cold run left in that folder (as every later run), on data it makes itself:
the demo; a figure of one synthetic image with one and with three methods on the shipped
``embedded:small_vgg``; a job over 16 synthetic images with three methods; ``xattr eval`` on 16
synthetic images; ``xattr convert`` of a random-weight torchvision ResNet50 (needs torch: skipped
without it). Results go to
``benchmarks/results/commands.{json,md}``; the README and ``docs/cli.md`` quote them.

    python benchmarks/commands.py              # ~6 min on 2 cores
    python benchmarks/commands.py --repeats 1 --only help demo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _xattr(*args) -> list[str]:
    """The ``xattr`` console script beside this Python (as a user runs it), else ``python -m``."""
    script = Path(sys.executable).parent / "xattr"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "xattr_jax.app.cli"]
    return head + [str(a) for a in args]


def _images(folder: Path, n: int) -> Path:
    """``n`` held-out synthetic benchmark images as PNGs (the demo's kind of image)."""
    import numpy as np

    from xattr_jax.data.synthetic import make_dataset
    from xattr_jax.viz.imageio import write_image

    folder.mkdir(parents=True, exist_ok=True)
    data = make_dataset(n, seed=123)
    for i in range(n):
        write_image(folder / f"img{i:02d}.png", np.asarray(data.images[i]))
    return folder


def _torch_weights(path: Path) -> Path | None:
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def run_meta(repeats: int, load_start) -> dict:
    """The machine and the run (``load_start``: ``os.getloadavg()`` when it began)."""
    return dict(python=sys.version.split()[0], platform=platform.platform(), cpu_count=os.cpu_count(),
                repeats=repeats, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                loadavg_start=list(load_start), loadavg_end=list(os.getloadavg()))


def write_results(out, meta: dict, rows: list, lines: list) -> None:
    """``out``.json (``meta`` and ``rows``) and ``out``.md (``lines``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def commands(work: Path) -> dict:
    """name -> (what it does, argv builder taking a fresh output folder)."""
    imgs = _images(work / "images", 16)
    one = sorted(imgs.glob("*.png"))[0]
    ckpt = "embedded:small_vgg"
    cmds = {
        "help": ("xattr --help", lambda out: _xattr("--help")),
        "demo": ("xattr demo (every method, 6 images, figures and the pointing table)",
                 lambda out: _xattr("demo", "--out", out, "--no-progress")),
        "explain-figure-1": ("xattr explain IMAGE --method grad_cam --out fig.png (small_vgg)",
                             lambda out: _xattr("explain", one, "--checkpoint", ckpt, "--method", "grad_cam",
                                                "--out", out / "fig.png", "--no-progress")),
        "explain-figure-3": ("xattr explain IMAGE --method gradient,grad_cam,lrp --top-k 2 --out fig.png",
                             lambda out: _xattr("explain", one, "--checkpoint", ckpt, "--method",
                                                "gradient,grad_cam,lrp", "--top-k", "2", "--out", out / "fig.png",
                                                "--no-progress")),
        "explain-job-16": ("xattr explain FOLDER (16 images) --method gradient,grad_cam,lrp --out DIR",
                           lambda out: _xattr("explain", imgs, "--checkpoint", ckpt, "--method",
                                              "gradient,grad_cam,lrp", "--out", out / "job", "--no-progress")),
        "eval-16": ("xattr eval --num-images 16 --methods gradient,grad_cam,lrp (synthetic, small_vgg)",
                    lambda out: _xattr("eval", "--num-images", "16", "--methods", "gradient,grad_cam,lrp",
                                       "--deletion-images", "4", "--out", out / "eval", "--no-progress")),
    }
    weights = _torch_weights(work / "resnet50.pth")
    if weights is not None:
        cmds["convert-resnet50"] = ("xattr convert --arch resnet50 --weights resnet50.pth --out DIR",
                                    lambda out: _xattr("convert", "--arch", "resnet50", "--weights", weights,
                                                       "--out", out / "ckpt"))
    return cmds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--only", nargs="*", default=None, help="command names to run (default: all)")
    p.add_argument("--out", default=str(ROOT / "results" / "commands"))
    a = p.parse_args(argv)
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (what, argv_of) in commands(work).items():
            if a.only and name not in a.only:
                continue
            times, warm = [], []
            for r in range(a.repeats):
                env = dict(os.environ, XATTR_JAX_CACHE=str(work / f"{name}-cache-{r}"))  # empty
                for kind, runs in (("cold", times), ("warm", warm)):  # warm: from the cold run's cache
                    out = work / f"{name}-{r}-{kind}"
                    out.mkdir()
                    t0 = time.perf_counter()
                    proc = subprocess.run(argv_of(out), capture_output=True, text=True, env=env)
                    runs.append(time.perf_counter() - t0)
                    if proc.returncode != 0:
                        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
                    shutil.rmtree(out, ignore_errors=True)
            rows.append(dict(name=name, command=what, seconds=round(statistics.median(times), 2),
                             runs=[round(t, 2) for t in times], warm_seconds=round(statistics.median(warm), 2),
                             warm_runs=[round(t, 2) for t in warm]))
            print(f"{name}: {statistics.median(times):.2f} s cold, {statistics.median(warm):.2f} s warm "
                  f"({what})", flush=True)
    meta = run_meta(a.repeats, load_start)
    la0, la1 = meta["loadavg_start"], meta["loadavg_end"]
    lines = [f"# Command timings ({meta['cpu_count']} CPUs, {meta['date']}, median of {a.repeats})", "",
             "Wall time of a fresh process per command, compilation included, as a user runs it "
             "(`benchmarks/commands.py`): *cold* with an empty compilation cache (a first run), *warm* "
             "the same command again with the programs the cold run kept (`--compile-cache`, every "
             f"later run). Load average at the start {la0[0]:.2f}, at the end {la1[0]:.2f}.", "",
             "| command | what | cold s | warm s | runs (cold; warm) |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | `{r['command']}` | {r['seconds']:.2f} | {r['warm_seconds']:.2f} | "
              f"{', '.join(map(str, r['runs']))}; {', '.join(map(str, r['warm_runs']))} |" for r in rows]
    write_results(a.out, meta, rows, lines)


if __name__ == "__main__":
    main()
