"""The checkpoint directory format of :mod:`xattr_jax.checkpoint`, below the model zoo.

Metadata, orbax arrays and the check that variables fit a model. Nothing here builds a
model: :func:`restore` takes the builder, so that both
:mod:`xattr_jax.checkpoint` (the zoo's :func:`~xattr_jax.models.build`) and
:func:`xattr_jax.models.load_embedded` (the shipped small models) read checkpoints through it
without the models package importing the checkpoint module.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FORMAT",
    "VERSION",
    "METADATA_FILE",
    "VARIABLES_DIR",
    "mismatch_message",
    "check_structure",
    "to_host",
    "write_checkpoint",
    "read_checkpoint",
    "restore",
]

FORMAT = "xattr-jax-checkpoint"
VERSION = 1
METADATA_FILE = "xattr_checkpoint.json"
VARIABLES_DIR = "variables"
_PROBE_SHAPE = (1, 224, 224, 3)  # any size the zoo accepts; only shapes of variables are compared


def _checkpointer():
    # Imported here so that `import xattr_jax` stays light; orbax is a core dependency all the same.
    import orbax.checkpoint as ocp

    return ocp, ocp.PyTreeCheckpointer()  # synchronous: the files are complete on return


def mismatch_message(header: str, sections: Iterable[tuple[str, Iterable, str]], limit: int | None = None) -> str:
    """``header`` and a line ``  LABEL (COUNT): a, b, ...`` for each non-empty section.

    Args:
      header: the first line.
      sections: ``(label, items, separator)`` triples; empty ones are left out.
      limit: name at most this many items of a section, then ``... (K more)``; ``None``: all.

    Returns:
      The message, one line per non-empty section, or ``""`` when every section is empty.
    """
    lines = [header]
    for label, items, sep in sections:
        items = list(map(str, items))
        if items:
            more = f"{sep}... ({len(items) - limit} more)" if limit and len(items) > limit else ""
            lines.append(f"  {label} ({len(items)}): {sep.join(items[:limit])}{more}")
    return "\n".join(lines) if len(lines) > 1 else ""


def _expected_shapes(model: nn.Module) -> dict:
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(_PROBE_SHAPE, jnp.float32))
    return {k: v for k, v in abstract.items() if jax.tree_util.tree_leaves(v)}


def check_structure(model: nn.Module, arch: str, variables: Mapping, where: str) -> None:
    """Raise ValueError unless ``variables`` has exactly the model's variable paths and shapes."""
    expected = dict(
        (jax.tree_util.keystr(p), tuple(leaf.shape))
        for p, leaf in jax.tree_util.tree_leaves_with_path(_expected_shapes(model))
    )
    given = dict(
        (jax.tree_util.keystr(p), tuple(np.shape(leaf)))
        for p, leaf in jax.tree_util.tree_leaves_with_path(dict(variables))
    )
    mismatched = [
        f"{k}: expected {expected[k]}, got {given[k]}"
        for k in sorted(set(expected) & set(given))
        if expected[k] != given[k]
    ]
    message = mismatch_message(
        f"{where}: the variables do not fit {arch} ({model!r}):",
        (
            ("missing", sorted(set(expected) - set(given)), ", "),
            ("unexpected", sorted(set(given) - set(expected)), ", "),
            ("shape mismatches", mismatched, "; "),
        ),
        limit=20,
    )
    if message:
        raise ValueError(
            message + "\n  (pass the model's keyword arguments, e.g. num_classes=, to save_checkpoint)"
        )


def to_host(variables: Mapping) -> dict:
    """``variables`` as numpy arrays (collections as plain dicts); ValueError on a non-numeric leaf."""

    def leaf(x):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise ValueError(f"checkpoint leaves must be numeric arrays, got {type(x).__name__}")
        return arr

    return jax.tree_util.tree_map(leaf, {k: dict(v) if isinstance(v, Mapping) else v for k, v in variables.items()})


def write_checkpoint(path: Path, metadata: dict, host: dict, *, overwrite: bool) -> Path:
    """Write the checked host arrays and ``metadata`` (format and version added) into ``path``.

    Raises:
      FileExistsError: ``path`` is a file, or a non-empty directory and ``overwrite`` is false.
    """
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{path} exists and is not empty; pass overwrite=True (--overwrite) to replace it"
            )
        # Metadata first: an interrupted overwrite leaves an invalid checkpoint, never a mixed one.
        (path / METADATA_FILE).unlink(missing_ok=True)
        if (path / VARIABLES_DIR).exists():
            shutil.rmtree(path / VARIABLES_DIR)
    path.mkdir(parents=True, exist_ok=True)

    ocp, checkpointer = _checkpointer()
    checkpointer.save(str(path / VARIABLES_DIR), args=ocp.args.PyTreeSave(host))
    tmp = path / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, **metadata}, indent=2, sort_keys=True) + "\n")
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
    var_dir = path / VARIABLES_DIR
    if not var_dir.is_dir():
        raise ValueError(f"checkpoint {path} is incomplete: {VARIABLES_DIR}/ is missing")
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
            f"checkpoint {path} is corrupt: could not restore {VARIABLES_DIR}/: {err}"
        ) from err
    return meta, restored


def restore(path, build: Callable[..., nn.Module]) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, variables)`` of a flax-route checkpoint, the model made by ``build(arch, **kwargs)``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: as :func:`xattr_jax.checkpoint.load_checkpoint`.
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
    check_structure(model, arch, restored, f"checkpoint {path}")
    return model, jax.tree_util.tree_map(jnp.asarray, restored)
