"""COCO (2014) instances reader for the pointing game, with a small numpy mask rasteriser.

Pointing-game ground truth (docs/evaluation.md#pointing-game) for a class is the union of the segmentation masks of
all its instances in the image (crowd regions included unless asked otherwise). The 80 categories
are mapped to contiguous class indices 0..79 in increasing category-id order.

Mask conventions:

* **Polygons** (``[[x1, y1, x2, y2, ...], ...]``, pixel units, (0, 0) the top-left corner of the
  top-left pixel): pixel ``(r, c)`` is inside when its centre ``(c + 0.5, r + 0.5)`` is inside by
  the **even-odd** rule (a point exactly on a left/top edge is inside, on a right/bottom edge
  outside). The polygons of one annotation are unioned. This may differ from pycocotools' own
  rasteriser by a pixel along edges.
* **RLE**: uncompressed (``counts`` a list of ints) and compressed (``counts`` a string, COCO's
  6-bit character encoding) run lengths over the mask in column-major order, starting with a run
  of zeros.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ._common import PathLike, load_image, read_difficult_list

__all__ = [
    "CocoAnnotation",
    "CocoImage",
    "CocoDataset",
    "polygon_mask",
    "rle_decode",
    "annotation_mask",
    "load_coco",
    "coco_pointing_trials",
    "read_difficult_list",
]


def polygon_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise polygons (even-odd rule, pixel-centre sampling) to a bool ``[height, width]`` mask.

    For each polygon and each pixel row (centre ``y = r + 0.5``), the edges with
    ``min(y_i, y_j) <= y < max(y_i, y_j)`` cross the row at ``x = x_i + (y − y_i)(x_j − x_i)/(y_j − y_i)``;
    a pixel is inside when an odd number of crossings lie at or left of its centre. Vectorised over
    all edges and rows; the polygons' masks are unioned.

    Args:
      polygons: a sequence of flat coordinate lists ``[x1, y1, x2, y2, ...]`` (≥ 3 points each).
      height, width: mask size.

    Returns:
      bool ``[height, width]``.

    Raises:
      ValueError: a polygon with an odd number of coordinates, fewer than 3 points, or non-finite values.
    """
    out = np.zeros((height, width), bool)
    for k, poly in enumerate(polygons):
        p = np.asarray(poly, np.float64)
        if p.ndim != 1 or p.size % 2 or p.size < 6:
            raise ValueError(
                f"polygon {k} must be a flat list of at least 3 (x, y) pairs, got {p.size} numbers"
            )
        if not np.all(np.isfinite(p)):
            raise ValueError(f"polygon {k} has non-finite coordinates")
        xy = p.reshape(-1, 2)
        x0, y0 = xy[:, 0], xy[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
        # rows whose centre r + 0.5 lies in [ylo, yhi): r in [ceil(ylo - 0.5), ceil(yhi - 0.5))
        r_start = np.clip(np.ceil(ylo - 0.5), 0, height).astype(np.int64)
        r_stop = np.clip(np.ceil(yhi - 0.5), 0, height).astype(np.int64)
        n_rows = np.maximum(r_stop - r_start, 0)
        if n_rows.sum() == 0:
            continue
        edge = np.repeat(np.arange(xy.shape[0]), n_rows)
        rows = np.repeat(r_start, n_rows) + (
            np.arange(edge.size) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
        )
        yc = rows + 0.5
        xc = x0[edge] + (yc - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
        # the crossing counts for pixels whose centre c + 0.5 >= xc, i.e. c >= ceil(xc - 0.5)
        col = np.clip(np.ceil(xc - 0.5), 0, width).astype(np.int64)
        toggles = np.zeros((height, width + 1), np.int64)
        np.add.at(toggles, (rows, col), 1)
        out |= (np.cumsum(toggles[:, :width], axis=1) % 2).astype(bool)
    return out


def _decode_counts_string(s: str) -> list[int]:
    """COCO's compressed RLE string: 5 data bits per character (offset 48), bit 0x20 = more
    characters follow, bit 0x10 of the last one = negative; from the third count on, each value is
    stored as the difference to the count two places before."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("compressed RLE string ends in the middle of a number")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {s[p]!r} in a compressed RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(rle: dict) -> np.ndarray:
    """Decode a COCO run-length encoding ``{"size": [h, w], "counts": ...}`` to a bool ``[h, w]`` mask.

    ``counts`` alternates runs of 0 and 1 (starting with 0) over the pixels in column-major order;
    it is either a list of ints (uncompressed) or a string (compressed).

    Raises:
      ValueError: malformed size or counts, or counts that do not add up to ``h · w``.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE must be a dict with 'size' and 'counts'")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = _decode_counts_string(counts)
    counts = np.asarray(counts, np.int64)
    if counts.ndim != 1 or np.any(counts < 0):
        raise ValueError("RLE counts must be non-negative run lengths")
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts add up to {int(counts.sum())}, expected {h} x {w} = {h * w}")
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Mask of one COCO ``segmentation`` field (polygon list or RLE dict) at ``height × width``.

    Raises:
      ValueError: an RLE of another size, or an unrecognised format.
    """
    if isinstance(segmentation, dict):
        m = rle_decode(segmentation)
        if m.shape != (height, width):
            raise ValueError(f"RLE size {m.shape} differs from the image size {(height, width)}")
        return m
    if isinstance(segmentation, (list, tuple)):
        return polygon_mask(segmentation, height, width)
    raise ValueError(f"unrecognised segmentation of type {type(segmentation).__name__}")


@dataclasses.dataclass(frozen=True, eq=False)
class CocoAnnotation:
    """One instance: COCO category id, contiguous class index, ``bbox`` ``[x, y, w, h]``, raw
    ``segmentation`` and ``iscrowd``."""

    category_id: int
    class_id: int
    bbox: tuple[float, float, float, float]
    segmentation: Any
    iscrowd: bool


@dataclasses.dataclass(frozen=True, eq=False)
class CocoImage:
    """One image and its instances.

    Attributes:
      image_id: COCO image id.
      file_name: e.g. ``"COCO_val2014_000000262148.jpg"``; its stem keys the difficult list.
      path: ``image_dir / file_name``, or None without an image folder.
      width, height: image size.
      annotations: the image's instances.
      difficult_flags: bool ``[80]`` from a difficult list file, or None.
    """

    image_id: int
    file_name: str
    path: Optional[Path]
    width: int
    height: int
    annotations: tuple[CocoAnnotation, ...]
    difficult_flags: Optional[np.ndarray] = None

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Sorted contiguous indices of the classes with at least one instance."""
        return tuple(sorted({a.class_id for a in self.annotations}))

    def class_mask(self, class_id: int, include_crowd: bool = True) -> np.ndarray:
        """Union of the class's instance masks, bool ``[height, width]`` (empty if absent)."""
        m = np.zeros((self.height, self.width), bool)
        for a in self.annotations:
            if a.class_id == class_id and (include_crowd or not a.iscrowd):
                m |= annotation_mask(a.segmentation, self.height, self.width)
        return m

    def load(self) -> np.ndarray:
        """The image as float32 RGB ``[H, W, 3]`` in [0, 1] (needs Pillow and an image folder)."""
        if self.path is None:
            raise ValueError("no image folder was given to load_coco(image_dir=...)")
        return load_image(self.path)


@dataclasses.dataclass(frozen=True, eq=False)
class CocoDataset:
    """Parsed instances file.

    Attributes:
      category_ids: COCO category ids, sorted; ``category_ids[k]`` is class ``k``.
      class_names: the categories' names in class order.
      images: :class:`CocoImage` records, sorted by image id.
    """

    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    images: tuple[CocoImage, ...]

    @property
    def category_to_class(self) -> dict[int, int]:
        """COCO category id → contiguous class index."""
        return {c: k for k, c in enumerate(self.category_ids)}

    def __len__(self) -> int:
        return len(self.images)


def load_coco(
    annotation_file: PathLike,
    image_dir: Optional[PathLike] = None,
    *,
    only_annotated: bool = True,
    difficult_file: Optional[PathLike] = None,
) -> CocoDataset:
    """Read a COCO instances JSON file (``images``, ``annotations``, ``categories``).

    Args:
      annotation_file: e.g. ``annotations/instances_val2014.json``.
      image_dir: folder of the images (``val2014/``); optional, only needed to load pixels.
      only_annotated: keep only images with at least one annotation (val2014: 40,137 images, as
        the EB pointing game).
      difficult_file: optional EB/TorchRay difficult list (file stem + 80 flags per line).

    Returns:
      :class:`CocoDataset`.

    Raises:
      FileNotFoundError: missing file.
      ValueError: missing sections, annotations of unknown images or categories.
      KeyError: an image missing from the difficult list.
    """
    with open(annotation_file, "r", encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{annotation_file}: no {key!r} section (is this an instances file?)")
    cats = sorted(data["categories"], key=lambda c: int(c["id"]))
    category_ids = tuple(int(c["id"]) for c in cats)
    if len(set(category_ids)) != len(category_ids):
        raise ValueError(f"{annotation_file}: repeated category ids")
    cat_to_class = {c: k for k, c in enumerate(category_ids)}
    per_image: dict[int, list[CocoAnnotation]] = {int(im["id"]): [] for im in data["images"]}
    for a in data["annotations"]:
        iid, cid = int(a["image_id"]), int(a["category_id"])
        if iid not in per_image:
            raise ValueError(
                f"{annotation_file}: annotation {a.get('id')} refers to unknown image {iid}"
            )
        if cid not in cat_to_class:
            raise ValueError(f"{annotation_file}: annotation {a.get('id')} has unknown category {cid}")
        per_image[iid].append(
            CocoAnnotation(
                cid,
                cat_to_class[cid],
                tuple(float(v) for v in a["bbox"]),
                a["segmentation"],
                bool(a.get("iscrowd", 0)),
            )
        )
    flags = (
        read_difficult_list(difficult_file, len(category_ids)) if difficult_file is not None else None
    )
    images = []
    for im in sorted(data["images"], key=lambda im: int(im["id"])):
        iid = int(im["id"])
        anns = per_image[iid]
        if only_annotated and not anns:
            continue
        fname = str(im["file_name"])
        d = None
        if flags is not None:
            key = Path(fname).stem
            if key not in flags:
                raise KeyError(f"image {key!r} is not in the difficult list {difficult_file}")
            d = flags[key]
        images.append(
            CocoImage(
                iid,
                fname,
                None if image_dir is None else Path(image_dir) / fname,
                int(im["width"]),
                int(im["height"]),
                tuple(anns),
                d,
            )
        )
    return CocoDataset(category_ids, tuple(str(c["name"]) for c in cats), tuple(images))


def coco_pointing_trials(dataset: CocoDataset) -> list[tuple[int, int, Optional[bool]]]:
    """Pointing-game trials ``(image index, class index, difficult)`` per image and class present;
    ``difficult`` is None when the dataset was read without a difficult list."""
    trials = []
    for i, rec in enumerate(dataset.images):
        for c in rec.class_ids:
            trials.append((i, c, None if rec.difficult_flags is None else bool(rec.difficult_flags[c])))
    return trials
