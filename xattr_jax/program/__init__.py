"""The engine's view of a model: its traced program, the layers found in it, and their evaluation.

This is the one package of the library that reads JAX programs (jaxprs). ``trace(model, variables,
x)`` traces ``model`` — a ``flax.linen.Module`` (called as ``model.apply(variables, x)``) or any
callable ``model(variables, x) -> logits`` (Flax NNX through ``nnx.merge``, Equinox through
``eqx.combine`` and ``jax.vmap``, Haiku's ``apply``, a plain function) — to a flat list of
primitive operations (``jit``, ``remat`` and call sub-programs inlined) and finds the *layers* in
it by what the operations compute, not by which class wrote them (:data:`.patterns.PATTERNS`,
one entry per way a kind is written; this list is generated from it):

{kinds}

Shape operations (reshape, transpose, broadcast, slice, pad, concatenate, ...) are not layers: the
signal follows the values through them. Operations that do not depend on x (parameter
preparation) run as traced.

**Names.** A layer is named by the Flax module path in the program's name stack where it has one
(``features.23``, ``layer3.1.conv2``; the outermost module's own name is dropped), else by the
pytree path of its weight in ``variables`` (``conv1``, ``blocks.0.conv``, ``fc``; a leading Flax
collection such as ``params`` and trailing leaf names such as ``kernel`` dropped), and parameter-free
layers by their place: ``<scope>.<kind>_<i>``, the scope being the module that called them (the
top for the outermost module) or, in a program without module names, the parent of the last named
layer before them (so ``layer1.0.relu_1`` is the second ReLU after ``layer1.0.conv1``), ``i`` counting that kind within the scope. A module
(name-stack or weight-path prefix) that holds several layers is a *container*: a module's output is
the value it returns (an inception block's concatenation), another prefix's its last layer's.

Evaluation (:func:`run`) re-binds every operation as traced, so the forward values are
bit-identical to the plain call; a layer with a rule runs through
:func:`xattr_jax.rules.apply_rule` with its own operations as the pure forward function.
"""

from .ir import KINDS, LINEAR, LayerInfo, Program
from .run import LayerCall, fold_params, folded_batchnorms, interpret, layer_call, run, run_above, segment_fn
from .checks import check_domain, check_strict, describe
from .patterns import PATTERNS, kinds_text
from .trace import call_model, trace

__all__ = ["LayerInfo", "Program", "trace", "run", "run_above", "call_model", "check_strict", "check_domain", "describe",
           "fold_params", "folded_batchnorms", "interpret", "layer_call", "LayerCall", "segment_fn", "KINDS",
           "LINEAR"]

__doc__ = __doc__.replace("{kinds}", kinds_text())
