"""The input pipeline of a dataset job: decode and preprocess in parallel threads (grain), prefetched.

:func:`stream` yields one :class:`Loaded` per sample, in order. Decoding and resizing run in
``threads`` worker threads (Pillow and numpy release the GIL for the heavy parts) while the devices
attribute the previous batch; a file that cannot be decoded yields a :class:`Loaded` with its
``error`` instead of stopping the stream.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Iterator, Optional, Sequence

import numpy as np

from xattr_jax.data.preprocess import preprocess
from xattr_jax.data.samples import Sample

__all__ = ["Loaded", "stream", "load"]


@dataclasses.dataclass
class Loaded:
    """A sample after decoding: the model input ``x`` and the resized image, or why not."""

    sample: Sample
    x: Optional[np.ndarray] = None  # [h, w, 3] normalised float32
    image: Optional[np.ndarray] = None  # [h, w, 3] in [0, 1], the resized image
    orig_size: Optional[tuple[int, int]] = None
    error: Optional[str] = None
    content: Optional[str] = None  # Sample.fingerprint(), None when the file cannot be read


def load(sample: Sample, mode: str) -> Loaded:
    """Decode and preprocess one sample, and fingerprint its content; a failure is returned as
    ``error`` (``"unreadable: ..."``)."""
    content = None
    try:
        content = sample.fingerprint()
        img = sample.read()
        x, resized = preprocess(img, mode)
    except Exception as err:  # any decoding failure is this image's status, not the job's end
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Loaded(sample, error=f"unreadable: {msg}", content=content)
    return Loaded(sample, x, resized, tuple(int(v) for v in img.shape[:2]), content=content)


def stream(samples: Sequence[Sample], mode: str, *, threads: Optional[int] = None,
           prefetch: int = 32) -> Iterator[Loaded]:  # fmt: skip
    """Decode ``samples`` with ``mode``'s preprocessing, ``threads`` at a time, ``prefetch`` ahead.

    Args:
      samples: the samples, in the order they are yielded.
      mode: a preprocessing mode (:data:`xattr_jax.data.preprocess.PREPROCESSING`).
      threads: decoding threads (default: the CPU count, at most 16).
      prefetch: how many decoded samples may wait for the devices.
    """
    import grain

    if not samples:
        return iter(())
    threads = threads or min(16, os.cpu_count() or 1)
    ds = grain.MapDataset.source(list(samples)).map(functools.partial(load, mode=mode))
    opts = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(prefetch, 1))
    return iter(ds.to_iter_dataset(opts))
