"""The interpreter: applies rules to an unmodified Flax model while it is traced."""

from .interceptor import LayerInfo, interpret, layer_name, trace_layers
from .layers import KINDS, LayerSpec, describe

__all__ = ["LayerInfo", "LayerSpec", "KINDS", "describe", "interpret", "layer_name", "trace_layers"]
