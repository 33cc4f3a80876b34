"""Compiled programs kept on disk between processes (JAX's persistent compilation cache).

A first call traces the model and compiles the method's program; on 2 CPU cores the compile is
most of it. JAX can keep compiled programs on disk, keyed by the program, the compiler options, the
device and the JAX version, so a later process that builds the same program loads it instead
(MobileNetV2 through torchax, RSP at batch 1: a first call of 6.1 s in a new process, 1.55 s with
the program loaded; ``benchmarks/results/compile_cache.md``).
The ``xattr`` commands turn this on by default; in Python it is one call::

    >>> import xattr_jax as xa
    >>> xa.use_compilation_cache()          # before the first attribution of the process
    PosixPath('/home/me/.cache/xattr-jax/jax-compilation')

The folder grows by one file per program compiled for over ``min_compile_seconds`` (0.4 MB for
MobileNetV2's RSP program); deleting it is always safe. JAX trusts what it finds there: do not
point it at a folder others can write to.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["use_compilation_cache", "default_cache_dir", "CACHE_ENV", "OFF_VALUES"]

#: the environment variable naming the cache folder of the ``xattr`` commands (``off``: none)
CACHE_ENV = "XATTR_JAX_CACHE"

#: the values of ``$XATTR_JAX_CACHE`` and ``--compile-cache`` that turn the cache off
OFF_VALUES = ("off", "none", "0", "false", "no")


def default_cache_dir() -> Path | None:
    """The cache folder the ``xattr`` commands use: ``$XATTR_JAX_CACHE`` (``None`` where it says
    ``off``), else ``$XDG_CACHE_HOME/xattr-jax/jax-compilation`` (``~/.cache`` when unset)."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in OFF_VALUES or not env.strip() else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "xattr-jax" / "jax-compilation"


def use_compilation_cache(path: str | os.PathLike | None = None, *,
                          min_compile_seconds: float | None = None) -> Path | None:
    """Keep this process's compiled programs in ``path`` and load them from there in later processes.

    Sets JAX's ``jax_compilation_cache_dir`` (creating the folder); programs compiled before the
    call are not written. Where JAX already has a cache folder (``JAX_COMPILATION_CACHE_DIR``, or a
    ``jax.config.update`` of your own) and ``path`` is not given, that folder is kept; a ``path``
    that differs moves the cache there.

    Args:
      path: the folder; ``None``: JAX's folder if set, else :func:`default_cache_dir` (and no
        cache where ``$XATTR_JAX_CACHE`` is ``off``).
      min_compile_seconds: programs that compiled faster than this are not written (JAX's
        ``jax_persistent_cache_min_compile_time_secs``; its default, 1 s, where ``None``).

    Returns:
      The folder in use, or ``None`` where the cache is off.

    Raises:
      ValueError: ``path`` is an existing file, or ``min_compile_seconds`` is negative.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    if min_compile_seconds is not None:
        if not min_compile_seconds >= 0:
            raise ValueError(f"min_compile_seconds must be >= 0 seconds, got {min_compile_seconds!r}")
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    current = jax.config.jax_compilation_cache_dir
    if path is None:
        if current:
            return Path(current)
        folder = default_cache_dir()
        if folder is None:
            return None
    else:
        folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the compilation cache must be a folder; {str(folder)!r} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    if current and Path(current) != folder:
        cc.reset_cache()  # JAX opened its cache at the first compile: open it again, here
    cc.set_cache_dir(str(folder))
    return folder
