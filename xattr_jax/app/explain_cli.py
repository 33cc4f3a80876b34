"""``xattr explain``: attribution maps for image files, folders, file lists or a whole dataset.

Two forms:

* ``xattr explain IMAGE --out FIGURE.png`` (one image file, ``--out`` a ``.png``/``.jpg``/``.pdf``/
  ``.svg`` file): a figure of the image and its map (:mod:`xattr_jax.app.explain_image`).
* ``xattr explain INPUT... --out FOLDER`` (image files, folders searched recursively, ``.txt`` lists
  of image paths) or ``xattr explain --dataset voc07 --root ROOT --out FOLDER``: a dataset job
  (:func:`xattr_jax.harness.run_job`). Images stream through a parallel decoder onto every local
  device; ``FOLDER/records.jsonl`` gets one record per (image, method, target) as batches finish
  (``image``, ``method``, ``target``, ``target_name``, ``status``, ``logit``, ``prob``, ``predicted``, ``rank``,
  ``map_file``, ``map_key``) and ``FOLDER/maps/<method>/*.npz`` the maps. Running the same command
  again resumes where a killed run stopped (:mod:`xattr_jax.harness.records`: one job per folder,
  damaged shards and changed images redone); an unreadable image is recorded with its reason and
  tried again on the next run. ``FOLDER`` is never read as input.

Targets: the top-1 class by default, ``--top-k K`` for the K best, or ``--target C``. Method options
are flags generated from the methods' option tables (``--steps 16``, ``--composite epsilon``).
Exit status: 0 done, 1 a method failed, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys
import warnings
import zipfile
from collections import defaultdict
from pathlib import Path

from xattr_jax import viz
from xattr_jax.app.cli_common import (
    UsageError,
    add_dataset_arguments,
    add_distributed_arguments,
    add_option_flags,
    dataset_samples,
    int_at_least,
    load_model,
    method_options_from_args,
    num_classes,
    parse_methods,
    start_distributed,
    variables_fingerprint,
)
from xattr_jax.app.explain_image import explain_image
from xattr_jax.data.labels import class_names_for
from xattr_jax.data.preprocess import PREPROCESSING, default_preprocess, preprocess
from xattr_jax.data.samples import IMAGE_SUFFIXES, file_samples
from xattr_jax.harness.job import run_job, top_k_plan
from xattr_jax.harness.progress import progress_bar
from xattr_jax.harness.records import JobError, RecordStore, load_map, read_records

__all__ = ["add_arguments", "run", "FIGURE_SUFFIXES"]

FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def add_arguments(p) -> None:
    """The ``xattr explain`` options."""
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, folders of images (recursive) or .txt files listing image paths")  # fmt: skip
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint directory (`xattr convert`), or embedded:small_vgg / embedded:small_resnet")  # fmt: skip
    p.add_argument("--method", "--methods", dest="method", default="grad_cam",
                   help="comma-separated method names, or 'all' (default grad_cam); each is compiled once")  # fmt: skip
    t = p.add_mutually_exclusive_group()
    t.add_argument("--target", type=int_at_least(0), default=None, help="class index (default: the top-1 class)")
    t.add_argument("--top-k", type=int_at_least(1), default=1, help="explain the K best classes of each image")
    p.add_argument("--layer", default=None, help="dotted layer name to read the map at (default: the method's)")
    p.add_argument("--signal", default=None, choices=("logit", "prob", "log_prob", "pointing"),
                   help="what is propagated from the top (default: the method's)")  # fmt: skip
    p.add_argument("--preprocess", choices=("auto", *PREPROCESSING), default="auto",
                   help="auto: embedded for the shipped models, imagenet (TorchRay) for others; "
                   + "; ".join(f"{k} = {v}" for k, v in PREPROCESSING.items())
                   + "; then ImageNet mean/std normalisation")  # fmt: skip
    p.add_argument("--batch-size", type=int_at_least(1), default=16, help="tasks per attribution call")
    p.add_argument("--map-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the stored maps (float16 halves the disk)")
    p.add_argument("--figures", choices=("png", "jpg", "pdf", "svg"), default=None,
                   help="a job also draws one figure per image (methods x targets) into OUT/figures/")
    p.add_argument("--out", required=True,
                   help="a folder for a job (records.jsonl, maps/); or, for one image file, a figure "
                   f"file ({', '.join(FIGURE_SUFFIXES)})")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_distributed_arguments(p)
    add_dataset_arguments(p, default=None)
    add_option_flags(p)


def _figure_mode(args) -> bool:
    suffix = Path(args.out).suffix.lower()
    if suffix in IMAGE_SUFFIXES and suffix not in FIGURE_SUFFIXES:
        raise UsageError(f"--out {args.out}: figures are written as {', '.join(FIGURE_SUFFIXES)}; "
                         "use one of those, or a folder for a job")  # fmt: skip
    return suffix in FIGURE_SUFFIXES


def run(args) -> int:
    """Handler of ``xattr explain``."""
    try:
        if _figure_mode(args):
            return _run_figure(args)
        return _run_job(args)
    except (UsageError, JobError) as err:
        print(f"xattr explain: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a figure that cannot be written
        print(f"xattr explain: error: {err}", file=sys.stderr)
        return 2


def _run_figure(args) -> int:
    one = len(args.inputs) == 1 and args.dataset is None
    if not one or Path(args.inputs[0]).is_dir() or Path(args.inputs[0]).suffix.lower() in (".txt", ".lst"):
        raise UsageError(f"a figure file ({Path(args.out).name}) shows one image; give one image file, "
                         "or --out a folder for a job over several")  # fmt: skip
    if Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a folder; give a file name such as {Path(args.out) / 'map.png'}")
    methods = parse_methods(args.method)
    options = method_options_from_args(args, methods)
    try:
        info = explain_image(args.inputs[0], args.checkpoint, methods, args.out, target=args.target,
                             top_k=args.top_k, preprocess=args.preprocess, options=options,
                             progress=not args.no_progress)  # fmt: skip
    except (FileNotFoundError, ImportError, ValueError, TypeError, IsADirectoryError) as err:
        raise UsageError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    top = ", ".join(f"{c} {nm or ''} ({p:.3f})".replace("  ", " ") for c, nm, p in info["top"])
    print(f"{Path(info['image']).name}: {info['arch']} on {info['input_size'][0]}x{info['input_size'][1]} "
          f"({info['preprocess']} preprocessing); top {len(info['top'])}: {top}")  # fmt: skip
    for t, nm, p in info["targets"]:
        print(f"  explained class {t}{f' ({nm})' if nm else ''}, p = {p:.3f}, with "
              f"{', '.join(f'{m} ({s[0]}x{s[1]})' for m, s in info['maps'].items())}")  # fmt: skip
    for w in info["warnings"]:
        print(f"xattr explain: warning: {w}", file=sys.stderr)
    print(f"  -> {info['out']}")
    return 0


def write_figures(out, samples, mode: str, arch: str, fmt: str, progress: bool = True) -> int:
    """One figure per recorded image, ``OUT/figures/<image>.<fmt>``: its methods (rows) x targets
    (columns) over the preprocessed image; figures already there are kept (a resumed job)."""
    by_image = defaultdict(list)
    for r in read_records(out, log=_warn):
        if r["status"] == "ok" and r.get("map_file"):
            by_image[r["image"]].append(r)
    todo = [s for s in samples if s.key in by_image and not (out / "figures" / f"{s.key}.{fmt}").exists()]
    with progress_bar(len(todo), "figures", progress) as bar:
        for s in todo:
            recs = by_image[s.key]
            targets = list(dict.fromkeys(r["target"] for r in recs))
            methods = list(dict.fromkeys(r["method"] for r in recs))
            at = {(r["method"], r["target"]): r for r in recs}
            try:
                _, image = preprocess(s.read(), mode)
                maps = {m: [load_map(out, at[(m, t)]) for t in targets] for m in methods
                        if all((m, t) in at for t in targets)}  # fmt: skip
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:  # damaged since recorded
                _warn(f"no figure for {s.key}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
                bar.advance(1)
                continue
            names = [at[(methods[0], t)].get("target_name") or f"class {t}" for t in targets]
            probs = [at[(methods[0], t)]["prob"] for t in targets]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", viz.EmptyMapWarning)  # the panel says so
                fig = viz.grid_figure([image] * len(targets), maps, model=arch, class_names=names,
                                      scores=probs, title=f"{s.key} · {arch}")  # fmt: skip
            viz.save(fig, out / "figures" / f"{s.key}.{fmt}")
            bar.advance(1)
    return len(todo)


def _warn(msg: str) -> None:
    print(f"xattr explain: warning: {msg}", file=sys.stderr)


def _run_job(args) -> int:
    if args.dataset is None and not args.inputs:
        raise UsageError("nothing to explain: give image files, folders or lists, or --dataset")
    if args.dataset is not None and args.inputs:
        raise UsageError("give either INPUT files or --dataset, not both")
    out = Path(args.out)
    methods = parse_methods(args.method)
    options = method_options_from_args(args, methods)
    try:
        samples = dataset_samples(args) if args.dataset else file_samples(args.inputs, exclude=out)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err).splitlines()[0]) from None
    start_distributed(args)  # before anything runs on a device
    model, variables, arch = load_model(args.checkpoint)
    mode = default_preprocess(arch) if args.preprocess == "auto" else args.preprocess
    n = num_classes(model, variables, mode)
    if args.target is not None and args.target >= n:
        raise UsageError(f"--target {args.target} is out of range: the model has {n} classes (0..{n - 1})")
    if args.top_k > n:
        raise UsageError(f"--top-k {args.top_k} exceeds the model's {n} classes")
    settings = {"command": "explain", "checkpoint": args.checkpoint, "preprocess": mode,
                "target": args.target, "top_k": args.top_k, "options": options,
                "map_dtype": args.map_dtype, "variables": variables_fingerprint(variables)}  # fmt: skip
    import jax

    with RecordStore(out, jax.process_index(), jax.process_count(), args.map_dtype, settings=settings,
                     log=_warn) as store:  # fmt: skip
        res = run_job(model, variables, samples, methods, preprocess=mode, store=store, options=options,
                      plan=top_k_plan(args.top_k, args.target), batch_size=args.batch_size,
                      class_names=class_names_for(arch, n), progress=not args.no_progress,
                      log=_warn)  # fmt: skip
    for key, why in res.unreadable:
        _warn(f"{key} skipped: {why}")
    if args.figures:
        n_fig = write_figures(out, samples, mode, arch, args.figures, progress=not args.no_progress)
        print(f"{n_fig} figure(s) drawn -> {out / 'figures'}")
    for m, msg in res.failed.items():
        print(f"xattr explain: error: method {m} failed: {msg}", file=sys.stderr)
    print(f"{res.images} image(s) attributed on {res.devices} device(s), {res.skipped} already done; "
          f"records {dict(res.records)} -> {store.path}")  # fmt: skip
    return 1 if res.failed else 0
