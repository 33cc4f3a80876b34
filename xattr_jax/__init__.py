"""xattr-jax: backprop-based attribution for convolutional networks in JAX/Flax.

>>> import xattr_jax as xa
>>> res = xa.explain(model, variables, x, target, method="excitation_backprop", layer="features.23")
"""

from . import composites, nn, program, rules
from .api import attributor, explain, layers, method_options
from .passes import SIGNALS
from .types import Attribution
from .checkpoint import load_checkpoint, save_checkpoint
from .methods import available as methods_available
from .methods.ig import IMAGENET_MEAN, IMAGENET_STD

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "explain",
    "attributor",
    "SIGNALS",
    "methods_available",
    "method_options",
    "save_checkpoint",
    "load_checkpoint",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "layers",
    "composites",
    "program",
    "nn",
    "rules",
]
