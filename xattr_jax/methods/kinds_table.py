"""The method × layer-kind table of ``docs/methods.md``, built from the methods' own composites and
domains (so the documentation cannot drift from the code)."""

from __future__ import annotations

from ..composites.core import below, resolve_layers
from ..composites.presets import epsilon_plus
from ..program import KINDS, LayerInfo
from .base import get_method
from .excitation import excitation_composite
from .gradient import DECONV, GUIDED
from .ig import gnl_composite
from .rsp import rsp_composite

__all__ = ["kinds_table"]

_ORDINARY = ("gradient", "input_x_gradient", "smoothgrad", "integrated_gradients", "grad_cam", "cam")


def _composites():
    """Method (and variant) -> the composite it attaches (``None``: the ordinary gradient)."""
    seed = below("seed")
    return {
        **{m: None for m in _ORDINARY},
        "guided_backprop": GUIDED,
        "deconvnet": DECONV,
        "gnl_gradient": gnl_composite(),
        "gnl_integrated_gradients": gnl_composite(),
        "lrp": epsilon_plus(),
        "lrp (attention='attnlrp')": epsilon_plus(attention="attnlrp"),
        "excitation_backprop": excitation_composite(),
        "contrastive_excitation_backprop": excitation_composite(),
        "rsp": rsp_composite("seed"),
        "attention_backprop": excitation_composite().where(seed),
    }


def _layers():
    """One layer per kind (and attention's ``A·V``, a product that reads a softmax), below a seed."""
    kinds = [k for k in KINDS if k != "other"] + ["other"]
    rows = [LayerInfo("stem", "conv", "", (1, 1, 1, 1), None, output=1)]
    rows += [LayerInfo(k, k, "", (1, 1, 1, 1), None, output=10 + i) for i, k in enumerate(kinds)]
    rows.append(LayerInfo("A·V", "product", "", (1, 1, 1, 1), None, inputs=(10 + kinds.index("softmax"),),
                          output=100))
    rows.append(LayerInfo("seed", "relu", "", (1, 1, 1, 1), None, output=101))
    return rows


def kinds_table() -> str:
    """The Markdown table: one row per method, one column per kind, each cell the rule's name,
    ``gradient`` (ordinary), or ``refused`` (outside the method's domain: refused unless
    ``strict=False``, which keeps the ordinary gradient there)."""
    layers = _layers()
    cols = [l for l in layers if l.name not in ("stem", "seed")]
    lines = ["| method | " + " | ".join(l.name for l in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, comp in _composites().items():
        rules = resolve_layers(comp, layers) if comp is not None else {}
        domain = get_method(name.split(" ")[0]).domain
        cells = []
        for l in cols:
            if domain is not None and l.kind not in domain.kinds:
                cells.append("refused")
            else:
                cells.append(rules[l.name].name if l.name in rules else "gradient")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
