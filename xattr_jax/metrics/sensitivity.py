"""Model-randomisation sensitivity (Adebayo et al., NeurIPS 2018; docs/evaluation.md#randomisation-sensitivity).

Cascading randomisation re-initialises the layers of a trained network from the top down,
cumulatively, and compares each new map with the original one by Spearman rank correlation
(signed and of absolute values) and SSIM. A map that stays similar does not depend on the model.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "rankdata",
    "spearman",
    "spearman_abs",
    "ssim",
    "default_reinit",
    "cascading_randomization",
    "randomization_sensitivity",
]


def _pair_arrays(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("a and b are empty")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a or b contains NaN or infinite values")
    return a, b


def rankdata(x: Any) -> np.ndarray:
    """Ranks 1..n of the flattened values, tied values sharing the average of their ranks.

    Args:
      x: any array.

    Returns:
      float64 ``[x.size]`` ranks.
    """
    v = np.asarray(x, np.float64).ravel()
    n = v.size
    order = np.argsort(v, kind="stable")
    sv = v[order]
    first = np.concatenate([[True], sv[1:] != sv[:-1]]) if n else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    ends = np.concatenate([starts[1:], [n]])
    avg = (starts + ends - 1) / 2.0 + 1.0  # mean of the ranks start+1 .. end
    ranks = np.empty(n)
    ranks[order] = avg[np.cumsum(first) - 1]
    return ranks


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two maps (all elements, flattened).

    ``ρ = Pearson(rank(a), rank(b))`` with average ranks for ties, i.e.
    ``Σ (r_a − r̄)(r_b − r̄) / sqrt(Σ (r_a − r̄)² Σ (r_b − r̄)²)``.

    Args:
      a, b: arrays of the same shape, finite.

    Returns:
      float in [-1, 1]; NaN when either input is constant (the correlation is undefined).

    Raises:
      ValueError: shape mismatch, empty or non-finite input.
    """
    a, b = _pair_arrays(a, b)
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(np.dot(ra, ra)) * float(np.dot(rb, rb)))
    if den == 0:
        return float("nan")
    return float(np.clip(np.dot(ra, rb) / den, -1.0, 1.0))


def spearman_abs(a: Any, b: Any) -> float:
    """Spearman rank correlation of ``|a|`` and ``|b|`` (see :func:`spearman`)."""
    a, b = _pair_arrays(a, b)
    return spearman(np.abs(a), np.abs(b))


def _gauss1d(win_size: int, sigma: float) -> np.ndarray:
    d = np.arange(win_size, dtype=np.float64) - (win_size - 1) / 2
    g = np.exp(-(d * d) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    k = g.size
    y = sliding_window_view(x, k, axis=0) @ g  # [H-k+1, W]
    return sliding_window_view(y, k, axis=1) @ g  # [H-k+1, W-k+1]


def ssim(
    a: Any,
    b: Any,
    *,
    win_size: int = 11,
    sigma: float = 1.5,
    data_range: Optional[float] = None,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity of two 2-D maps (Wang et al., 2004).

    With Gaussian-weighted local statistics (window ``win_size``×``win_size``, standard deviation
    ``sigma``; default 11 and 1.5 as in the paper), ``μ``, ``σ²`` and ``σ_ab`` (weights summing to
    1, so population moments):

    ``SSIM = mean over windows of ((2 μ_a μ_b + C1)(2 σ_ab + C2)) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2))``,

    ``C1 = (k1 L)²``, ``C2 = (k2 L)²``. Only windows that lie fully inside the map are used (no
    padding). ``L`` (``data_range``) defaults to the range of the two inputs together,
    ``max(a, b) − min(a, b)``; normalise maps first if you want a fixed range.

    Args:
      a, b: 2-D arrays of the same shape, at least ``win_size`` in each dimension.
      win_size: odd window size.
      sigma: Gaussian standard deviation of the window.
      data_range: ``L``; None = from the inputs.
      k1, k2: stabilising constants.

    Returns:
      float; 1.0 for identical inputs (also when both are the same constant).

    Raises:
      ValueError: shape mismatch, not 2-D, smaller than the window, non-finite, bad window.
    """
    a, b = _pair_arrays(a, b)
    if a.ndim != 2:
        raise ValueError(f"ssim compares 2-D maps, got shape {a.shape}")
    if int(win_size) != win_size or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd int, got {win_size!r}")
    if min(a.shape) < win_size:
        raise ValueError(
            f"maps of shape {a.shape} are smaller than the {win_size}x{win_size} window; pass a smaller win_size"
        )
    if data_range is None:
        data_range = max(a.max(), b.max()) - min(a.min(), b.min())
    L = float(data_range)
    if L == 0:
        if np.array_equal(a, b):
            return 1.0
        raise ValueError("data_range is 0 but the maps differ")
    g = _gauss1d(int(win_size), float(sigma))
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


# ----------------------------------------------------------------------------------------------
# cascading parameter randomisation


def default_reinit(key: jax.Array, path: tuple[str, ...], leaf: Any) -> jax.Array:
    """Re-initialise one parameter: Glorot/Xavier-uniform for kernels, ``U(0, 1)`` otherwise.

    Arrays with ≥ 2 dimensions are kernels (flax layout ``[..., in, out]``): with
    ``r = prod(shape[:-2])``, ``fan_in = shape[-2]·r``, ``fan_out = shape[-1]·r`` and
    ``W ~ U(−a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``. Lower-rank arrays (biases, and also
    normalisation scales) are drawn from ``U(0, 1)``, as in the RSP successor's sanity harness.

    Args:
      key: PRNG key.
      path: the leaf's path in the params tree (unused by this default).
      leaf: the current value (gives shape and dtype).

    Returns:
      A new array of the leaf's shape and dtype.
    """
    del path
    leaf = jnp.asarray(leaf)
    dtype = leaf.dtype if jnp.issubdtype(leaf.dtype, jnp.floating) else jnp.float32
    if leaf.ndim >= 2:
        r = int(np.prod(leaf.shape[:-2]))
        fan_in, fan_out = leaf.shape[-2] * r, leaf.shape[-1] * r
        lim = math.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, leaf.shape, dtype, -lim, lim)
    return jax.random.uniform(key, leaf.shape, dtype, 0.0, 1.0)


def _get(tree: Any, parts: Sequence[str], name: str) -> Any:
    node = tree
    for i, p in enumerate(parts):
        if not isinstance(node, Mapping) or p not in node:
            where = ".".join(parts[:i]) or "<root>"
            keys = sorted(node.keys()) if isinstance(node, Mapping) else []
            hint = (
                " (pass variables['params'], not the whole variables dict)" if "params" in keys else ""
            )
            raise KeyError(f"layer {name!r}: no key {p!r} under {where}; available: {keys}{hint}")
        node = node[p]
    return node


def _set(tree: Mapping, parts: Sequence[str], value: Any) -> dict:
    out = dict(tree)
    out[parts[0]] = value if len(parts) == 1 else _set(tree[parts[0]], parts[1:], value)
    return out


def _reinit_subtree(sub: Any, prefix: tuple[str, ...], key: jax.Array, init: Callable) -> Any:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(sub)
    new = []
    for j, (kp, leaf) in enumerate(leaves_with_path):
        path = prefix + tuple(
            str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in kp
        )
        new_leaf = init(jax.random.fold_in(key, j), path, leaf)
        if tuple(np.shape(new_leaf)) != tuple(np.shape(leaf)):
            raise ValueError(
                f"init changed the shape of {'.'.join(path)}: {np.shape(leaf)} -> {np.shape(new_leaf)}"
            )
        new.append(new_leaf)
    return jax.tree_util.tree_unflatten(treedef, new)


def cascading_randomization(
    params: Mapping,
    order: Sequence[str],
    key: jax.Array,
    init: Callable[[jax.Array, tuple[str, ...], Any], Any] = default_reinit,
) -> Iterator[tuple[str, Any]]:
    """Progressively randomised copies of ``params``, top layer first, cumulatively.

    Step ``k`` (``k = 0..K-1``) yields ``(order[k], params_k)`` where the layers ``order[0..k]``
    have every parameter re-drawn by ``init`` and the other layers keep their trained values.
    The input tree is never modified; untouched sub-trees are shared, not copied. Layer paths are
    dotted keys into the nested params mapping: ``"features.28"`` → ``params["features"]["28"]``.
    Layer ``k`` draws from ``jax.random.fold_in(key, k)`` (leaf ``j`` of it from a further
    ``fold_in(·, j)``), so the same key gives the same sequence.

    Args:
      params: nested mapping of parameters (``variables["params"]``); a FrozenDict is accepted and
        the yielded trees are FrozenDicts too.
      order: layer paths, top (output) layer first, e.g. ``["classifier.6", ..., "features.0"]``.
      key: PRNG key.
      init: ``init(key, path, leaf) -> new leaf``; default :func:`default_reinit` (Glorot-uniform
        kernels, ``U(0, 1)`` biases).

    Yields:
      ``(layer path, params_k)``.

    Raises:
      KeyError: a layer path is not in the tree (lists the keys available where it failed).
      ValueError: empty or repeated paths.
    """
    order = list(order)
    if not order:
        raise ValueError("order must name at least one layer")
    if len(set(order)) != len(order):
        raise ValueError(f"order has repeated layer paths: {order}")
    frozen = False
    try:
        from flax.core import FrozenDict, freeze, unfreeze

        if isinstance(params, FrozenDict):
            frozen = True
            params = unfreeze(params)
    except ImportError:  # pragma: no cover - flax is a core dependency
        pass
    parts_all = []
    for name in order:
        if not isinstance(name, str) or not name or any(p == "" for p in name.split(".")):
            raise ValueError(f"layer paths must be non-empty dotted strings, got {name!r}")
        parts = name.split(".")
        _get(params, parts, name)  # fail early, before any work
        parts_all.append(parts)

    def gen():
        current = params
        for k, (name, parts) in enumerate(zip(order, parts_all)):
            sub = _get(current, parts, name)
            new_sub = _reinit_subtree(sub, tuple(parts), jax.random.fold_in(key, k), init)
            current = _set(current, parts, new_sub)
            yield name, (freeze(current) if frozen else current)

    return gen()


def _minmax(m: np.ndarray) -> np.ndarray:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _maps(explain_fn: Callable, params: Any, x: Any, target: Any, what: str) -> np.ndarray:
    m = np.asarray(explain_fn(params, x, target), np.float64)
    if m.ndim != 3:
        raise ValueError(f"explain_fn must return maps [N, H, W], got shape {m.shape} ({what})")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"explain_fn returned NaN or infinite values ({what})")
    return m


def randomization_sensitivity(
    explain_fn: Callable[[Any, Any, Any], Any],
    params: Mapping,
    order: Sequence[str],
    x: Any,
    target: Any,
    key: jax.Array,
    *,
    init: Callable[[jax.Array, tuple[str, ...], Any], Any] = default_reinit,
    ssim_kwargs: Optional[Mapping[str, Any]] = None,
    return_maps: bool = False,
) -> dict[str, Any]:
    """Similarity of maps from cascadingly randomised models to the original model's maps.

    For each step ``k`` of :func:`cascading_randomization` and each image ``i``:
    ``spearman[k, i] = ρ(M_0[i], M_k[i])``, ``spearman_abs[k, i] = ρ(|M_0[i]|, |M_k[i]|)`` and
    ``ssim[k, i] = SSIM(n(M_0[i]), n(M_k[i]))`` where ``n`` min–max normalises a map to [0, 1]
    (so SSIM ignores the maps' scale, as the rank correlations do).

    Args:
      explain_fn: ``(params, x, target) -> maps [N, H, W]``.
      params: the trained parameter tree.
      order: layer paths, top first (see :func:`cascading_randomization`).
      x: the inputs passed to ``explain_fn``.
      target: the targets passed to ``explain_fn``.
      key: PRNG key.
      init: parameter re-initialiser.
      ssim_kwargs: extra keyword arguments for :func:`ssim` (e.g. ``win_size`` for small maps).
      return_maps: also return the maps ``[K + 1, N, H, W]`` (original first).

    Returns:
      dict with ``"layers"`` (the K paths), ``"spearman"``, ``"spearman_abs"``, ``"ssim"`` (each
      ``[K, N]`` float64) and, if asked, ``"maps"``.

    Raises:
      ValueError: ``explain_fn`` returns wrongly shaped or non-finite maps; errors of
        :func:`cascading_randomization`.
    """
    kw = dict(ssim_kwargs or {})
    steps = cascading_randomization(params, order, key, init)
    m0 = _maps(explain_fn, params, x, target, "original parameters")
    n = m0.shape[0]
    layers, sp, spa, ss, kept = [], [], [], [], [m0]
    for name, p in steps:
        m = _maps(explain_fn, p, x, target, f"after randomising {name}")
        if m.shape != m0.shape:
            raise ValueError(f"maps changed shape from {m0.shape} to {m.shape} after randomising {name}")
        layers.append(name)
        sp.append([spearman(m0[i], m[i]) for i in range(n)])
        spa.append([spearman_abs(m0[i], m[i]) for i in range(n)])
        ss.append([ssim(_minmax(m0[i]), _minmax(m[i]), **kw) for i in range(n)])
        if return_maps:
            kept.append(m)
    out = {
        "layers": layers,
        "spearman": np.array(sp),
        "spearman_abs": np.array(spa),
        "ssim": np.array(ss),
    }
    if return_maps:
        out["maps"] = np.stack(kept)
    return out
