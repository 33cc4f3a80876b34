"""torchvision weights -> a JAX model: the Flax zoo, or any other architecture through torchax.

This module imports torch and torchvision; the library (``xattr_jax``) never imports it.
:func:`convert` takes every torchvision classification architecture. AlexNet, VGG and ResNet
(:data:`ARCHITECTURES`) become the Flax zoo of ``xattr_jax.models`` (the default route for them:
no torch at load time, trainable in Flax, and faster, see ``benchmarks/results/loading_routes.md``);
the others (:data:`TORCHAX_ARCHITECTURES`: GoogLeNet, Inception, DenseNet, MobileNet,
EfficientNet, RegNet, ConvNeXt, ViT, Swin, MaxViT, ...) run through :func:`converters.torch.from_torch`,
which needs the ``torch`` extra. The zoo's layers carry torchvision's module names, so every
parameter maps one-to-one:

- ``Conv2d.weight`` ``[O, I, kh, kw]`` -> ``kernel`` ``[kh, kw, I, O]``; ``bias`` -> ``bias``.
- ``Linear.weight`` ``[out, in]`` -> ``kernel`` ``[in, out]``; the first classifier layer after
  the flatten also has its inputs reordered from torch's (C, H, W) flatten order to our (H, W, C).
- ``BatchNorm2d``: ``weight`` -> ``params.scale``, ``bias`` -> ``params.bias``,
  ``running_mean`` -> ``batch_stats.mean``, ``running_var`` -> ``batch_stats.var``
  (``num_batches_tracked`` is ignored).

Example:
  >>> import torchvision
  >>> from converters.torchvision import convert
  >>> model, variables = convert("resnet18", torchvision.models.resnet18(weights=None))
  >>> logits = model.apply(variables, x_nhwc)
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import torch
import torchvision

from xattr_jax._checkpoint import mismatch_message
from xattr_jax.checkpoint import load_checkpoint as load_flax
from xattr_jax.checkpoint import read_checkpoint
from xattr_jax.models import TORCHAX_ARCHITECTURES
from xattr_jax.models import TORCHVISION_ARCHITECTURES as ARCHITECTURES
from xattr_jax.models import build

__all__ = ["ARCHITECTURES", "TORCHAX_ARCHITECTURES", "ROUTES", "convert", "convert_state_dict",
           "load_state_dict", "load_checkpoint", "expected_shapes", "torchvision_module"]

#: How :func:`convert` builds the model: the Flax zoo, or torchvision's module through torchax.
ROUTES = ("flax", "torchax")

# The linear layer right after the flatten, and the (C, H, W) shape torch flattens there.
_FLATTEN_INPUT = {
    **{arch: ("classifier.0", (512, 7, 7)) for arch in ARCHITECTURES if arch.startswith("vgg")},
    "alexnet": ("classifier.1", (256, 6, 6)),
}
_IGNORED_SUFFIX = "num_batches_tracked"


class _Entry(NamedTuple):
    """Where one torch tensor goes: collection, flax module path, variable name, kind of layer."""

    collection: str
    path: tuple[str, ...]
    name: str
    kind: str
    shape: tuple[int, ...]


def _final_layer(arch: str) -> str:
    return "fc" if arch.startswith("resnet") else "classifier.6"


def _check_arch(arch: str, known: tuple[str, ...] = ARCHITECTURES) -> None:
    if arch not in known:
        raise ValueError(f"unknown architecture {arch!r}; supported: {', '.join(known)}")


def _layout(arch: str, num_classes: int) -> dict[str, _Entry]:
    """Every expected state-dict key of torchvision's ``arch`` and where it goes (no allocation)."""
    with torch.device("meta"):
        reference = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    layout = {}
    for module_name, module in reference.named_modules():
        path = tuple(module_name.split("."))
        if isinstance(module, torch.nn.Conv2d):
            names = {"weight": ("params", "kernel", "conv"), "bias": ("params", "bias", "bias")}
        elif isinstance(module, torch.nn.Linear):
            names = {"weight": ("params", "kernel", "linear"), "bias": ("params", "bias", "bias")}
        elif isinstance(module, torch.nn.BatchNorm2d):
            names = {
                "weight": ("params", "scale", "bias"),
                "bias": ("params", "bias", "bias"),
                "running_mean": ("batch_stats", "mean", "bias"),
                "running_var": ("batch_stats", "var", "bias"),
            }
        else:
            continue
        for tensor_name, tensor in [*module.named_parameters(recurse=False),
                                    *module.named_buffers(recurse=False)]:  # fmt: skip
            if tensor_name == _IGNORED_SUFFIX:
                continue
            collection, name, kind = names[tensor_name]
            layout[f"{module_name}.{tensor_name}"] = _Entry(
                collection, path, name, kind, tuple(tensor.shape)
            )
    return layout


def expected_shapes(arch: str, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """torchvision's state-dict keys of ``arch`` and their shapes (not ``num_batches_tracked``)."""
    _check_arch(arch)
    return {key: entry.shape for key, entry in _layout(arch, num_classes).items()}


def load_state_dict(weights: Any) -> OrderedDict[str, Any]:
    """A state dict from a mapping, a ``.pth`` path or a ``torch.nn.Module``.

    Paths are read with ``torch.load(..., map_location="cpu", weights_only=True)``; a file holding
    ``{"state_dict": ...}`` (a training checkpoint) is unwrapped. A ``module.`` prefix on every key
    (``DataParallel``) is removed.

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: the file cannot be read as weights, or ``weights`` is of an unsupported type.
    """
    if isinstance(weights, torch.nn.Module):
        state = weights.state_dict()
    elif isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no weights file at {path!r}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            raise ValueError(
                f"could not read {path!r} as a state dict with "
                f"torch.load(weights_only=True): {err}. "
                "If it is a whole pickled model you trust, load it with torch.load(path, "
                "weights_only=False) yourself and pass the module (or its state_dict())."
            ) from err
        if isinstance(state, torch.nn.Module):
            state = state.state_dict()
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
    elif isinstance(weights, Mapping):
        state = weights
    else:
        raise ValueError(
            "weights must be a state dict, a path to a .pth file or a torch.nn.Module, "
            f"got {type(weights).__name__}"
        )
    if not isinstance(state, Mapping):
        raise ValueError(
            f"expected a state dict (a mapping of names to tensors), got {type(state).__name__}"
        )
    metadata = getattr(state, "_metadata", None)  # module versions (MNASNet reads them)
    state = OrderedDict(state)
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = OrderedDict((k[len("module.") :], v) for k, v in state.items())
        if metadata is not None:
            metadata = {k[len("module.") :] if k.startswith("module.") else "": v for k, v in metadata.items()}
    if metadata is not None:
        state._metadata = metadata
    return state


def _to_numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            return None
        return value.detach().to(device="cpu", dtype=torch.float32).numpy()
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float32, copy=False)
    return None


def _transform(arch: str, key: str, entry: _Entry, w: np.ndarray) -> np.ndarray:
    if entry.kind == "conv":
        return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if entry.kind == "linear":
        flatten_layer, chw = _FLATTEN_INPUT.get(arch, (None, None))
        if key == f"{flatten_layer}.weight":
            c, h, wd = chw
            # torch's input index is c*H*W + h*W + w; ours (NHWC flatten) is h*W*C + w*C + c.
            return w.reshape(w.shape[0], c, h, wd).transpose(2, 3, 1, 0).reshape(h * wd * c, -1)
        return w.T
    return w


def _check_fit(arch, num_classes, missing, unexpected, mismatched, bad_values=(), limit=None) -> None:
    """Raise one ValueError listing every way a state dict misses ``arch`` (``limit`` names each)."""
    message = mismatch_message(
        f"the state dict does not match torchvision's {arch} ({num_classes} classes):",
        (
            ("missing keys", missing, ", "),
            ("unexpected keys", unexpected, ", "),
            ("shape mismatches", mismatched, "; "),
            ("not floating-point tensors", bad_values, ", "),
        ),
        limit,
    )
    if message:
        raise ValueError(message)


def convert_state_dict(arch: str, state_dict: Mapping[str, Any]) -> tuple[dict, int]:
    """Convert a torchvision state dict of ``arch`` into flax variables.

    Args:
      arch: one of :data:`ARCHITECTURES`.
      state_dict: names -> tensors (torch or numpy), exactly torchvision's keys for ``arch``
        (``num_batches_tracked`` optional). Floating values are converted to float32.

    Returns:
      ``(variables, num_classes)``: ``{'params': ..., 'batch_stats': ...}`` (``batch_stats`` only
      for architectures with batch norm) as jax arrays, and the number of classes read from the
      final layer's weight.

    Raises:
      ValueError: unknown ``arch`` (lists the supported ones), or a state dict that does not match
        (one message listing missing keys, unexpected keys and shape mismatches with both shapes).
    """
    _check_arch(arch)
    final = state_dict.get(f"{_final_layer(arch)}.weight")
    num_classes = int(final.shape[0]) if getattr(final, "ndim", 0) == 2 else 1000
    layout = _layout(arch, num_classes)

    given = {k: v for k, v in state_dict.items() if not str(k).endswith(_IGNORED_SUFFIX)}
    missing = [k for k in layout if k not in given]
    unexpected = [k for k in given if k not in layout]
    mismatched, bad_values, arrays = [], [], {}
    for key, entry in layout.items():
        if key not in given:
            continue
        value = _to_numpy(given[key])
        if value is None:
            bad_values.append(f"{key} ({type(given[key]).__name__})")
        elif tuple(value.shape) != entry.shape:
            mismatched.append(f"{key}: expected {entry.shape}, got {tuple(value.shape)}")
        else:
            arrays[key] = value
    _check_fit(arch, num_classes, missing, unexpected, mismatched, bad_values)

    variables: dict[str, dict] = {}
    for key, entry in layout.items():
        node = variables.setdefault(entry.collection, {})
        for part in entry.path:
            node = node.setdefault(part, {})
        w = _transform(arch, key, entry, arrays[key])
        node[entry.name] = jnp.asarray(np.ascontiguousarray(w, dtype=np.float32))
    return variables, num_classes


def _num_classes(shapes: Mapping[str, tuple], state_dict: Mapping[str, Any]) -> int:
    """The class count of a state dict: the size its classifier gives where 1000 is expected."""
    for key, shape in shapes.items():
        given = tuple(getattr(state_dict.get(key), "shape", ()))
        if shape and shape[0] == 1000 and len(given) == len(shape) and given[1:] == shape[1:]:
            return int(given[0])
    return 1000


def torchvision_module(arch: str, weights: Any) -> torch.nn.Module:
    """torchvision's ``arch`` in eval mode holding ``weights`` (state dict, ``.pth`` path or module).

    The class count is read from the weights. GoogLeNet and Inception v3 are built as
    ``weights=None`` builds them (``transform_input=False``); pass the module itself to keep
    another setting. A module is returned as it is.

    Raises:
      ValueError: unknown ``arch`` or weights that do not fit it (torch's message on missing,
        unexpected and mismatched keys).
    """
    _check_arch(arch, ARCHITECTURES + TORCHAX_ARCHITECTURES)
    if isinstance(weights, torch.nn.Module):
        return weights
    state = load_state_dict(weights)
    # GoogLeNet/Inception: the weights are overwritten below; skip scipy's slow truncated normal
    kwargs = {"init_weights": False} if arch in ("googlenet", "inception_v3") else {}
    with torch.device("meta"):
        try:
            shapes = {k: tuple(v.shape) for k, v in
                      torchvision.models.get_model(arch, weights=None, **kwargs).state_dict().items()}
        except NotImplementedError:  # RegNet computes its widths from tensors: no meta build
            shapes = {"fc.bias": (1000,)}
    if arch.startswith("mnasnet") and not hasattr(state, "_metadata"):
        state._metadata = {"": {"version": 2}}  # a plain dict: today's MNASNet layout (torchvision's)
    num_classes = _num_classes(shapes, state)
    module = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    own = module.state_dict()
    given = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    # integer buffers (num_batches_tracked, index tables) are the constructor's: they may be absent
    missing = [k for k, v in own.items() if k not in given and v.is_floating_point()]
    _check_fit(arch, num_classes, missing, [k for k in given if k not in own],
               [f"{k}: expected {tuple(v.shape)}, got {given[k]}" for k, v in own.items()
                if k in given and given[k] != tuple(v.shape)], limit=8)
    module.load_state_dict(state, strict=False)
    return module.eval()


def convert(arch: str, weights: Any, *, route: str | None = None):
    """A JAX model of torchvision's ``arch`` holding ``weights``.

    Args:
      arch: a torchvision classification architecture: :data:`ARCHITECTURES` (Flax zoo) or
        :data:`TORCHAX_ARCHITECTURES`.
      weights: a state dict, a path to a ``.pth`` file, or a torchvision ``nn.Module``.
      route: ``"flax"`` (the zoo; only for :data:`ARCHITECTURES`, their default) or ``"torchax"``
        (torchvision's own module through :func:`converters.torch.from_torch`; the default for the
        others).

    Returns:
      ``(model, variables)``. Flax route: a linen module, ``model.apply(variables, x_nhwc)``;
      torchax route: a function, ``model(variables, x_nhwc)``, ``variables`` the module's
      parameters and buffers by its own names. Both equal torchvision's logits on ``x_nchw``;
      ``num_classes`` is read from the weights.

    Raises:
      ValueError: unknown architecture or route, unreadable file, or mismatched weights (see
        :func:`convert_state_dict`).
      FileNotFoundError: ``weights`` is a path that does not exist.
    """
    _check_arch(arch, ARCHITECTURES + TORCHAX_ARCHITECTURES)
    route = route or ("flax" if arch in ARCHITECTURES else "torchax")
    if route not in ROUTES or (route == "flax" and arch not in ARCHITECTURES):
        raise ValueError(
            f"route {route!r} is not available for {arch!r}: use "
            + (" or ".join(map(repr, ROUTES)) if arch in ARCHITECTURES else "'torchax'")
        )
    if route == "torchax":
        from converters.torch import from_torch

        return from_torch(torchvision_module(arch, weights))
    variables, num_classes = convert_state_dict(arch, load_state_dict(weights))
    return build(arch, num_classes=num_classes), variables


def load_checkpoint(path):
    """``(model, variables)`` from a checkpoint of either route (``xattr convert`` writes them).

    A torchax-route checkpoint holds the variables and the architecture's name; the module is
    rebuilt with torchvision here (so loading it needs torch), a Flax one is
    :func:`xattr_jax.checkpoint.load_checkpoint`'s.
    """
    meta, arrays = read_checkpoint(path)
    if meta.get("route", "flax") == "flax":
        return load_flax(path)
    from converters.torch import flatten, from_torch

    state = {k: torch.from_numpy(np.asarray(v)) for k, v in flatten(arrays).items()}
    return from_torch(torchvision_module(meta["arch"], state))
