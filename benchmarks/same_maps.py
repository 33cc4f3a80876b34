"""Old versus new maps: every method's float64 map from one version of the engine against another's.

An engine change must not move a map: the acceptance item of the engine refactor is "old versus new
maps ≤ 1e-12 × max in float64 for every method on the zoo (VGG16, ResNet50) and the five user-model
forms". ``capture`` computes, under ``jax.enable_x64``, the map of every method in
``xattr_jax.methods.available()`` with its default layer and options (path methods cheap, as in
``tests/test_user_models.py``: SmoothGrad 2 samples, IG and GNL-IG 3 steps; ``key=jax.random.key(0)``)
on

* ``zoo-vgg16`` (224²) and ``zoo-resnet50`` (64²): random torchvision weights (seeded and with
  randomised batch-norm statistics, as ``tests/conftest.py``'s ``torch_pair``) through our
  converter, one seeded image, the target the argmax of the float64 logits;
* ``forms-resnet18`` (64²) and ``forms-vgg16`` (224²): the zoo, Flax linen, Flax NNX, plain-function
  and Equinox forms of ``tests/user_models.py`` (this script's tree's copy, so both sides run the
  same models), all in float64, one seeded image, the zoo form's argmax target.

It saves each map, Attention Backpropagation's ``layer_maps``, the layer each method read, the
logits and target to one ``.npz`` keyed ``zoo-vgg16/gradient``, ``forms-resnet18/nnx/lrp``,
``forms-vgg16/zoo/logits``, ...; a method that refuses a model (CAM on VGG16) is recorded as its
exception's message under the map's key, so a changed refusal shows too. ``meta/commit`` is
``git rev-parse HEAD`` of the tree ``xattr_jax`` was imported from (printed, with its path: set
``PYTHONPATH`` to the tree to capture). ``compare`` prints max|old − new| / max|old| per key and
exits 1 when one exceeds 1e-12, a key or refusal differs, or a shape or dtype changed; with
``--json`` it writes both commits, the per-key ratios and their maximum. ``check`` does both: a
``git worktree`` of ``BASE_REV``, ``capture`` there and in this tree (each a fresh process),
``compare`` into ``benchmarks/results/same_maps.json``. ``--only`` / ``--methods`` capture a subset
(to look into a failure; compare subsets with subsets).

    python benchmarks/same_maps.py check 430a080        # ~15 min per capture on 2 cores, 1064 arrays
    PYTHONPATH=. python benchmarks/same_maps.py capture /tmp/new.npz
    python benchmarks/same_maps.py compare /tmp/old.npz /tmp/new.npz --json /tmp/same_maps.json
    python benchmarks/same_maps.py check 430a080 --only zoo-resnet50 --methods gradient lrp --keep /tmp/sm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
TREE = ROOT.parent
TOL = 1e-12  # max |old − new| / max |old|
# cheap options for the path methods (as tests/test_user_models.py); every other method runs its defaults
OPTIONS = {
    "smoothgrad": dict(samples=2, chunk=2),
    "integrated_gradients": dict(steps=3, chunk=3),
    "gnl_integrated_gradients": dict(steps=3, chunk=3),
}
ZOO = {"vgg16": 224, "resnet50": 64}
FORMS = {"resnet18": 64, "vgg16": 224}
FORM_NAMES = ("zoo", "linen", "nnx", "plain", "equinox")


# ----------------------------------------------------------------------------------------------
# capture


def _torch_model(arch):
    """A random-weight torchvision ``arch`` as ``torch_pair`` makes it (``tests/_nets.py``)."""
    sys.path.insert(0, str(TREE / "tests"))
    from _nets import random_torchvision

    return random_torchvision(arch)


def _f64(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _zoo(arch, torch_model):
    """Our converter's model and its variables in float64 (float32 values held exactly)."""
    from converters.torchvision import convert

    model, variables = convert(arch, torch_model)
    return model, _f64(variables)


def _logits(model, variables, x):
    import flax.linen as nn

    return model.apply(variables, x) if isinstance(model, nn.Module) else model(variables, x)


def _image(size, seed):
    """One seeded float32-valued image ``[1, size, size, 3]`` as float64."""
    import jax
    import jax.numpy as jnp

    return jnp.asarray(jax.random.normal(jax.random.PRNGKey(seed), (1, size, size, 3), jnp.float32), jnp.float64)


def _explain_all(prefix, model, variables, x, target, out, refusals, methods):
    """Each method's map (or refusal) on one model into ``out`` under ``prefix/method``."""
    import jax

    import xattr_jax as xa

    out[f"{prefix}/logits"] = np.asarray(_logits(model, variables, x))
    for method in methods:
        key = f"{prefix}/{method}"
        t0 = time.perf_counter()
        try:
            res = xa.explain(model, variables, x, target, method=method, key=jax.random.key(0),
                             **OPTIONS.get(method, {}))
        except Exception as e:  # a refusal, or a new failure: either is compared as text
            out[key] = np.array(f"{type(e).__name__}: {e}")
            refusals[key] = str(out[key])
            print(f"  {key}: refused ({time.perf_counter() - t0:.1f} s): {refusals[key][:160]}", flush=True)
            continue
        out[key] = np.asarray(res.map)
        out[f"{key}/layer"] = np.array(str(res.layer))
        for name, m in (res.layer_maps or {}).items():
            out[f"{key}/layer_maps/{name}"] = np.asarray(m)
        print(f"  {key}: {out[key].shape} {out[key].dtype}, layer {res.layer} ({time.perf_counter() - t0:.1f} s)",
              flush=True)


def _source():
    """(commit, dirty, path) of the tree ``xattr_jax`` was imported from."""
    import converters
    import xattr_jax

    here = Path(xattr_jax.__file__).resolve()
    tree = here.parent.parent
    if Path(converters.__file__).resolve().parent.parent != tree:
        raise SystemExit(f"xattr_jax ({here}) and converters ({converters.__file__}) come from different trees; "
                         "set PYTHONPATH to the tree to capture")

    def git(*a):
        return subprocess.run(["git", "-C", str(tree), *a], capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--", "xattr_jax", "converters")), str(here)


def capture(path, only=None, methods=None):
    """Every map into ``path``; ``only``: groups (``zoo-vgg16``, ``forms-resnet18``, ...), ``methods``: names."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from xattr_jax.methods import available

    sys.path.insert(0, str(TREE / "tests"))
    import user_models as U

    groups = [f"zoo-{a}" for a in ZOO] + [f"forms-{a}" for a in FORMS]
    unknown = [g for g in only or () if g not in groups] + [m for m in methods or () if m not in available()]
    if unknown:
        raise SystemExit(f"unknown groups or methods {unknown}; groups: {groups}, methods: {list(available())}")
    only, methods = only or groups, methods or available()
    commit, dirty, where = _source()
    print(f"xattr_jax from {where} (commit {commit}{', modified' if dirty else ''})", flush=True)
    out, refusals, start = {}, {}, time.perf_counter()
    kept = {}  # arch -> (torch model, zoo model, variables) for the forms
    for arch, size in ZOO.items():
        if f"zoo-{arch}" not in only:
            continue
        print(f"zoo-{arch} at {size}²", flush=True)
        tm = _torch_model(arch)
        model, v = _zoo(arch, tm)
        x = _image(size, 0)
        target = jnp.argmax(_logits(model, v, x), axis=-1)
        out[f"zoo-{arch}/target"] = np.asarray(target)
        _explain_all(f"zoo-{arch}", model, v, x, target, out, refusals, methods)
        if arch in FORMS:
            kept[arch] = (tm, model, v)
        del tm, model, v
    build = {"resnet18": (U.linen_resnet18, U.nnx_resnet18, U.plain_resnet18, U.eqx_resnet18),
             "vgg16": (U.linen_vgg16, U.nnx_vgg16, U.plain_vgg16, U.eqx_vgg16)}
    for arch, size in FORMS.items():
        if f"forms-{arch}" not in only:
            continue
        print(f"forms-{arch} at {size}²", flush=True)
        tm, zoo, zv = kept.pop(arch, None) or (lambda tm: (tm, *_zoo(arch, tm)))(_torch_model(arch))
        x = _image(size, 5)
        target = jnp.argmax(_logits(zoo, zv, x), axis=-1)
        out[f"forms-{arch}/target"] = np.asarray(target)
        zv32 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), zv)  # the float32 values, exactly
        makers = dict(zip(FORM_NAMES, [lambda: (zoo, zv), *(lambda f=f: f(zv32) for f in build[arch][:3]),
                                       lambda: build[arch][3](tm.double(), np.float64)]))
        for name, make in makers.items():
            model, v = make()
            v = _f64(v)
            _explain_all(f"forms-{arch}/{name}", model, v, x, target, out, refusals, methods)
            del model, v
        del tm, zoo, zv, zv32
    seconds = time.perf_counter() - start
    meta = dict(commit=commit, dirty=dirty, xattr_jax=where, seconds=seconds, jax=jax.__version__,
                date=time.strftime("%Y-%m-%d %H:%M:%S"), only=" ".join(only), methods=" ".join(methods))
    out.update({f"meta/{k}": np.array(v) for k, v in meta.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    n = sum(1 for k in out if not k.startswith("meta/"))
    print(f"wrote {path}: {n} arrays, {len(refusals)} refusals, {seconds:.0f} s (commit {commit})")
    return out


# ----------------------------------------------------------------------------------------------
# compare


def _load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _what(a):
    return repr(a.item())[:300] if a.dtype.kind in "US" else f"a {a.dtype} array of shape {a.shape}"


def _ratio(a, b):
    """(ratio, None): max|a − b| / max|a| over the finite entries (text: 0 if equal); or (None, why not)."""
    if a.dtype.kind in "US" or b.dtype.kind in "US":
        same = a.dtype.kind == b.dtype.kind and np.array_equal(a, b)
        return (0.0, None) if same else (None, f"{_what(a)} -> {_what(b)}")
    if a.shape != b.shape:
        return None, f"shape {a.shape} -> {b.shape}"
    if a.dtype != b.dtype:
        return None, f"dtype {a.dtype} -> {b.dtype}"
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb) or not np.array_equal(a[~fa], b[~fb]):
        return None, "non-finite entries differ"
    err = float(np.max(np.abs(a[fa] - b[fa]), initial=0.0))
    scale = float(np.max(np.abs(a[fa]), initial=0.0))
    return (err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))), None


def compare(old_path, new_path, json_path=None, tol=TOL):
    old, new = _load(old_path), _load(new_path)

    def meta(d):
        return {k[5:]: d[k].item() for k in d if k.startswith("meta/")}

    keys = sorted(k for k in {*old, *new} if not k.startswith("meta/"))
    rows, failed = [], []
    for k in keys:
        if k not in old or k not in new:
            rows.append(dict(key=k, ratio=None, problem="only in " + ("old" if k in old else "new")))
        else:
            r, problem = _ratio(old[k], new[k])
            rows.append(dict(key=k, ratio=r, problem=problem))
            if r is not None and r > tol:
                rows[-1]["problem"] = f"ratio {r:.3g} > {tol:g}"
        if rows[-1]["problem"]:
            failed.append(k)
        r = rows[-1]["ratio"]
        fail = rows[-1]["problem"]
        print(f"{k}: {'-' if r is None else f'{r:.3g}'}" + (f"  FAIL {fail}" if fail else ""))
    finite = [r["ratio"] for r in rows if r["ratio"] is not None]
    worst = max(finite, default=0.0)
    summary = dict(keys=len(keys), failed=failed, max_ratio=worst, tolerance=tol, ok=not failed)
    print(f"{len(keys)} keys; max ratio {worst:.3g} (tolerance {tol:g}); "
          + ("OK" if not failed else f"{len(failed)} FAILED: {', '.join(failed[:10])}"))
    if json_path:
        info = dict(python=sys.version.split()[0], platform=platform.platform(), cpu_count=os.cpu_count(),
                    date=time.strftime("%Y-%m-%d %H:%M:%S"),
                    old=dict(file=str(old_path), **meta(old)), new=dict(file=str(new_path), **meta(new)))
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(dict(meta=info, rows=rows, summary=summary), indent=1))
        print(f"wrote {json_path}")
    return not failed


# ----------------------------------------------------------------------------------------------
# check


def check(base, json_path, keep=None, only=None, methods=None):
    """Capture ``base`` (a temporary ``git worktree``) and this tree, each in a fresh process; compare."""
    extra = (["--only", *only] if only else []) + (["--methods", *methods] if methods else [])
    run = lambda tree, out: subprocess.run([sys.executable, __file__, "capture", str(out), *extra],  # noqa: E731
                                           check=True, env={**os.environ, "PYTHONPATH": str(tree)})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        wt = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(TREE), "worktree", "add", "--detach", str(wt), base], check=True)
        try:
            run(wt, folder / "old.npz")
        finally:
            subprocess.run(["git", "-C", str(TREE), "worktree", "remove", "--force", str(wt)], check=True)
        run(TREE, folder / "new.npz")
        return compare(folder / "old.npz", folder / "new.npz", json_path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def subset(c):
        c.add_argument("--only", nargs="+", default=None,
                       help="groups: zoo-vgg16 zoo-resnet50 forms-resnet18 forms-vgg16 (default: all)")
        c.add_argument("--methods", nargs="+", default=None, help="method names (default: all)")

    c = sub.add_parser("capture", help="every method's float64 maps into OUT.npz")
    c.add_argument("out")
    subset(c)
    c = sub.add_parser("compare", help="max|old − new| / max|old| per key; exit 1 above the tolerance")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--json", default=None, help="write the comparison here (e.g. benchmarks/results/same_maps.json)")
    c.add_argument("--tol", type=float, default=TOL)
    c = sub.add_parser("check", help="capture BASE_REV (a temporary git worktree) and this tree; compare")
    c.add_argument("base")
    c.add_argument("--json", default=str(ROOT / "results" / "same_maps.json"))
    c.add_argument("--keep", default=None, help="a folder to keep old.npz and new.npz in")
    subset(c)
    a = p.parse_args(argv)
    if a.cmd == "capture":
        capture(a.out, a.only, a.methods)
        return
    if a.cmd == "compare":
        ok = compare(a.old, a.new, a.json, a.tol)
    else:
        ok = check(a.base, a.json, a.keep, a.only, a.methods)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
