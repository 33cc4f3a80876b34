"""Compiled programs kept between processes (``xattr_jax.compile_cache``, ``--compile-cache``).

The cache is process-wide JAX configuration, so every case that turns it on runs in a subprocess
(conftest keeps it off in this one). A hit is read from JAX's own monitoring events
(``/jax/compilation_cache/cache_hits``), not from timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from xattr_jax.compile_cache import CACHE_ENV, default_cache_dir, use_compilation_cache

ROOT = Path(__file__).resolve().parents[1]

_ATTRIBUTE = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    hits = []
    jax.monitoring.register_event_listener(
        lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
    import xattr_jax as xa
    from xattr_jax.models import load_embedded
    folder = xa.use_compilation_cache(sys.argv[1], min_compile_seconds=0)
    model, v = load_embedded("small_vgg")
    x = jnp.asarray(np.random.default_rng(0).random((2, 64, 64, 3), np.float32))
    res = xa.attributor(model, "rsp")(v, x, jnp.array([1, 2]))
    np.save(sys.argv[2], np.asarray(res.map))
    print(json.dumps({"folder": str(folder), "hits": len(hits)}))
""")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != CACHE_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _python(code, *args, env=None):
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env or _env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_later_process_loads_the_attribution_from_the_cache_and_gets_the_same_map(tmp_path):
    cache = tmp_path / "cache"
    first = _python(_ATTRIBUTE, cache, tmp_path / "a.npy")
    files = sorted(p.name for p in cache.iterdir())
    assert first["folder"] == str(cache) and first["hits"] == 0
    assert any(f.startswith("jit_attribute") for f in files), files  # RSP's batch-1 program, written
    second = _python(_ATTRIBUTE, cache, tmp_path / "b.npy")
    assert second["hits"] >= 1, second  # ... and read back instead of compiled
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.load(tmp_path / "a.npy"))


def test_the_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    for off in ("off", "OFF", "0", "none", " "):
        monkeypatch.setenv(CACHE_ENV, off)
        assert default_cache_dir() is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "xattr-jax" / "jax-compilation"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "xattr-jax" / "jax-compilation"


def test_a_folder_jax_already_has_is_kept(tmp_path):
    code = textwrap.dedent("""
        import json, jax, xattr_jax as xa
        print(json.dumps({"folder": str(xa.use_compilation_cache()),
                          "jax": jax.config.jax_compilation_cache_dir}))
    """)
    out = _python(code, env=_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "theirs"),
                                 **{CACHE_ENV: str(tmp_path / "ours")}))
    assert out == {"folder": str(tmp_path / "theirs"), "jax": str(tmp_path / "theirs")}
    assert not (tmp_path / "ours").exists()


def test_bad_arguments_name_the_problem(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(ValueError, match="must be a folder.*a_file"):
        use_compilation_cache(f)
    with pytest.raises(ValueError, match="min_compile_seconds must be >= 0"):
        use_compilation_cache(tmp_path, min_compile_seconds=-1)


def _explain(tmp_path, *extra, env=None):
    from PIL import Image

    png = tmp_path / "img.png"
    if not png.exists():
        Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(png)
    cmd = [sys.executable, "-m", "xattr_jax.app.cli", "explain", str(png), "--checkpoint", "embedded:small_vgg",
           "--method", "gradient", "--no-progress", "--out", str(tmp_path / "fig.png"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env or _env(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"))


@pytest.mark.slow  # three runs of the command, ~10 s each
def test_the_explain_command_keeps_its_programs_in_the_cache_folder(tmp_path):
    proc = _explain(tmp_path, "--compile-cache", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any((tmp_path / "cache").iterdir())
    # the default folder: $XATTR_JAX_CACHE; "off" writes nothing
    proc = _explain(tmp_path, env=_env(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                                       **{CACHE_ENV: str(tmp_path / "env")}))
    assert proc.returncode == 0 and any((tmp_path / "env").iterdir()), proc.stderr[-2000:]
    proc = _explain(tmp_path, "--compile-cache", "off", env=_env(
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert proc.returncode == 0 and not (tmp_path / "xdg" / "xattr-jax").exists(), proc.stderr[-2000:]


def test_a_compile_cache_that_is_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = _explain(tmp_path, "--compile-cache", str(tmp_path / "f"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--compile-cache" in lines[0] and "must be a folder" in lines[0], proc.stderr


def test_a_second_folder_takes_over_from_the_first(tmp_path):
    code = textwrap.dedent("""
        import json, sys, jax, jax.numpy as jnp, xattr_jax as xa
        from pathlib import Path
        def first(x):
            return jnp.sin(x) * 2
        def second(x):
            return jnp.cos(x) + 1
        xa.use_compilation_cache(sys.argv[1], min_compile_seconds=0)
        jax.jit(first)(jnp.ones(3)).block_until_ready()
        xa.use_compilation_cache(sys.argv[2])
        jax.jit(second)(jnp.ones(3)).block_until_ready()
        print(json.dumps([sorted(p.name.split("-")[0] for p in Path(a).iterdir()) for a in sys.argv[1:]]))
    """)
    one, two = _python(code, tmp_path / "one", tmp_path / "two")
    assert "jit_first" in one and "jit_second" not in one, one
    assert "jit_second" in two and "jit_first" not in two, two


@pytest.mark.slow  # two processes lowering all 15 methods, ~15 s
def test_every_method_builds_the_same_program_whatever_the_string_hash_seed(tmp_path):
    """The cache's key is the program: a program that depends on the order of a set of layer names
    (Python's string hash seed, new in every process) misses in every later process, and sums in
    another order (Attention Backpropagation's probes did)."""
    code = textwrap.dedent("""
        import hashlib, json
        import jax.numpy as jnp, numpy as np
        import xattr_jax as xa
        from xattr_jax.models import load_embedded
        model, v = load_embedded("small_resnet")
        x = jnp.asarray(np.random.default_rng(0).random((1, 64, 64, 3), np.float32))
        print(json.dumps({m: hashlib.sha256(xa.attributor(model, m).lower(v, x, jnp.array([1]), key=0).as_text()
                                            .encode()).hexdigest() for m in xa.methods_available()}))
    """)
    a, b = (_python(code, env=_env(PYTHONHASHSEED=str(seed))) for seed in (1, 2))
    assert len(a) >= 15
    assert {m for m in a if a[m] != b[m]} == set()
