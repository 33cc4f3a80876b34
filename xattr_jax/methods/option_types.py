"""Method options: a default, a check of type and range, and a one-line meaning.

Every method declares its options as ``{name: Option}``; :meth:`Method.check_options` runs the
checks when an attributor is built, so a bad option fails at once with a message that names the
option, what it must be and what it got (``steps must be an int >= 1, got 2.5 (float)``).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import numpy as np

__all__ = ["Option", "integer", "real", "choice", "boolean", "optional", "layer_name", "anything"]


class Option(NamedTuple):
    """One method option: ``default``, ``check(name, value)`` (raises on a bad value), ``doc``."""

    default: Any
    check: Callable
    doc: str


def _got(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def integer(low: int = 1) -> Callable:
    """An ``int`` (not a bool or float) ``>= low``."""

    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {_got(value)}")

    return check


def real(low: float | None = None, *, inclusive: bool = True) -> Callable:
    """A finite real number (``>= low``, or ``> low`` when not inclusive)."""

    def check(name, value):
        ok = not isinstance(value, bool) and isinstance(value, (numbers.Real, np.floating, np.integer))
        ok = ok and np.isfinite(float(value))
        if ok and low is not None:
            ok = float(value) >= low if inclusive else float(value) > low
        if not ok:
            bound = "" if low is None else f" {'>=' if inclusive else '>'} {low}"
            raise ValueError(f"{name} must be a finite real number{bound}, got {_got(value)}")

    return check


def choice(*values) -> Callable:
    """One of ``values``."""

    def check(name, value):
        if not isinstance(value, str) or value not in values:
            raise ValueError(f"{name} must be one of {list(values)}, got {_got(value)}")

    return check


def boolean() -> Callable:
    def check(name, value):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {_got(value)}")

    return check


def optional(inner: Callable) -> Callable:
    """``None`` or what ``inner`` accepts."""

    def check(name, value):
        if value is not None:
            inner(name, value)

    return check


def layer_name() -> Callable:
    """``None`` or a dotted layer name (checked against the layer table when the model is traced)."""

    def check(name, value):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a layer name (str) or None, got {_got(value)}")

    return check


def anything() -> Callable:
    """No check here (the method checks the value where it has the context to)."""
    return lambda name, value: None
