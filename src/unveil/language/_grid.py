"""A labelled 2-D grid of numbers (layer x position, layer x head) with a self-contained HTML
heat map, the shared shape of the inside views' results."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Grid", "heatmap_html"]


def _colour(v: float, vmax: float, diverging: bool) -> str:
    if not np.isfinite(v) or vmax <= 0:
        return "#eeeeee"
    a = max(-1.0, min(1.0, v / vmax))
    if diverging:  # red positive, blue negative
        r, g, b = (255, int(255 * (1 - a)), int(255 * (1 - a))) if a >= 0 else \
            (int(255 * (1 + a)), int(255 * (1 + a)), 255)
    else:
        a = max(a, 0.0)
        r, g, b = int(255 * (1 - 0.8 * a)), int(255 * (1 - 0.5 * a)), 255
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap_html(values: npt.ArrayLike, rows: Sequence[str], cols: Sequence[str], *, title: str = "",
                 note: str = "", diverging: bool = True, cell_text: Sequence[Sequence[str]] | None = None,
                 fmt: str = "{:.2f}") -> str:
    """A heat map as an HTML ``<table>`` with inline styles (no scripts, no external files).

    Colours scale with the largest absolute value; each cell shows its number (or ``cell_text``)
    and a tooltip with row, column and value.
    """
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    vmax = float(np.abs(finite).max()) if finite.size else 0.0
    e = html.escape
    out = ['<div class="unveil-grid" style="font-family:sans-serif;font-size:12px;overflow:auto">']
    if title:
        out.append(f"<div style='font-weight:bold;margin:4px 0'>{e(title)}</div>")
    out.append("<table style='border-collapse:collapse'><tr><th></th>")
    out += [f"<th style='padding:2px 4px;font-weight:normal;white-space:pre'>{e(c)}</th>" for c in cols]
    out.append("</tr>")
    for i, r in enumerate(rows):
        out.append(f"<tr><th style='padding:2px 4px;text-align:right;font-weight:normal'>{e(r)}</th>")
        for j, c in enumerate(cols):
            x = float(v[i, j])
            text = cell_text[i][j] if cell_text is not None else ("" if not np.isfinite(x) else fmt.format(x))
            out.append(f"<td title='{e(r)} / {e(c)}: {x:.4g}' style='background:{_colour(x, vmax, diverging)};"
                       f"padding:2px 4px;text-align:center;border:1px solid #fff;white-space:pre'>{e(text)}</td>")
        out.append("</tr>")
    out.append("</table>")
    if note:
        out.append(f"<div style='color:#555;margin-top:4px'>{e(note)}</div>")
    out.append("</div>")
    return "".join(out)


class HtmlResult:
    """A result shown as self-contained HTML: subclasses give ``to_html()`` and ``page_title``;
    ``_repr_html_`` (notebooks) and ``save`` (a standalone page) follow from them."""

    page_title = "unveil"

    def to_html(self) -> str:
        raise NotImplementedError

    def _repr_html_(self) -> str:
        return self.to_html()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a standalone HTML page; returns the path."""
        p = Path(path)
        p.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.page_title)}"
                     f"</title></head><body>{self.to_html()}</body></html>", encoding="utf-8")
        return p


@dataclass
class Grid(HtmlResult):
    """Values on a labelled grid: ``values[i, j]`` for ``rows[i]`` (layers) and ``cols[j]``."""

    values: npt.NDArray[np.float64]
    rows: list[str]
    cols: list[str]
    title: str = ""
    row_name: str = "layer"
    col_name: str = "position"
    note: str = ""
    diverging: bool = True
    cell_text: list[list[str]] | None = field(default=None, repr=False)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with the rows and columns labelled."""
        import pandas as pd

        df = pd.DataFrame(self.values, index=self.rows, columns=self.cols)
        df.index.name, df.columns.name = self.row_name, self.col_name
        return df

    def to_html(self) -> str:
        """The heat map as a self-contained HTML fragment."""
        return heatmap_html(self.values, self.rows, self.cols, title=self.title, note=self.note,
                            diverging=self.diverging, cell_text=self.cell_text)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a standalone HTML page with the heat map, titled by it; returns the path."""
        self.page_title = self.title or "unveil"
        return super().save(path)
