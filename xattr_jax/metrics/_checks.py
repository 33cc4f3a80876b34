"""Input validation shared by the metrics (private)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__: list[str] = []


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else f"type {type(x).__name__}"


def _planes(x: Any, name: str) -> list[np.ndarray]:
    """``[N, H, W]`` or a sequence of ``[H_i, W_i]`` arrays as a list of 2-D arrays."""
    if isinstance(x, (list, tuple)):
        out = [np.asarray(m) for m in x]
    else:
        arr = np.asarray(x)
        if arr.ndim != 3:
            one = (f"one 2-D array of {_describe(arr)}; wrap a single one as {name}[None]" if arr.ndim == 2
                   else _describe(arr))  # fmt: skip
            raise ValueError(f"{name} must be [N, H, W] or a list of [H, W] arrays, got {one}")
        out = list(arr)
    for i, m in enumerate(out):
        if m.ndim != 2:
            raise ValueError(f"{name}[{i}] must be a 2-D [H, W] array, got {_describe(m)}")
    return out


def as_map_list(maps: Any, name: str = "maps", *, finite: bool = True) -> list[np.ndarray]:
    """Turn ``[N, H, W]`` or a sequence of ``[H_i, W_i]`` arrays into a list of float64 2-D arrays."""
    res = []
    for i, m in enumerate(_planes(maps, name)):
        if m.dtype == bool or not np.issubdtype(m.dtype, np.number):
            raise TypeError(f"{name}[{i}] must be numeric, got dtype {m.dtype}")
        m = m.astype(np.float64)
        if m.size == 0:
            raise ValueError(f"{name}[{i}] is empty ({_describe(m)})")
        if finite and not np.all(np.isfinite(m)):
            raise ValueError(f"{name}[{i}] contains NaN or infinite values")
        res.append(m)
    return res


def as_mask_list(masks: Any, name: str = "masks") -> list[np.ndarray]:
    """Turn ``[N, H, W]`` or a sequence of ``[H_i, W_i]`` arrays into a list of bool 2-D arrays."""
    res = []
    for i, m in enumerate(_planes(masks, name)):
        if m.dtype != bool:
            if not np.issubdtype(m.dtype, np.number):
                raise TypeError(f"{name}[{i}] must be boolean or 0/1, got dtype {m.dtype}")
            if not np.all((m == 0) | (m == 1)):
                raise ValueError(f"{name}[{i}] must be boolean or contain only 0 and 1")
            m = m.astype(bool)
        res.append(m)
    return res


def maps_and_masks(maps: Any, masks: Any, empty: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``maps`` (float64) and ``masks`` (bool) as lists of equal length and pairwise equal shapes;
    no pair at all raises ``ValueError(empty)``."""
    maps_l, masks_l = as_map_list(maps, "maps"), as_mask_list(masks, "masks")
    check_same_shapes(maps_l, masks_l, "maps", "masks")
    if not maps_l:
        raise ValueError(empty)
    return maps_l, masks_l


def check_same_shapes(a: Sequence[np.ndarray], b: Sequence[np.ndarray], na: str, nb: str) -> None:
    """Raise unless ``a`` and ``b`` have the same length and pairwise equal shapes."""
    if len(a) != len(b):
        raise ValueError(f"{na} and {nb} must have the same length, got {len(a)} and {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise ValueError(
                f"{na}[{i}] has shape {x.shape} but {nb}[{i}] has shape {y.shape}; "
                f"resize the map to the mask's resolution first (xattr_jax.metrics.resize_map)"
            )


def as_vector(x: Any, n: int, name: str, dtype: Any) -> np.ndarray:
    """A 1-D array of length ``n`` (a scalar is broadcast)."""
    arr = np.asarray(x)
    if arr.ndim == 0:
        arr = np.full((n,), arr)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one entry per trial), got {_describe(arr)}")
    if dtype is bool:
        if arr.dtype != bool and not (
            np.issubdtype(arr.dtype, np.number) and np.all((arr == 0) | (arr == 1))
        ):
            raise ValueError(f"{name} must be boolean")
        return arr.astype(bool)
    if np.issubdtype(np.dtype(dtype), np.integer):
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(dtype)
