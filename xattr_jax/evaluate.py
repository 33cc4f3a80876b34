"""The evaluation harness behind ``xattr eval``: pointing game, localisation boxes, deletion/insertion.

Datasets:

* ``synthetic`` — the held-out synthetic benchmark (:func:`xattr_jax.data.make_dataset`, seed
  :data:`xattr_jax.train.HELD_OUT_SEED`), usually with an embedded model
  (``--checkpoint embedded:small_vgg``); GT = the class's visible mask, boxes = its objects' boxes,
  difficult = the EB definition (:class:`xattr_jax.data.SyntheticDataset`).
* ``voc07`` — VOC2007 ``test`` from ``--root`` (XML annotations; GT = union of the class's boxes;
  classes whose boxes are all ``difficult`` are skipped; ``--difficult`` reads the EB/TorchRay flag
  list, e.g. ``torchray/benchmark/pointing_game_ebp_voc07_difficult.txt``).
* ``coco14`` — COCO ``val2014`` from ``--root`` (``annotations/instances_val2014.json`` and
  ``val2014/``, or ``--annotations FILE`` and ``--images DIR``); GT = union of the class's
  segmentation masks; ``--difficult`` reads ``pointing_game_ebp_coco_difficult.txt``.
* ``imagenet`` — ILSVRC2012 validation from ``--root`` (``annotations/``: the extracted
  ``ILSVRC2012_bbox_val_v3.tgz`` XML files; ``images/``: flat or one folder per synset; or
  ``--annotations DIR`` and ``--images DIR``); class order from ``--synsets FILE`` (default
  ``ROOT/synsets.txt``) or the 1000 sorted synset folders (:func:`xattr_jax.data.load_imagenet`);
  GT = union of the class's boxes; no difficult list.

Preprocessing (``--preprocess auto``): embedded checkpoints (``small_vgg``, ``small_resnet``) take the
whole image resized to 64×64; any other checkpoint takes TorchRay's: shorter side resized to 224,
aspect ratio kept, no crop. Both are bilinear (``align_corners=False``, no antialiasing) and then
normalised with ImageNet's mean and std.

Protocols (METHODS.md §6, Decisions 6–7):

* **Pointing game** — one trial per (image, class present), the map of that class, resized to the
  original image size (bilinear, ``align_corners=False``, :func:`xattr_jax.metrics.resize_map`);
  for ``gradient``, ``deconvnet`` and ``guided_backprop`` first smoothed with a Gaussian of
  ``σ = 0.02·max(H, W)`` of the map (separable, half-width ``ceil(4σ)``, replicate padding,
  :func:`gaussian_smooth`). Hit if a GT pixel lies within 15 px of the argmax (synthetic 64 px
  images: 15·64/224 ≈ 4.3 px, :data:`SYNTHETIC_TOLERANCE`); accuracy per class,
  then the mean over classes ("all"); the same over the difficult trials ("difficult").
  Excitation Backprop and its contrastive variant use ``signal="pointing"`` only when the model is
  fully convolutional (no dense layer); otherwise the plain logit. A ``center`` baseline (the image
  centre as the point) is reported too.
* **Localisation** — box accuracy at 15 % of the map's maximum (largest connected component,
  IoU ≥ 0.5 with a GT box of the class; the class is the GT one) and MaxBoxAcc (min–max normalised
  maps, best over a threshold sweep), both at the original image size.
* **Deletion / insertion** (RISE) — on the first ``deletion_images`` images, for the top-1
  predicted class; ``deletion_steps`` steps (``step = ceil(HW / deletion_steps)`` pixels; RISE
  uses 224 steps at 224²); the score is the class's sigmoid probability for multi-label models
  (the default for synthetic, VOC and COCO) or the softmax probability (``score="softmax"``, as
  RISE; the default for ImageNet).
  Deletion: lower is better; insertion: higher is better.

Example:
  >>> from xattr_jax.evaluate import evaluate, synthetic_samples, write_report
  >>> model, variables = load_embedded("small_vgg")
  >>> samples = synthetic_samples(50)
  >>> res = evaluate(model, variables, samples, ["gradient", "grad_cam"])
  >>> write_report(res, "out/")
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

__all__ = [
    "Trial",
    "Sample",
    "SMOOTHED_METHODS",
    "gaussian_smooth",
    "preprocess",
    "load_model",
    "is_fully_convolutional",
    "method_options",
    "synthetic_samples",
    "voc_samples",
    "coco_samples",
    "imagenet_samples",
    "evaluate",
    "markdown_table",
    "write_report",
    "main",
]

SMOOTHED_METHODS = ("gradient", "deconvnet", "guided_backprop")
EB_METHODS = ("excitation_backprop", "contrastive_excitation_backprop")
EMBEDDED_SIZE = 64
TORCHRAY_SHORT_SIDE = 224
# The 15 px tolerance belongs to ~224 px images; on the 64 px synthetic images it would cover most of
# the image, so the synthetic benchmark scales it with the image: 15 · 64 / 224 ≈ 4.3 px.
SYNTHETIC_TOLERANCE = 15 * EMBEDDED_SIZE / TORCHRAY_SHORT_SIDE


@dataclasses.dataclass(frozen=True)
class Trial:
    """One pointing/localisation trial: a class present in an image, at original resolution."""

    class_id: int
    difficult: Optional[bool]
    mask: np.ndarray  # bool [H0, W0]
    boxes: np.ndarray  # int [K, 4] inclusive (x0, y0, x1, y1)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image: the model input ``x`` ``[h, w, 3]`` (normalised), its original size, its trials."""

    key: str
    x: np.ndarray
    orig_size: tuple[int, int]
    trials: tuple[Trial, ...]
    image: Optional[np.ndarray] = None  # [h, w, 3] in [0, 1], the resized input before normalising


# ----------------------------------------------------------------------------------------------
# maps


def gaussian_smooth(map, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``[..., H, W]`` maps with replicate padding.

    ``k(d) ∝ exp(−d² / 2σ²)`` for ``d = −r..r``, ``r = ceil(4σ)``, normalised to sum 1; applied along
    H then W with edge values repeated. ``sigma <= 0`` returns the map unchanged.
    """
    m = np.asarray(map, np.float64)
    if sigma <= 0:
        return m.astype(np.float32)
    r = int(math.ceil(4 * sigma))
    d = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(d * d) / (2 * sigma * sigma))
    k /= k.sum()
    for axis in (-2, -1):
        pad = [(0, 0)] * m.ndim
        pad[axis] = (r, r)
        p = np.pad(m, pad, mode="edge")
        n = m.shape[axis]
        out = np.zeros_like(m)
        for j, kj in enumerate(k):
            out += kj * np.take(p, np.arange(j, j + n), axis=axis)
        m = out
    return m.astype(np.float32)


def _resize(m, size) -> np.ndarray:
    from xattr_jax.metrics import resize_map

    m = np.asarray(m, np.float32)
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return np.asarray(resize_map(m, tuple(size)))


def pointing_map(map, method: str, input_size, orig_size) -> np.ndarray:
    """A method's map prepared for the pointing game: smoothed (gradient family) and resized."""
    m = np.asarray(map, np.float32)
    if method in SMOOTHED_METHODS:
        m = _resize(m, input_size)
        m = gaussian_smooth(m, 0.02 * max(input_size))
    return _resize(m, orig_size)


# ----------------------------------------------------------------------------------------------
# models and images


def preprocess(image: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Resize and normalise an RGB image ``[H, W, 3]`` in [0, 1] for a model.

    Args:
      image: the image.
      mode: ``"embedded"`` (whole image to 64×64) or ``"imagenet"`` (TorchRay: shorter side 224,
        aspect kept, no crop).

    Returns:
      ``(x, resized)``: the normalised input ``[h, w, 3]`` float32 and the resized image in [0, 1].
    """
    from xattr_jax.data import normalize

    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {img.shape}")
    h, w = img.shape[:2]
    if mode == "embedded":
        size = (EMBEDDED_SIZE, EMBEDDED_SIZE)
    elif mode == "imagenet":
        s = TORCHRAY_SHORT_SIDE / min(h, w)
        size = (TORCHRAY_SHORT_SIDE, max(1, int(round(w * s)))) if h <= w else (
            max(1, int(round(h * s))), TORCHRAY_SHORT_SIDE)  # fmt: skip
    else:
        raise ValueError(f"unknown preprocessing {mode!r}; use 'embedded' or 'imagenet'")
    resized = np.clip(np.moveaxis(_resize(np.moveaxis(img, -1, 0), size), 0, -1), 0, 1)
    return normalize(resized), resized


def load_model(checkpoint: str):
    """Load ``embedded:NAME`` or a checkpoint directory; returns ``(model, variables, arch)``."""
    from xattr_jax.checkpoint import METADATA_FILE, load_checkpoint
    from xattr_jax.models import load_embedded

    if checkpoint.startswith("embedded:"):
        name = checkpoint.split(":", 1)[1]
        model, variables = load_embedded(name)
        return model, variables, name
    model, variables = load_checkpoint(checkpoint)
    arch = json.loads((Path(checkpoint).expanduser() / METADATA_FILE).read_text())["arch"]
    return model, variables, arch


def default_preprocess(arch: str) -> str:
    """``"embedded"`` for the small synthetic-benchmark models, else ``"imagenet"``."""
    from xattr_jax.models import EMBEDDED

    return "embedded" if arch in EMBEDDED else "imagenet"


def is_fully_convolutional(variables) -> bool:
    """True when no parameter is a dense (2-D) kernel."""
    import jax

    for path, leaf in jax.tree_util.tree_leaves_with_path(dict(variables).get("params", {})):
        if jax.tree_util.keystr(path).endswith("['kernel']") and np.ndim(leaf) == 2:
            return False
    return True


def method_options(method: str, variables) -> dict:
    """Keyword options the harness passes for ``method`` (EB: pointing signal if fully conv)."""
    if method in EB_METHODS and is_fully_convolutional(variables):
        return {"signal": "pointing"}
    return {}


# ----------------------------------------------------------------------------------------------
# datasets


def synthetic_samples(n: int, seed: Optional[int] = None, size: int = EMBEDDED_SIZE) -> list[Sample]:
    """``n`` held-out synthetic images (seed :data:`xattr_jax.train.HELD_OUT_SEED` by default)."""
    from xattr_jax.data import make_dataset, normalize
    from xattr_jax.train import HELD_OUT_SEED

    ds = make_dataset(n, size, seed=HELD_OUT_SEED if seed is None else seed)
    samples = []
    for i in range(len(ds)):
        trials = []
        for t in np.flatnonzero(ds.trial_image == i):
            c = int(ds.trial_class[t])
            boxes = np.array([o.box for o in ds.objects[i] if o.class_id == c and o.mask.any()])
            trials.append(Trial(c, bool(ds.difficult[t]), ds.trial_masks[t], boxes.reshape(-1, 4)))
        samples.append(
            Sample(f"synthetic_{i:05d}", normalize(ds.images[i]), (size, size), tuple(trials),
                   ds.images[i])  # fmt: skip
        )
    return samples


def _read(path) -> np.ndarray:
    from xattr_jax.viz_overlay import read_image

    return read_image(path)


def _load(path, height: int, width: int, source: str, mode: str):
    """Read an image, check its size against its annotation (``source``), preprocess it."""
    img = _read(path)
    if img.shape[:2] != (height, width):
        raise ValueError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, the {source} says "
                         f"{width}x{height}")  # fmt: skip
    return preprocess(img, mode)


def voc_samples(root, mode: str, *, split: str = "test", difficult_file=None,
                limit: Optional[int] = None) -> list[Sample]:  # fmt: skip
    """VOC07 images (annotations by :func:`xattr_jax.data.load_voc`), preprocessed with ``mode``."""
    from xattr_jax.data import load_voc

    recs = load_voc(root, split, difficult_file=difficult_file)
    out = []
    for rec in recs[:limit] if limit else recs:
        cls = rec.pointing_class_ids()
        if not cls:
            continue
        x, resized = _load(rec.path, rec.height, rec.width, "XML", mode)
        trials = []
        for c in cls:
            boxes = np.array([o.box for o in rec.objects if o.class_id == c]).reshape(-1, 4)
            d = None if rec.difficult_flags is None else bool(rec.difficult_flags[c])
            trials.append(Trial(c, d, rec.class_mask(c), boxes))
        out.append(Sample(rec.image_id, x, (rec.height, rec.width), tuple(trials), resized))
    return out


def coco_samples(annotation_file, image_dir, mode: str, *, difficult_file=None,
                 limit: Optional[int] = None) -> list[Sample]:  # fmt: skip
    """COCO14 images with annotations (:func:`xattr_jax.data.load_coco`), preprocessed with ``mode``."""
    from xattr_jax.data import load_coco

    ds = load_coco(annotation_file, image_dir, difficult_file=difficult_file)
    out = []
    for rec in ds.images[:limit] if limit else ds.images:
        h, w = rec.height, rec.width
        x, resized = _load(rec.path, h, w, "JSON", mode)
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
        out.append(Sample(Path(rec.file_name).stem, x, (h, w), tuple(trials), resized))
    return out


def imagenet_samples(root, mode: str, *, images=None, annotations=None, synsets=None,
                     limit: Optional[int] = None) -> list[Sample]:  # fmt: skip
    """ILSVRC2012 val images (:func:`xattr_jax.data.load_imagenet`), preprocessed with ``mode``.

    One trial per class present (GT = union of its boxes), no difficult flags.

    Raises:
      ValueError: an image whose size differs from its XML, or no annotation with a box.
    """
    from xattr_jax.data import load_imagenet

    recs = load_imagenet(root, images=images, annotations=annotations, synsets=synsets)
    recs = recs[:limit] if limit else recs
    out = []
    for rec in recs:
        if not rec.class_ids:
            continue
        x, resized = _load(rec.path, rec.height, rec.width, "XML", mode)
        trials = []
        for c in rec.class_ids:
            boxes = np.array([o.box for o in rec.objects if o.class_id == c]).reshape(-1, 4)
            trials.append(Trial(c, None, rec.class_mask(c), boxes))
        out.append(Sample(rec.image_id, x, (rec.height, rec.width), tuple(trials), resized))
    if not out:
        raise ValueError(f"none of the {len(recs)} ImageNet annotations read has an <object> box")
    return out


# ----------------------------------------------------------------------------------------------
# the harness


class _Progress:
    """A one-line stderr progress bar."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled, self.done = max(total, 1), label, enabled, 0
        self.t0 = time.perf_counter()

    def update(self, k: int = 1) -> None:
        self.done += k
        if self.enabled:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            sys.stderr.write(f"\r{self.label:<34.34} [{bar}] {self.done}/{self.total} "
                             f"{time.perf_counter() - self.t0:6.1f}s")  # fmt: skip
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _class_mean(hits: np.ndarray, classes: np.ndarray) -> Optional[float]:
    if hits.size == 0:
        return None
    return float(np.mean([hits[classes == c].mean() for c in np.unique(classes)]))


def _pointing_summary(hits, classes, difficult) -> dict:
    hits, classes = np.asarray(hits, bool), np.asarray(classes, np.int64)
    d = np.array([bool(v) for v in difficult]) if all(v is not None for v in difficult) else None
    return {
        "pointing_all": _class_mean(hits, classes),
        "pointing_difficult": None if d is None or not d.any() else _class_mean(hits[d], classes[d]),
    }


def _batches(samples: Sequence[Sample], batch_size: int):
    """Groups of (sample index, trial index) with the same input shape, ``batch_size`` at a time."""
    groups: dict[tuple, list] = defaultdict(list)
    for i, s in enumerate(samples):
        for j in range(len(s.trials)):
            groups[s.x.shape].append((i, j))
    for items in groups.values():
        for a in range(0, len(items), batch_size):
            yield items[a : a + batch_size]


def _center_baseline(samples, tolerance: float) -> dict:
    from xattr_jax.metrics import point_hit

    hits, classes, diff = [], [], []
    for s in samples:
        h, w = s.orig_size
        for t in s.trials:
            hits.append(point_hit((h // 2, w // 2), t.mask, tolerance))
            classes.append(t.class_id)
            diff.append(t.difficult)
    return _pointing_summary(hits, classes, diff)


def evaluate(
    model,
    variables,
    samples: Sequence[Sample],
    methods: Sequence[str],
    *,
    batch_size: int = 16,
    tolerance: float = 15,
    box_threshold: float = 0.15,
    max_box_thresholds: Optional[Sequence[float]] = None,
    deletion_images: int = 32,
    deletion_steps: int = 64,
    score: str = "sigmoid",
    keep_maps: int = 0,
    options: Optional[dict] = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the protocols for each method on ``samples``; errors of one method are reported, not raised.

    Args:
      model, variables: the model.
      samples: from :func:`synthetic_samples`, :func:`voc_samples`, :func:`coco_samples` or
        :func:`imagenet_samples`.
      methods: method names (unknown or failing ones get an ``"error"`` entry).
      batch_size: trials per attribution call (the last batch is padded: one compilation per shape).
      tolerance: pointing-game radius in pixels.
      box_threshold: the box-accuracy threshold (fraction of the map's maximum).
      max_box_thresholds: the MaxBoxAcc sweep (default 0.1, 0.2, ..., 0.9).
      deletion_images: images used for deletion/insertion (0: skip).
      deletion_steps: steps of the deletion/insertion curves.
      score: ``"sigmoid"`` or ``"softmax"`` probability for deletion/insertion.
      keep_maps: return the pointing maps of the first ``keep_maps`` trials per method (``"maps"``).
      options: extra options per method, ``{method: {option: value}}`` (e.g. fewer IG steps).
      progress: draw a progress bar on stderr.
      log: where to report a failing method (default: stderr).

    Returns:
      dict: ``num_images``, ``num_trials``, ``num_difficult``, ``center`` (baseline) and
      ``methods`` ``{name: {pointing_all, pointing_difficult, box_acc, max_box_acc,
      max_box_acc_threshold, deletion_auc, insertion_auc, seconds}}`` (or ``{"error": ...}``).
    """
    import jax
    import jax.numpy as jnp

    import xattr_jax as xa
    from xattr_jax.metrics import (
        argmax_point,
        deletion,
        insertion,
        localization_accuracy,
        max_box_acc,
        point_hit,
    )

    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if score not in ("sigmoid", "softmax"):
        raise ValueError(f"score must be 'sigmoid' or 'softmax', got {score!r}")
    if not samples:
        raise ValueError("no samples to evaluate")
    ts = np.arange(0.1, 0.91, 0.1) if max_box_thresholds is None else np.asarray(max_box_thresholds)
    available = set(xa.methods_available())
    trials_flat = [t for s in samples for t in s.trials]
    result: dict[str, Any] = {
        "num_images": len(samples),
        "num_trials": len(trials_flat),
        "num_difficult": int(sum(bool(t.difficult) for t in trials_flat)),
        "difficult_flags": all(t.difficult is not None for t in trials_flat),
        "tolerance_px": tolerance,
        "box_threshold": box_threshold,
        "deletion_images": min(deletion_images, len(samples)),
        "deletion_steps": deletion_steps,
        "score": score,
        "center": _center_baseline(samples, tolerance),
        "methods": {},
    }
    apply = jax.jit(model.apply)
    squash = jax.nn.sigmoid if score == "sigmoid" else jax.nn.softmax

    def predict(x):
        return squash(apply(variables, x))

    del_samples = list(samples[: max(0, deletion_images)])
    top1 = [int(np.argmax(np.asarray(apply(variables, jnp.asarray(s.x[None])))[0])) for s in del_samples]

    for method in methods:
        if method not in available:
            result["methods"][method] = {"error": f"method {method!r} is not available"}
            say(f"{method}: not available in this installation; skipped")
            continue
        t0 = time.perf_counter()
        bar = _Progress(len(trials_flat) + len(del_samples), method, progress)
        try:
            opts = {**method_options(method, variables), **dict((options or {}).get(method, {}))}
            fn = xa.attributor(model, method, **opts)
            calls = iter(range(1 << 30))  # one noise key per call (methods that draw noise)

            def attribute(x, tgt):
                key = jax.random.fold_in(jax.random.key(0), next(calls))
                return np.asarray(fn(variables, jnp.asarray(x), jnp.asarray(tgt), key=key).map)

            hits, classes, diff, box_ok, curve = [], [], [], [], np.zeros(len(ts))
            kept = []
            for items in _batches(samples, batch_size):
                pad = items + [items[-1]] * (batch_size - len(items))
                x = np.stack([samples[i].x for i, _ in pad])
                tgt = np.array([samples[i].trials[j].class_id for i, j in pad], np.int32)
                maps = attribute(x, tgt)
                for k, (i, j) in enumerate(items):
                    s, t = samples[i], samples[i].trials[j]
                    m = pointing_map(maps[k], method, s.x.shape[:2], s.orig_size)
                    if not np.all(np.isfinite(m)):
                        raise FloatingPointError(f"non-finite map for {s.key}")
                    hits.append(point_hit(argmax_point(m), t.mask, tolerance))
                    classes.append(t.class_id)
                    diff.append(t.difficult)
                    if len(t.boxes):
                        box_ok.append(localization_accuracy([m], [t.boxes], box_threshold)["accuracy"])
                        curve += np.asarray(max_box_acc([m], [t.boxes], ts, normalize="minmax")["curve"])
                    if len(kept) < keep_maps:
                        kept.append((i, j, m))
                bar.update(len(items))
            entry = _pointing_summary(hits, classes, diff)
            entry["box_acc"] = float(np.mean(box_ok)) if box_ok else None
            if box_ok:
                best = int(np.argmax(curve))
                entry["max_box_acc"] = float(curve[best] / len(box_ok))
                entry["max_box_acc_threshold"] = round(float(ts[best]), 4)
            dels, inss = [], []
            groups: dict[tuple, list] = defaultdict(list)
            for s, c in zip(del_samples, top1):
                groups[s.x.shape].append((s, c))
            for shape, items in groups.items():
                h, w = shape[:2]
                step = int(math.ceil(h * w / deletion_steps))
                for a in range(0, len(items), batch_size):
                    chunk = items[a : a + batch_size]
                    pad = chunk + [chunk[-1]] * (batch_size - len(chunk))
                    x = np.stack([s.x for s, _ in pad])
                    tgt = np.array([c for _, c in pad], np.int32)
                    maps = attribute(x, tgt)
                    n = len(chunk)
                    m = _resize(maps[:n], (h, w))
                    xs, ts_ = jnp.asarray(x[:n]), tgt[:n]
                    dels += [float(v) for v in deletion(predict, xs, m, ts_, step=step).auc]
                    inss += [float(v) for v in insertion(predict, xs, m, ts_, step=step).auc]
                    bar.update(n)
            entry["deletion_auc"] = float(np.mean(dels)) if dels else None
            entry["insertion_auc"] = float(np.mean(inss)) if inss else None
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            if keep_maps:
                entry["maps"] = kept
        except Exception as err:  # report the failing method and go on with the others
            bar.close()
            msg = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            say(f"{method}: failed ({msg}); skipped")
            result["methods"][method] = {"error": msg}
            continue
        bar.close()
        result["methods"][method] = entry
    return result


# ----------------------------------------------------------------------------------------------
# reports


def _fmt(v, pct: bool = True) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def markdown_table(result: dict, title: Optional[str] = None) -> str:
    """A markdown table of :func:`evaluate`'s result (pointing and box accuracies in %)."""
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [
        "| method | pointing all | pointing difficult | box acc @15% | MaxBoxAcc | deletion AUC ↓ "
        "| insertion AUC ↑ | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    c = result["center"]
    lines.append(f"| center (baseline) | {_fmt(c['pointing_all'])} | {_fmt(c['pointing_difficult'])} "
                 "| – | – | – | – | – |")  # fmt: skip
    for name, e in result["methods"].items():
        if "error" in e:
            lines.append(f"| {name} | failed: {e['error'][:60]} | | | | | | |")
            continue
        lines.append(
            f"| {name} | {_fmt(e['pointing_all'])} | {_fmt(e['pointing_difficult'])} "
            f"| {_fmt(e.get('box_acc'))} | {_fmt(e.get('max_box_acc'))} "
            f"| {_fmt(e.get('deletion_auc'), False)} | {_fmt(e.get('insertion_auc'), False)} "
            f"| {e['seconds']:.1f} |"
        )
    lines += [
        "",
        f"{result['num_images']} images, {result['num_trials']} trials "
        f"({result['num_difficult']} difficult); pointing tolerance {result['tolerance_px']:.2f} px; "
        f"deletion/insertion on {result['deletion_images']} images, {result['deletion_steps']} "
        f"steps, {result['score']} probability of the top-1 class.",
    ]
    return "\n".join(lines) + "\n"


def _jsonable(result: dict) -> dict:
    out = dict(result)
    out["methods"] = {
        k: {kk: vv for kk, vv in v.items() if kk != "maps"} for k, v in result["methods"].items()
    }
    return out


def write_report(result: dict, out, name: str = "eval", title: Optional[str] = None) -> tuple[Path, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; returns the two paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{name}.json", out / f"{name}.md"
    js.write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    md.write_text(markdown_table(result, title))
    return js, md


# ----------------------------------------------------------------------------------------------
# command line (registered as `xattr eval` in xattr_jax.cli)

DEFAULT_METHODS = (
    "gradient",
    "deconvnet",
    "guided_backprop",
    "excitation_backprop",
    "contrastive_excitation_backprop",
    "grad_cam",
)


def _int_at_least(low: int):
    """An argparse type: an int ``>= low`` (a bad value exits with code 2 at parse time)."""
    import argparse

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {v}")
        return v

    return parse


def _nonneg_float(text):
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def add_arguments(p) -> None:
    """The ``xattr eval`` options."""
    p.add_argument("--dataset", choices=("synthetic", "voc07", "coco14", "imagenet"),
                   default="synthetic")  # fmt: skip
    p.add_argument("--root", help="dataset folder (VOCdevkit / VOC2007, the COCO folder, or the "
                   "ImageNet folder with annotations/ and images/)")  # fmt: skip
    p.add_argument("--annotations", help="COCO instances JSON (default ROOT/annotations/"
                   "instances_val2014.json); ImageNet: folder of the val bbox XML files "
                   "(default ROOT/annotations)")  # fmt: skip
    p.add_argument("--images", help="COCO image folder (default ROOT/val2014); ImageNet: image "
                   "folder, flat or one sub-folder per synset (default ROOT/images)")  # fmt: skip
    p.add_argument("--synsets", help="ImageNet class order: one wnid per line, first token "
                   "(default ROOT/synsets.txt or ROOT/LOC_synset_mapping.txt, else the 1000 "
                   "sorted synset folders)")  # fmt: skip
    p.add_argument("--split", default="test", help="VOC image list (default: test)")
    p.add_argument("--checkpoint", default="embedded:small_vgg",
                   help="checkpoint directory or embedded:small_vgg / embedded:small_resnet")  # fmt: skip
    p.add_argument("--preprocess", choices=("auto", "embedded", "imagenet"), default="auto")
    p.add_argument("--difficult", help="EB/TorchRay difficult-list file (image key + flags per line)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated method names, or 'all'")  # fmt: skip
    p.add_argument("--limit", type=_int_at_least(1), default=None, help="evaluate the first N images only")
    p.add_argument("--num-images", type=_int_at_least(1), default=200, help="synthetic: number of images")
    p.add_argument("--tolerance", type=_nonneg_float, default=None,
                   help="pointing-game radius in px (default 15; synthetic: 15*64/224 = 4.3)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=16)
    p.add_argument("--deletion-images", type=_int_at_least(0), default=32)
    p.add_argument("--deletion-steps", type=_int_at_least(1), default=64)
    p.add_argument("--score", choices=("sigmoid", "softmax"), default=None,
                   help="deletion/insertion probability (default per dataset: softmax for the "
                   "single-label imagenet, sigmoid for the multi-label others)")  # fmt: skip
    p.add_argument("--out", required=True, help="folder for eval.json and eval.md")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """Handler of ``xattr eval``."""
    import xattr_jax as xa

    def fail(msg):
        print(f"xattr eval: error: {msg}", file=sys.stderr)
        return 1

    try:
        model, variables, arch = load_model(args.checkpoint)
    except (ValueError, FileNotFoundError) as err:
        return fail(str(err))
    mode = default_preprocess(arch) if args.preprocess == "auto" else args.preprocess
    methods = (list(xa.methods_available()) if args.methods.strip() == "all"
               else [m.strip() for m in args.methods.split(",") if m.strip()])  # fmt: skip
    unknown = [m for m in methods if m not in xa.methods_available()]
    if unknown or not methods:
        print(f"xattr eval: error: unknown method(s) {unknown or '(none given)'}; available: "
              f"{', '.join(xa.methods_available())} or 'all'", file=sys.stderr)
        return 2
    try:
        if args.dataset == "synthetic":
            samples = synthetic_samples(args.limit or args.num_images)
        elif args.root is None and args.dataset == "voc07":
            return fail("--root is required for voc07")
        elif args.dataset == "voc07":
            samples = voc_samples(args.root, mode, split=args.split, difficult_file=args.difficult,
                                  limit=args.limit)  # fmt: skip
        elif args.dataset == "imagenet":
            if args.root is None and (args.images is None or args.annotations is None):
                return fail("imagenet needs --root, or both --images and --annotations")
            if args.difficult is not None:
                return fail("imagenet has no difficult list; drop --difficult")
            samples = imagenet_samples(args.root, mode, images=args.images,
                                       annotations=args.annotations, synsets=args.synsets,
                                       limit=args.limit)  # fmt: skip
        else:
            if args.annotations is None and args.root is None:
                return fail("coco14 needs --root or --annotations")
            ann = args.annotations or Path(args.root) / "annotations" / "instances_val2014.json"
            img_dir = args.images or Path(args.root or ".") / "val2014"
            samples = coco_samples(ann, img_dir, mode, difficult_file=args.difficult,
                                   limit=args.limit)  # fmt: skip
    except (FileNotFoundError, ValueError, KeyError, ImportError) as err:
        return fail(str(err))
    if not samples:
        return fail("no image with a pointing-game trial was found")
    score = args.score or ("softmax" if args.dataset == "imagenet" else "sigmoid")
    tol = args.tolerance
    if tol is None:
        tol = SYNTHETIC_TOLERANCE if args.dataset == "synthetic" else 15.0
    n_cls = int(np.shape(model.apply(variables, samples[0].x[None]))[-1])
    worst = max(t.class_id for s in samples for t in s.trials)
    if worst >= n_cls:
        return fail(f"the dataset has class index {worst} but the model has {n_cls} outputs")
    result = evaluate(
        model, variables, samples, methods,
        batch_size=args.batch_size, tolerance=tol, deletion_images=args.deletion_images,
        deletion_steps=args.deletion_steps, score=score, progress=not args.no_progress,
    )  # fmt: skip
    result.update(dataset=args.dataset, checkpoint=args.checkpoint, arch=arch, preprocess=mode)
    js, md = write_report(result, args.out, title=f"{args.dataset} · {arch}")
    print(markdown_table(result, f"{args.dataset} · {arch}"))
    print(f"wrote {js} and {md}")
    failed = {m: e["error"] for m, e in result["methods"].items() if "error" in e}
    for m, msg in failed.items():
        print(f"xattr eval: error: method {m} failed: {msg}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xattr_jax.evaluate`` (same as ``xattr eval``)."""
    import argparse

    p = argparse.ArgumentParser(prog="xattr eval")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
