"""Data placed inside an HTML ``<script>`` element.

A ``<script>`` element ends at the first ``</script`` in its raw text, whatever JavaScript
string it sits in, and ``<!--`` inside it changes how the HTML parser looks for that end. So
every value unveil writes into an inline script goes through :func:`script_json`, which emits
JSON without any ``<``, ``>`` or ``&`` character (they become ``\\u003c``, ``\\u003e``,
``\\u0026``, which JavaScript and JSON read back as the same characters), and with U+2028 and
U+2029 escaped too (old JavaScript engines end a line at them).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["script_json"]

_ESCAPES = str.maketrans({
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029",
})


def script_json(obj: Any) -> str:
    """JSON text of ``obj`` that is safe to place verbatim inside a ``<script>`` element.

    Parameters
    ----------
    obj : JSON-serialisable
        Dicts, lists, strings, finite numbers, booleans and ``None``.

    Returns
    -------
    str
        A JavaScript expression (and valid JSON) equal to ``obj``, containing no ``<``,
        ``>``, ``&``, U+2028 or U+2029 character.

    Raises
    ------
    ValueError
        For NaN or infinite floats (not JSON); ``TypeError`` for objects JSON cannot encode.

    Examples
    --------
    >>> script_json(["</script>", "a&b"])
    '["\\\\u003c/script\\\\u003e", "a\\\\u0026b"]'
    """
    return json.dumps(obj, allow_nan=False).translate(_ESCAPES)
