"""Checks shared by report, CLI and dashboard tests: a page is self-contained."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

_URL_ATTRS = ("src", "href", "action", "poster", "data", "srcset", "formaction", "background")


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        d = dict(attrs)
        if tag == "img":
            self.imgs.append(d)
        for k in _URL_ATTRS:
            if d.get(k):
                self.urls.append(str(d[k]))


def check_self_contained(page: str, *, min_images: int = 0) -> list[bytes]:
    """Assert no external reference, every <img> an embedded PNG that decodes; return the PNGs."""
    from PIL import Image

    p = _Collect()
    p.feed(page)
    p.close()
    assert not re.search(r"(?i)\b(?:https?|ftp|wss?):", page), "the page names an external URL"
    assert "//" not in "".join(u for u in p.urls if not u.startswith("data:")), "protocol-relative URL"
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    assert not re.search(r"(?i)@import|url\(", page), "CSS pulls a resource"
    for u in p.urls:
        assert u.startswith(("data:", "#")), f"non-embedded reference {u[:60]!r}"
    pngs = []
    for img in p.imgs:
        src = img.get("src") or ""
        assert src.startswith("data:image/png;base64,"), f"<img> not embedded: {src[:40]!r}"
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            assert im.format == "PNG" and im.size[0] > 0
        assert img.get("alt") is not None, "an <img> without alt text"
        pngs.append(raw)
    assert len(pngs) >= min_images, f"expected at least {min_images} images, found {len(pngs)}"
    return pngs
