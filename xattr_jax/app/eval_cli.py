"""``xattr eval``: the evaluation protocols over a dataset, as a resumable job.

Datasets (``--dataset``): ``synthetic`` (the held-out synthetic benchmark, with an embedded model),
``voc07`` (VOC2007 test; GT = union of the class's boxes; classes whose boxes are all difficult are
skipped), ``coco14`` (val2014; GT = union of the class's segmentation masks), ``imagenet``
(ILSVRC2012 val boxes); the expected folders are in :data:`~xattr_jax.app.cli_common.DATASET_LAYOUTS`.

``--out`` receives ``records.jsonl`` (one record per image, method and trial, written as the job
goes), ``job.json`` (the settings) and the report ``eval.json`` / ``eval.md``. Running the same
command again resumes: images already recorded are skipped (:mod:`xattr_jax.harness.records`). Exit status: 0 when every method ran,
1 when a method failed, 2 for bad input (named on one line).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from xattr_jax._constants import EMBEDDED_SIZE, POINTING_TOLERANCE
from xattr_jax.app.cli_common import (
    UsageError,
    add_dataset_arguments,
    add_distributed_arguments,
    add_option_flags,
    dataset_samples,
    int_at_least,
    load_model,
    num_classes,
    method_options_from_args,
    nonneg_float,
    parse_methods,
    start_distributed,
    variables_fingerprint,
)
from xattr_jax.data.preprocess import PREPROCESSING, TORCHRAY_SHORT_SIDE, default_preprocess
from xattr_jax.harness.evaluate import evaluate
from xattr_jax.harness.records import JobError
from xattr_jax.harness.report import markdown_table, write_report

__all__ = ["add_arguments", "run", "main", "DEFAULT_METHODS", "SYNTHETIC_TOLERANCE"]

DEFAULT_METHODS = (
    "gradient",
    "deconvnet",
    "guided_backprop",
    "excitation_backprop",
    "contrastive_excitation_backprop",
    "grad_cam",
)
# The 15 px tolerance belongs to ~224 px images; on the 64 px synthetic images it would cover most of
# the image, so the synthetic benchmark scales it with the image: 15 · 64 / 224 ≈ 4.3 px.
SYNTHETIC_TOLERANCE = POINTING_TOLERANCE * EMBEDDED_SIZE / TORCHRAY_SHORT_SIDE


def add_arguments(p) -> None:
    """The ``xattr eval`` options."""
    add_dataset_arguments(p, default="synthetic")
    p.add_argument("--checkpoint", default="embedded:small_vgg",
                   help="checkpoint directory or embedded:small_vgg / embedded:small_resnet")  # fmt: skip
    p.add_argument("--preprocess", choices=("auto", *PREPROCESSING), default="auto",
                   help="auto: embedded for the shipped models, else imagenet; "
                   + "; ".join(f"{k} = {v}" for k, v in PREPROCESSING.items()))  # fmt: skip
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated method names, or 'all'")
    p.add_argument("--tolerance", type=nonneg_float, default=None,
                   help="pointing-game radius in px (default 15; synthetic: 15*64/224 = 4.3)")
    p.add_argument("--batch-size", type=int_at_least(1), default=16, help="images per attribution call")
    p.add_argument("--deletion-images", type=int_at_least(0), default=32,
                   help="the first N images also get deletion/insertion curves (0: none)")
    p.add_argument("--deletion-steps", type=int_at_least(1), default=64,
                   help="steps of the deletion/insertion curves")
    p.add_argument("--score", choices=("sigmoid", "softmax"), default=None,
                   help="deletion/insertion probability (default per dataset: softmax for the "
                   "single-label imagenet, sigmoid for the multi-label others)")  # fmt: skip
    p.add_argument("--save-maps", action="store_true", help="also store every trial's map under OUT/maps")
    p.add_argument("--out", required=True, help="folder for records.jsonl, eval.json and eval.md (resumable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_distributed_arguments(p)
    add_option_flags(p)


def run(args) -> int:
    """Handler of ``xattr eval``."""
    try:
        methods = parse_methods(args.methods)
        options = method_options_from_args(args, methods)
        start_distributed(args)  # before anything runs on a device
        model, variables, arch = load_model(args.checkpoint)
        samples = dataset_samples(args)
        if not samples:
            raise UsageError("no image with a pointing-game trial was found")
        mode = default_preprocess(arch) if args.preprocess == "auto" else args.preprocess
        score = args.score or ("softmax" if args.dataset == "imagenet" else "sigmoid")
        tol = args.tolerance
        if tol is None:
            tol = SYNTHETIC_TOLERANCE if args.dataset == "synthetic" else float(POINTING_TOLERANCE)
        n_cls = num_classes(model, variables, mode)
        worst = max(t.class_id for s in samples for t in s.trials)
        if worst >= n_cls:
            raise UsageError(f"the dataset has class index {worst} but the model has {n_cls} outputs; "
                             "use a checkpoint trained on this dataset's classes")  # fmt: skip
        settings = {"command": "eval", "checkpoint": args.checkpoint, "dataset": args.dataset,
                    "preprocess": mode, "tolerance": tol, "deletion_images": args.deletion_images,
                    "deletion_steps": args.deletion_steps, "score": score, "options": options,
                    "root": args.root, "split": args.split, "difficult": args.difficult,
                    "variables": variables_fingerprint(variables)}  # fmt: skip
        result = evaluate(
            model, variables, samples, methods, preprocess=mode, batch_size=args.batch_size,
            tolerance=tol, deletion_images=args.deletion_images, deletion_steps=args.deletion_steps,
            score=score, options=options, out=args.out, save_maps=args.save_maps,
            progress=not args.no_progress, settings=settings,
            log=lambda s: print(f"xattr eval: warning: {s}", file=sys.stderr),
        )  # fmt: skip
        result.update(dataset=args.dataset, checkpoint=args.checkpoint, arch=arch, preprocess=mode)
        title = f"{args.dataset} · {arch}"
        import jax

        if jax.process_index() == 0:  # under jax.distributed the report covers every process's records
            js, md = write_report(result, args.out, title=title)
            print(markdown_table(result, title))
            print(f"wrote {js} and {md}")
    except (UsageError, JobError, OSError) as err:
        print(f"xattr eval: error: {err}", file=sys.stderr)
        return 2
    for key, why in result["unreadable"]:
        print(f"xattr eval: warning: {key} skipped: {why}", file=sys.stderr)
    failed = {m: e["error"] for m, e in result["methods"].items() if "error" in e}
    for m, msg in failed.items():
        print(f"xattr eval: error: method {m} failed: {msg}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xattr_jax.app.eval_cli`` (same as ``xattr eval``)."""
    p = argparse.ArgumentParser(prog="xattr eval")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
