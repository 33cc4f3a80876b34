"""The ``xattr`` command line.

Each subcommand is a module with ``add_arguments(parser)`` and a handler ``run(args) -> int``. Only the
command being run gets its arguments (and imports its module), so ``xattr --help`` loads no JAX;
heavy or optional imports (torch for ``convert``) happen inside handlers.

``demo``, ``explain`` and ``eval`` keep their compiled programs on disk between runs
(``--compile-cache``, :mod:`xattr_jax.compile_cache`): a later run of the same model and methods
loads them instead of compiling.

Argument errors are one line (``xattr explain: error: argument --top-k: ...``) and exit 2; Ctrl-C
prints one line (how far a progress bar got) and exits 130.

Example:
  xattr convert --arch resnet50 --weights resnet50.pth --out ckpt/resnet50
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

_CONVERTERS_HINT = "pip install 'xattr-jax[converters]'"
_TORCH_HINT = "pip install 'xattr-jax[torch]'"


def _error(command: str, message: str) -> int:
    print(f"xattr {command}: error: {message}", file=sys.stderr)
    return 1


def _cmd_convert(args: argparse.Namespace) -> int:
    try:
        from converters.torchvision import convert
    except ImportError as err:
        return _error(
            "convert",
            f"converting torchvision weights needs torch and torchvision ({err}); "
            f"{_CONVERTERS_HINT}",
        )
    import jax

    from xattr_jax.app.cli_common import num_classes as count_classes
    from xattr_jax.checkpoint import save_checkpoint

    try:
        model, variables = convert(args.arch, args.weights)
        # the torchax route (architectures without a Flax zoo model) returns a function
        route = "flax" if hasattr(model, "num_classes") else "torchax"
        num_classes = getattr(model, "num_classes", None) or count_classes(model, variables, "torchvision")
        out = save_checkpoint(
            args.out, args.arch, variables, overwrite=args.overwrite, route=route, num_classes=num_classes
        )
    except ImportError as err:
        return _error("convert", f"{args.arch} runs through torchax ({err}); {_TORCH_HINT}")
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        return _error("convert", str(err))
    n_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(variables.get("params", variables)))
    print(
        f"converted {args.arch} ({n_params:,} parameters, {num_classes} classes) "
        f"from {args.weights} -> {out}"
        + ("" if route == "flax" else " (torchax route: load with converters.torchvision.load_checkpoint)")
    )
    return 0


def add_arguments(p) -> None:
    """The ``xattr convert`` options."""
    from xattr_jax.models import TORCHAX_ARCHITECTURES, TORCHVISION_ARCHITECTURES

    archs = TORCHVISION_ARCHITECTURES + TORCHAX_ARCHITECTURES
    p.add_argument("--arch", required=True, choices=archs, metavar="ARCH",
                   help=f"torchvision architecture: {', '.join(archs)}")  # fmt: skip
    p.add_argument("--weights", required=True, help="path to a torchvision .pth state dict")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")
    p.set_defaults(func=_cmd_convert)


# name -> (module of xattr_jax.app with add_arguments(parser) and run(args), help, description)
_COMMANDS = {
    "convert": (
        None,  # this module
        "convert torchvision weights into an xattr-jax checkpoint",
        "Convert a torchvision state dict (.pth) into an orbax checkpoint directory "
        "that xattr_jax.checkpoint.load_checkpoint reads without torch (AlexNet, VGG, ResNet: the Flax "
        f"zoo); every other torchvision classifier runs through torchax ({_TORCH_HINT}) and its "
        f"checkpoint loads with converters.torchvision.load_checkpoint. Needs {_CONVERTERS_HINT}.",
    ),
    "demo": (
        "demo",
        "explain synthetic images with a shipped model using every method (PNGs + table)",
        "Explain held-out synthetic images with an embedded model (no torch needed): one PNG overlay "
        "per method, the Attention Backpropagation per-layer figure and a pointing-game table "
        "(pointing.md / pointing.json).",
    ),
    "explain": (
        "explain_cli",
        "attribution maps for an image (a figure), or for folders, file lists and datasets (a job)",
        "Explain one IMAGE into a figure file (--out x.png/.jpg/.pdf/.svg), or image files, folders "
        "of images, .txt lists of paths or a --dataset into a folder (--out DIR): records.jsonl with "
        "one record per image, method and target, the maps in DIR/maps/; rerunning the same "
        "command resumes. Several methods run in one process (--method gradient,lrp), each "
        "compiled once; method options are flags (--steps, --composite, ...).",
    ),
    "eval": (
        "eval_cli",
        "pointing game, localisation and deletion/insertion for a list of methods",
        "Evaluate attribution methods on the synthetic benchmark (with an embedded model) or on VOC07 "
        "test / COCO14 val / ImageNet val from a folder (with a converted checkpoint): pointing game "
        "(all / difficult), box accuracy at 15% and MaxBoxAcc, deletion/insertion. Writes "
        "records.jsonl as it goes (rerunning resumes), then eval.json and eval.md, to --out.",
    ),
}


# commands that compile programs, and so take --compile-cache
_COMPILING = ("demo", "explain", "eval")


def _add_cache_argument(p) -> None:
    p.add_argument("--compile-cache", metavar="DIR", default=None,
                   help="folder of compiled programs kept between runs, so that a later run with the same "
                   "model, methods and batch shape skips compiling (default: $XATTR_JAX_CACHE, else "
                   "$XDG_CACHE_HOME or ~/.cache, then xattr-jax/jax-compilation); 'off': no cache")  # fmt: skip


def _start_cache(command: str, folder: str | None) -> None:
    """JAX's persistent compilation cache in ``folder`` (:mod:`xattr_jax.compile_cache`); the default
    folder is best effort (a warning where it cannot be made), a named one must work."""
    from xattr_jax.compile_cache import OFF_VALUES, use_compilation_cache

    if folder is not None and (not folder.strip() or folder.strip().lower() in OFF_VALUES):
        return
    try:
        use_compilation_cache(folder)
    except (OSError, ValueError) as err:
        if folder is not None:
            raise _CacheError(f"--compile-cache {folder}: {err}") from None
        print(f"xattr {command}: warning: no compilation cache ({err})", file=sys.stderr)


class _CacheError(Exception):
    """A --compile-cache folder that cannot be used."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one line (no usage block) and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s subparser gets its arguments (none for the top-level help)."""
    parser = ArgumentParser(prog="xattr", description="Backprop-based attribution for CNNs in JAX/Flax.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_, description) in _COMMANDS.items():
        p = subparsers.add_parser(name, help=help_, description=description)
        if name == command and module is None:
            add_arguments(p)
        elif name == command:
            mod = importlib.import_module(f"xattr_jax.app.{module}")
            mod.add_arguments(p)
            p.set_defaults(func=mod.run)
        if name == command and name in _COMPILING:
            _add_cache_argument(p)
    return parser


def _interrupted(err: KeyboardInterrupt) -> str:
    from xattr_jax.harness.progress import Interrupted

    if isinstance(err, Interrupted):
        return (f"interrupted after {err.done} of {err.total} {err.unit}; run the same command to resume"
                if err.resumable else f"interrupted after {err.done} of {err.total} {err.unit}")  # fmt: skip
    return "interrupted"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``xattr`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = _build_parser(command if command in _COMMANDS else None).parse_args(argv)
    try:
        if args.command in _COMPILING:
            _start_cache(args.command, args.compile_cache)
        return args.func(args)
    except _CacheError as err:
        print(f"xattr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"xattr {args.command}: {_interrupted(err)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
