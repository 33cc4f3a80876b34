"""Train the small synthetic-benchmark models (the shipped checkpoints come from this script).

Deterministic: the data (``make_dataset`` seeds), the initialisation, the shuffling and the flips
all come from fixed seeds, so a rerun on the same machine gives the same weights (and, across
machines, the same held-out mAP up to floating-point noise).

Recipe (the defaults, used for ``xattr_jax/assets``): 64×64 synthetic images, training set seed 1
(:data:`TRAIN_SIZE` images), held-out set seed 2 (:data:`HELD_OUT_SIZE` images, never trained on),
multi-label sigmoid binary cross-entropy over the 20 classes, AdamW (weight decay 1e-4) with a
linear warm-up and cosine decay, batch 64, random horizontal flips. The score is the held-out mAP
(average precision per class, mean over the classes; :func:`mean_average_precision`).

Usage::

    python -m xattr_jax.app.train --arch small_vgg --out ckpt/small_vgg
    python -m xattr_jax.app.train --arch small_resnet --out xattr_jax/assets/small_resnet --overwrite

Example:
  >>> from xattr_jax.app.train import TrainConfig, train
  >>> result = train(TrainConfig(arch="small_vgg", steps=10, train_size=64, held_out_size=32))
  >>> result.held_out_map
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from xattr_jax.data.synthetic import HELD_OUT_SEED, TRAIN_SEED, iterate_batches, make_dataset, normalize

__all__ = [
    "TrainConfig",
    "TrainResult",
    "average_precision",
    "mean_average_precision",
    "train",
    "evaluate_map",
    "main",
    "TRAIN_SIZE",
    "HELD_OUT_SIZE",
]

TRAIN_SIZE = 12000
HELD_OUT_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded in ``training.json``)."""

    arch: str = "small_vgg"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 1e-4
    image_size: int = 64
    train_size: int = TRAIN_SIZE
    held_out_size: int = HELD_OUT_SIZE
    train_seed: int = TRAIN_SEED
    held_out_seed: int = HELD_OUT_SEED
    init_seed: int = 0
    shuffle_seed: int = 0
    flip: bool = True


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    model: Any
    variables: dict
    held_out_map: float
    per_class_ap: np.ndarray
    seconds: float
    losses: np.ndarray  # mean loss per logging window


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of one class: the mean of the precision at each positive's rank.

    ``AP = (1/P) Σ_{k: y_k = 1} precision@k`` with the examples sorted by decreasing score (ties
    broken by a stable sort on the original order) — the non-interpolated AP of scikit-learn's
    ``average_precision_score`` when scores are distinct.

    Args:
      scores: ``[N]`` real scores.
      labels: ``[N]`` 0/1 ground truth.

    Returns:
      AP in [0, 1]; NaN when the class has no positive.
    """
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel() > 0.5
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    npos = int(y.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    hits = y[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, s.size + 1)
    return float(precision[hits].sum() / npos)


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over classes of :func:`average_precision` (classes without positives left out).

    Args:
      scores: ``[N, C]``; labels: ``[N, C]`` multi-hot.

    Returns:
      ``(mAP, per-class AP [C])``.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must both be [N, C], got {scores.shape}, {labels.shape}")
    ap = np.array([average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])])
    return float(np.nanmean(ap)), ap


@functools.lru_cache(maxsize=8)
def _predict_fn(model):
    import jax

    from xattr_jax.program import call_model

    return jax.jit(call_model(model))


@functools.lru_cache(maxsize=8)
def _trainer(arch: str, num_classes: int, lr: float, warmup: int, steps: int, weight_decay: float):
    """Models, optimiser and the jitted train step (cached: a rerun compiles nothing new)."""
    import jax
    import jax.numpy as jnp
    import optax

    from xattr_jax.models import build

    model = build(arch, num_classes=num_classes)
    train_model = build(arch, num_classes=num_classes, train=True)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, min(warmup, max(steps - 1, 1)), max(steps, 2), end_value=lr * 0.01
    )
    tx = optax.adamw(schedule, weight_decay=weight_decay)

    def loss_fn(p, s, x, y):
        v = {"params": p}
        if s is not None:
            v["batch_stats"] = s
            logits, upd = train_model.apply(v, x, mutable=["batch_stats"])
            s = upd["batch_stats"]
        else:
            logits = train_model.apply(v, x)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y)), s

    @jax.jit
    def step(p, s, o, x, y):
        (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        updates, o = tx.update(g, o, p)
        return optax.apply_updates(p, updates), s, o, loss

    return model, tx, step


def evaluate_map(model, variables, dataset, batch_size: int = 100) -> tuple[float, np.ndarray]:
    """Held-out mAP of ``model`` on a :class:`~xattr_jax.data.SyntheticDataset` (inference mode)."""
    predict = _predict_fn(model)
    scores = np.concatenate(
        [np.asarray(predict(variables, b["image"])) for b in iterate_batches(dataset, batch_size)]
    )
    return mean_average_precision(scores, dataset.labels)


def train(config: TrainConfig = TrainConfig(), *, log=None, log_every: int = 100) -> TrainResult:
    """Train ``config.arch`` on the synthetic benchmark; return the model, variables and held-out mAP.

    Args:
      config: the run's settings (:class:`TrainConfig`).
      log: optional callable receiving progress lines (e.g. ``print``).
      log_every: steps per progress line.

    Returns:
      :class:`TrainResult`; ``model`` is the inference-mode model (``train=False``).
    """
    import jax
    import jax.numpy as jnp

    t0 = time.perf_counter()
    c = config
    say = log or (lambda s: None)
    train_set = make_dataset(c.train_size, c.image_size, seed=c.train_seed)
    held_out = make_dataset(c.held_out_size, c.image_size, seed=c.held_out_seed)
    images = normalize(train_set.images)
    labels = train_set.labels
    say(f"data: {c.train_size} training + {c.held_out_size} held-out images "
        f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip

    model, tx, step = _trainer(
        c.arch, int(labels.shape[1]), float(c.lr), int(c.warmup), int(c.steps), float(c.weight_decay)
    )
    x0 = jnp.zeros((1, c.image_size, c.image_size, 3), jnp.float32)
    variables = dict(model.init(jax.random.key(c.init_seed), x0))
    params = variables["params"]
    stats = variables.get("batch_stats")
    opt_state = tx.init(params)

    rng = np.random.default_rng(c.shuffle_seed)
    n = images.shape[0]
    bs = min(c.batch_size, n)
    order, pos = rng.permutation(n), 0
    losses, window = [], []
    for i in range(c.steps):
        if pos + bs > n:
            order, pos = rng.permutation(n), 0
        sel = order[pos : pos + bs]
        pos += bs
        x = images[sel]
        if c.flip:
            flip = rng.random(bs) < 0.5
            x = np.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
        params, stats, opt_state, loss = step(params, stats, opt_state, x, labels[sel])
        window.append(float(loss))
        if (i + 1) % log_every == 0 or i + 1 == c.steps:
            losses.append(float(np.mean(window)))
            window = []
            say(f"step {i + 1}/{c.steps}  loss {losses[-1]:.4f}  ({time.perf_counter() - t0:.0f} s)")

    variables = {"params": params}
    if stats is not None:
        variables["batch_stats"] = stats
    mAP, ap = evaluate_map(model, variables, held_out)
    seconds = time.perf_counter() - t0
    say(f"held-out mAP {mAP:.4f}  ({seconds:.0f} s)")
    return TrainResult(model, variables, mAP, ap, seconds, np.asarray(losses))


def _versions() -> dict:
    import flax
    import jax
    import optax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
    }


def save_trained(result: TrainResult, config: TrainConfig, out, *, overwrite: bool = False) -> Path:
    """Write the checkpoint (``xattr_jax.checkpoint`` format) and ``training.json`` into ``out``."""
    from xattr_jax.checkpoint import save_checkpoint

    path = save_checkpoint(
        out, config.arch, result.variables, overwrite=overwrite, num_classes=result.per_class_ap.size
    )
    record = {
        "arch": config.arch,
        "config": dataclasses.asdict(config),
        "held_out_map": round(result.held_out_map, 6),
        "held_out_per_class_ap": [round(float(a), 6) for a in result.per_class_ap],
        "train_seconds": round(result.seconds, 1),
        "input": f"[N, {config.image_size}, {config.image_size}, 3] float32, "
        "xattr_jax.data.normalize (ImageNet mean/std)",
        "output": "20 logits, sigmoid per class (xattr_jax.data.CLASS_NAMES)",
        "versions": _versions(),
        "command": f"python -m xattr_jax.app.train --arch {config.arch} --out DIR",
    }
    (path / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return path


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m xattr_jax.app.train",
        description="Train a small model on the synthetic benchmark (deterministic).",
    )
    p.add_argument("--arch", default=d.arch, choices=("small_vgg", "small_resnet"))
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint in --out")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--train-size", type=int, default=d.train_size)
    p.add_argument("--held-out-size", type=int, default=d.held_out_size)
    p.add_argument("--seed", type=int, default=d.init_seed, help="initialisation seed")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.steps < 1 or args.train_size < 1 or args.held_out_size < 1 or args.batch_size < 1:
        print("error: --steps, --batch-size, --train-size and --held-out-size must be positive",
              file=sys.stderr)  # fmt: skip
        return 2
    config = dataclasses.replace(
        TrainConfig(),
        arch=args.arch,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        train_size=args.train_size,
        held_out_size=args.held_out_size,
        init_seed=args.seed,
        warmup=min(TrainConfig().warmup, max(args.steps // 10, 1)),
    )
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        print(f"error: {out} exists and is not empty; pass --overwrite to replace it",
              file=sys.stderr)  # fmt: skip
        return 1
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    result = train(config, log=log)
    try:
        path = save_trained(result, config, args.out, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{config.arch}: held-out mAP {result.held_out_map:.4f} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
