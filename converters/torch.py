"""Any PyTorch classifier as a JAX function ``model(variables, x)``, through torchax.

``from_torch(module)`` runs the module's own ``forward`` on JAX arrays (torchax maps every ATen
operation to ``jax.numpy``/``lax``), so the engine of ``xattr_jax`` reads it like any JAX model:

- ``x`` is NHWC at our API and transposed to NCHW inside, as torch expects.
- ``variables`` is the module's floating-point parameters and buffers as nested dicts of its own
  dotted names (``variables["layer3"]["1"]["conv2"]["weight"]``); integer buffers
  (``num_batches_tracked``, index tables) stay with the model.
- Every submodule's call runs under a ``jax.named_scope`` of its name, so the layer names of
  ``xa.layers`` are the module's own (``features.23``, ``layer3.1.conv2``, ``blocks.11.attn``).

Needs ``pip install 'xattr-jax[torch]'`` (torchax 0.0.13 runs with torch 2.12.1, not 2.14.1).
The module is used, never modified: scopes are attached for the duration of each call only.

Example:
  >>> import torchvision, xattr_jax as xa
  >>> from converters.torch import from_torch
  >>> model, variables = from_torch(torchvision.models.googlenet(weights=None).eval())
  >>> res = xa.explain(model, variables, x_nhwc, target, method="gradient")
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import torch

__all__ = ["from_torch", "nest", "flatten"]


def nest(flat: Mapping[str, Any]) -> dict:
    """``{"a.b.weight": v}`` -> ``{"a": {"b": {"weight": v}}}`` (dotted names to nested dicts)."""
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict:
    """The inverse of :func:`nest`."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _op_scope_name(func) -> str:
    """torchax's scope name for one torch operation, dotted so that it names no layer."""
    if hasattr(func, "name"):
        return func.name()  # an ATen overload: "aten::convolution"
    return f"{getattr(func, '__module__', None) or 'torch'}.{func.__name__}"


@contextlib.contextmanager
def _module_scopes(module: torch.nn.Module):
    """Run every submodule's forward under nested ``jax.named_scope`` scopes of its dotted name.

    The scopes opened are the name's parts below the calling module's (a ``ModuleList`` that is
    iterated, never called, still gives its part: ``blocks.0``). torchax puts each operation under
    a scope of its own name (``max_pool2d``); those are made dotted here
    (``torch.nn.functional.max_pool2d``), which the engine never reads as a module.
    """
    import torchax.tensor

    active: list = []  # (qualified name, its ExitStack) of the modules being called
    handles = []
    op_scope_name = torchax.tensor._name_of_func
    torchax.tensor._name_of_func = _op_scope_name

    def enter(qualified):
        def pre(_mod, _args):
            outer = active[-1][0] if active else ""
            parts = qualified[len(outer) + 1:] if outer and qualified.startswith(outer + ".") else qualified
            scopes = contextlib.ExitStack()
            for part in parts.split("."):
                scopes.enter_context(jax.named_scope(part))
            active.append((qualified, scopes))

        return pre

    def leave(_mod, _args, _out):
        active.pop()[1].close()

    try:
        for qualified, sub in module.named_modules():
            if qualified:
                handles.append(sub.register_forward_pre_hook(enter(qualified)))
                handles.append(sub.register_forward_hook(leave, always_call=True))
        yield
    finally:
        torchax.tensor._name_of_func = op_scope_name
        for h in handles:
            h.remove()
        while active:
            active.pop()[1].close()


def _check_module(module) -> None:
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    training = [name or type(module).__name__ for name, m in module.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:5]) + (f" and {len(training) - 5} more" if len(training) > 5 else "")
        raise ValueError(
            f"the module is in training mode ({shown}): batch statistics and dropout would make "
            "the attribution random; call module.eval() first"
        )


def from_torch(module: torch.nn.Module, example_shape: tuple[int, ...] | None = None):
    """A torch classifier as ``(model, variables)`` with ``model(variables, x_nhwc) -> logits``.

    Args:
      module: a ``torch.nn.Module`` in eval mode taking NCHW images (any torchvision or timm
        classifier); used, not modified.
      example_shape: an NHWC input shape ``(N, H, W, C)`` to check the module with now (one
        abstract forward, no computation); ``None`` checks at the first call.

    Returns:
      ``(model, variables)``: ``variables`` the floating-point parameters and buffers as nested
      dicts of the module's dotted names; ``model(variables, x)`` with ``x`` float NHWC returns
      what ``module(x.transpose(0, 3, 1, 2))`` returns, as JAX arrays.

    Raises:
      ImportError: torchax is missing or does not import with this torch (use the torch extra).
      TypeError: ``module`` is not a ``torch.nn.Module``.
      ValueError: the module is in training mode (call ``.eval()``), or it does not run on
        ``example_shape`` (the module's own error is attached).
    """
    try:
        import torchax
    except Exception as err:  # absent, or a torch it does not support (2.14.1: AttributeError)
        raise ImportError(
            f"converters.torch needs torchax ({type(err).__name__}: {err}); "
            "pip install 'xattr-jax[torch]' (torch 2.12.1, torchvision 0.27.1, torchax 0.0.13)"
        ) from err

    _check_module(module)
    states, fn = torchax.extract_jax(module)
    floating = {k: v for k, v in states.items() if jnp.issubdtype(v.dtype, jnp.floating)}
    fixed = {k: v for k, v in states.items() if k not in floating}

    def model(variables, x):
        if jnp.ndim(x) != 4:
            raise ValueError(f"x must be NHWC images [N, H, W, C], got shape {jnp.shape(x)}")
        # torch broadcasts across ranks; its int64 index arithmetic is int32 in JAX without x64
        with _module_scopes(module), jax.numpy_rank_promotion("allow"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Explicitly requested dtype int64", UserWarning)
            return fn({**fixed, **flatten(variables)}, (jnp.transpose(x, (0, 3, 1, 2)),))

    variables = nest(floating)
    if example_shape is not None:
        try:
            jax.eval_shape(model, variables, jax.ShapeDtypeStruct(tuple(example_shape), jnp.float32))
        except Exception as err:  # the module's own error, whatever it is
            raise ValueError(
                f"the module does not run on NHWC input of shape {tuple(example_shape)} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "pass the (N, H, W, C) shape it takes"
            ) from err
    return model, variables
