"""Class names for a model's outputs, when they are known."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Optional

from xattr_jax._constants import EMBEDDED
from xattr_jax.data.synthetic import CLASS_NAMES
from xattr_jax.data.voc import VOC_CLASSES

__all__ = ["imagenet_classes", "class_names_for"]


@functools.lru_cache(maxsize=None)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in torchvision's output order (``assets/imagenet_classes.txt``)."""
    text = resources.files("xattr_jax").joinpath("assets/imagenet_classes.txt").read_text()
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000, len(names)
    return names


def class_names_for(arch: str, num_classes: int) -> Optional[tuple[str, ...]]:
    """Names of a model's classes: the synthetic benchmark's for the shipped models, ImageNet's for
    1000-class models, VOC's for 20-class models; ``None`` when unknown."""
    if arch in EMBEDDED and num_classes == len(CLASS_NAMES):
        return tuple(CLASS_NAMES)
    if num_classes == 1000:
        return imagenet_classes()
    if num_classes == len(VOC_CLASSES):
        return tuple(VOC_CLASSES)
    return None
