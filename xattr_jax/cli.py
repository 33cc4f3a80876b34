"""The ``xattr`` command line.

Subcommands are registered by ``_add_<name>(subparsers)`` functions; each sets ``func`` to a
handler ``(args) -> int``. Heavy or optional imports (torch for ``convert``) happen inside handlers.

Example:
  xattr convert --arch resnet50 --weights resnet50.pth --out ckpt/resnet50
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

_CONVERTERS_HINT = "pip install 'xattr-jax[converters]'"


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

    from xattr_jax.checkpoint import save_checkpoint

    try:
        model, variables = convert(args.arch, args.weights)
        out = save_checkpoint(
            args.out, args.arch, variables, overwrite=args.overwrite, num_classes=model.num_classes
        )
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        return _error("convert", str(err))
    n_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(variables.get("params", {})))
    print(
        f"converted {args.arch} ({n_params:,} parameters, {model.num_classes} classes) "
        f"from {args.weights} -> {out}"
    )
    return 0


def _add_convert(subparsers) -> None:
    from xattr_jax.models import ARCHITECTURES

    p = subparsers.add_parser(
        "convert",
        help="convert torchvision weights into an xattr-jax checkpoint",
        description="Convert a torchvision state dict (.pth) into an orbax checkpoint directory "
        f"that xattr_jax.checkpoint.load_checkpoint reads without torch. Needs {_CONVERTERS_HINT}.",
    )
    p.add_argument("--arch", required=True, choices=ARCHITECTURES, metavar="ARCH",
                   help=f"torchvision architecture: {', '.join(ARCHITECTURES)}")  # fmt: skip
    p.add_argument("--weights", required=True, help="path to a torchvision .pth state dict")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")
    p.set_defaults(func=_cmd_convert)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xattr", description="Backprop-based attribution for CNNs in JAX/Flax."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``xattr`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
