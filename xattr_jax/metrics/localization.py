"""Weakly-supervised localisation boxes from saliency maps (Grad-CAM protocol, docs/evaluation.md#localisation-boxes).

Conventions used throughout this module:

* A box is ``(x0, y0, x1, y1)`` in pixel indices, **inclusive** on both ends (x = column,
  y = row), so a single pixel is ``(c, r, c, r)`` and the box's area is
  ``(x1 - x0 + 1) * (y1 - y0 + 1)`` — the VOC/ILSVRC convention, with 0-based indices.
* Binarisation keeps the pixels with ``map >= threshold * max(map)``; a map whose maximum is
  ≤ 0 has no foreground and gives no box (the trial counts as a miss).
* Components are **8-connected** (diagonal neighbours connect, as the contour tracing used by the
  reference Grad-CAM/CAM code does); the largest by pixel count wins, ties going to the component
  whose first pixel comes first in raster order.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .._constants import BOX_THRESHOLD
from ._checks import as_map_list, as_vector
from .components import connected_components

__all__ = ["box_from_map", "box_iou", "localization_accuracy", "max_box_acc"]

_NORMALIZE = ("max", "minmax")


def _prepare(m: np.ndarray, normalize: str) -> np.ndarray:
    if normalize == "minmax":
        lo, hi = m.min(), m.max()
        return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return m


def _box_from_prepared(m: np.ndarray, threshold: float, connectivity: int) -> Optional[np.ndarray]:
    top = m.max()
    if not top > 0:
        return None
    comp = connected_components(m >= threshold * top, connectivity)
    if comp.sizes.size == 0:
        return None
    return comp.boxes[int(np.argmax(comp.sizes))].copy()


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0 <= t <= 1:
        raise ValueError(f"threshold must be a fraction of the map's maximum in [0, 1], got {threshold}")
    return t


def _check_normalize(normalize: str) -> None:
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")


def box_from_map(
    map: Any, threshold: float = BOX_THRESHOLD, *, normalize: str = "max", connectivity: int = 8
) -> Optional[np.ndarray]:
    """Bounding box of the largest connected region above ``threshold`` × the map's maximum.

    ``B = bbox(largest 8-connected component of {p : map[p] >= threshold · max(map)})``.

    Args:
      map: 2-D ``[H, W]`` finite array.
      threshold: fraction of the maximum, in [0, 1] (Grad-CAM: 0.15; CAM: 0.20).
      normalize: ``"max"`` (default: threshold relative to the maximum, for non-negative maps) or
        ``"minmax"`` (rescale to [0, 1] by min and max first, as in the MaxBoxAcc benchmark).
      connectivity: 8 (default) or 4.

    Returns:
      int64 ``[4]`` box ``(x0, y0, x1, y1)``, inclusive; None when the map's maximum is ≤ 0.

    Raises:
      ValueError: wrong rank, non-finite values, threshold outside [0, 1], unknown normalize.
    """
    (m,) = as_map_list([map], "map")
    _check_normalize(normalize)
    return _box_from_prepared(_prepare(m, normalize), _check_threshold(threshold), connectivity)


def _check_boxes(b: Any, name: str) -> np.ndarray:
    arr = np.asarray(b, dtype=np.float64)
    if arr.shape[-1:] != (4,):
        raise ValueError(f"{name} must have shape [..., 4] (x0, y0, x1, y1), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite coordinates")
    if np.any(arr[..., 2] < arr[..., 0]) or np.any(arr[..., 3] < arr[..., 1]):
        raise ValueError(f"{name} has boxes with x1 < x0 or y1 < y0 (boxes are (x0, y0, x1, y1))")
    return arr


def box_iou(a: Any, b: Any) -> np.ndarray:
    """Intersection over union of inclusive-pixel boxes, broadcasting over leading dimensions.

    ``area(B) = (x1 - x0 + 1)(y1 - y0 + 1)``;
    ``IoU = area(A ∩ B) / (area(A) + area(B) - area(A ∩ B))``.

    Args:
      a: ``[..., 4]`` boxes ``(x0, y0, x1, y1)``, inclusive.
      b: ``[..., 4]`` boxes, broadcastable against ``a``.

    Returns:
      float64 array of the broadcast leading shape (a 0-d array for two single boxes).

    Raises:
      ValueError: last dimension not 4, non-finite, or x1 < x0 / y1 < y0.
    """
    a = _check_boxes(a, "a")
    b = _check_boxes(b, "b")
    if a.ndim != b.ndim:  # explicit broadcasting (rank promotion is an error in this project)
        nd = max(a.ndim, b.ndim)
        a = a.reshape((1,) * (nd - a.ndim) + a.shape)
        b = b.reshape((1,) * (nd - b.ndim) + b.shape)
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


def _gt_list(gt_boxes: Sequence[Any], n: int) -> list[np.ndarray]:
    if len(gt_boxes) != n:
        raise ValueError(f"gt_boxes must have one entry per map: got {len(gt_boxes)} for {n} maps")
    out = []
    for i, g in enumerate(gt_boxes):
        arr = _check_boxes(g, f"gt_boxes[{i}]")
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(
                f"gt_boxes[{i}] must be a box [4] or a non-empty list of boxes [K, 4], got {arr.shape}"
            )
        out.append(arr)
    return out


def _best_iou(box: Optional[np.ndarray], gts: np.ndarray) -> float:
    if box is None:
        return 0.0
    return float(np.max(box_iou(box[None].astype(np.float64), gts)))


def localization_accuracy(
    maps: Any,
    gt_boxes: Sequence[Any],
    threshold: float = BOX_THRESHOLD,
    iou: float = 0.5,
    *,
    class_correct: Optional[Any] = None,
    normalize: str = "max",
    connectivity: int = 8,
) -> dict[str, Any]:
    """Fraction of trials whose map box overlaps a ground-truth box with IoU ≥ ``iou``.

    ``correct_i = [max_k IoU(box_from_map(map_i), G_ik) >= iou] ∧ class_correct_i``;
    ``accuracy = mean_i correct_i`` (localisation error = 1 − accuracy).

    Args:
      maps: ``[N, H, W]`` or a list of ``[H_i, W_i]`` maps (in the boxes' pixel grid).
      gt_boxes: N entries, each a box ``[4]`` or boxes ``[K, 4]`` (inclusive pixel indices) of the
        trial's class.
      threshold: binarisation threshold as a fraction of the map's maximum (Grad-CAM: 0.15).
      iou: IoU needed for a correct box (0.5).
      class_correct: optional ``[N]`` booleans; a trial whose class guess is wrong is never correct.
      normalize, connectivity: as in :func:`box_from_map`.

    Returns:
      dict with ``"accuracy"`` (float), ``"correct"`` (``[N]`` bool), ``"iou"`` (``[N]`` best IoU,
      0 where there is no box) and ``"boxes"`` (list of ``[4]`` boxes or None).

    Raises:
      ValueError: mismatched lengths, malformed boxes, non-finite maps, thresholds out of range.
    """
    maps_l = as_map_list(maps, "maps")
    n = len(maps_l)
    if n == 0:
        raise ValueError("localization_accuracy needs at least one map")
    gts = _gt_list(gt_boxes, n)
    t = _check_threshold(threshold)
    _check_normalize(normalize)
    if not 0 <= float(iou) <= 1:
        raise ValueError(f"iou must be in [0, 1], got {iou}")
    cls_ok = (
        np.ones(n, bool) if class_correct is None else as_vector(class_correct, n, "class_correct", bool)
    )
    boxes = [_box_from_prepared(_prepare(m, normalize), t, connectivity) for m in maps_l]
    ious = np.array([_best_iou(b, g) for b, g in zip(boxes, gts)])
    correct = (ious >= float(iou)) & cls_ok
    return {"accuracy": float(correct.mean()), "correct": correct, "iou": ious, "boxes": boxes}


def max_box_acc(
    maps: Any,
    gt_boxes: Sequence[Any],
    thresholds: Any = None,
    iou: float = 0.5,
    *,
    normalize: str = "max",
    connectivity: int = 8,
) -> dict[str, Any]:
    """Best localisation accuracy over a sweep of binarisation thresholds (MaxBoxAcc).

    ``acc(t) = mean_i [max_k IoU(box_t(map_i), G_ik) >= iou]`` for each ``t`` in ``thresholds``;
    ``MaxBoxAcc = max_t acc(t)``, reported with the first threshold that attains it.

    Args:
      maps: ``[N, H, W]`` or a list of ``[H_i, W_i]`` maps.
      gt_boxes: as in :func:`localization_accuracy`.
      thresholds: 1-D fractions in [0, 1]; default ``np.arange(0, 1, 0.01)``.
      iou: IoU needed for a correct box.
      normalize: ``"max"`` (default) or ``"minmax"`` (the MaxBoxAcc benchmark min–max normalises
        maps before thresholding), as in :func:`box_from_map`.
      connectivity: 8 (default) or 4.

    Returns:
      dict with ``"accuracy"`` (best), ``"threshold"`` (its threshold), ``"curve"`` (accuracy per
      threshold) and ``"thresholds"``.

    Raises:
      ValueError: as :func:`localization_accuracy`, or an empty threshold list.
    """
    maps_l = as_map_list(maps, "maps")
    n = len(maps_l)
    if n == 0:
        raise ValueError("max_box_acc needs at least one map")
    gts = _gt_list(gt_boxes, n)
    _check_normalize(normalize)
    ts = np.arange(0, 1, 0.01) if thresholds is None else np.asarray(thresholds, np.float64)
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {ts.shape}")
    ts = np.array([_check_threshold(t) for t in ts])
    prepared = [_prepare(m, normalize) for m in maps_l]
    curve = np.zeros(ts.size)
    for j, t in enumerate(ts):
        hits = [
            _best_iou(_box_from_prepared(m, t, connectivity), g) >= float(iou)
            for m, g in zip(prepared, gts)
        ]
        curve[j] = np.mean(hits)
    best = int(np.argmax(curve))
    return {
        "accuracy": float(curve[best]),
        "threshold": float(ts[best]),
        "curve": curve,
        "thresholds": ts,
    }
