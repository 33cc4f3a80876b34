"""What ``xattr explain`` and ``xattr eval`` share: models, datasets, option flags, model identity.

A bad input is a :class:`UsageError`; the handlers print its one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np

import xattr_jax as xa
from xattr_jax.data import samples as S
from xattr_jax.data.preprocess import EMBEDDED_SIZE, TORCHRAY_SHORT_SIDE

__all__ = [
    "UsageError",
    "load_model",
    "num_classes",
    "int_at_least",
    "nonneg_float",
    "parse_methods",
    "add_dataset_arguments",
    "dataset_samples",
    "add_option_flags",
    "method_options_from_args",
    "variables_fingerprint",
    "add_distributed_arguments",
    "start_distributed",
    "DATASET_LAYOUTS",
]


class UsageError(Exception):
    """Bad input on the command line: one line that names the problem and the fix (exit code 2)."""


DATASET_LAYOUTS = {
    "voc07": "ROOT/VOCdevkit/VOC2007/ (or ROOT = the VOC2007 folder) with Annotations/*.xml, "
    "JPEGImages/*.jpg and ImageSets/Main/test.txt",
    "coco14": "ROOT/annotations/instances_val2014.json and ROOT/val2014/*.jpg "
    "(or --annotations FILE and --images DIR)",
    "imagenet": "ROOT/annotations/*.xml (the extracted ILSVRC2012_bbox_val_v3.tgz), ROOT/images/ "
    "(flat or one folder per synset) and ROOT/synsets.txt (or --annotations, --images, --synsets)",
}


def load_model(checkpoint: str):
    """Load ``embedded:NAME`` or a checkpoint directory; returns ``(model, variables, arch)``."""
    from xattr_jax.checkpoint import METADATA_FILE, load_checkpoint
    from xattr_jax.models import EMBEDDED, load_embedded

    if checkpoint.startswith("embedded:"):
        name = checkpoint.split(":", 1)[1]
        if name not in EMBEDDED:
            raise UsageError(f"unknown embedded model {name!r}; use one of "
                             f"{', '.join('embedded:' + n for n in EMBEDDED)}")  # fmt: skip
        model, variables = load_embedded(name)
        return model, variables, name
    try:
        model, variables = load_checkpoint(checkpoint)
        arch = json.loads((Path(checkpoint).expanduser() / METADATA_FILE).read_text())["arch"]
    except (FileNotFoundError, ValueError, KeyError, OSError) as err:
        raise UsageError(f"{err}; give a folder written by `xattr convert`, or embedded:small_vgg "
                         "/ embedded:small_resnet") from None  # fmt: skip
    return model, variables, arch


def num_classes(model, variables, preprocess: str) -> int:
    """The model's number of outputs (traced, not run), for an input of ``preprocess``'s size."""
    import jax

    from xattr_jax.program import call_model

    side = EMBEDDED_SIZE if preprocess == "embedded" else TORCHRAY_SHORT_SIDE
    x = jax.ShapeDtypeStruct((1, side, side, 3), np.float32)
    return int(jax.eval_shape(call_model(model), variables, x).shape[-1])


def int_at_least(low: int):
    """An argparse type: an int ``>= low`` (a bad value exits with code 2 at parse time)."""

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {v}")
        return v

    return parse


def nonneg_float(text):
    """An argparse type: a finite float ``>= 0``."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def parse_methods(text: str) -> list[str]:
    """``"a,b"`` or ``"all"`` -> method names; unknown names raise :class:`UsageError`."""
    avail = list(xa.methods_available())
    methods = avail if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in avail]
    if unknown or not methods:
        raise UsageError(f"unknown method(s) {unknown or '(none given)'}; available: "
                         f"{', '.join(avail)} or 'all'")  # fmt: skip
    return list(dict.fromkeys(methods))


def add_dataset_arguments(p, *, default: Optional[str]) -> None:
    """``--dataset`` and the flags that locate a dataset's files."""
    p.add_argument("--dataset", choices=("synthetic", "voc07", "coco14", "imagenet"), default=default,
                   help="a dataset instead of image files" + ("" if default is None else
                   f" (default {default})"))  # fmt: skip
    p.add_argument("--root", help="dataset folder: " + "; ".join(f"{k}: {v}" for k, v in DATASET_LAYOUTS.items()))
    p.add_argument("--annotations", help="COCO instances JSON (default ROOT/annotations/"
                   "instances_val2014.json); ImageNet: folder of the val bbox XML files "
                   "(default ROOT/annotations)")  # fmt: skip
    p.add_argument("--images", help="COCO image folder (default ROOT/val2014); ImageNet: image "
                   "folder, flat or one sub-folder per synset (default ROOT/images)")  # fmt: skip
    p.add_argument("--synsets", help="ImageNet class order: one wnid per line, first token "
                   "(default ROOT/synsets.txt or ROOT/LOC_synset_mapping.txt, else the 1000 "
                   "sorted synset folders)")  # fmt: skip
    p.add_argument("--split", default="test", help="VOC image list (default: test)")
    p.add_argument("--difficult", help="EB/TorchRay difficult-list file (image key + flags per line)")
    p.add_argument("--num-images", type=int_at_least(1), default=200, help="synthetic: number of images")
    p.add_argument("--limit", type=int_at_least(1), default=None, help="the first N images only")


def _need_root(args, dataset: str, ok: bool) -> None:
    if not ok:
        raise UsageError(f"{dataset} needs its files: --root ROOT with {DATASET_LAYOUTS[dataset]}")
    if args.root is not None and not Path(args.root).expanduser().is_dir():
        raise UsageError(f"dataset root not found: {args.root}; {dataset} expects "
                         f"{DATASET_LAYOUTS[dataset]}")  # fmt: skip


def dataset_samples(args) -> list:
    """The samples of ``--dataset`` (annotations read, pixels not yet)."""
    d = args.dataset
    try:
        if d == "synthetic":
            return S.synthetic_samples(args.limit or args.num_images)
        if d == "voc07":
            _need_root(args, d, args.root is not None)
            return S.voc_samples(args.root, split=args.split, difficult_file=args.difficult, limit=args.limit)
        if d == "imagenet":
            _need_root(args, d, args.root is not None or (args.images and args.annotations))
            if args.difficult is not None:
                raise UsageError("imagenet has no difficult list; drop --difficult")
            return S.imagenet_samples(args.root, images=args.images, annotations=args.annotations,
                                      synsets=args.synsets, limit=args.limit)  # fmt: skip
        _need_root(args, d, args.root is not None or args.annotations is not None)
        ann = args.annotations or Path(args.root) / "annotations" / "instances_val2014.json"
        img_dir = args.images or Path(args.root or ".") / "val2014"
        return S.coco_samples(ann, img_dir, difficult_file=args.difficult, limit=args.limit)
    except (FileNotFoundError, ValueError, KeyError, ImportError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"{msg} (expected for {d}: {DATASET_LAYOUTS.get(d, 'see --help')})") from None


def _option_index() -> dict[str, list[tuple[str, object]]]:
    """option name -> [(method, Option)] over every method."""
    from xattr_jax.methods import get_method

    index: dict[str, list] = {}
    for m in xa.methods_available():
        for name, opt in get_method(m).opts.items():
            index.setdefault(name, []).append((m, opt))
    return index


def add_option_flags(p) -> None:
    """One ``--NAME`` flag per method option (generated from the methods' option tables)."""
    g = p.add_argument_group("method options (each applies to the chosen methods that have it; "
                             "values are Python literals: 16, 0.5, True, 'name', (1, 2))")  # fmt: skip
    for name, owners in sorted(_option_index().items()):
        docs = "; ".join(f"{m}: {o.doc} (default {o.default!r})" for m, o in owners)
        g.add_argument(f"--{name.replace('_', '-')}", dest=f"opt_{name}", default=None, metavar="V",
                       help=docs.replace("%", "%%"))  # fmt: skip


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string (composite or preset names, ...)


def method_options_from_args(args, methods) -> dict[str, dict]:
    """``{method: {option: value}}`` from the generated flags (each option checked by its method),
    with ``--layer`` and ``--signal`` for every method when the command has them.

    Raises:
      UsageError: an option none of ``methods`` has, or a value its method refuses.
    """
    from xattr_jax.methods import get_method

    out: dict[str, dict] = {m: {} for m in methods}
    for name, owners in _option_index().items():
        text = getattr(args, f"opt_{name}", None)
        if text is None:
            continue
        value = _literal(text)
        takers = [m for m in methods if name in get_method(m).opts]
        if not takers:
            raise UsageError(f"--{name.replace('_', '-')} is an option of "
                             f"{', '.join(m for m, _ in owners)}, none of the chosen methods")  # fmt: skip
        for m in takers:
            try:
                get_method(m).opts[name].check(f"--{name.replace('_', '-')} ({m})", value)
            except ValueError as err:
                raise UsageError(str(err)) from None
            out[m][name] = value
    for k in ("layer", "signal"):  # attributor arguments every method takes (xattr explain's flags)
        if getattr(args, k, None) is not None:
            for m in methods:
                out[m][k] = getattr(args, k)
    return out


def add_distributed_arguments(p) -> None:
    """Flags that start ``jax.distributed`` (one process per host; each takes its share of the data)."""
    g = p.add_argument_group("several hosts (jax.distributed): run the same command on every host")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize(): on TPU pods, SLURM, MPI or Kubernetes the "
                   "coordinator, process count and id are detected; elsewhere give the three flags below")  # fmt: skip
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (implies --distributed)")
    g.add_argument("--num-processes", type=int_at_least(1), help="how many processes take part")
    g.add_argument("--process-id", type=int_at_least(0), help="this process's index, 0..N-1")


def start_distributed(args) -> None:
    """``jax.distributed.initialize`` when asked for (before any computation)."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if not (args.distributed or any(v is not None for v in explicit)):
        return
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise UsageError("--coordinator, --num-processes and --process-id go together; give all "
                         "three, or only --distributed where the cluster is detected")  # fmt: skip
    if args.process_id is not None and args.process_id >= args.num_processes:
        raise UsageError(f"--process-id {args.process_id} must be below --num-processes {args.num_processes}")
    import jax

    try:
        jax.distributed.initialize(*explicit)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"jax.distributed.initialize failed: {str(err).splitlines()[0]}") from None


def variables_fingerprint(variables) -> str:
    """A hash (BLAKE2b, 128 bits) of a model's variables (names, dtypes, shapes and values): a job's
    settings carry it, so a checkpoint whose contents changed is not resumed into the same records."""
    import jax

    h = hashlib.blake2b(digest_size=16)
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        a = np.ascontiguousarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()
