"""Mean IoU of binarised saliency maps against segmentation masks (RSP's mIoU, docs/evaluation.md#miou, our interpretation)."""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from ._checks import as_map_list, maps_and_masks

__all__ = ["otsu_threshold", "binarize_map", "miou"]


def otsu_threshold(values: Any) -> float:
    """Otsu's threshold, computed exactly over the distinct values (one histogram bin per value).

    For every split of the sorted distinct values into a low class ``{v <= t}`` and a high class
    ``{v > t}`` the between-class variance ``σ_B²(t) = w_0 w_1 (μ_0 − μ_1)²`` (``w`` = pixel
    fractions, ``μ`` = class means) is computed; the returned ``t`` is the largest value of the low
    class at the first maximum, so ``values > t`` is the foreground.

    Args:
      values: any array of finite numbers.

    Returns:
      float threshold; for constant input, that constant (no pixel is above it).

    Raises:
      ValueError: empty or non-finite input.
    """
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("otsu_threshold needs at least one value")
    if not np.all(np.isfinite(v)):
        raise ValueError("otsu_threshold got NaN or infinite values")
    uniq, counts = np.unique(v, return_counts=True)
    if uniq.size == 1:
        return float(uniq[0])
    w0 = np.cumsum(counts)[:-1].astype(np.float64)  # low class = uniq[:k+1]
    s0 = np.cumsum(counts * uniq)[:-1]
    total, s_total = float(v.size), float(np.sum(counts * uniq))
    w1 = total - w0
    mu0 = s0 / w0
    mu1 = (s_total - s0) / w1
    between = (w0 / total) * (w1 / total) * (mu0 - mu1) ** 2
    return float(uniq[int(np.argmax(between))])


_THRESHOLDS = ("mean", "otsu")


def binarize_map(map: Any, threshold: Union[str, float] = "mean") -> tuple[np.ndarray, float]:
    """Foreground of the positive part of a max-normalised map.

    ``m = max(map, 0) / max(max(map), 0)`` (all zeros when the map has no positive value);
    foreground ``= m > t`` with ``t = mean(m)`` (``"mean"``), Otsu's threshold of ``m``
    (``"otsu"``), or a fixed ``t`` in [0, 1].

    Args:
      map: 2-D finite array.
      threshold: ``"mean"``, ``"otsu"`` or a float in [0, 1].

    Returns:
      ``(mask, t)``: boolean ``[H, W]`` foreground and the threshold used (on the normalised map).

    Raises:
      ValueError: bad map or threshold.
    """
    (m,) = as_map_list([map], "map")
    return _binarize(m, _check_threshold(threshold))


def _check_threshold(threshold: Union[str, float]) -> Union[str, float]:
    if isinstance(threshold, str):
        if threshold not in _THRESHOLDS:
            raise ValueError(f"threshold must be 'mean', 'otsu' or a float in [0, 1], got {threshold!r}")
        return threshold
    t = float(threshold)
    if not 0 <= t <= 1:
        raise ValueError(
            f"a fixed threshold applies to the max-normalised map and must be in [0, 1], got {t}"
        )
    return t


def _binarize(m: np.ndarray, threshold: Union[str, float]) -> tuple[np.ndarray, float]:
    pos = np.maximum(m, 0.0)
    top = pos.max()
    pos = pos / top if top > 0 else pos
    if threshold == "mean":
        t = float(pos.mean())
    elif threshold == "otsu":
        t = otsu_threshold(pos)
    else:
        t = float(threshold)
    return pos > t, t


def _iou(inter: float, union: float) -> float:
    return 1.0 if union == 0 else inter / union


def miou(
    maps: Any, masks: Any, threshold: Union[str, float] = "mean", reduction: str = "dataset"
) -> dict[str, Any]:
    """Mean of the foreground and background IoU between binarised maps and masks.

    Each map is binarised by :func:`binarize_map` (positive part, max-normalised, ``> t``). With
    ``P`` the predicted foreground and ``G`` the mask, the two classes' IoUs are
    ``IoU_fg = |P ∩ G| / |P ∪ G|`` and ``IoU_bg = |¬P ∩ ¬G| / |¬P ∪ ¬G|`` and
    ``mIoU = (IoU_fg + IoU_bg) / 2``.

    * ``reduction="dataset"`` (default, as the ImageNet-segmentation saliency benchmark): the
      intersections and unions are summed over all images before dividing.
    * ``reduction="image"``: mIoU per image, then the mean over images (an empty union counts as
      IoU 1: prediction and truth agree that the class is absent).

    Args:
      maps: ``[N, H, W]`` or a list of ``[H_i, W_i]`` finite maps (at the masks' resolution).
      masks: boolean masks with the same shapes.
      threshold: ``"mean"`` (default), ``"otsu"`` or a float in [0, 1].
      reduction: ``"dataset"`` or ``"image"``.

    Returns:
      dict with ``"miou"``, ``"iou_fg"``, ``"iou_bg"`` and ``"pixel_accuracy"`` (floats, under the
      chosen reduction), ``"per_image"`` (``[N]`` per-image mIoU) and ``"thresholds"`` (``[N]``).

    Raises:
      ValueError: mismatched shapes or lengths, bad threshold or reduction, non-finite maps.
    """
    if reduction not in ("dataset", "image"):
        raise ValueError(f"reduction must be 'dataset' or 'image', got {reduction!r}")
    thr = _check_threshold(threshold)
    maps_l, masks_l = maps_and_masks(maps, masks, "miou needs at least one map")
    n = len(maps_l)
    stats = np.zeros((n, 5))  # inter_fg, union_fg, inter_bg, union_bg, correct pixels
    sizes = np.zeros(n)
    ts = np.zeros(n)
    for i, (m, g) in enumerate(zip(maps_l, masks_l)):
        p, ts[i] = _binarize(m, thr)
        stats[i] = [np.sum(p & g), np.sum(p | g), np.sum(~p & ~g), np.sum(~p | ~g), np.sum(p == g)]
        sizes[i] = g.size
    per_fg = np.array([_iou(a, b) for a, b in stats[:, :2]])
    per_bg = np.array([_iou(a, b) for a, b in stats[:, 2:4]])
    per_image = (per_fg + per_bg) / 2
    if reduction == "dataset":
        tot = stats.sum(0)
        fg, bg = _iou(tot[0], tot[1]), _iou(tot[2], tot[3])
        acc = tot[4] / sizes.sum()
    else:
        fg, bg = float(per_fg.mean()), float(per_bg.mean())
        acc = float(np.mean(stats[:, 4] / sizes))
    return {
        "miou": (fg + bg) / 2,
        "iou_fg": float(fg),
        "iou_bg": float(bg),
        "pixel_accuracy": float(acc),
        "per_image": per_image,
        "thresholds": ts,
    }
