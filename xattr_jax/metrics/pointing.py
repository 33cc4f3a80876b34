"""Pointing game (Zhang et al., ECCV 2016), with TorchRay's operational definition (docs/evaluation.md#pointing-game)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from .._constants import POINTING_TOLERANCE
from ._checks import as_map_list, as_mask_list, as_vector, maps_and_masks

__all__ = ["argmax_point", "point_hit", "pointing_game"]


def argmax_point(map: Any) -> tuple[int, int]:
    """The ``(row, col)`` of the map's maximum; the first one in row-major order on ties.

    Args:
      map: 2-D array ``[H, W]`` with finite values.

    Returns:
      ``(row, col)`` ints.

    Raises:
      ValueError: not 2-D, empty, or not finite.
    """
    (m,) = as_map_list([map], "map")
    idx = int(np.argmax(m))  # numpy returns the first occurrence of the maximum
    return divmod(idx, m.shape[1])


def point_hit(point: Sequence[int], mask: Any, tolerance: float = POINTING_TOLERANCE) -> bool:
    """Whether a ground-truth pixel lies strictly within ``tolerance`` pixels of ``point``.

    ``hit = any over GT pixels (u, v) of (u - u0)² + (v - v0)² < tolerance²``, the Euclidean distance
    in pixels of the mask's grid. ``tolerance = 0`` (or any value ≤ 1) means the point itself must be
    on the mask.

    Args:
      point: ``(row, col)`` inside the mask.
      mask: 2-D boolean ``[H, W]`` ground-truth region.
      tolerance: radius in pixels, ≥ 0.

    Returns:
      bool.

    Raises:
      ValueError: negative tolerance, point outside the mask, mask not 2-D.
    """
    (mask,) = as_mask_list([mask], "mask")
    tolerance = float(tolerance)
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    r0, c0 = (int(p) for p in point)
    h, w = mask.shape
    if not (0 <= r0 < h and 0 <= c0 < w):
        raise ValueError(f"point {(r0, c0)} lies outside the mask of shape {mask.shape}")
    if tolerance == 0:
        return bool(mask[r0, c0])
    rad = int(math.ceil(tolerance))
    ra, rb = max(r0 - rad, 0), min(r0 + rad + 1, h)
    ca, cb = max(c0 - rad, 0), min(c0 + rad + 1, w)
    window = mask[ra:rb, ca:cb]
    dr = (np.arange(ra, rb) - r0)[:, None].astype(np.float64)
    dc = (np.arange(ca, cb) - c0)[None, :].astype(np.float64)
    disk = dr * dr + dc * dc < tolerance * tolerance
    return bool(np.any(window & disk))


def _class_means(
    hits: np.ndarray, classes: np.ndarray
) -> tuple[dict[int, float], dict[int, tuple[int, int]]]:
    per_class, counts = {}, {}
    for c in np.unique(classes):
        sel = hits[classes == c]
        per_class[int(c)] = float(np.mean(sel))
        counts[int(c)] = (int(np.sum(sel)), int(sel.size))
    return per_class, counts


def pointing_game(
    maps: Any,
    masks: Any,
    class_ids: Any,
    tolerance: float = POINTING_TOLERANCE,
    difficult: Optional[Any] = None,
) -> dict[str, Any]:
    """Pointing-game accuracy: per-class hit rate, averaged over classes.

    One trial is one ``(map, mask, class)``: the point is the map's argmax (first maximum in
    row-major order, :func:`argmax_point`) and the trial is a hit when a ground-truth pixel lies
    strictly within ``tolerance`` pixels (``Δu² + Δv² < tolerance²``, :func:`point_hit`).
    ``acc_c = hits_c / trials_c`` for each class ``c`` with at least one trial, and
    ``all = mean_c acc_c`` (classes weigh equally, whatever their number of trials).
    ``difficult`` is the same mean computed only over the trials flagged difficult (classes with no
    difficult trial are left out of it).

    Maps and masks must have the same resolution: resize maps to the original image size first
    (:func:`xattr_jax.metrics.resize_map`), since the 15 px tolerance is measured there.

    Args:
      maps: ``[N, H, W]`` or a list of N ``[H_i, W_i]`` arrays (finite).
      masks: same layout, boolean ground-truth regions of the trial's class.
      class_ids: ``[N]`` ints, the class of each trial.
      tolerance: radius in pixels (default 15; 0 = the point must be on the mask).
      difficult: optional ``[N]`` booleans flagging the difficult trials.

    Returns:
      dict with ``"all"`` (float), ``"difficult"`` (float, or None when ``difficult`` is None or no
      trial is difficult), ``"per_class"`` ({class id: accuracy}), ``"per_class_difficult"`` (same
      over difficult trials, or None), ``"counts"`` ({class id: (hits, trials)}), ``"hits"``
      (``[N]`` bool per trial), ``"points"`` (``[N, 2]`` row, col), ``"num_trials"`` and
      ``"num_difficult"``.

    Raises:
      ValueError: mismatched lengths or shapes, non-finite maps, non-boolean masks, no trials.
    """
    maps_l, masks_l = maps_and_masks(maps, masks, "pointing_game needs at least one trial")
    n = len(maps_l)
    classes = as_vector(class_ids, n, "class_ids", np.int64)
    flags = None if difficult is None else as_vector(difficult, n, "difficult", bool)

    points = np.zeros((n, 2), np.int64)
    hits = np.zeros((n,), bool)
    for i, (m, g) in enumerate(zip(maps_l, masks_l)):
        points[i] = argmax_point(m)
        hits[i] = point_hit(points[i], g, tolerance)

    per_class, counts = _class_means(hits, classes)
    result: dict[str, Any] = {
        "all": float(np.mean(list(per_class.values()))),
        "difficult": None,
        "per_class": per_class,
        "per_class_difficult": None,
        "counts": counts,
        "hits": hits,
        "points": points,
        "num_trials": n,
        "num_difficult": None if flags is None else int(flags.sum()),
    }
    if flags is not None and flags.any():
        per_d, _ = _class_means(hits[flags], classes[flags])
        result["per_class_difficult"] = per_d
        result["difficult"] = float(np.mean(list(per_d.values())))
    return result
