"""Self-contained HTML: coloured tokens, and a layer x head grid of attention maps.

Nothing is loaded from the network (no CDN, no fonts): styles and the few lines of script are
inline, and every attention map is an inline PNG (a data URI) written with ``zlib`` alone. A map
is one image however long the sequence, so the page stays light beyond a few hundred tokens
(maps larger than ``max_pixels`` are block-averaged for display).
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from collections.abc import Sequence

import numpy as np

from ..core.htmlsafe import script_json
from ..errors import InputError

__all__ = ["attention_grid_html", "png_bytes", "tokens_html"]

_POS = np.array([202, 0, 32])  # red: supports the target
_NEG = np.array([5, 113, 176])  # blue: speaks against it
_MAP = np.array([8, 48, 107])  # dark blue for attention weight

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:16px;color:#222}
.uv-tokens{line-height:2.1;max-width:60em}
.uv-tok{padding:2px 3px;margin:0 1px;border-radius:3px;white-space:pre}
.uv-legend{font-size:12px;color:#555;margin-top:6px}
.uv-grid{border-collapse:collapse}.uv-grid td,.uv-grid th{padding:2px;font-size:11px;text-align:center}
.uv-grid img{image-rendering:pixelated;border:1px solid #ccc;cursor:pointer;display:block}
#uv-detail{margin-top:12px}#uv-detail img{image-rendering:pixelated;border:1px solid #999}
#uv-hover{font-family:monospace;font-size:12px;min-height:1.4em}
"""


def _page(title: str, body: str) -> str:
    t = html.escape(title)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{t}</title>"
            f"<style>{_STYLE}</style></head><body><h3>{t}</h3>\n{body}\n</body></html>\n")


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG (8-bit RGB, no filter, zlib level 6)."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"expected an (H, W, 3) image, got shape {a.shape}")
    h, w, _ = a.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _color(score: float, scale: float) -> str:
    a = 0.0 if scale <= 0 else min(1.0, abs(score) / scale)
    r, g, b = (_POS if score >= 0 else _NEG).tolist()
    return f"rgba({r},{g},{b},{a:.3f})"


def tokens_html(
    tokens: Sequence[str],
    scores: np.ndarray | Sequence[float],
    *,
    title: str = "Token attributions",
    full: bool = True,
) -> str:
    """Tokens coloured by score: red supports the explained class, blue opposes it.

    Parameters
    ----------
    tokens : sequence of str
        One sequence's tokens (or merged words, see :func:`unveil.text.merge_subwords`).
    scores : array
        (T,) one score per token; colour intensity is ``|score| / max |score|``.
    title : str
        Page heading.
    full : bool
        A complete HTML page (default) or an embeddable fragment.

    Returns
    -------
    str
        HTML; each token's exact score is in its tooltip.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape[0] != len(tokens):
        raise InputError(f"need one score per token: {len(tokens)} tokens, {s.shape[0]} scores")
    if not np.isfinite(s).all():
        raise InputError("scores contain NaN or infinite values")
    scale = float(np.abs(s).max()) if s.size else 0.0
    spans = [
        f"<span class='uv-tok' style='background:{_color(v, scale)}' title='{v:.4g}'>"
        f"{html.escape(str(t))}</span>"
        for t, v in zip(tokens, s)
    ]
    body = (f"<div class='uv-tokens'>{' '.join(spans)}</div>"
            f"<div class='uv-legend'>red: supports the explained class, blue: opposes it; "
            f"full colour = |score| {scale:.4g}</div>")
    return _page(title, body) if full else f"<style>{_STYLE}</style>{body}"


def _pool(m: np.ndarray, max_pixels: int) -> np.ndarray:
    """Block-average a (T, T) map down to at most ``max_pixels`` per side."""
    t = m.shape[0]
    k = -(-t // max_pixels)
    if k <= 1:
        return m
    pad = (-t) % k
    p = np.pad(m, ((0, pad), (0, pad)))
    return np.asarray(p.reshape(p.shape[0] // k, k, p.shape[1] // k, k).mean(axis=(1, 3)))


def _map_uri(m: np.ndarray, max_pixels: int) -> str:
    v = _pool(m, max_pixels)
    v = v / v.max() if v.max() > 0 else v
    rgb = 255 - v[..., None] * (255 - _MAP)
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb.round())).decode()


# The script's own code holds no "<" either, so nothing in it can end the element or open a
# comment; the tokens go in through script_json.
_SCRIPT = """
<script>
(function(){var tok=%s,det=document.getElementById('uv-detail'),hov=document.getElementById('uv-hover');
document.querySelectorAll('.uv-grid img').forEach(function(im){im.addEventListener('click',function(){
var cap=document.createElement('div');cap.textContent=im.title+' (rows: query token, columns: key token)';
det.textContent='';det.appendChild(cap);var big=new Image();
big.src=im.src;big.width=480;big.height=480;det.appendChild(big);
big.addEventListener('mousemove',function(e){var r=big.getBoundingClientRect(),n=tok.length;
if(!n){return;}var i=Math.floor((e.clientY-r.top)/r.height*n),j=Math.floor((e.clientX-r.left)/r.width*n);
if(i>=0&&j>=0&&n>i&&n>j){hov.textContent=tok[i]+'  \\u2192  '+tok[j];}});});});})();
</script>
"""


def attention_grid_html(
    probs: np.ndarray,
    tokens: Sequence[str] | None = None,
    *,
    title: str = "Attention maps",
    cell: int = 72,
    max_pixels: int = 128,
) -> str:
    """A layer x head grid of attention maps for one sequence, plus each layer's head mean.

    Parameters
    ----------
    probs : array
        (L, H, T, T) attention of one sequence (e.g. ``exp.extras["attentions"][i]`` or
        :func:`unveil.attention.capture_attentions` ``.probs[i]``).
    tokens : sequence of str, optional
        The T tokens, shown when hovering over an enlarged map (click a cell to enlarge).
    cell : int
        Thumbnail size in CSS pixels.
    max_pixels : int
        Maps longer than this are block-averaged to this many pixels per side.

    Returns
    -------
    str
        A complete, self-contained HTML page.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 4 or p.shape[-1] != p.shape[-2]:
        raise InputError(f"expected (layers, heads, T, T) attention, got shape {p.shape}")
    if tokens is not None and len(tokens) != p.shape[-1]:
        raise InputError(f"{len(tokens)} tokens for maps over {p.shape[-1]} tokens")
    n_layers, n_heads = p.shape[:2]
    head_cells = "".join(f"<th>head {h + 1}</th>" for h in range(n_heads))
    rows = [f"<tr><th></th>{head_cells}<th>mean</th></tr>"]
    for layer in range(n_layers):
        maps = [*p[layer], p[layer].mean(axis=0)]
        cells = []
        for h, m in enumerate(maps):
            name = f"layer {layer + 1}, " + (f"head {h + 1}" if h < n_heads else "mean of heads")
            cells.append(f"<td><img src='{_map_uri(m, max_pixels)}' width='{cell}' "
                         f"height='{cell}' title='{name}' alt='{name}'></td>")
        rows.append(f"<tr><th>layer {layer + 1}</th>{''.join(cells)}</tr>")
    tok_json = script_json([str(t) for t in tokens] if tokens is not None else [])
    body = (f"<table class='uv-grid'>{''.join(rows)}</table>"
            "<div id='uv-hover'></div><div id='uv-detail'>click a map to enlarge it</div>"
            + _SCRIPT % tok_json)
    return _page(title, body)
