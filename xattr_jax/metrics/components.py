"""Connected-component labelling of 2-D boolean masks in numpy (run-length union-find)."""

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
      run_rows, run_starts, run_ends, run_labels: the horizontal runs of the mask (row, first
        column, one-past-last column, component index), in raster order.
    """

    sizes: np.ndarray
    boxes: np.ndarray
    run_rows: np.ndarray
    run_starts: np.ndarray
    run_ends: np.ndarray
    run_labels: np.ndarray


def _check_mask(mask: Any) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D [H, W] array, got shape {m.shape}")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number):
            raise TypeError(f"mask must be boolean, got dtype {m.dtype}")
        m = m != 0
    return m


def _find(parent: list[int], i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def connected_components(mask: Any, connectivity: int = 8) -> Components:
    """Connected components of a boolean mask and their sizes and bounding boxes.

    The mask is cut into horizontal runs of foreground pixels (vectorised), runs on adjacent rows
    are joined when they touch (8-connectivity: their column ranges overlap or meet diagonally,
    ``start_a <= end_b`` and ``start_b <= end_a`` with exclusive ends; 4-connectivity: they share a
    column), and the runs are merged with a union-find. The work in Python is proportional to the
    number of runs, not of pixels.

    Args:
      mask: 2-D boolean (or 0/non-zero) array ``[H, W]``.
      connectivity: 8 (default, diagonal neighbours connect) or 4.

    Returns:
      :class:`Components`; components are numbered 0..K-1 in the raster order of their first pixel
      (the order ``scipy.ndimage.label`` uses, minus one).

    Raises:
      ValueError: the mask is not 2-D or connectivity is not 4 or 8.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    m = _check_mask(mask)
    h, w = m.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = m
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)  # exclusive ends, paired with starts (same raster order)
    nr = rows.size
    empty = np.zeros((0,), np.int64)
    if nr == 0:
        return Components(empty, np.zeros((0, 4), np.int64), empty, empty, empty, empty)

    # Candidate neighbours of run b: the runs a on row(b) - 1 whose column range touches b's.
    # Runs on one row are sorted and disjoint, so those a form a contiguous index range.
    slack = 1 if connectivity == 8 else 0
    row_first = np.searchsorted(rows, np.arange(h + 1), side="left")
    parent = list(range(nr))
    # [lo, hi): first run a with end_a + slack > start_b, first with start_a >= end_b + slack
    lo = np.zeros(nr, np.int64)
    hi = np.zeros(nr, np.int64)
    for r in np.unique(rows[rows > 0]).tolist():
        a0, a1 = row_first[r - 1], row_first[r]
        b0, b1 = row_first[r], row_first[r + 1]
        if a0 == a1:
            continue
        lo[b0:b1] = a0 + np.searchsorted(ends[a0:a1] + slack, starts[b0:b1], side="right")
        hi[b0:b1] = a0 + np.searchsorted(starts[a0:a1], ends[b0:b1] + slack, side="left")
    counts = np.maximum(hi - lo, 0)
    b_idx = np.repeat(np.arange(nr), counts)
    offsets = np.arange(b_idx.size) - np.repeat(np.cumsum(counts) - counts, counts)
    a_idx = np.repeat(lo, counts) + offsets
    for a, b in zip(a_idx.tolist(), b_idx.tolist()):
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            if ra < rb:
                parent[rb] = ra
            else:
                parent[ra] = rb
    roots = np.array([_find(parent, i) for i in range(nr)], np.int64)
    # roots are the smallest run index of each component, i.e. its first run in raster order
    uniq, labels = np.unique(roots, return_inverse=True)
    k = uniq.size
    sizes = np.zeros(k, np.int64)
    np.add.at(sizes, labels, ends - starts)
    boxes = np.empty((k, 4), np.int64)
    boxes[:, 0] = w
    boxes[:, 1] = h
    boxes[:, 2] = -1
    boxes[:, 3] = -1
    np.minimum.at(boxes[:, 0], labels, starts)
    np.minimum.at(boxes[:, 1], labels, rows)
    np.maximum.at(boxes[:, 2], labels, ends - 1)
    np.maximum.at(boxes[:, 3], labels, rows)
    return Components(
        sizes, boxes, rows.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64), labels
    )


def label_components(mask: Any, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label image of the connected components of a boolean mask.

    Args:
      mask: 2-D boolean array ``[H, W]``.
      connectivity: 8 (default) or 4.

    Returns:
      ``(labels, K)``: ``labels`` is int32 ``[H, W]`` with 0 for background and 1..K for the
      components in raster order of their first pixel (as ``scipy.ndimage.label``), K their number.

    Raises:
      ValueError: the mask is not 2-D or connectivity is not 4 or 8.
    """
    comp = connected_components(mask, connectivity)
    m = _check_mask(mask)
    out = np.zeros(m.shape, np.int32)
    for r, s, e, lab in zip(
        comp.run_rows.tolist(),
        comp.run_starts.tolist(),
        comp.run_ends.tolist(),
        comp.run_labels.tolist(),
    ):
        out[r, s:e] = lab + 1
    return out, int(comp.sizes.size)
