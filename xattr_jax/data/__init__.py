"""Datasets: the synthetic localisation benchmark and readers for VOC07, COCO14 and ImageNet.

* :mod:`xattr_jax.data.synthetic` — :func:`make_dataset`, :func:`iterate_batches`,
  :func:`normalize`, :data:`CLASS_NAMES`.
* :mod:`xattr_jax.data.voc` — :func:`load_voc`, :func:`voc_pointing_trials`.
* :mod:`xattr_jax.data.coco` — :func:`load_coco`, :func:`coco_pointing_trials`, mask decoding.
* :mod:`xattr_jax.data.imagenet` — :func:`load_imagenet` (ILSVRC2012 val boxes), :func:`read_synsets`.
"""

from ._common import load_image, read_difficult_list
from .coco import (
    CocoAnnotation,
    CocoDataset,
    CocoImage,
    annotation_mask,
    coco_pointing_trials,
    load_coco,
    polygon_mask,
    rle_decode,
)
from .imagenet import ImageNetImage, ImageNetObject, load_imagenet, read_synsets
from .synthetic import (
    CLASS_NAMES,
    NUM_CLASSES,
    SyntheticDataset,
    SyntheticObject,
    iterate_batches,
    make_dataset,
    normalize,
)
from .voc import VOC_CLASSES, VOCImage, VOCObject, load_voc, voc_pointing_trials

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "SyntheticDataset",
    "SyntheticObject",
    "make_dataset",
    "normalize",
    "iterate_batches",
    "VOC_CLASSES",
    "VOCObject",
    "VOCImage",
    "load_voc",
    "voc_pointing_trials",
    "CocoAnnotation",
    "CocoImage",
    "CocoDataset",
    "load_coco",
    "coco_pointing_trials",
    "polygon_mask",
    "rle_decode",
    "annotation_mask",
    "ImageNetObject",
    "ImageNetImage",
    "load_imagenet",
    "read_synsets",
    "read_difficult_list",
    "load_image",
]
