"""A deterministic synthetic localisation benchmark: coloured shapes on cluttered backgrounds.

Each image shows 1–3 objects from 20 classes (5 shapes × 4 colours) at random scales, positions
and rotations, on a textured background (grey-tinted base, smooth noise, stripes, pixel noise)
with 1–4 distractor blobs that belong to no class (elongated ellipses and thick bars in colours
that no class uses), drawn under the objects. Later objects may partly hide earlier ones (each new
object hides at most half of any earlier object's visible pixels, otherwise it is placed again);
every mask, box and label describes the **visible** pixels.

Class ``k`` has shape ``SHAPES[k // 4]`` and colour ``COLOURS[k % 4]``; :data:`CLASS_NAMES` lists
them ("red disk", "green disk", ..., "yellow cross").

Ground truth per (image, class present) is the union of the class's visible object masks; a trial
is *difficult* (as in the Excitation-Backprop paper) when the union of the class's bounding boxes
covers less than a quarter of the image **and** another class is present in the image.

Each image draws from its own stream ``SeedSequence(seed).spawn(n)[i]``, so ``make_dataset(n,
seed=s)`` is identical to the first ``n`` images of ``make_dataset(m, seed=s)`` for ``m > n``.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from .._constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "SHAPES",
    "COLOURS",
    "CLASS_NAMES",
    "NUM_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRAIN_SEED",
    "HELD_OUT_SEED",
    "SyntheticObject",
    "SyntheticDataset",
    "make_dataset",
    "normalize",
    "iterate_batches",
]

SHAPES = ("disk", "square", "triangle", "ring", "cross")
COLOURS = ("red", "green", "blue", "yellow")
CLASS_NAMES = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)
NUM_CLASSES = len(CLASS_NAMES)

# The benchmark's seed streams (make_dataset's seed): the training set's, and the held-out set's,
# never seen in training (xattr_jax.app.train; the held-out images of xattr_jax.data.samples).
TRAIN_SEED = 1
HELD_OUT_SEED = 2

_RGB = np.array(
    [
        [0.86, 0.12, 0.12],  # red
        [0.12, 0.68, 0.20],  # green
        [0.14, 0.30, 0.90],  # blue
        [0.93, 0.84, 0.10],  # yellow
    ]
)
# distractor colours: purple, cyan, brown, near-white, near-black, pink (none is a class colour)
_DISTRACTOR_RGB = np.array(
    [
        [0.55, 0.20, 0.62],
        [0.20, 0.72, 0.76],
        [0.45, 0.30, 0.15],
        [0.92, 0.92, 0.90],
        [0.08, 0.08, 0.10],
        [0.96, 0.62, 0.76],
    ]
)
_MAX_HIDDEN = 0.5  # a new object may hide at most this fraction of an earlier object's visible pixels
_MIN_PIXELS = 12


class SyntheticObject(NamedTuple):
    """One visible object: class id, visible mask ``[H, W]`` and its box ``(x0, y0, x1, y1)``, inclusive."""

    class_id: int
    mask: np.ndarray
    box: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticDataset:
    """The generated benchmark.

    Attributes:
      images: float32 ``[n, H, W, 3]`` in [0, 1] (use :func:`normalize` for a model).
      labels: float32 ``[n, 20]`` multi-hot class presence.
      segmentation: int16 ``[n, H, W]``: class id of the visible object at each pixel, −1 elsewhere.
      instances: int16 ``[n, H, W]``: 1-based index into ``objects[i]``, 0 for background.
      objects: per image, a tuple of :class:`SyntheticObject` in drawing order.
      trial_image, trial_class: int64 ``[T]``: one pointing-game trial per (image, class present),
        sorted by image then class.
      trial_masks: bool ``[T, H, W]``: the union of the class's visible masks in that image.
      difficult: bool ``[T]``: the class's boxes cover < 1/4 of the image and another class is present.
    """

    images: np.ndarray
    labels: np.ndarray
    segmentation: np.ndarray
    instances: np.ndarray
    objects: tuple
    trial_image: np.ndarray
    trial_class: np.ndarray
    trial_masks: np.ndarray
    difficult: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_mask(self, index: int, class_id: int) -> np.ndarray:
        """Union mask ``[H, W]`` of class ``class_id`` in image ``index`` (all False if absent)."""
        return self.segmentation[index] == class_id


# ----------------------------------------------------------------------------------------------
# rendering helpers (numpy, one image at a time; each is a handful of vectorised array ops)


@lru_cache(maxsize=None)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    return c[:, None], c[None, :]  # y [H, 1], x [1, W]


@lru_cache(maxsize=None)
def _interp_matrix(size: int, g: int) -> np.ndarray:
    """[size, g] linear interpolation from a g-point coarse grid spanning the image."""
    pos = (np.arange(size) + 0.5) / size * (g - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, g - 2)
    t = pos - i0
    a = np.zeros((size, g))
    a[np.arange(size), i0] = 1 - t
    a[np.arange(size), i0 + 1] = t
    return a


def _local(size, cx, cy, theta):
    y, x = _grid(size)
    dx, dy = x - cx, y - cy
    c, s = math.cos(theta), math.sin(theta)
    return c * dx + s * dy, -s * dx + c * dy  # rotated coordinates u, v (broadcast [H, W])


def _shape_mask(shape: int, size: int, cx: float, cy: float, r: float, theta: float) -> np.ndarray:
    u, v = _local(size, cx, cy, theta)
    name = SHAPES[shape]
    if name == "disk":
        return u * u + v * v <= r * r
    if name == "square":
        a = 0.8 * r
        return (np.abs(u) <= a) & (np.abs(v) <= a)
    if name == "triangle":  # equilateral, circumradius r: three half-planes u·n_k <= r/2
        inside = np.ones(np.broadcast_shapes(u.shape, v.shape), bool)
        for k in range(3):
            ang = 2 * math.pi * k / 3 + math.pi / 2
            inside &= u * math.cos(ang) + v * math.sin(ang) <= 0.5 * r
        return inside
    if name == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    # cross: two bars of half-width 0.3 r and half-length r
    w = 0.3 * r
    return ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(0.3, 0.65) + rng.uniform(-0.06, 0.06, size=3)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    # smooth noise: a coarse random grid, bilinearly interpolated; mostly grey, a little colour
    g = int(rng.integers(3, 9))
    a = _interp_matrix(size, g)
    coarse = rng.normal(size=(g, g)) * rng.uniform(0.04, 0.12)
    img += (a @ coarse @ a.T)[..., None]
    tint = rng.normal(size=(g, g, 3)) * 0.03
    for c in range(3):
        img[..., c] += a @ tint[..., c] @ a.T
    # stripes
    if rng.random() < 0.6:
        y, x = _grid(size)
        th = rng.uniform(0, math.pi)
        f = rng.uniform(0.04, 0.2)
        img += (
            rng.uniform(0.03, 0.1)
            * np.sin(
                2 * math.pi * f * (x * math.cos(th) + y * math.sin(th)) + rng.uniform(0, 2 * math.pi)
            )
        )[..., None]
    # distractors: elongated ellipses or thick bars, non-class colours
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0, size, size=2)
        th = rng.uniform(0, math.pi)
        u, v = _local(size, cx, cy, th)
        length = rng.uniform(0.08, 0.25) * size
        width = length / rng.uniform(2.0, 4.0)
        if rng.random() < 0.5:
            m = (u / length) ** 2 + (v / width) ** 2 <= 1
        else:
            m = (np.abs(u) <= length) & (np.abs(v) <= 0.5 * width)
        col = _DISTRACTOR_RGB[rng.integers(len(_DISTRACTOR_RGB))] + rng.uniform(-0.05, 0.05, size=3)
        img[m] = col
    img += rng.normal(scale=0.03, size=img.shape)
    return img


def _paint_object(rng, img, m, colour, size):
    y, x = _grid(size)
    col = _RGB[colour] + rng.uniform(-0.07, 0.07, size=3)
    th = rng.uniform(0, 2 * math.pi)
    shade = rng.uniform(-0.1, 0.1) * ((x * math.cos(th) + y * math.sin(th)) / size - 0.5)
    pix = col[None, :] + shade[m][:, None]  # a soft linear shading across the object
    img[m] = pix + rng.normal(scale=0.04, size=(int(m.sum()), 3))


def _render(rng: np.random.Generator, size: int):
    img = _background(rng, size)
    inst = np.zeros((size, size), np.int16)
    classes: list[int] = []
    n_obj = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    for _ in range(n_obj):
        cls = int(rng.integers(NUM_CLASSES))
        for _attempt in range(10):
            r = rng.uniform(0.1, 0.32) * size
            cx, cy = rng.uniform(r, size - r, size=2)
            m = _shape_mask(cls // len(COLOURS), size, cx, cy, r, rng.uniform(0, 2 * math.pi))
            if m.sum() < _MIN_PIXELS:
                continue
            hidden_ok = True
            for k in range(1, len(classes) + 1):
                vis = inst == k
                if (vis & m).sum() > _MAX_HIDDEN * vis.sum():
                    hidden_ok = False
                    break
            if hidden_ok:
                break
        else:
            continue  # no acceptable placement: skip this object
        _paint_object(rng, img, m, cls % len(COLOURS), size)
        classes.append(cls)
        inst[m] = len(classes)
    if not classes:  # cannot happen with a single attempt accepted, kept as a guard
        raise RuntimeError("failed to place an object")
    return np.clip(img, 0.0, 1.0).astype(np.float32), inst, classes


def _box(m: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(m.any(1))
    cols = np.flatnonzero(m.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def make_dataset(n: int, size: int = 64, seed: int = 0) -> SyntheticDataset:
    """Generate ``n`` images of the synthetic localisation benchmark (deterministic in ``seed``).

    Args:
      n: number of images (≥ 1).
      size: image side in pixels (≥ 32; e.g. 64 or 96).
      seed: non-negative int; the same seed gives identical data.

    Returns:
      :class:`SyntheticDataset`.

    Raises:
      ValueError: bad ``n``, ``size`` or ``seed``.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if int(size) != size or size < 32:
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n, size = int(n), int(size)
    images = np.empty((n, size, size, 3), np.float32)
    instances = np.empty((n, size, size), np.int16)
    segmentation = np.full((n, size, size), -1, np.int16)
    labels = np.zeros((n, NUM_CLASSES), np.float32)
    objects = []
    t_img, t_cls, t_mask, t_diff = [], [], [], []
    quarter = size * size / 4
    for i, ss in enumerate(np.random.SeedSequence(int(seed)).spawn(n)):
        img, inst, classes = _render(np.random.default_rng(ss), size)
        images[i] = img
        instances[i] = inst
        objs = []
        for k, c in enumerate(classes):
            m = inst == k + 1
            if not m.any():  # fully hidden (cannot happen with _MAX_HIDDEN < 1); keep indices aligned
                objs.append(SyntheticObject(c, m, (0, 0, -1, -1)))
                continue
            segmentation[i][m] = c
            objs.append(SyntheticObject(c, m, _box(m)))
        objects.append(tuple(objs))
        present = sorted({o.class_id for o in objs if o.mask.any()})
        labels[i, present] = 1.0
        for c in present:
            cover = np.zeros((size, size), bool)
            for o in objs:
                if o.class_id == c and o.mask.any():
                    x0, y0, x1, y1 = o.box
                    cover[y0 : y1 + 1, x0 : x1 + 1] = True
            t_img.append(i)
            t_cls.append(c)
            t_mask.append(segmentation[i] == c)
            t_diff.append(bool(cover.sum() < quarter and len(present) > 1))
    return SyntheticDataset(
        images=images,
        labels=labels,
        segmentation=segmentation,
        instances=instances,
        objects=tuple(objects),
        trial_image=np.asarray(t_img, np.int64),
        trial_class=np.asarray(t_cls, np.int64),
        trial_masks=np.stack(t_mask),
        difficult=np.asarray(t_diff, bool),
    )


def normalize(
    images: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """``(images − mean) / std`` per channel (default: torchvision's ImageNet statistics).

    Args:
      images: ``[..., 3]`` in [0, 1].
      mean, std: per-channel statistics.

    Returns:
      float32 array of the same shape.

    Raises:
      ValueError: the last axis is not 3 or a std is not positive.
    """
    x = np.asarray(images, np.float32)
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(f"images must have 3 channels last, got shape {x.shape}")
    mean = np.asarray(mean, np.float32).reshape((1,) * (x.ndim - 1) + (3,))
    std = np.asarray(std, np.float32).reshape((1,) * (x.ndim - 1) + (3,))
    if np.any(std <= 0):
        raise ValueError(f"std must be positive, got {std.ravel()}")
    return (x - mean) / std


def iterate_batches(
    dataset: SyntheticDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    normalized: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over the dataset in batches.

    Args:
      dataset: a :class:`SyntheticDataset`.
      batch_size: images per batch.
      shuffle: permute the images (with ``np.random.default_rng(seed)``) before batching.
      seed: shuffling seed (use a new one per epoch).
      drop_last: leave out a final, smaller batch.
      normalized: apply :func:`normalize` to the images.

    Yields:
      dicts with ``"image"`` ``[B, H, W, 3]`` float32, ``"label"`` ``[B, 20]`` float32 multi-hot,
      ``"index"`` ``[B]`` int64 positions in the dataset.

    Raises:
      ValueError: non-positive batch size.
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(dataset)
    idx = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for a in range(0, stop, batch_size):
        sel = idx[a : a + batch_size]
        img = dataset.images[sel]
        yield {
            "image": normalize(img) if normalized else img,
            "label": dataset.labels[sel],
            "index": sel,
        }
