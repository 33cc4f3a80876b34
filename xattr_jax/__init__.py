"""xattr-jax: backprop-based attribution for convolutional networks in JAX/Flax.

>>> import xattr_jax as xa
>>> res = xa.explain(model, variables, x, target, method="excitation_backprop", layer="features.23")
>>> xa.show(res, x, target)

The names below are imported on first use, so ``import xattr_jax`` (and the ``xattr`` command's
help) does not load JAX.
"""

import importlib

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "LayerTable",
    "explain",
    "attributor",
    "Attributor",
    "SIGNALS",
    "methods_available",
    "method_options",
    "save_checkpoint",
    "load_checkpoint",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "layers",
    "show",
    "use_compilation_cache",
    "composites",
    "program",
    "nn",
    "rules",
]

# public name -> (module, attribute in it; None: the module itself)
_WHERE = {
    "Attribution": ("types", "Attribution"),
    "LayerTable": ("types", "LayerTable"),
    "explain": ("api", "explain"),
    "attributor": ("api", "attributor"),
    "Attributor": ("api", "Attributor"),
    "layers": ("api", "layers"),
    "method_options": ("api", "method_options"),
    "SIGNALS": ("passes", "SIGNALS"),
    "methods_available": ("methods", "available"),
    "save_checkpoint": ("checkpoint", "save_checkpoint"),
    "load_checkpoint": ("checkpoint", "load_checkpoint"),
    "show": ("viz.result", "show"),
    "use_compilation_cache": ("compile_cache", "use_compilation_cache"),
    **{m: (m, None) for m in ("composites", "program", "nn", "rules")},
}


def _constant(values):
    import numpy as np

    a = np.asarray(values, np.float32)
    a.flags.writeable = False
    return a


def __getattr__(name):
    if name in ("IMAGENET_MEAN", "IMAGENET_STD"):  # float32 [3] arrays, read-only
        value = _constant(getattr(importlib.import_module("._constants", __name__), name))
    elif name in _WHERE:
        module, attr = _WHERE[name]
        mod = importlib.import_module(f".{module}", __name__)
        value = mod if attr is None else getattr(mod, attr)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
