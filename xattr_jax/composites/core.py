"""Composites: ordered ``(matcher, rule)`` pairs, first match wins, resolved to ``{layer: rule}``.

A matcher selects layers by kind (``kind("conv", "dense")``), by dotted-path glob
(``path("features.*")``), as the first linear layer of the network (``first_linear()``), by what
they read (``fed_by("softmax")``), by place (``below("features.29")``, ``above(...)``), and
matchers combine: ``below(s) & kind("conv")``, ``m1 | m2``, ``~m``. Matchers, rules and composites are values: equal ones compare equal.
``resolve`` turns a composite into a frozen map before tracing, from one ``jax.eval_shape`` pass.
"""

from __future__ import annotations

import fnmatch
from types import MappingProxyType
from typing import Callable, Mapping, NamedTuple, Sequence

from ..program import KINDS, LayerInfo, trace
from ..rules.core import Rule

__all__ = [
    "Matcher",
    "Composite",
    "composite",
    "kind",
    "path",
    "first_linear",
    "fed_by",
    "below",
    "above",
    "custom",
    "resolve",
    "resolve_layers",
    "STRICT_KINDS",
]

#: Layer kinds that strict mode insists have a rule.
STRICT_KINDS = frozenset({"conv", "dense", "relu", "maxpool", "avgpool"})


class Matcher(NamedTuple):
    """Selects layers; a value (equal matchers compare equal, so equal composites share programs).

    ``op`` names the test and ``args`` holds its (hashable) arguments; ``m1 & m2``, ``m1 | m2``
    and ``~m`` combine matchers. ``test(info, layers)`` decides for one layer, ``layers`` being
    every layer in program order.
    """

    name: str
    op: str
    args: tuple = ()

    def __repr__(self) -> str:
        return self.name

    def __and__(self, other: "Matcher") -> "Matcher":
        return Matcher(f"({self.name} & {_matcher(other).name})", "and", (self, _matcher(other)))

    def __or__(self, other: "Matcher") -> "Matcher":
        return Matcher(f"({self.name} | {_matcher(other).name})", "or", (self, _matcher(other)))

    def __invert__(self) -> "Matcher":
        return Matcher(f"~{self.name}", "not", (self,))

    def test(self, info: LayerInfo, layers: Sequence[LayerInfo]) -> bool:
        return _TESTS[self.op](self.args, info, layers)


def _matcher(m) -> Matcher:
    if isinstance(m, str):
        return path(m)
    if not isinstance(m, Matcher):
        raise TypeError(f"{m!r} is not a Matcher (use kind(), path(), first_linear(), below(), above())")
    return m


def _first_linear(args, info, layers):
    first = next((l for l in layers if l.kind in ("conv", "dense")), None)
    return first is not None and info.name == first.name and info.kind in args


def _position(layers, name):
    names = [l.name for l in layers]
    if name not in names:
        raise ValueError(f"below()/above(): unknown layer {name!r}; valid layer names: {names}")
    return names.index(name)


def _fed_by(args, info, layers):
    """One of the layer's inputs is the output of a layer of the given kinds (through shape ops)."""
    outs = {l.output for l in layers if l.kind in args}
    return any(i in outs for i in info.inputs)


def _below(args, info, layers):
    """``name`` itself, the layers before it in program order, and its own sub-layers."""
    (name,) = args
    i = _position(layers, name)
    j = [l.name for l in layers].index(info.name)
    return j <= i or info.name.startswith(name + ".")


def _above(args, info, layers):
    return not _below(args, info, layers)


_TESTS = {
    "kind": lambda args, info, layers: info.kind in args,
    "path": lambda args, info, layers: any(fnmatch.fnmatchcase(info.name, p) for p in args),
    "first_linear": _first_linear,
    "fed_by": _fed_by,
    "below": _below,
    "above": _above,
    "and": lambda args, info, layers: all(m.test(info, layers) for m in args),
    "or": lambda args, info, layers: any(m.test(info, layers) for m in args),
    "not": lambda args, info, layers: not args[0].test(info, layers),
    "custom": lambda args, info, layers: bool(args[0](info, layers)),
}


class Composite(NamedTuple):
    """Ordered ``(matcher, rule)`` pairs; the first matcher that selects a layer gives its rule.

    A value: composites built the same way compare equal (matchers and rules compare by value),
    so ``explain(..., composite=c)`` compiles once for equal composites.
    """

    entries: tuple
    name: str = "composite"

    def __repr__(self) -> str:
        inner = ", ".join(f"{m!r} -> {r!r}" for m, r in self.entries)
        return f"Composite({self.name}: {inner})"

    def where(self, matcher: Matcher) -> "Composite":
        """The same rules, only on the layers ``matcher`` also selects (``comp.where(below(s))``)."""
        m = _matcher(matcher)
        return Composite(tuple((mm & m, r) for mm, r in self.entries), self.name)

    def __add__(self, other: "Composite") -> "Composite":
        """``a + b``: ``a``'s entries first, then ``b``'s (``a`` wins where both match)."""
        return Composite(self.entries + other.entries, f"{self.name}+{other.name}")


def composite(*pairs, name: str = "composite") -> Composite:
    """Build a :class:`Composite` from ``(matcher, rule)`` pairs (a bare ``str`` matcher is a glob)."""
    entries = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"composite entry {i} must be a (matcher, rule) pair, got {pair!r}")
        m, r = pair
        if not isinstance(m, (str, Matcher)):
            raise TypeError(f"composite entry {i}: {m!r} is not a Matcher (use kind(), path(), first_linear())")
        if not isinstance(r, Rule):
            raise TypeError(f"composite entry {i}: {r!r} is not a Rule")
        entries.append((_matcher(m), r))
    return Composite(tuple(entries), name)


def kind(*kinds: str) -> Matcher:
    """Match layers of the given kinds (:data:`xattr_jax.program.KINDS`: ``conv``, ``dense``,
    ``batchnorm``, ``relu``, ``activation``, ``norm``, ``maxpool``, ``avgpool``, ``add``, ``gate``,
    ``product``, ``softmax``, ``other``)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown layer kind(s) {bad}; valid kinds: {list(KINDS)}")
    ks = tuple(sorted(set(kinds)))
    return Matcher(f"kind{ks}", "kind", ks)


def path(*patterns: str) -> Matcher:
    """Match layers whose dotted name matches any glob pattern (``fnmatch``: ``features.*``)."""
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"path() takes glob strings, got {patterns!r}")
    return Matcher(f"path{patterns}", "path", tuple(patterns))


def first_linear(*kinds: str) -> Matcher:
    """Match the first conv/dense layer in program order (optionally only if it is of ``kinds``)."""
    allowed = tuple(sorted(set(kinds))) if kinds else ("conv", "dense")
    return Matcher("first_linear", "first_linear", allowed)


def fed_by(*kinds: str) -> Matcher:
    """Match layers that read the output of a layer of ``kinds`` (attention's ``A·V``: ``fed_by("softmax")``)."""
    kind(*kinds)  # validates
    ks = tuple(sorted(set(kinds)))
    return Matcher(f"fed_by{ks}", "fed_by", ks)


def below(name: str) -> Matcher:
    """Match ``name``, every layer before it in program order, and its sub-layers (``name.*``).

    The signal enters a seeded method at ``name``'s output, so ``name``'s own rule is part of the
    propagation below it (RSP, Attention Backpropagation).
    """
    if not isinstance(name, str):
        raise ValueError(f"below() takes a layer name, got {name!r}")
    return Matcher(f"below({name!r})", "below", (name,))


def above(name: str) -> Matcher:
    """Match every layer that :func:`below` does not: those after ``name`` in program order."""
    if not isinstance(name, str):
        raise ValueError(f"above() takes a layer name, got {name!r}")
    return Matcher(f"above({name!r})", "above", (name,))


def custom(name: str, test: Callable[[LayerInfo, Sequence[LayerInfo]], bool]) -> Matcher:
    """A matcher from a function ``test(info, layers) -> bool`` (compared by the function's identity)."""
    return Matcher(name, "custom", (test,))


def resolve_layers(comp: Composite, layers: Sequence[LayerInfo], *, strict: bool = False,
                   require_match: bool = False) -> Mapping[str, Rule]:
    """Resolve a composite against already traced layers (see :func:`resolve`); ``require_match``
    refuses a composite that matches no layer at all."""
    if not isinstance(comp, Composite):
        raise TypeError(f"expected a Composite, got {type(comp).__name__}")
    out = {}
    for info in layers:
        if info.kind is None:
            continue
        for matcher, rule in comp.entries:
            if matcher.test(info, layers):
                if info.kind not in rule.kinds:
                    raise ValueError(
                        f"composite {comp.name!r}: {matcher!r} gives rule {rule!r} to layer "
                        f"{info.name!r}, a {info.kind} layer, but {rule!r} applies to "
                        f"{sorted(rule.kinds)} only"
                    )
                out[info.name] = rule
                break
    if require_match and not out:
        raise ValueError(_no_match(comp, layers))
    if strict:
        missing = [f"{l.name} ({l.kind})" for l in layers if l.kind in STRICT_KINDS and l.name not in out]
        if missing:
            raise ValueError(
                f"strict mode: {len(missing)} layer(s) have no rule in composite {comp.name!r}: "
                + ", ".join(missing)
                + ". Add (matcher, rule) entries for them, or pass strict=False to keep their "
                "ordinary gradient."
            )
    return MappingProxyType(out)


def _no_match(comp: Composite, layers: Sequence[LayerInfo]) -> str:
    """Why ``comp`` gives no layer a rule: its matchers beside the model's layer names and kinds."""
    leaves = [l for l in layers if l.kind is not None]
    shown = ", ".join(f"{l.name} ({l.kind})" for l in leaves[:12])
    more = f", ... ({len(leaves) - 12} more)" if len(leaves) > 12 else ""
    kinds = sorted({l.kind for l in leaves})
    return (f"composite {comp.name!r} matches no layer of the model, so every layer would keep its plain "
            f"gradient: its matchers [{', '.join(repr(m) for m, _ in comp.entries)}] select none of the "
            f"model's layers [{shown}{more}] (kinds {kinds}). Match these names or kinds; "
            "xa.layers(model, variables, x) lists them all")


def resolve(comp: Composite, model, variables, x, *, strict: bool = False) -> Mapping[str, Rule]:
    """Resolve ``comp`` for ``model`` on inputs shaped like ``x`` into a frozen ``{layer: rule}``.

    Raises:
      ValueError: a rule is matched to a layer kind it does not support, or (``strict=True``) a
        conv/dense/activation/pool layer is left without a rule — all such layers are listed.
    """
    return resolve_layers(comp, trace(model, variables, x).layers, strict=strict)
