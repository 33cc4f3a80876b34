"""Dataset adapters: every source of images as a list of :class:`Sample` (pixels read lazily).

A :class:`Sample` names an image (``key``), where its pixels come from (a file, or an array in
memory for the synthetic benchmark) and, for the evaluation protocols, its pointing-game trials.
Nothing is decoded here: a dataset job decodes in its input pipeline, so an unreadable file becomes
a record with its reason, not a crash.

* :func:`synthetic_samples` — the held-out synthetic benchmark (in memory).
* :func:`voc_samples`, :func:`coco_samples`, :func:`imagenet_samples` — VOC07 test, COCO14 val,
  ILSVRC2012 val, with their annotations (:mod:`xattr_jax.data.voc`, ``coco``, ``imagenet``).
* :func:`file_samples` — an image file, a folder of images (recursively) or a text file listing
  image paths, without annotations (for ``xattr explain``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from xattr_jax.data._common import load_image
from xattr_jax.data.coco import load_coco
from xattr_jax.data.imagenet import load_imagenet
from xattr_jax.data.synthetic import HELD_OUT_SEED, make_dataset
from xattr_jax.data.voc import load_voc

__all__ = [
    "Trial",
    "Sample",
    "IMAGE_SUFFIXES",
    "synthetic_samples",
    "voc_samples",
    "coco_samples",
    "imagenet_samples",
    "file_samples",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclasses.dataclass(frozen=True)
class Trial:
    """One pointing/localisation trial: a class present in an image, at original resolution."""

    class_id: int
    difficult: Optional[bool]
    mask: np.ndarray  # bool [H0, W0]
    boxes: np.ndarray  # int [K, 4] inclusive (x0, y0, x1, y1)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image: its ``key``, where its pixels are, its size per the annotation, its trials.

    Exactly one of ``path`` (a file, decoded by :meth:`read`) and ``pixels`` (RGB ``[H, W, 3]`` in
    [0, 1], in memory) is set. ``orig_size`` is the ``(H, W)`` the annotation states (``None`` when
    there is no annotation); :meth:`read` checks the decoded image against it.
    """

    key: str
    path: Optional[Path] = None
    pixels: Optional[np.ndarray] = None
    orig_size: Optional[tuple[int, int]] = None
    trials: tuple[Trial, ...] = ()
    source: str = "annotation"

    def fingerprint(self) -> str:
        """``"<bytes>:<hash>"`` of the file (or of the pixels in memory): a resumed job redoes an
        image whose fingerprint changed (BLAKE2b, 128 bits).

        Raises:
          OSError: the file cannot be read.
        """
        if self.pixels is not None:
            data = np.ascontiguousarray(self.pixels, np.float32).tobytes()
        else:
            data = Path(self.path).read_bytes()
        return f"{len(data)}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"

    def read(self) -> np.ndarray:
        """The RGB pixels ``[H, W, 3]`` float32 in [0, 1].

        Raises:
          FileNotFoundError, ValueError: a missing, unreadable or corrupt file, or an image whose
            size differs from its annotation's.
        """
        if self.pixels is not None:
            return np.asarray(self.pixels, np.float32)
        img = load_image(self.path)
        if self.orig_size is not None and tuple(img.shape[:2]) != tuple(self.orig_size):
            h, w = self.orig_size
            raise ValueError(f"{self.path}: image is {img.shape[1]}x{img.shape[0]}, the "
                             f"{self.source} says {w}x{h}")  # fmt: skip
        return img


def synthetic_samples(n: int, seed: Optional[int] = None, size: int = 64) -> list[Sample]:
    """``n`` held-out synthetic images (seed :data:`xattr_jax.data.synthetic.HELD_OUT_SEED` by default)."""
    ds = make_dataset(n, size, seed=HELD_OUT_SEED if seed is None else seed)
    samples = []
    for i in range(len(ds)):
        trials = []
        for t in np.flatnonzero(ds.trial_image == i):
            c = int(ds.trial_class[t])
            boxes = np.array([o.box for o in ds.objects[i] if o.class_id == c and o.mask.any()])
            trials.append(Trial(c, bool(ds.difficult[t]), ds.trial_masks[t], boxes.reshape(-1, 4)))
        samples.append(Sample(f"synthetic_{i:05d}", pixels=ds.images[i], orig_size=(size, size),
                              trials=tuple(trials)))  # fmt: skip
    return samples


def _limit(recs, limit):
    return recs[:limit] if limit else recs


def voc_samples(root, *, split: str = "test", difficult_file=None,
                limit: Optional[int] = None) -> list[Sample]:  # fmt: skip
    """VOC07 images with a pointing-game trial (annotations by :func:`xattr_jax.data.load_voc`)."""
    out = []
    for rec in _limit(load_voc(root, split, difficult_file=difficult_file), limit):
        cls = rec.pointing_class_ids()
        if not cls:
            continue
        trials = []
        for c in cls:
            boxes = np.array([o.box for o in rec.objects if o.class_id == c]).reshape(-1, 4)
            d = None if rec.difficult_flags is None else bool(rec.difficult_flags[c])
            trials.append(Trial(c, d, rec.class_mask(c), boxes))
        out.append(Sample(rec.image_id, path=Path(rec.path), orig_size=(rec.height, rec.width),
                          trials=tuple(trials), source="XML"))  # fmt: skip
    return out


def coco_samples(annotation_file, image_dir, *, difficult_file=None,
                 limit: Optional[int] = None) -> list[Sample]:  # fmt: skip
    """COCO14 images with annotations (:func:`xattr_jax.data.load_coco`)."""
    ds = load_coco(annotation_file, image_dir, difficult_file=difficult_file)
    out = []
    for rec in _limit(ds.images, limit):
        h, w = rec.height, rec.width
        trials = []
        for c in rec.class_ids:
            boxes = []
            for a in rec.annotations:
                if a.class_id == c:
                    bx, by, bw, bh = a.bbox
                    x0, y0 = int(math.floor(bx)), int(math.floor(by))
                    x1 = min(max(int(math.ceil(bx + bw)) - 1, x0), w - 1)
                    y1 = min(max(int(math.ceil(by + bh)) - 1, y0), h - 1)
                    boxes.append((x0, y0, x1, y1))
            d = None if rec.difficult_flags is None else bool(rec.difficult_flags[c])
            trials.append(Trial(c, d, rec.class_mask(c), np.array(boxes).reshape(-1, 4)))
        out.append(Sample(Path(rec.file_name).stem, path=Path(rec.path), orig_size=(h, w),
                          trials=tuple(trials), source="JSON"))  # fmt: skip
    return out


def imagenet_samples(root, *, images=None, annotations=None, synsets=None,
                     limit: Optional[int] = None) -> list[Sample]:  # fmt: skip
    """ILSVRC2012 val images (:func:`xattr_jax.data.load_imagenet`): one trial per class present.

    GT = the union of the class's boxes; no difficult flags.

    Raises:
      ValueError: no annotation with a box.
    """
    recs = _limit(load_imagenet(root, images=images, annotations=annotations, synsets=synsets), limit)
    out = []
    for rec in recs:
        if not rec.class_ids:
            continue
        trials = []
        for c in rec.class_ids:
            boxes = np.array([o.box for o in rec.objects if o.class_id == c]).reshape(-1, 4)
            trials.append(Trial(c, None, rec.class_mask(c), boxes))
        out.append(Sample(rec.image_id, path=Path(rec.path), orig_size=(rec.height, rec.width),
                          trials=tuple(trials), source="XML"))  # fmt: skip
    if not out:
        raise ValueError(f"none of the {len(recs)} ImageNet annotations read has an <object> box")
    return out


def _key(path: Path, base: Optional[Path]) -> str:
    """The file name without extension (the path under ``base`` for files in sub-folders); bytes
    that are not UTF-8 are written as ``\\xNN`` (the file is still opened by its real name)."""
    rel = path.relative_to(base) if base is not None else Path(path.name)
    key = rel.with_suffix("").as_posix() if len(rel.parts) > 1 else rel.stem
    return os.fsencode(key).decode("utf-8", "backslashreplace")


def _inside(path: Path, folder: Optional[Path]) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def _images_in(folder: Path, exclude: Optional[Path]) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), not descending into ``exclude``."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _inside(Path(top, d).resolve(), exclude))
        found += [Path(top, f) for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def file_samples(inputs: Sequence, exclude=None) -> list[Sample]:
    """Samples for image files, folders of images (searched recursively) and list files.

    A ``.txt``/``.lst`` file lists one image path per line (relative paths are taken from the list's
    folder; blank lines and ``#`` comments are skipped). Keys are the file names without extension
    (paths relative to the folder for files in sub-folders; bytes that are not UTF-8 written
    ``\\xNN``); a key given twice is an error. Files are not opened here: a corrupt one is reported
    by the job that reads it.

    Args:
      inputs: files, folders and list files.
      exclude: a folder never read (a job's output folder): skipped inside an input folder; an
        input in it is an error.

    Raises:
      FileNotFoundError: an input that does not exist, or a listed file that does not exist.
      ValueError: no image found, two images with the same key, or an input inside ``exclude``.
    """
    exclude = None if exclude is None else Path(exclude).expanduser().resolve()

    def check(p: Path, what: str) -> Path:
        if _inside(p.resolve(), exclude):
            raise ValueError(f"{what} {p} is inside the output folder {exclude}; the job's own output is "
                             "never read as input: give another --out")  # fmt: skip
        return p

    out: list[Sample] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            files = _images_in(check(p, "input folder"), exclude)
            if not files:
                raise ValueError(f"{p}: no image file found in this folder (looked for "
                                 f"{', '.join(IMAGE_SUFFIXES)}, recursively)")  # fmt: skip
            out += [Sample(_key(f, p), path=f) for f in files]
        elif p.suffix.lower() in (".txt", ".lst") and p.is_file():
            with open(p, encoding="utf-8", errors="surrogateescape") as f:
                lines = f.read().splitlines()
            for lineno, line in enumerate(lines, 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                f = Path(line).expanduser()
                f = f if f.is_absolute() else p.parent / f
                if not f.is_file():
                    raise FileNotFoundError(f"{p}:{lineno}: listed image not found: {f}")
                out.append(Sample(_key(f, None), path=check(f, f"{p}:{lineno}: listed image")))
        elif p.is_file():
            out.append(Sample(_key(p, None), path=check(p, "input")))
        else:
            raise FileNotFoundError(f"input not found: {p} (give an image file, a folder of images "
                                    "or a .txt file listing image paths)")  # fmt: skip
    if not out:
        raise ValueError("no image to explain")
    seen: dict[str, Path] = {}
    for s in out:
        if s.key in seen:
            raise ValueError(f"two images share the key {s.key!r}: {seen[s.key]} and {s.path}; "
                             "rename one or pass them in separate runs")  # fmt: skip
        seen[s.key] = s.path
    return out
