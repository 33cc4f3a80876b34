"""COCO (2014) instances reader for the pointing game; masks decoded by pycocotools (the ``coco`` extra).

Pointing-game ground truth (docs/evaluation.md#pointing-game) for a class is the union of the segmentation masks of
all its instances in the image (crowd regions included unless asked otherwise). The 80 categories
are mapped to contiguous class indices 0..79 in increasing category-id order.

Masks (polygons and RLE, compressed or not) are decoded by pycocotools, as COCO's own tools do:
``pip install 'xattr-jax[coco]'``. Reading the annotations without masks needs nothing extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
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


def _mask_api():
    """pycocotools' mask API (the optional ``coco`` extra), its numpy-2 deprecation noise silenced."""
    try:
        from pycocotools import mask
    except ImportError as err:
        raise ImportError("COCO masks are decoded by pycocotools: pip install 'xattr-jax[coco]' "
                          f"(or pip install pycocotools) ({err})") from None  # fmt: skip
    return mask


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning)
        yield


def polygon_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise polygons (``[[x1, y1, x2, y2, ...], ...]``, unioned) to a bool ``[height, width]`` mask.

    pycocotools' rasteriser (``frPyObjects`` + ``merge`` + ``decode``), the one COCO's own tools use.

    Raises:
      ValueError: a polygon with an odd number of coordinates, fewer than 3 points, or non-finite values.
    """
    polys = []
    for k, poly in enumerate(polygons):
        p = np.asarray(poly, np.float64)
        if p.ndim != 1 or p.size % 2 or p.size < 6:
            raise ValueError(f"polygon {k} must be a flat list of at least 3 (x, y) pairs, got {p.size} numbers")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"polygon {k} has non-finite coordinates")
        polys.append(p.tolist())
    if not polys:
        return np.zeros((height, width), bool)
    mu = _mask_api()
    with _quiet():
        return mu.decode(mu.merge(mu.frPyObjects(polys, height, width))).astype(bool)


def rle_decode(rle: dict) -> np.ndarray:
    """Decode a COCO run-length encoding ``{"size": [h, w], "counts": ...}`` to a bool ``[h, w]`` mask.

    ``counts`` alternates runs of 0 and 1 (starting with 0) over the pixels in column-major order,
    as a list of ints (uncompressed) or COCO's compressed string; decoded by pycocotools.

    Raises:
      ValueError: malformed size or counts, or counts that do not cover ``h · w`` pixels.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE must be a dict with 'size' and 'counts'")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    mu = _mask_api()
    with _quiet():
        if isinstance(counts, (list, tuple, np.ndarray)):
            c = np.asarray(counts, np.int64)
            if c.ndim != 1 or np.any(c < 0):
                raise ValueError("RLE counts must be non-negative run lengths")
            if c.sum() != h * w:
                raise ValueError(f"RLE counts add up to {int(c.sum())}, expected {h} x {w} = {h * w}")
            compressed = mu.frPyObjects({"size": [h, w], "counts": c.tolist()}, h, w)
        elif isinstance(counts, (str, bytes)):
            compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise ValueError(f"RLE counts must be a list of ints or a string, got {type(counts).__name__}")
        m = mu.decode(compressed)
        if mu.encode(np.asfortranarray(m))["counts"] != compressed["counts"]:
            raise ValueError(f"malformed compressed RLE for a {h} x {w} mask (its runs do not cover the mask)")
        return m.astype(bool)


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
    ``segmentation``, ``iscrowd`` and the annotation's ``id``."""

    category_id: int
    class_id: int
    bbox: tuple[float, float, float, float]
    segmentation: Any
    iscrowd: bool
    id: Optional[int] = None


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
        """Union of the class's instance masks, bool ``[height, width]`` (empty if absent).

        Raises:
          ValueError: a malformed segmentation, naming the image and the annotation.
        """
        m = np.zeros((self.height, self.width), bool)
        for a in self.annotations:
            if a.class_id == class_id and (include_crowd or not a.iscrowd):
                try:
                    m |= annotation_mask(a.segmentation, self.height, self.width)
                except (ValueError, TypeError) as err:
                    raise ValueError(f"COCO image {self.image_id} ({self.file_name}), annotation {a.id}: "
                                     f"{err}; fix or remove that annotation") from None  # fmt: skip
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
                a.get("id"),
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
