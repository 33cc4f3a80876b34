"""Plain-text tables: left-aligned columns, two spaces apart (the layer table, method options)."""

from __future__ import annotations

from typing import Sequence

__all__ = ["text_table"]


def text_table(rows: Sequence[Sequence], header: Sequence[str] = ()) -> str:
    """``rows`` (and an optional ``header`` row) as left-aligned text columns; cells are ``str()``'d.

    Example:
      >>> print(text_table([("fc", "dense")], header=("name", "kind")))
      name  kind
      fc    dense
    """
    cells = [[str(c) for c in r] for r in ([header] if header else []) + [list(r) for r in rows]]
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(max(len(r) for r in cells))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)
