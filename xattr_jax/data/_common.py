"""Helpers shared by the dataset readers (private)."""

from __future__ import annotations

import os
from typing import Union

import numpy as np

from xattr_jax.viz.imageio import read_image

__all__ = ["read_difficult_list", "load_image", "box_union_mask"]

PathLike = Union[str, "os.PathLike[str]"]


def read_difficult_list(path: PathLike, num_classes: int) -> dict[str, np.ndarray]:
    """Read a pointing-game "difficult" flag file: one line per image, ``<image key> f_0 ... f_{C-1}``.

    This is the layout of the EB/TorchRay lists (``pointing_game_ebp_voc07_difficult.txt``: the
    VOC image id and 20 tab-separated 0/1 flags in the standard class order;
    ``pointing_game_ebp_coco_difficult.txt``: ``COCO_val2014_<12 digits>`` and 80 flags in the
    contiguous order of category ids). Flag ``c`` = 1 marks (image, class ``c``) as difficult.

    Args:
      path: the text file.
      num_classes: number of flags expected per line (20 for VOC, 80 for COCO).

    Returns:
      ``{image key: bool [num_classes]}``.

    Raises:
      FileNotFoundError: missing file.
      ValueError: a line with the wrong number of fields, a flag other than 0/1, a repeated key.
    """
    out: dict[str, np.ndarray] = {}
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != num_classes + 1:
                raise ValueError(
                    f"{path}:{lineno}: expected an image key and {num_classes} flags, got {len(fields)} fields"
                )
            if any(v not in ("0", "1") for v in fields[1:]):
                raise ValueError(f"{path}:{lineno}: flags must be 0 or 1")
            if fields[0] in out:
                raise ValueError(f"{path}:{lineno}: image {fields[0]!r} is listed twice")
            out[fields[0]] = np.array([v == "1" for v in fields[1:]], bool)
    return out


def load_image(path: PathLike) -> np.ndarray:
    """Decode an image file to float32 RGB ``[H, W, 3]`` in [0, 1] (:func:`xattr_jax.viz.imageio.read_image`).

    Raises:
      FileNotFoundError: missing file.
      ValueError: a folder, an empty, truncated or damaged file, or not an image.
    """
    return read_image(path)


def box_union_mask(boxes, height: int, width: int) -> np.ndarray:
    """Union of inclusive, 0-based pixel boxes ``(x0, y0, x1, y1)`` as a bool ``[height, width]`` mask."""
    m = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        x0, y0 = max(int(x0), 0), max(int(y0), 0)
        x1, y1 = min(int(x1), width - 1), min(int(y1), height - 1)
        if x1 >= x0 and y1 >= y0:
            m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m
