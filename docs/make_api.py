"""Write ``docs/api.md``, the API reference, from the public names' signatures and docstrings.

Usage: ``python docs/make_api.py`` (rewrite) or ``python docs/make_api.py --check`` (exit 1 when the
page is out of date; the test suite runs this).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

MODULES = ("xattr_jax", "xattr_jax.composites", "xattr_jax.rules", "xattr_jax.viz", "xattr_jax.metrics",
           "xattr_jax.harness", "xattr_jax.checkpoint", "xattr_jax.models", "xattr_jax.data")  # fmt: skip
PAGE = Path(__file__).with_name("api.md")


def _clean(text: str) -> str:
    """``text`` without what changes from run to run: addresses and the order of set elements."""
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    return re.sub(r"(frozenset\(|set\()?\{('[^{}]*')\}",
                  lambda m: f"{m.group(1) or ''}{{{', '.join(sorted(m.group(2).split(', ')))}}}", text)


def _signature(obj) -> str:
    try:
        return _clean(str(inspect.signature(obj)))
    except (TypeError, ValueError):
        return ""


def _value(obj) -> str:
    if isinstance(obj, (str, int, float, bool, tuple)) and len(repr(obj)) <= 100:
        return f" = `{obj!r}`"
    if isinstance(obj, (set, frozenset)):
        return f" = {{{', '.join(sorted(map(repr, obj)))}}}" if len(obj) <= 20 else f": {type(obj).__name__}"
    return f": `{type(obj).__name__}`"


def _entry(module: str, name: str, obj) -> list[str]:
    if inspect.ismodule(obj):
        return []
    if inspect.isclass(obj) or callable(obj):
        kind = "class" if inspect.isclass(obj) else "function"
        doc = inspect.getdoc(obj) or "(no docstring)"
        head = f"### `{module}.{name}{_signature(obj)}`" if kind == "function" else f"### class `{module}.{name}`"
        return [head, "", "```text", _clean(doc), "```", ""]
    return [f"- `{module}.{name}`{_value(obj)}", ""]


def render() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/make_api.py` (a test checks it is current). "
             "Every name listed is public (in its module's `__all__`); the user guide is [index.md](index.md).",
             ""]  # fmt: skip
    for module in MODULES:
        mod = importlib.import_module(module)
        summary = (inspect.getdoc(mod) or "").split("\n\n")[0].replace("\n", " ")
        lines += [f"## `{module}`", "", summary, ""]
        for name in mod.__all__:
            lines += _entry(module, name, getattr(mod, name))
    return "\n".join(lines).rstrip() + "\n"


def main(argv) -> int:
    text = render()
    if "--check" in argv:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
