"""Evaluation metrics for saliency maps (docs/evaluation.md).

* :func:`resize_map` — bilinear, ``align_corners=False`` (PyTorch) resizing.
* Pointing game — :func:`pointing_game`, :func:`point_hit`, :func:`argmax_point`.
* Localisation boxes (Grad-CAM protocol) — :func:`box_from_map`, :func:`box_iou`,
  :func:`localization_accuracy`, :func:`max_box_acc`; components by :func:`connected_components`.
* Deletion / insertion (RISE) — :func:`deletion`, :func:`insertion`, :func:`gaussian_blur`.
* mIoU — :func:`miou`, :func:`binarize_map`, :func:`otsu_threshold`.
* Model randomisation — :func:`spearman`, :func:`spearman_abs`, :func:`ssim`,
  :func:`cascading_randomization`, :func:`randomization_sensitivity`.
* :func:`conservation_report` for relevance-conserving methods.
"""

from .components import Components, connected_components, label_components
from .conservation import conservation_report
from .deletion import CurveResult, curve_auc, deletion, gaussian_blur, gaussian_kernel, insertion
from .localization import box_from_map, box_iou, localization_accuracy, max_box_acc
from .miou import binarize_map, miou, otsu_threshold
from .pointing import argmax_point, point_hit, pointing_game
from .resize import resize_map
from .sensitivity import (
    cascading_randomization,
    default_reinit,
    randomization_sensitivity,
    rankdata,
    spearman,
    spearman_abs,
    ssim,
)

__all__ = [
    "resize_map",
    "argmax_point",
    "point_hit",
    "pointing_game",
    "Components",
    "connected_components",
    "label_components",
    "box_from_map",
    "box_iou",
    "localization_accuracy",
    "max_box_acc",
    "CurveResult",
    "curve_auc",
    "gaussian_kernel",
    "gaussian_blur",
    "deletion",
    "insertion",
    "otsu_threshold",
    "binarize_map",
    "miou",
    "rankdata",
    "spearman",
    "spearman_abs",
    "ssim",
    "default_reinit",
    "cascading_randomization",
    "randomization_sensitivity",
    "conservation_report",
]
