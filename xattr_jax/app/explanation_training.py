"""Training through an attribution: an explanation loss added to a classifier's loss.

"Right for the right reasons" (Ross, Hughes & Doshi-Velez, IJCAI 2017) penalises input gradients
outside the regions a model should use. Here the penalty is the **share of relevance outside the
object mask**, for any method of the library (gradient, Excitation Backprop, LRP, ...)::

    outside(x, c, M) = Σ_u (1 − M_u) |m_u| / (Σ_u |m_u| + δ),     m = map of method(x, c),

with the mask ``M`` of class ``c`` area-averaged to the map's resolution, and the loss

    L(θ) = classification_loss(f_θ(x), y) + λ · mean_i outside(x_i, c_i, M_i).

``jax.grad`` goes through the attribution with respect to the parameters (the rules are
``custom_vjp`` functions whose backward passes are ordinary JAX, so they differentiate again), and
the whole step — forward, attribution, both gradients and the optax update — is one compiled
program. The attribution runs the model in inference mode (``train=False``: batch-norm with its
running statistics, no dropout), the classification loss in training mode.

Example (the synthetic benchmark's object masks)::

    from xattr_jax.app.explanation_training import make_train_step
    step = make_train_step(model, train_model, optax.adamw(1e-3), method="excitation_backprop",
                           weight=1.0)
    params, stats, opt_state, metrics = step(params, stats, opt_state, x, labels, target, mask)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..api import attributor
from ..data import normalize

__all__ = ["mask_to_map", "outside_share", "explanation_loss", "make_train_step"]


def mask_to_map(mask, shape):
    """Masks ``[N, H, W]`` as fractions of each map cell ``[N, h, w]`` (area average; ``H, W``
    multiples of ``h, w``), so a map read at a hidden layer is compared at its own resolution."""
    n, h_in, w_in = mask.shape
    h, w = shape
    if h_in % h or w_in % w:
        raise ValueError(f"the mask {h_in}x{w_in} is not a multiple of the map's {h}x{w}")
    m = mask.astype(jnp.float32).reshape(n, h, h_in // h, w, w_in // w)
    return m.mean(axis=(2, 4))


def outside_share(maps, masks, delta: float = 1e-12):
    """``Σ (1 − M) |m| / (Σ |m| + δ)`` per example: the share of ``|map|`` outside the mask ``[N]``."""
    a = jnp.abs(maps.astype(jnp.float32))
    m = mask_to_map(masks, maps.shape[1:])
    return jnp.sum((1 - m) * a, axis=(1, 2)) / (jnp.sum(a, axis=(1, 2)) + delta)


def explanation_loss(model, method: str = "gradient", layer: str | None = None, **options) -> Callable:
    """``loss(variables, x, target, mask) -> (mean outside share, per-example shares [N])``.

    ``method``, ``layer`` and ``options`` as :func:`xattr_jax.attributor`; ``target`` int ``[N]``,
    ``mask`` bool ``[N, H, W]`` (the target object's pixels). Differentiable in ``variables`` and ``x``.
    """
    fn = attributor(model, method, layer, **options)

    def loss(variables, x, target, mask):
        share = outside_share(fn(variables, x, target).map, mask)
        return jnp.mean(share), share

    return loss


def make_train_step(model, train_model, tx, *, method: str | None = None, weight: float = 1.0,
                    layer: str | None = None, classification_loss: Callable | None = None, **options) -> Callable:
    """One compiled train step with an explanation loss (``method=None``: the plain step, the baseline).

    Args:
      model: the inference-mode model the attribution explains (``train=False``).
      train_model: the same network in training mode (batch statistics), for the classification loss;
        its ``apply`` is called with ``mutable=["batch_stats"]`` when ``stats`` is not None.
      tx: an ``optax`` gradient transformation.
      method, layer, options: the attribution (see :func:`xattr_jax.attributor`).
      weight: ``λ``, the explanation loss's weight.
      classification_loss: ``(logits, labels) -> scalar``; default: mean sigmoid binary cross-entropy
        (multi-label, as the synthetic benchmark).

    Returns:
      ``step(params, stats, opt_state, x, labels, target, mask) -> (params, stats, opt_state, metrics)``
      with ``metrics = {"loss", "classification", "outside"}`` (``outside``: the batch's mean outside
      share; 0 for the plain step). ``stats`` is the ``batch_stats`` collection or None.
    """
    import optax

    if classification_loss is None:
        def classification_loss(logits, labels):
            return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
    expl = explanation_loss(model, method, layer, **options) if method is not None else None

    def loss_fn(params, stats, x, labels, target, mask):
        v = {"params": params}
        if stats is not None:
            logits, upd = train_model.apply({**v, "batch_stats": stats}, x, mutable=["batch_stats"])
            new_stats = upd["batch_stats"]
        else:
            logits, new_stats = train_model.apply(v, x), None
        cls = classification_loss(logits, labels)
        outside = jnp.zeros((), cls.dtype)
        if expl is not None:
            ev = v if stats is None else {**v, "batch_stats": stats}
            outside, _ = expl(ev, x, target, mask)
        return cls + weight * outside, (new_stats, cls, outside)

    @jax.jit
    def step(params, stats, opt_state, x, labels, target, mask):
        (loss, (stats, cls, outside)), g = jax.value_and_grad(loss_fn, has_aux=True)(
            params, stats, x, labels, target, mask)
        updates, opt_state = tx.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, stats, opt_state, {"loss": loss, "classification": cls, "outside": outside}

    return step


def sample_targets(dataset, index, rng):
    """For images ``index`` of a synthetic dataset: one present class each (uniform) and its mask."""
    target = np.array([rng.choice(np.flatnonzero(dataset.labels[i])) for i in index], np.int32)
    mask = dataset.segmentation[index] == target[:, None, None]
    return target, mask


def fine_tune(model, train_model, variables, dataset, *, method: str | None = None, weight: float = 1.0,
              steps: int = 200, batch_size: int = 32, lr: float = 1e-3, seed: int = 0, layer=None, **options):
    """Fine-tune on a :class:`~xattr_jax.data.SyntheticDataset` with (or, ``method=None``, without) the
    explanation loss; AdamW at ``lr``, batches and targets drawn from ``seed``.

    Returns ``(variables, history)``: ``history`` lists the step metrics as floats.
    """
    import optax

    tx = optax.adamw(lr, weight_decay=1e-4)
    step = make_train_step(model, train_model, tx, method=method, weight=weight, layer=layer, **options)
    params, stats = variables["params"], variables.get("batch_stats")
    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(steps):
        idx = rng.choice(len(dataset), batch_size, replace=False)
        target, mask = sample_targets(dataset, idx, rng)
        params, stats, opt_state, m = step(params, stats, opt_state, normalize(dataset.images[idx]),
                                           dataset.labels[idx], target, mask)
        history.append({k: float(v) for k, v in m.items()})
    out = {"params": params}
    if stats is not None:
        out["batch_stats"] = stats
    return out, history


def held_out_outside_share(model, variables, dataset, method: str, *, layer=None, batch_size: int = 50,
                           **options) -> float:
    """Mean share of ``|map|`` outside the class mask over every (image, class present) trial."""
    loss = jax.jit(explanation_loss(model, method, layer, **options))
    shares = []
    for a in range(0, len(dataset.trial_image), batch_size):
        img = dataset.trial_image[a:a + batch_size]
        _, s = loss(variables, normalize(dataset.images[img]), dataset.trial_class[a:a + batch_size].astype(np.int32),
                    dataset.trial_masks[a:a + batch_size])
        shares.append(np.asarray(s))
    return float(np.mean(np.concatenate(shares)))
