"""Connected components of 2-D boolean masks, with their sizes and boxes (``scipy.ndimage``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["Components", "connected_components", "label_components"]


class Components(NamedTuple):
    """Per-component statistics, components numbered in raster order of their first pixel.

    Attributes:
      sizes: ``[K]`` pixel counts.
      boxes: ``[K, 4]`` int bounding boxes ``(x0, y0, x1, y1)``, inclusive pixel indices
        (x = column, y = row).
      labels: int32 ``[H, W]``, 0 for background and ``1..K`` for the components.
    """

    sizes: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _check(mask: Any, connectivity: int) -> np.ndarray:
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D [H, W] array, got shape {m.shape}")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number):
            raise TypeError(f"mask must be boolean, got dtype {m.dtype}")
        m = m != 0
    return m


def label_components(mask: Any, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label image of the connected components of a boolean mask (``scipy.ndimage.label``).

    Args:
      mask: 2-D boolean (or 0/non-zero) array ``[H, W]``.
      connectivity: 8 (default, diagonal neighbours connect) or 4.

    Returns:
      ``(labels, K)``: int32 ``[H, W]`` with 0 for background and 1..K in raster order of each
      component's first pixel, and K.

    Raises:
      ValueError: the mask is not 2-D or connectivity is not 4 or 8.
    """
    from scipy import ndimage

    m = _check(mask, connectivity)
    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    labels, k = ndimage.label(m, structure=structure)
    return labels.astype(np.int32), int(k)


def connected_components(mask: Any, connectivity: int = 8) -> Components:
    """Connected components of a boolean mask, their sizes and bounding boxes.

    Raises:
      ValueError: the mask is not 2-D or connectivity is not 4 or 8.
    """
    from scipy import ndimage

    labels, k = label_components(mask, connectivity)
    sizes = np.bincount(labels.ravel(), minlength=k + 1)[1:].astype(np.int64)
    boxes = np.array([[sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1]
                      for sl in ndimage.find_objects(labels)], np.int64).reshape(-1, 4)  # fmt: skip
    return Components(sizes, boxes, labels)
