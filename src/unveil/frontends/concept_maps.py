"""What the front ends need of the concept methods: reading ``--channels`` text, running CRP or
discovery, and one summary line per row or concept (the CLI prints them, ``--json`` dumps them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import OptionError

__all__ = ["discovery_summary", "parse_channels", "relevance_summary", "write_result"]


def parse_channels(text: str | None) -> list[list[int]] | None:
    """``"3,5+7"`` -> ``[[3], [5, 7]]`` (``+`` joins channels into one concept); ``None`` stays."""
    if text is None or not text.strip():
        return None
    out: list[list[int]] = []
    for part in text.split(","):
        try:
            out.append([int(c) for c in part.split("+")])
        except ValueError:
            raise OptionError(
                f"--channels expects channel numbers separated by commas, '+' joining channels into "
                f"one concept (e.g. 3,5+7); got {text!r}"
            ) from None
    return out


def relevance_summary(res: Any, top: int = 5) -> list[dict[str, Any]]:
    """Per row: the explained class and its concepts with their relevance at the layer."""
    lines = []
    for i in range(len(res)):
        concepts = [{"concept": res.concept_name(ch), "channels": ch,
                     "relevance": float(res.channel_relevance[i, ch].sum())} for ch in res.concepts[i][:top]]
        lines.append({"row": i, "target": res.class_name(i), "score": float(res.scores[i]), "concepts": concepts})
    return lines


def discovery_summary(res: Any) -> list[dict[str, Any]]:
    """Per concept, most important first: its importance and top rows."""
    return [{"concept": res.concept_name(j), "index": j, "importance": imp,
             "top_rows": [int(i) for i in res.example_indices[j]]} for j, imp in res.ranking()]


def write_result(res: Any, out: str | None, title: str) -> Path | None:
    """Write ``res`` to ``out``: ``.html`` (a standalone page) or ``.npz`` (its ``save``)."""
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() in (".html", ".htm"):
        path.parent.mkdir(parents=True, exist_ok=True)
        from ..report.crp import page

        path.write_text(page(res.to_html(), title), encoding="utf-8")
        return path
    if path.suffix.lower() != ".npz":
        raise OptionError(f"--out must end in .npz or .html, got {out!r}")
    return Path(res.save(path))
