"""Text attributions as highlighted words: subword pieces merged into words
(:func:`unveil.text.merge_subwords`, scores summed so they still add up), each word's background
coloured by its score on a scale symmetric around zero, with a colour bar stating the range.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.explanation import Explanation
from ..text.merge import merge_subwords
from ._mpl import check_index, fmt, new_axes, pyplot
from .render import token_values

__all__ = ["plot_text", "word_scores"]


def _row_meta(exp: Explanation, key: str, i: int) -> Any:
    v = exp.meta.get(key) if isinstance(exp.meta, dict) else None
    if isinstance(v, list) and v and isinstance(v[0], list):
        return v[i] if i < len(v) else None
    return v


def word_scores(exp: Explanation, index: int = 0, *, merge: bool = True) -> tuple[list[str], np.ndarray]:
    """Sample ``index``'s words and one score per word.

    Tokens are ``exp.meta["tokens"]`` when present (else the feature names, else ``#id``); with
    ``merge`` the pieces of a word are summed into the word (``exp.meta["word_ids"]`` when the
    tokenizer gave them, else the ``##`` / ``▁`` / ``Ġ`` markers) and special tokens such as
    ``[CLS]`` are left out.
    """
    i = check_index(exp, index)
    toks, v = token_values(exp, i, merge=False)  # merged here: the tokenizer's word ids may lead
    if not merge:
        return toks, np.asarray(v, dtype=np.float64)
    word_ids = _row_meta(exp, "word_ids", i)
    if not (isinstance(word_ids, list) and len(word_ids) == len(toks)):
        word_ids = None
    words, s = merge_subwords(toks, v, word_ids=word_ids)
    return words, np.asarray(s, dtype=np.float64)


def _text_colour(rgb: Any) -> str:
    r, g, b = (float(c) for c in rgb[:3])
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.45 else "black"


def plot_text(exp: Explanation, index: int = 0, ax: Any = None, *, merge: bool = True, cmap: str = "bwr",
              colorbar: bool = True, fontsize: float = 12.0, title: str | None = None) -> Any:
    """Sample ``index``'s words, each on a background coloured by its score (red for, blue
    against the explained output; white is zero), wrapped into lines, with a horizontal colour
    bar from ``-max|score|`` to ``+max|score|``. The Axes' texts are the words, in order.
    Returns the matplotlib Axes."""
    words, s = word_scores(exp, index, merge=merge)
    chars = sum(len(w) + 1 for w in words)
    lines = max(1, math.ceil(chars * fontsize * 0.62 / 72 / 7.4))
    ax = new_axes(ax, (8.0, 0.5 + (0.8 if colorbar else 0.0) + 0.32 * lines * fontsize / 12))
    plt = pyplot()
    m = float(np.abs(s).max()) if s.size else 0.0
    m = m if m > 0 else 1.0
    norm, cm = plt.Normalize(-m, m), plt.get_cmap(cmap)
    fig = ax.figure
    if colorbar:
        cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cm), ax=ax, orientation="horizontal",
                          fraction=0.12, aspect=50, pad=0.04, ticks=[-m, 0.0, m])
        cb.ax.set_xticklabels([fmt(-m), "0", fmt(m)])
        cb.set_label("attribution (words: subword pieces summed)" if merge else "attribution")
    ax.set_axis_off()
    fig.draw_without_rendering()  # settle the layout so that text widths are measured at size
    renderer = fig.canvas.get_renderer()
    inv = ax.transAxes.inverted()
    x, y, pad = 0.0, 1.0, 0.008
    for w, v in zip(words, s):
        rgb = cm(norm(float(v)))
        txt = ax.text(x, y, w, transform=ax.transAxes, fontsize=fontsize, va="top", ha="left",
                      color=_text_colour(rgb),
                      bbox={"boxstyle": "round,pad=0.2", "fc": rgb, "ec": "none"})
        bb = txt.get_window_extent(renderer=renderer).transformed(inv)
        if x > 0 and bb.x1 > 1.0:  # wrap to the next line
            x, y = 0.0, y - 1.7 * bb.height
            txt.set_position((x, y))
            bb = txt.get_window_extent(renderer=renderer).transformed(inv)
        x = bb.x1 + pad + 0.01
    if title is not None:
        ax.set_title(title)
    return ax
