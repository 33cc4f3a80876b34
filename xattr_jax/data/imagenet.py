"""ILSVRC2012 validation reader (bounding boxes) for the pointing game and localisation.

Nothing is downloaded; the reader takes a folder laid out as::

    ROOT/
      annotations/      # ILSVRC2012_bbox_val_v3.tgz extracted: val/ILSVRC2012_val_00000001.xml, ...
                        #   (searched recursively for *.xml)
      images/           # flat:  ILSVRC2012_val_00000001.JPEG, ...
                        # or one folder per synset (torchvision's ImageFolder layout):
                        #        n01440764/ILSVRC2012_val_00000293.JPEG, ...
      synsets.txt       # optional: the class order, one synset per line

* **Annotations** are PASCAL-VOC-style XML files: ``<size>`` with ``<width>``/``<height>`` and
  ``<object><name>n01751748</name><bndbox>xmin ymin xmax ymax</bndbox></object>``. An image is
  matched to its XML by file stem (``.JPEG``, ``.jpeg``, ``.jpg`` or ``.png``, any case); images
  without an XML are ignored, an XML without an image is an error.
* **Boxes**: unlike VOC's 1-based coordinates (which :mod:`xattr_jax.data.voc` shifts by −1), the
  ILSVRC coordinates are taken as **0-based inclusive** pixel indices, kept as they are and clipped
  to the image: ``(x0, y0, x1, y1) = (xmin, ymin, min(xmax, W − 1), min(ymax, H − 1))``, the
  convention of :mod:`xattr_jax.metrics.localization`.
* **Class order** (which model output a synset is): a synsets file, one synset per line, whose first
  whitespace-separated token is the wnid (``LOC_synset_mapping.txt`` lines such as
  ``n01440764 tench, Tinca tinca`` and plain wnid lists both work); by default ``ROOT/synsets.txt``
  or ``ROOT/LOC_synset_mapping.txt``. Without one, the sorted names of the synset folders under
  ``images/`` (torchvision's order), but only when there are exactly 1000 of them.

Pointing-game ground truth for a class is the union of its boxes in the image; ILSVRC has no
difficult list, so ``difficult_flags`` is always None.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np

from ._common import PathLike, box_union_mask, load_image
from .voc import read_box_xml

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageNetObject",
    "ImageNetImage",
    "read_synsets",
    "load_imagenet",
]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
_NUM_CLASSES = 1000
_SYNSET_FILES = ("synsets.txt", "LOC_synset_mapping.txt")


@dataclasses.dataclass(frozen=True)
class ImageNetObject:
    """One box: class index (the wnid's position in the class list), wnid, 0-based inclusive box."""

    class_id: int
    wnid: str
    box: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True, eq=False)
class ImageNetImage:
    """One validation image's boxes.

    Attributes:
      image_id: the file stem, e.g. ``"ILSVRC2012_val_00000001"``.
      path: the image file (not opened until :meth:`load`).
      width, height: image size from the XML.
      objects: the boxes, in file order.
      difficult_flags: always None (ILSVRC has no difficult list).
    """

    image_id: str
    path: Path
    width: int
    height: int
    objects: tuple[ImageNetObject, ...]
    difficult_flags: Optional[np.ndarray] = None

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Sorted indices of the classes with at least one box."""
        return tuple(sorted({o.class_id for o in self.objects}))

    def class_mask(self, class_id: int) -> np.ndarray:
        """Union of the class's boxes as a bool ``[height, width]`` mask (empty if absent)."""
        return box_union_mask([o.box for o in self.objects if o.class_id == class_id],
                              self.height, self.width)  # fmt: skip

    def load(self) -> np.ndarray:
        """The image as float32 RGB ``[H, W, 3]`` in [0, 1] (JPEG needs Pillow)."""
        return load_image(self.path)


def read_synsets(path: PathLike) -> tuple[str, ...]:
    """Read a class-order file: one synset per line, the wnid first (blank lines skipped).

    Raises:
      FileNotFoundError: missing file.
      ValueError: no synset, or a wnid listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"synsets file not found: {path}")
    wnids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] in seen:
            raise ValueError(f"{path}:{lineno}: synset {fields[0]!r} already listed on line "
                             f"{seen[fields[0]]}")  # fmt: skip
        seen[fields[0]] = lineno
        wnids.append(fields[0])
    if not wnids:
        raise ValueError(f"{path}: no synset in the file (expected one wnid per line)")
    return tuple(wnids)


def _index_images(image_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Image files by stem (top level and one folder down) and the names of the sub-folders."""
    found: dict[str, Path] = {}
    folders = sorted(p.name for p in image_dir.iterdir() if p.is_dir())
    for d in (image_dir, *(image_dir / f for f in folders)):
        for p in d.iterdir():
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                if p.stem in found:
                    raise ValueError(f"two images named {p.stem!r}: {found[p.stem]} and {p}")
                found[p.stem] = p
    return found, folders


def _parse_xml(xml_path: Path, class_index: dict[str, int], image: Path) -> ImageNetImage:
    _, width, height, objs = read_box_xml(
        xml_path, class_index, offset=0,
        unknown="synset {name!r}, which is not in the class list (give the synsets file the model was "
        "trained with)",
    )  # fmt: skip
    objects = tuple(ImageNetObject(c, wnid, box) for c, wnid, box, _ in objs)
    return ImageNetImage(xml_path.stem, image, width, height, objects)


def load_imagenet(
    root: Optional[PathLike],
    *,
    images: Optional[PathLike] = None,
    annotations: Optional[PathLike] = None,
    synsets: Optional[PathLike] = None,
) -> list[ImageNetImage]:
    """Read the ILSVRC2012 val boxes and match them to image files (layout: module docstring).

    Args:
      root: the dataset folder (may be None when ``images`` and ``annotations`` are both given and
        the class order comes from ``synsets`` or the image folders).
      images: the image folder, flat or one folder per synset (default ``ROOT/images``).
      annotations: the folder of bbox XML files, searched recursively (default
        ``ROOT/annotations``).
      synsets: the class-order file (default ``ROOT/synsets.txt`` or ``ROOT/LOC_synset_mapping.txt``
        if present, else the 1000 sorted synset folders of ``images``).

    Returns:
      list of :class:`ImageNetImage`, one per XML file, sorted by image id.

    Raises:
      FileNotFoundError: a missing folder or synsets file, or an XML file without its image.
      ValueError: no class order, a synset outside the class list, malformed XML, two files with
        the same stem, or no XML file at all.
    """
    base = None if root is None else Path(root)
    if base is None and (images is None or annotations is None):
        raise ValueError("give the dataset folder (root), or both images= and annotations=")
    image_dir = Path(images) if images is not None else base / "images"
    ann_dir = Path(annotations) if annotations is not None else base / "annotations"
    if not image_dir.is_dir():
        raise FileNotFoundError(
            f"ImageNet image folder not found: {image_dir} (put the validation images there, or "
            "name the folder with images= / --images)"
        )
    if not ann_dir.is_dir():
        raise FileNotFoundError(
            f"ImageNet annotation folder not found: {ann_dir} (extract ILSVRC2012_bbox_val_v3.tgz "
            "there, or name the folder with annotations= / --annotations)"
        )
    found, folders = _index_images(image_dir)

    if synsets is None and base is not None:
        synsets = next((base / n for n in _SYNSET_FILES if (base / n).is_file()), None)
    if synsets is not None:
        wnids = read_synsets(synsets)
    elif folders:
        if len(folders) != _NUM_CLASSES:
            raise ValueError(
                f"{image_dir} has {len(folders)} sub-folders; the class order is taken from the "
                f"sorted synset folders only when there are exactly {_NUM_CLASSES} of them. Give a "
                "synsets file (synsets= / --synsets, one wnid per line in the model's output order)"
            )
        wnids = tuple(folders)
    else:
        where = "ROOT/synsets.txt" if base is None else str(base / _SYNSET_FILES[0])
        raise ValueError(
            f"no class order for ImageNet: either give a synsets file (synsets= / --synsets, or "
            f"{where}; one wnid per line in the model's output order, e.g. "
            "LOC_synset_mapping.txt), "
            f"or put the images of {image_dir} in one sub-folder per synset (all {_NUM_CLASSES}, "
            "sorted names = class order, as torchvision's ImageFolder)"
        )
    class_index = {w: k for k, w in enumerate(wnids)}

    xmls: dict[str, Path] = {}
    for p in sorted(ann_dir.rglob("*.xml")):
        if p.stem in xmls:
            raise ValueError(f"two annotation files named {p.stem!r}: {xmls[p.stem]} and {p}")
        xmls[p.stem] = p
    if not xmls:
        raise ValueError(f"no *.xml annotation file under {ann_dir} (extract "
                         "ILSVRC2012_bbox_val_v3.tgz there)")  # fmt: skip
    out = []
    for stem in sorted(xmls):
        if stem not in found:
            raise FileNotFoundError(
                f"{xmls[stem]}: no image {stem}.JPEG (or .jpeg/.jpg/.png) in {image_dir} or its "
                "synset sub-folders; add the image or remove the annotation"
            )
        out.append(_parse_xml(xmls[stem], class_index, found[stem]))
    return out
