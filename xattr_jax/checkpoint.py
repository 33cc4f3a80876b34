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
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xattr_jax.models import build

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "FORMAT", "VERSION", "METADATA_FILE"]

FORMAT = "xattr-jax-checkpoint"
VERSION = 1
METADATA_FILE = "xattr_checkpoint.json"
_VARIABLES_DIR = "variables"
_PROBE_SHAPE = (1, 224, 224, 3)  # any size the zoo accepts; only shapes of variables are compared


def _checkpointer():
    # Imported here so that `import xattr_jax` stays light; orbax is a core dependency all the same.
    import orbax.checkpoint as ocp

    return ocp, ocp.PyTreeCheckpointer()  # synchronous: the files are complete on return


def _expected_shapes(model: nn.Module) -> dict:
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(_PROBE_SHAPE, jnp.float32))
    return {k: v for k, v in abstract.items() if jax.tree_util.tree_leaves(v)}


def _check_structure(model: nn.Module, arch: str, variables: Mapping, where: str) -> None:
    """Raise ValueError unless ``variables`` has exactly the model's variable paths and shapes."""
    expected = dict(
        (jax.tree_util.keystr(p), tuple(leaf.shape))
        for p, leaf in jax.tree_util.tree_leaves_with_path(_expected_shapes(model))
    )
    given = dict(
        (jax.tree_util.keystr(p), tuple(np.shape(leaf)))
        for p, leaf in jax.tree_util.tree_leaves_with_path(dict(variables))
    )
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [
        f"{k}: expected {expected[k]}, got {given[k]}"
        for k in sorted(set(expected) & set(given))
        if expected[k] != given[k]
    ]
    if missing or unexpected or mismatched:
        lines = [f"{where}: the variables do not fit {arch} ({model!r}):"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing[:20])}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {', '.join(unexpected[:20])}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:20])}")
        lines.append(
            "  (pass the model's keyword arguments, e.g. num_classes=, to save_checkpoint)"
        )
        raise ValueError("\n".join(lines))


def _to_host(variables: Mapping) -> dict:
    def leaf(x):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise ValueError(f"checkpoint leaves must be numeric arrays, got {type(x).__name__}")
        return arr

    return jax.tree_util.tree_map(leaf, {k: dict(v) if isinstance(v, Mapping) else v for k, v in variables.items()})


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
        host = _to_host(variables)
    elif route == "flax":
        try:
            model = build(arch, **model_kwargs)
        except TypeError as err:
            raise ValueError(f"bad model keyword arguments for {arch!r}: {err}") from err
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ValueError("variables must be a mapping with a 'params' collection")
        host = _to_host(variables)
        _check_structure(model, arch, host, f"cannot save to {path}")
    else:
        raise ValueError(f"unknown route {route!r}: 'flax' or 'torchax'")

    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{path} exists and is not empty; pass overwrite=True (--overwrite) to replace it"
            )
        # Metadata first: an interrupted overwrite leaves an invalid checkpoint, never a mixed one.
        (path / METADATA_FILE).unlink(missing_ok=True)
        if (path / _VARIABLES_DIR).exists():
            shutil.rmtree(path / _VARIABLES_DIR)
    path.mkdir(parents=True, exist_ok=True)

    ocp, checkpointer = _checkpointer()
    checkpointer.save(str(path / _VARIABLES_DIR), args=ocp.args.PyTreeSave(host))
    metadata = {"format": FORMAT, "version": VERSION, "arch": arch, "model_kwargs": kwargs_json,
                **({"route": route} if route != "flax" else {})}
    tmp = path / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path / METADATA_FILE)
    return path


def _read_metadata(path: Path) -> dict:
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise ValueError(f"{path} is not an xattr-jax checkpoint: {METADATA_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is corrupt (not valid JSON): {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(
            f"{meta_path} is not an xattr-jax checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ValueError(
            f"{meta_path} has checkpoint version {meta.get('version')!r}; this xattr-jax reads "
            f"versions up to {VERSION} (upgrade xattr-jax)"
        )
    if not isinstance(meta.get("arch"), str) or not isinstance(meta.get("model_kwargs", {}), dict):
        raise ValueError(
            f"{meta_path} is corrupt: 'arch' must be a string and 'model_kwargs' a mapping"
        )
    return meta


def read_checkpoint(path) -> tuple[dict, dict]:
    """A checkpoint directory's metadata and its arrays (numpy, saved dtypes), for any route.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: ``path`` is not a checkpoint (no or foreign metadata), or its arrays are
        missing or unreadable.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: the directory does not exist")
    if not path.is_dir():
        raise ValueError(f"{path} is not a checkpoint directory (it is a file)")
    meta = _read_metadata(path)
    var_dir = path / _VARIABLES_DIR
    if not var_dir.is_dir():
        raise ValueError(f"checkpoint {path} is incomplete: {_VARIABLES_DIR}/ is missing")
    ocp, checkpointer = _checkpointer()
    try:
        item_metadata = checkpointer.metadata(str(var_dir)).item_metadata
        if item_metadata is None:
            raise ValueError("its array metadata (_METADATA, manifest.ocdbt) is unreadable")
        tree_metadata = item_metadata.tree
        restore_args = jax.tree_util.tree_map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree_metadata
        )
        restored = checkpointer.restore(
            str(var_dir), args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )
    except Exception as err:  # orbax/tensorstore raise many types for damaged files
        raise ValueError(
            f"checkpoint {path} is corrupt: could not restore {_VARIABLES_DIR}/: {err}"
        ) from err
    return meta, restored


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
    path = Path(path).expanduser().resolve()
    meta, restored = read_checkpoint(path)
    arch, kwargs = meta["arch"], meta.get("model_kwargs", {})
    if meta.get("route", "flax") != "flax":
        raise ValueError(
            f"checkpoint {path} holds torchvision's {arch} for the {meta['route']} route: load it with "
            "converters.torchvision.load_checkpoint (needs pip install 'xattr-jax[torch]')"
        )
    try:
        model = build(arch, **kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {path} cannot be rebuilt: {err}") from err
    _check_structure(model, arch, restored, f"checkpoint {path}")
    return model, jax.tree_util.tree_map(jnp.asarray, restored)
