"""Conservation check for relevance-propagation methods: does every layer keep the total?"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["conservation_report"]


def conservation_report(layer_sums: Mapping[str, Any], total: Any) -> dict[str, np.ndarray]:
    """Relative deviation of each layer's relevance sum from the total.

    ``dev_l = (S_l − T) / |T|``, with ``S_l`` the relevance summed at layer ``l`` and ``T`` the
    reference total (e.g. the explained logit); 0 means exact conservation. Where ``T = 0`` the
    deviation is 0 if ``S_l = 0`` too and ±inf otherwise.

    Args:
      layer_sums: ``{layer name: S_l}``; each value is either the sums, shaped like ``total``, or
        the relevance itself, ``[*total.shape, ...]``, which is summed over its trailing axes.
      total: scalar or ``[N]`` reference totals.

    Returns:
      ``{layer name: dev_l}`` in the input's order, float64 arrays shaped like ``total``.

    Raises:
      ValueError: a value's leading shape does not match ``total``, or non-finite input.
    """
    t = np.asarray(total, np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError("total contains NaN or infinite values")
    out: dict[str, np.ndarray] = {}
    for name, value in layer_sums.items():
        s = np.asarray(value, np.float64)
        if s.shape[: t.ndim] != t.shape:
            raise ValueError(
                f"layer_sums[{name!r}] has shape {s.shape}; its leading axes must match total's {t.shape}"
            )
        if s.ndim > t.ndim:
            s = s.reshape(t.shape + (-1,)).sum(-1)
        if not np.all(np.isfinite(s)):
            raise ValueError(f"layer_sums[{name!r}] contains NaN or infinite values")
        diff = s - t
        mag = np.abs(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = np.where(
                mag > 0,
                diff / np.where(mag > 0, mag, 1.0),
                np.where(diff == 0, 0.0, np.sign(diff) * np.inf),
            )
        out[name] = dev
    return out
