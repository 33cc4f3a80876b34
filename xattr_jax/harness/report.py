"""Reports of an evaluation: a markdown table and JSON (``eval.md``, ``eval.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

__all__ = ["markdown_table", "write_report"]


def _fmt(v, pct: bool = True) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def markdown_table(result: dict, title: Optional[str] = None) -> str:
    """A markdown table of :func:`xattr_jax.harness.evaluate`'s result (accuracies in %)."""
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [
        "| method | pointing all | pointing difficult | box acc @15% | MaxBoxAcc | deletion AUC ↓ "
        "| insertion AUC ↑ | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    c = result["center"]
    lines.append(f"| center (baseline) | {_fmt(c['pointing_all'])} | {_fmt(c['pointing_difficult'])} "
                 "| – | – | – | – | – |")  # fmt: skip
    for name, e in result["methods"].items():
        if "error" in e:
            lines.append(f"| {name} | failed: {e['error'][:60]} | | | | | | |")
            continue
        lines.append(
            f"| {name} | {_fmt(e['pointing_all'])} | {_fmt(e['pointing_difficult'])} "
            f"| {_fmt(e.get('box_acc'))} | {_fmt(e.get('max_box_acc'))} "
            f"| {_fmt(e.get('deletion_auc'), False)} | {_fmt(e.get('insertion_auc'), False)} "
            f"| {e['seconds']:.1f} |"
        )
    lines += [
        "",
        f"{result['num_images']} images, {result['num_trials']} trials "
        f"({result['num_difficult']} difficult); pointing tolerance {result['tolerance_px']:.2f} px; "
        f"deletion/insertion on {result['deletion_images']} images, {result['deletion_steps']} "
        f"steps, {result['score']} probability of the top-1 class.",
    ]
    bad = result.get("unreadable") or []
    if bad:
        lines.append(f"{len(bad)} image(s) could not be read and were skipped: "
                     + "; ".join(f"{k} ({why})" for k, why in bad[:5])
                     + (" ..." if len(bad) > 5 else ""))  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(result: dict, out, name: str = "eval", title: Optional[str] = None) -> tuple[Path, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; returns the two paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{name}.json", out / f"{name}.md"
    js.write_text(json.dumps(result, indent=2) + "\n")
    md.write_text(markdown_table(result, title))
    return js, md
