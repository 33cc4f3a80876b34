"""What a map's colours mean: signed or not, the clipping limit, and maps with nothing to show.

Conventions (those of Captum's and Zennit's figures):

* **Signed maps** (their values can be negative: relevance that speaks *against* the class) are
  drawn on a diverging colour map centred at 0, with symmetric limits ``[−L, L]``
  (``TwoSlopeNorm(vcenter=0)``): white is 0, red positive, blue negative. :func:`is_signed`
  decides.
* **Unsigned maps** (magnitudes, ReLU'd maps, probabilities of a winner) are drawn on a
  sequential colour map over ``[0, L]``.
* **Outliers**: ``L`` is the ``percentile``-th percentile (default 99.5) of ``|map|`` over the finite
  values, so a few extreme pixels (common in gradient maps) do not wash out the rest; values beyond
  ``L`` take the end colours (the colour bar's arrow shows it).
* **Nothing to show**: a map that is all zero or holds NaN/inf is drawn with a visible warning in
  its panel, and :class:`EmptyMapWarning` is issued (:func:`check_map`).
"""

from __future__ import annotations

import warnings
from typing import Iterable, Optional

import numpy as np

__all__ = [
    "EmptyMapWarning",
    "SIGNED_METHODS",
    "UNSIGNED_METHODS",
    "SIGNED_CMAP",
    "UNSIGNED_CMAP",
    "PERCENTILE",
    "is_signed",
    "clip_limit",
    "map_norm",
    "check_map",
    "as_map",
    "pick_map",
]

#: Methods whose 2-D map can be negative: channel sums of signed relevance (LRP, integrated
#: gradients, gradient × input, guided-non-linearity gradient/IG, RSP) and CAM (no ReLU).
SIGNED_METHODS = frozenset({
    "lrp", "integrated_gradients", "gnl_integrated_gradients", "input_x_gradient", "gnl_gradient",
    "rsp", "cam",
})  # fmt: skip
#: Methods whose 2-D map is never negative: gradient magnitudes (max |·| over channels: gradient,
#: guided backprop, deconvnet, SmoothGrad), ReLU'd maps (Grad-CAM, contrastive EB) and the
#: non-negative propagations (Excitation Backprop, Attention Backpropagation's default rule).
UNSIGNED_METHODS = frozenset({
    "gradient", "guided_backprop", "deconvnet", "smoothgrad", "grad_cam", "excitation_backprop",
    "contrastive_excitation_backprop", "attention_backprop",
})  # fmt: skip

SIGNED_CMAP = "RdBu_r"  # diverging: blue < 0 < red, white at 0
UNSIGNED_CMAP = "inferno"  # sequential, perceptually uniform
PERCENTILE = 99.5
_NEGATIVE_TOL = 1e-6  # negatives smaller than this fraction of max|map| are rounding, not sign


class EmptyMapWarning(UserWarning):
    """A map that is all zero or holds non-finite values was drawn (its panel says so too)."""


def as_map(m, name: str = "map") -> np.ndarray:
    """A 2-D float64 map from ``m`` (``[h, w]``, or ``[1, h, w]`` / ``[1, 1, h, w]``)."""
    a = np.asarray(m, dtype=np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be one 2-D map [h, w], got shape {np.shape(m)}; pick one "
                         "example, e.g. res.map[0]")  # fmt: skip
    return a


def pick_map(m, name: str, sample: int, column: int) -> np.ndarray:
    """The 2-D float64 map of example ``sample`` (and target ``column``) from a layer map ``m``:
    ``[h, w]``, ``[N, h, w]`` or ``[N, K, h, w]``; ValueError on any other rank."""
    a = np.asarray(m, np.float64)
    if a.ndim == 4:
        a = a[sample, column]
    elif a.ndim == 3:
        a = a[sample]
    elif a.ndim != 2:
        raise ValueError(f"map {name!r} has shape {a.shape}; expected [h, w], [N, h, w] or [N, K, h, w]")
    return a


def _map_list(maps) -> list:
    """One map (anything 2-D) or a sequence of maps (possibly of different sizes) as a list."""
    if hasattr(maps, "ndim") and hasattr(maps, "shape"):
        return [maps] if maps.ndim == 2 else list(maps)
    if isinstance(maps, (list, tuple)) and maps and all(np.ndim(r) == 1 for r in maps):
        return [np.asarray(maps)]  # one map written as nested lists
    return list(maps)


def _has_negative(maps: Iterable[np.ndarray]) -> bool:
    vals = [np.asarray(m, np.float64) for m in maps]
    vals = [v[np.isfinite(v)] for v in vals]
    vals = [v for v in vals if v.size]
    if not vals:
        return False
    top = max(float(np.max(np.abs(v))) for v in vals)
    return top > 0 and any(float(v.min()) < -_NEGATIVE_TOL * top for v in vals)


def is_signed(method: Optional[str] = None, maps=None) -> bool:
    """Whether a method's maps are drawn as signed (diverging, centred at 0).

    The rule: signed if ``method`` is in :data:`SIGNED_METHODS`, or if any of ``maps`` (one map or
    a sequence of maps) has a negative value below ``−1e-6·max|map|`` (a map with negative values
    is never drawn on a sequential scale, where its negative part would vanish; this covers
    unknown methods and options such as Attention Backpropagation's ``rule="alpha2beta1"``).
    Otherwise unsigned if the method is in :data:`UNSIGNED_METHODS` or maps were given.

    Raises:
      ValueError: an unknown method and no maps to look at.
    """
    if method in SIGNED_METHODS:
        return True
    if maps is not None:
        return _has_negative(_map_list(maps))
    if method in UNSIGNED_METHODS:
        return False
    known = sorted(SIGNED_METHODS | UNSIGNED_METHODS)
    raise ValueError(f"unknown method {method!r} and no map to look at; give maps= (signed if any value "
                     f"is negative) or one of {known}")  # fmt: skip


def clip_limit(maps, percentile: float = PERCENTILE) -> float:
    """``L``: the ``percentile``-th percentile of ``|map|`` over the finite values of all ``maps``.

    Falls back to ``max|map|`` when the percentile is 0 (a sparse map), and to 1 for an all-zero
    or all-non-finite input (so that a norm can still be built).
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    seq = _map_list(maps)
    vals = np.concatenate([np.abs(np.asarray(m, np.float64)).ravel() for m in seq]) if seq else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 1.0
    lim = float(np.percentile(vals, percentile))
    if lim <= 0:
        lim = float(vals.max())
    return lim if lim > 0 else 1.0


def map_norm(maps, signed: bool, percentile: float = PERCENTILE):
    """The matplotlib norm for ``maps``: ``TwoSlopeNorm(vmin=−L, vcenter=0, vmax=L)`` when signed,
    else ``Normalize(0, L)``; ``L`` from :func:`clip_limit`. One norm for all ``maps``."""
    from matplotlib.colors import Normalize, TwoSlopeNorm

    lim = clip_limit(maps, percentile)
    if signed:
        return TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
    return Normalize(vmin=0.0, vmax=lim)


def check_map(m, label: str = "map", stacklevel: int = 3) -> Optional[str]:
    """The problem with a map, if any (``None`` when it has something to show).

    All zero, or non-finite values (NaN from a bad input under a transformation, an overflow):
    returns a short text for the panel and issues :class:`EmptyMapWarning` naming ``label``.
    """
    a = np.asarray(m, np.float64)
    bad = ~np.isfinite(a)
    problem = None
    if bad.all():
        problem = "no finite value (all NaN/inf)"
    elif bad.any():
        problem = f"{int(bad.sum())} non-finite value(s) (NaN/inf), left blank"
    elif not np.any(a):
        problem = "all-zero map: nothing to show"
    if problem is not None:
        warnings.warn(f"{label}: {problem}", EmptyMapWarning, stacklevel=stacklevel)
    return problem
