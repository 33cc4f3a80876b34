"""From an image file's pixels to a model input: the preprocessing conventions.

* ``"embedded"`` — the shipped synthetic-benchmark models (``small_vgg``, ``small_resnet``): the
  whole image resized to 64×64, their training size.
* ``"imagenet"`` — TorchRay's evaluation preprocessing: the shorter side resized to 224, aspect
  ratio kept, no crop (one compiled program per distinct shape). Bilinear, ``align_corners=False``,
  no antialiasing (:func:`xattr_jax.metrics.resize_map`), as the pointing-game protocol was defined.
* ``"torchvision"`` — torchvision's ImageNet evaluation transform: the shorter side resized to 256
  (bilinear, antialiased), then the centre 224×224 crop. Every image gets the same shape, so a
  dataset job batches freely.

All three then normalise with ImageNet's mean and std (:func:`xattr_jax.data.normalize`).
"""

from __future__ import annotations

import numpy as np

from xattr_jax._constants import EMBEDDED, EMBEDDED_SIZE
from xattr_jax.data.synthetic import normalize
from xattr_jax.viz.imageio import resize

__all__ = [
    "PREPROCESSING",
    "EMBEDDED_SIZE",
    "TORCHRAY_SHORT_SIDE",
    "preprocess",
    "default_preprocess",
]

TORCHRAY_SHORT_SIDE = 224
TORCHVISION_RESIZE, TORCHVISION_CROP = 256, 224

PREPROCESSING = {
    "embedded": "whole image resized to 64x64 (the shipped models' training size)",
    "imagenet": "TorchRay: shorter side resized to 224, aspect kept, no crop",
    "torchvision": "torchvision: shorter side resized to 256 (antialiased), centre crop 224x224",
}


def _short_side(h: int, w: int, side: int) -> tuple[int, int]:
    s = side / min(h, w)
    return (side, max(1, int(round(w * s)))) if h <= w else (max(1, int(round(h * s))), side)


def _resize(img: np.ndarray, size, antialias: bool) -> np.ndarray:
    return resize(img, size, antialias=antialias)


def preprocess(image: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Resize and normalise an RGB image ``[H, W, 3]`` in [0, 1] for a model.

    Args:
      image: the image.
      mode: one of :data:`PREPROCESSING` (``"embedded"``, ``"imagenet"``, ``"torchvision"``).

    Returns:
      ``(x, resized)``: the normalised input ``[h, w, 3]`` float32 and the resized image in [0, 1].

    Raises:
      ValueError: not an ``[H, W, 3]`` image, or an unknown mode (the valid ones are listed).
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[-1] != 3 or 0 in img.shape:
        raise ValueError(f"image must be [H, W, 3] with H, W > 0, got shape {img.shape}")
    h, w = img.shape[:2]
    if mode == "embedded":
        resized = _resize(img, (EMBEDDED_SIZE, EMBEDDED_SIZE), False)
    elif mode == "imagenet":
        resized = _resize(img, _short_side(h, w, TORCHRAY_SHORT_SIDE), False)
    elif mode == "torchvision":
        resized = _resize(img, _short_side(h, w, TORCHVISION_RESIZE), True)
        rh, rw = resized.shape[:2]
        c = TORCHVISION_CROP
        if rh < c or rw < c:  # only for images under 256 px on the shorter side after rounding
            resized = _resize(resized, (max(rh, c), max(rw, c)), True)
            rh, rw = resized.shape[:2]
        top, left = int(round((rh - c) / 2.0)), int(round((rw - c) / 2.0))
        resized = resized[top : top + c, left : left + c]
    else:
        valid = ", ".join(repr(k) for k in PREPROCESSING)
        raise ValueError(f"unknown preprocessing {mode!r}; use one of {valid}")
    resized = np.clip(resized, 0, 1)
    return normalize(resized), resized


def default_preprocess(arch: str) -> str:
    """``"embedded"`` for the shipped synthetic-benchmark models, else ``"imagenet"`` (TorchRay's)."""
    return "embedded" if arch in EMBEDDED else "imagenet"
