"""Save and load a zoo model's variables as an orbax checkpoint with a small JSON description.

A checkpoint is a directory::

    DIR/xattr_checkpoint.json   {"format": "xattr-jax-checkpoint", "version": 1,
                                 "arch": "resnet50", "model_kwargs": {"num_classes": 1000}}
    DIR/variables/              an orbax PyTree checkpoint of {'params': ..., 'batch_stats': ...}

Loading needs neither torch nor the converters: ``load_checkpoint`` rebuilds the model with
:func:`xattr_jax.models.build` and restores every array bit-exactly with its dtype.

Example:
  >>> from xattr_jax.checkpoint import load_checkpoint, save_checkpoint
  >>> save_checkpoint("ckpt/resnet50", "resnet50", variables, num_classes=1000)
  >>> model, variables = load_checkpoint("ckpt/resnet50")
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn

from xattr_jax._checkpoint import (
    FORMAT,
    METADATA_FILE,
    VERSION,
    check_structure,
    read_checkpoint,
    restore,
    to_host,
    write_checkpoint,
)
from xattr_jax.models import build

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "FORMAT", "VERSION", "METADATA_FILE"]


def save_checkpoint(
    path, arch: str, variables: Mapping, *, overwrite: bool = False, route: str = "flax", **model_kwargs
):
    """Write ``variables`` of the zoo model ``arch`` as a checkpoint directory.

    Args:
      path: the checkpoint directory (created, with parents, if needed).
      arch: one of :data:`xattr_jax.models.ARCHITECTURES`.
      variables: ``{'params': ..., 'batch_stats': ...}`` as returned by the converters.
      route: ``"flax"`` (the zoo) or ``"torchax"``: the variables of torchvision's ``arch``
        through ``converters.torch``, written unchecked (the converter checked them) and read back
        with ``converters.torchvision.load_checkpoint`` (needs torch).
      overwrite: replace the checkpoint in an existing non-empty directory (only this module's
        two entries, ``xattr_checkpoint.json`` and ``variables/``, are removed; other files stay).
      **model_kwargs: JSON-serialisable keyword arguments of the model (``num_classes``).

    Returns:
      The checkpoint directory as an absolute ``Path``.

    Raises:
      ValueError: unknown ``arch``, model kwargs that are not JSON-serialisable or that the model
        does not take, or variables that do not fit the model (paths and shapes listed).
      FileExistsError: ``path`` exists and is not empty, and ``overwrite`` is false.
    """
    path = Path(path).expanduser().resolve()
    try:
        kwargs_json = json.loads(json.dumps(model_kwargs))
    except TypeError as err:
        raise ValueError(f"model keyword arguments must be JSON-serialisable: {err}") from err
    if route == "torchax":
        host = to_host(variables)
    elif route == "flax":
        try:
            model = build(arch, **model_kwargs)
        except TypeError as err:
            raise ValueError(f"bad model keyword arguments for {arch!r}: {err}") from err
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ValueError("variables must be a mapping with a 'params' collection")
        host = to_host(variables)
        check_structure(model, arch, host, f"cannot save to {path}")
    else:
        raise ValueError(f"unknown route {route!r}: 'flax' or 'torchax'")
    metadata = {"arch": arch, "model_kwargs": kwargs_json, **({"route": route} if route != "flax" else {})}
    return write_checkpoint(path, metadata, host, overwrite=overwrite)


def load_checkpoint(path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model and restore its variables from a checkpoint directory.

    Args:
      path: a directory written by :func:`save_checkpoint` (or ``xattr convert``).

    Returns:
      ``(model, variables)``; every array is restored bit-exactly with its saved dtype (as jax
      arrays), so ``model.apply(variables, x)`` gives the saved model's outputs.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: ``path`` is not a checkpoint (no or foreign metadata), names an unknown
        architecture or a torchax-route one (load those with
        ``converters.torchvision.load_checkpoint``), or its arrays are missing, unreadable or do
        not fit the model.
    """
    return restore(path, build)
