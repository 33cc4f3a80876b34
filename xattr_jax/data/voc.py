"""PASCAL VOC 2007 reader for the pointing game (annotations only; images decoded on demand).

Expects the standard tree ``VOCdevkit/VOC2007/{ImageSets/Main/<split>.txt, Annotations/<id>.xml,
JPEGImages/<id>.jpg}``. Boxes in the XML files are 1-based inclusive pixel coordinates; here they
are converted to **0-based inclusive** ``(x0, y0, x1, y1) = (xmin − 1, ymin − 1, xmax − 1, ymax − 1)``
(clipped to the image), the convention of :mod:`xattr_jax.metrics.localization`.

Pointing-game ground truth (docs/evaluation.md#pointing-game) for a class is the union of all its boxes in the
image (difficult boxes included unless asked otherwise), and a class whose boxes are **all**
flagged difficult is left out of the game.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ._common import PathLike, box_union_mask, load_image, read_difficult_list

__all__ = [
    "VOC_CLASSES",
    "VOCObject",
    "VOCImage",
    "find_voc_root",
    "parse_voc_annotation",
    "load_voc",
    "voc_pointing_trials",
    "read_difficult_list",
]

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
_CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}


@dataclasses.dataclass(frozen=True)
class VOCObject:
    """One annotated object: class index into :data:`VOC_CLASSES`, name, 0-based inclusive box, difficult flag."""

    class_id: int
    name: str
    box: tuple[int, int, int, int]
    difficult: bool


@dataclasses.dataclass(frozen=True, eq=False)
class VOCImage:
    """One image's annotation.

    Attributes:
      image_id: e.g. ``"000001"``.
      path: the JPEG's path (not opened until :meth:`load`).
      width, height: image size from the XML.
      objects: the annotated objects, in file order.
      difficult_flags: bool ``[20]`` from a difficult list file, or None.
    """

    image_id: str
    path: Path
    width: int
    height: int
    objects: tuple[VOCObject, ...]
    difficult_flags: Optional[np.ndarray] = None

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Sorted indices of the classes with at least one object."""
        return tuple(sorted({o.class_id for o in self.objects}))

    def all_difficult(self, class_id: int) -> bool:
        """True when the class is present and every one of its boxes is flagged difficult."""
        flags = [o.difficult for o in self.objects if o.class_id == class_id]
        return bool(flags) and all(flags)

    def pointing_class_ids(self) -> tuple[int, ...]:
        """Classes that make a pointing-game trial: present and not all-difficult."""
        return tuple(c for c in self.class_ids if not self.all_difficult(c))

    def class_mask(self, class_id: int, include_difficult: bool = True) -> np.ndarray:
        """Union of the class's boxes as a bool ``[height, width]`` mask (empty if absent)."""
        boxes = [
            o.box
            for o in self.objects
            if o.class_id == class_id and (include_difficult or not o.difficult)
        ]
        return box_union_mask(boxes, self.height, self.width)

    def load(self) -> np.ndarray:
        """The image as float32 RGB ``[H, W, 3]`` in [0, 1] (needs Pillow)."""
        return load_image(self.path)


def find_voc_root(root: PathLike, year: str = "2007") -> Path:
    """Resolve ``root`` to the ``VOC<year>`` folder (accepts it, its ``VOCdevkit`` parent, or the folder above).

    Raises:
      FileNotFoundError: no folder with ``Annotations`` and ``ImageSets/Main`` is found.
    """
    root = Path(root)
    for cand in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (cand / "Annotations").is_dir() and (cand / "ImageSets" / "Main").is_dir():
            return cand
    raise FileNotFoundError(
        f"no VOC{year} tree under {root}: expected Annotations/ and ImageSets/Main/ in {root}, "
        f"{root / f'VOC{year}'} or {root / 'VOCdevkit' / f'VOC{year}'}"
    )


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError(f"{where}: missing <{tag}>")
    return child.text.strip()


def read_box_xml(xml_path: PathLike, class_index: dict, *, offset: int, unknown: str):
    """The one PASCAL-style XML reader (VOC and ILSVRC annotations).

    Args:
      xml_path: the XML file.
      class_index: ``{object name: class id}``.
      offset: subtracted from the XML's box coordinates (1 for VOC's 1-based boxes, 0 for ILSVRC's).
      unknown: the end of the error message for an object name not in ``class_index``.

    Returns:
      ``(root, width, height, [(class id, name, (x0, y0, x1, y1), difficult)])``: inclusive 0-based
      boxes clipped to the image.

    Raises:
      ValueError: malformed XML, missing size/name/box, unknown name, box inverted or outside the image.
    """
    xml_path = Path(xml_path)
    where = str(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{where}: not valid XML ({e})") from None
    size = root.find("size")
    if size is None:
        raise ValueError(f"{where}: missing <size>")
    width, height = int(float(_text(size, "width", where))), int(float(_text(size, "height", where)))
    if width <= 0 or height <= 0:
        raise ValueError(f"{where}: image size must be positive, got {width}x{height}")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj, "name", where)
        if name not in class_index:
            raise ValueError(f"{where}: object {k} has {unknown.format(name=name)}")
        diff_node = obj.find("difficult")
        difficult = (
            diff_node is not None and diff_node.text is not None and diff_node.text.strip() == "1"
        )
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{where}: object {k} has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            int(round(float(_text(bb, t, where)))) for t in ("xmin", "ymin", "xmax", "ymax")
        )
        if xmax < xmin or ymax < ymin:
            raise ValueError(f"{where}: object {k} has an inverted box {(xmin, ymin, xmax, ymax)}")
        box = (max(xmin - offset, 0), max(ymin - offset, 0), min(xmax - offset, width - 1),
               min(ymax - offset, height - 1))  # fmt: skip
        if box[2] < box[0] or box[3] < box[1]:
            raise ValueError(
                f"{where}: object {k} box {(xmin, ymin, xmax, ymax)} lies outside the {width}x{height} image"
            )
        objects.append((class_index[name], name, box, difficult))
    return root, width, height, objects


def parse_voc_annotation(xml_path: PathLike, image_dir: Optional[PathLike] = None) -> VOCImage:
    """Parse one VOC annotation XML file (:func:`read_box_xml`, 1-based boxes).

    Args:
      xml_path: ``Annotations/<id>.xml``.
      image_dir: folder of the JPEGs (default: ``../JPEGImages`` next to ``Annotations``).

    Returns:
      :class:`VOCImage` (without difficult flags).

    Raises:
      ValueError: malformed XML, unknown class name, box outside the image or inverted.
    """
    xml_path = Path(xml_path)
    root, width, height, objs = read_box_xml(
        xml_path, _CLASS_INDEX, offset=1, unknown="unknown class {name!r}; VOC classes are " + str(VOC_CLASSES)
    )
    objects = tuple(VOCObject(c, name, box, d) for c, name, box, d in objs)
    image_dir = Path(image_dir) if image_dir is not None else xml_path.parent.parent / "JPEGImages"
    fname = root.findtext("filename")
    fname = fname.strip() if fname and fname.strip() else xml_path.stem + ".jpg"
    return VOCImage(xml_path.stem, image_dir / fname, width, height, objects)


def load_voc(
    root: PathLike,
    split: str = "test",
    *,
    year: str = "2007",
    difficult_file: Optional[PathLike] = None,
    image_ids: Optional[Sequence[str]] = None,
) -> list[VOCImage]:
    """Read the annotations of a VOC split.

    Args:
      root: the ``VOC2007`` folder, its ``VOCdevkit`` parent, or the folder holding ``VOCdevkit``.
      split: name of the list ``ImageSets/Main/<split>.txt`` (``"test"``, ``"trainval"``, ...).
      year: the VOC year folder to look for.
      difficult_file: optional EB/TorchRay difficult list (image id + 20 flags per line, see
        :func:`read_difficult_list`); fills :attr:`VOCImage.difficult_flags`.
      image_ids: read these ids instead of the split list.

    Returns:
      list of :class:`VOCImage` in list order.

    Raises:
      FileNotFoundError: tree, list or annotation missing.
      KeyError: an image of the split is missing from the difficult file.
      ValueError: malformed annotations.
    """
    base = find_voc_root(root, year)
    if image_ids is None:
        lst = base / "ImageSets" / "Main" / f"{split}.txt"
        if not lst.is_file():
            raise FileNotFoundError(f"image list not found: {lst}")
        image_ids = [line.split()[0] for line in lst.read_text().splitlines() if line.strip()]
    flags = read_difficult_list(difficult_file, len(VOC_CLASSES)) if difficult_file is not None else None
    out = []
    for iid in image_ids:
        xml_path = base / "Annotations" / f"{iid}.xml"
        if not xml_path.is_file():
            raise FileNotFoundError(f"annotation not found: {xml_path}")
        rec = parse_voc_annotation(xml_path, base / "JPEGImages")
        if flags is not None:
            if iid not in flags:
                raise KeyError(f"image {iid!r} is not in the difficult list {difficult_file}")
            rec = dataclasses.replace(rec, difficult_flags=flags[iid])
        out.append(rec)
    return out


def voc_pointing_trials(images: Sequence[VOCImage]) -> list[tuple[int, int, Optional[bool]]]:
    """Pointing-game trials: ``(image index, class id, difficult)`` per image and class present.

    Classes whose boxes are all difficult are skipped; ``difficult`` is the flag from the
    difficult list, or None when the images were read without one.
    """
    trials = []
    for i, rec in enumerate(images):
        for c in rec.pointing_class_ids():
            d = None if rec.difficult_flags is None else bool(rec.difficult_flags[c])
            trials.append((i, c, d))
    return trials
