"""Composites: ordered ``(matcher, rule)`` pairs, first match wins, resolved to ``{layer: rule}``.

A matcher selects layers by kind (``kind("conv", "dense")``), by dotted-path glob
(``path("features.*")``) or as the first linear layer of the network (``first_linear()``).
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
    "resolve",
    "resolve_layers",
    "STRICT_KINDS",
]

#: Layer kinds that strict mode insists have a rule.
STRICT_KINDS = frozenset({"conv", "dense", "relu", "maxpool", "avgpool"})


class Matcher(NamedTuple):
    """Selects layers: ``test(info, layers) -> bool`` with ``layers`` every layer in call order."""

    name: str
    test: Callable[[LayerInfo, Sequence[LayerInfo]], bool]

    def __repr__(self) -> str:
        return self.name


class Composite(NamedTuple):
    """Ordered ``(matcher, rule)`` pairs; the first matcher that selects a layer gives its rule."""

    entries: tuple
    name: str = "composite"

    def __repr__(self) -> str:
        inner = ", ".join(f"{m!r} -> {r.name}" for m, r in self.entries)
        return f"Composite({self.name}: {inner})"


def composite(*pairs, name: str = "composite") -> Composite:
    """Build a :class:`Composite` from ``(matcher, rule)`` pairs (a bare ``str`` matcher is a glob)."""
    entries = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"composite entry {i} must be a (matcher, rule) pair, got {pair!r}")
        m, r = pair
        if isinstance(m, str):
            m = path(m)
        if not isinstance(m, Matcher):
            raise TypeError(f"composite entry {i}: {m!r} is not a Matcher (use kind(), path(), first_linear())")
        if not isinstance(r, Rule):
            raise TypeError(f"composite entry {i}: {r!r} is not a Rule")
        entries.append((m, r))
    return Composite(tuple(entries), name)


def kind(*kinds: str) -> Matcher:
    """Match layers of the given kinds (``conv``, ``dense``, ``batchnorm``, ``relu``, ``maxpool``,
    ``avgpool``, ``add``, ``other``; see :mod:`xattr_jax.program`)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown layer kind(s) {bad}; valid kinds: {list(KINDS)}")
    ks = frozenset(kinds)
    return Matcher(f"kind{tuple(sorted(ks))}", lambda info, layers: info.kind in ks)


def path(*patterns: str) -> Matcher:
    """Match layers whose dotted name matches any glob pattern (``fnmatch``: ``features.*``)."""
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"path() takes glob strings, got {patterns!r}")
    return Matcher(
        f"path{patterns}", lambda info, layers: any(fnmatch.fnmatchcase(info.name, p) for p in patterns)
    )


def first_linear(*kinds: str) -> Matcher:
    """Match the first conv/dense layer in call order (optionally only if it is of ``kinds``)."""
    allowed = frozenset(kinds) if kinds else frozenset({"conv", "dense"})

    def test(info, layers):
        first = next((l for l in layers if l.kind in ("conv", "dense")), None)
        return first is not None and info.name == first.name and info.kind in allowed

    return Matcher("first_linear", test)


def resolve_layers(comp: Composite, layers: Sequence[LayerInfo], *, strict: bool = False) -> Mapping[str, Rule]:
    """Resolve a composite against already traced layers (see :func:`resolve`)."""
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
                        f"composite {comp.name!r}: {matcher!r} gives rule {rule.name} to layer "
                        f"{info.name!r}, a {info.kind} layer, but {rule.name} applies to "
                        f"{sorted(rule.kinds)} only"
                    )
                out[info.name] = rule
                break
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


def resolve(comp: Composite, model, variables, x, *, strict: bool = False) -> Mapping[str, Rule]:
    """Resolve ``comp`` for ``model`` on inputs shaped like ``x`` into a frozen ``{layer: rule}``.

    Raises:
      ValueError: a rule is matched to a layer kind it does not support, or (``strict=True``) a
        conv/dense/activation/pool layer is left without a rule — all such layers are listed.
    """
    return resolve_layers(comp, trace(model, variables, x).layers, strict=strict)
