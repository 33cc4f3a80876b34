"""The evaluation protocols, one function per metric over maps, and their summaries over records.

* **Pointing game** (:func:`pointing_hit`) — the class's map resized to the original image size
  (bilinear, ``align_corners=False``); for the gradient family (:data:`SMOOTHED_METHODS`) first
  smoothed with a Gaussian of ``σ = 0.02·max(h, w)`` at the input size (:func:`gaussian_smooth`).
  Hit if a GT pixel lies strictly within ``tolerance`` px of the argmax. Accuracy per class, then
  the mean over classes ("all"); the same over the difficult trials ("difficult")
  (:func:`pointing_summary`). :func:`center_baseline` points at the image centre.
* **Localisation** (:func:`box_metrics`) — box accuracy at ``box_threshold`` of the map's maximum
  (largest connected component, IoU ≥ 0.5 with a GT box of the class) and the MaxBoxAcc curve
  (min–max normalised map, a threshold sweep), at the original image size.
* **Deletion / insertion** (:func:`deletion_insertion`) — RISE's curves for the top-1 class:
  ``step = ceil(hw / steps)`` pixels at a time, the class's sigmoid or softmax probability.

:func:`eval_plan` and :func:`eval_consume` plug these into :func:`xattr_jax.harness.run_job`; every
(image, method, class) trial becomes a record with its ``hit``, ``box_ok`` and ``box_curve``; the
first ``deletion_images`` images add a ``protocol = "deletion"`` record with both AUCs.
:func:`summarise` turns the records into the table's numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from xattr_jax._constants import BOX_THRESHOLD

__all__ = [
    "SMOOTHED_METHODS",
    "gaussian_smooth",
    "resize",
    "pointing_map",
    "pointing_hit",
    "box_metrics",
    "deletion_insertion",
    "pointing_summary",
    "center_baseline",
    "eval_plan",
    "eval_consume",
    "summarise",
]

SMOOTHED_METHODS = ("gradient", "deconvnet", "guided_backprop")
DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.1, 0.91, 0.1), 4))


def gaussian_smooth(map, sigma: float) -> np.ndarray:
    """Gaussian blur of ``[..., H, W]`` maps over the last two axes, edges replicated.

    ``k(d) ∝ exp(−d² / 2σ²)`` for ``d = −r..r``, ``r = ceil(4σ)``, normalised to sum 1, separable
    (``scipy.ndimage.gaussian_filter``, ``mode="nearest"``). ``sigma <= 0`` returns the map.
    """
    from scipy.ndimage import gaussian_filter

    m = np.asarray(map, np.float64)
    if sigma <= 0:
        return m.astype(np.float32)
    r = int(math.ceil(4 * sigma))
    out = gaussian_filter(m, sigma, mode="nearest", radius=r, axes=(-2, -1))
    return out.astype(np.float32)


def resize(m, size) -> np.ndarray:
    """Bilinear resize of ``[..., H, W]`` to ``size`` (``align_corners=False``, no antialiasing)."""
    from xattr_jax.metrics import resize_map

    return np.asarray(resize_map(np.asarray(m, np.float32), tuple(size)))


def pointing_map(map, method: str, input_size, orig_size) -> np.ndarray:
    """A method's map prepared for the pointing game: smoothed (gradient family) and resized."""
    m = np.asarray(map, np.float32)
    if method in SMOOTHED_METHODS:
        m = resize(m, input_size)
        m = gaussian_smooth(m, 0.02 * max(input_size))
    return resize(m, orig_size)


def pointing_hit(map, mask, tolerance: float) -> bool:
    """Whether the map's maximum lies within ``tolerance`` px of the GT ``mask`` (same size)."""
    from xattr_jax.metrics import argmax_point, point_hit

    return bool(point_hit(argmax_point(map), mask, tolerance))


def box_metrics(map, boxes, threshold: float = BOX_THRESHOLD,
                thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> tuple[bool, list[float]]:  # fmt: skip
    """``(box_ok, curve)``: box accuracy at ``threshold`` and the MaxBoxAcc curve over ``thresholds``."""
    from xattr_jax.metrics import localization_accuracy, max_box_acc

    ok = localization_accuracy([map], [boxes], threshold)["accuracy"]
    curve = max_box_acc([map], [boxes], np.asarray(thresholds), normalize="minmax")["curve"]
    return bool(ok), [float(v) for v in np.asarray(curve)]


def deletion_insertion(predict: Callable, x, maps, target, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUCs per image (maps at the input size ``[N, h, w]``)."""
    import jax.numpy as jnp

    from xattr_jax.metrics import deletion, insertion

    h, w = np.shape(x)[1:3]
    step = int(math.ceil(h * w / steps))
    xs, m, t = jnp.asarray(x), resize(maps, (h, w)), np.asarray(target)
    return (np.asarray(deletion(predict, xs, m, t, step=step).auc),
            np.asarray(insertion(predict, xs, m, t, step=step).auc))  # fmt: skip


def _class_mean(hits: np.ndarray, classes: np.ndarray) -> Optional[float]:
    if hits.size == 0:
        return None
    return float(np.mean([hits[classes == c].mean() for c in np.unique(classes)]))


def pointing_summary(hits, classes, difficult) -> dict:
    """Mean over classes of the per-class hit rate, over all trials and over the difficult ones.

    ``difficult`` holds ``None`` for datasets without difficult flags: then ``pointing_difficult``
    is ``None``, as it is when no trial is difficult.
    """
    hits, classes = np.asarray(hits, bool), np.asarray(classes, np.int64)
    d = np.array([bool(v) for v in difficult]) if all(v is not None for v in difficult) else None
    return {
        "pointing_all": _class_mean(hits, classes),
        "pointing_difficult": None if d is None or not d.any() else _class_mean(hits[d], classes[d]),
    }


def center_baseline(samples, tolerance: float) -> dict:
    """The pointing game with the image centre ``(H // 2, W // 2)`` as every trial's point."""
    from xattr_jax.metrics import point_hit

    hits, classes, diff = [], [], []
    for s in samples:
        h, w = s.orig_size
        for t in s.trials:
            hits.append(point_hit((h // 2, w // 2), t.mask, tolerance))
            classes.append(t.class_id)
            diff.append(t.difficult)
    return pointing_summary(hits, classes, diff)


def eval_plan(deletion_keys: set):
    """Tasks of an image: one per trial (``protocol="pointing"``), plus its top-1 class for
    deletion/insertion when the image is among the first ``deletion_images``."""

    def plan(loaded, logits) -> list[tuple[int, dict]]:
        tasks = [(t.class_id, {"protocol": "pointing", "trial": j, "difficult": t.difficult})
                 for j, t in enumerate(loaded.sample.trials)]  # fmt: skip
        if loaded.sample.key in deletion_keys:
            tasks.append((int(np.argmax(logits)), {"protocol": "deletion"}))
        return tasks

    return plan


def eval_consume(predict: Callable, *, tolerance: float, box_threshold: float = BOX_THRESHOLD,
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, deletion_steps: int = 64):  # fmt: skip
    """Per-task protocol fields from the maps (see the module docstring)."""

    def consume(method: str, tasks, maps) -> list[dict]:
        out: list[Optional[dict]] = [None] * len(tasks)
        dele = []
        for i, (task, m) in enumerate(zip(tasks, maps)):
            if task.fields.get("protocol") == "deletion":
                dele.append(i)
                continue
            ld = task.loaded
            trial = ld.sample.trials[task.fields["trial"]]
            pm = pointing_map(m, method, ld.x.shape[:2], ld.orig_size)
            if not np.all(np.isfinite(pm)):
                raise FloatingPointError(f"non-finite map for {ld.sample.key}")
            fields = {"hit": pointing_hit(pm, trial.mask, tolerance)}
            if len(trial.boxes):
                fields["box_ok"], fields["box_curve"] = box_metrics(pm, trial.boxes, box_threshold, thresholds)
            out[i] = fields
        groups = defaultdict(list)  # deletion images of one input shape go together
        for i in dele:
            groups[tasks[i].loaded.x.shape].append(i)
        for idx in groups.values():
            x = np.stack([tasks[i].loaded.x for i in idx])
            d, ins = deletion_insertion(predict, x, maps[idx], [tasks[i].target for i in idx], deletion_steps)
            for k, i in enumerate(idx):
                out[i] = {"deletion_auc": float(d[k]), "insertion_auc": float(ins[k])}
        return out

    return consume


def summarise(records: Iterable[dict], thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """Per-method numbers from evaluation records: pointing (all, difficult), box accuracy,
    MaxBoxAcc (and its threshold), deletion and insertion AUC; ``failed`` counts failed records."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_method[r["method"]].append(r)
    out = {}
    for method, recs in by_method.items():
        ok = [r for r in recs if r["status"] == "ok"]
        pts = [r for r in ok if r.get("protocol") == "pointing"]
        entry = pointing_summary([r["hit"] for r in pts], [r["target"] for r in pts],
                                 [r["difficult"] for r in pts])  # fmt: skip
        boxed = [r for r in pts if "box_ok" in r]
        entry["box_acc"] = float(np.mean([r["box_ok"] for r in boxed])) if boxed else None
        if boxed:
            curve = np.sum([r["box_curve"] for r in boxed], axis=0)
            best = int(np.argmax(curve))
            entry["max_box_acc"] = float(curve[best] / len(boxed))
            entry["max_box_acc_threshold"] = round(float(thresholds[best]), 4)
        dels = [r for r in ok if r.get("protocol") == "deletion"]
        entry["deletion_auc"] = float(np.mean([r["deletion_auc"] for r in dels])) if dels else None
        entry["insertion_auc"] = float(np.mean([r["insertion_auc"] for r in dels])) if dels else None
        entry["failed_records"] = sum(r["status"].startswith("failed") for r in recs)
        out[method] = entry
    return out
