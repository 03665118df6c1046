"""A text task with a known answer, and a small transformer trained on it in seconds.

Each sequence is ``[CLS]`` followed by neutral words and padding to a fixed length. A third of
the sequences carry ``awful`` (class 0) at one random position, a third ``great`` (class 1), and
the rest neither (class 2, neutral). Telling class 0 or 1 apart from the neutral class needs
the sentiment word itself — its absence is the neutral class — so the sentiment word is the
decisive token that a faithful attribution of the predicted class ranks first (``decisive_*``
holds its position, -1 for neutral rows). With only two classes a model could detect one word
and default to the other class, and the second word would decide nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from ..zoo.fitting import fit, one_thread

__all__ = [
    "CLS_ID", "NEG_ID", "PAD_ID", "POS_ID", "SyntheticTask", "TinyTextTransformer", "VOCAB",
    "make_synthetic_task", "synthetic_example", "train_synthetic_transformer",
]

_NEUTRAL = (
    "the a movie film plot actor scene story and of it was this that with for on its his her "
    "they we ending music cast night city time book part old new long short first last some "
    "many"
).split()
VOCAB: tuple[str, ...] = ("[PAD]", "[CLS]", "great", "awful", *_NEUTRAL)
PAD_ID, CLS_ID, POS_ID, NEG_ID = 0, 1, 2, 3


@dataclass
class SyntheticTask:
    """Token ids, labels and the position of the decisive token, split into train and test."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    decisive_train: torch.Tensor
    decisive_test: torch.Tensor
    vocab: tuple[str, ...] = VOCAB

    def tokens(self, ids: torch.Tensor) -> list[str]:
        """The words of one row of ids."""
        return [self.vocab[int(i)] for i in ids]


def _sample(n: int, seq_len: int, min_len: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    lengths = torch.randint(min_len, seq_len + 1, (n,), generator=g)
    ids = torch.randint(4, len(VOCAB), (n, seq_len), generator=g)
    ids[:, 0] = CLS_ID
    ids[torch.arange(seq_len).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD_ID
    y = torch.randint(0, 3, (n,), generator=g)
    # decisive position uniform over 1..length-1; none (-1) for neutral rows
    pos = 1 + (torch.rand(n, generator=g) * (lengths - 1)).long()
    rows = torch.arange(n)[y < 2]
    ids[rows, pos[y < 2]] = torch.where(y[y < 2] == 1, POS_ID, NEG_ID)
    pos[y == 2] = -1
    return ids, y, pos


def make_synthetic_task(n_train: int = 2000, n_test: int = 200, *, seq_len: int = 16,
                        min_len: int = 6, seed: int = 0) -> SyntheticTask:
    """Draw the synthetic sentiment task (see the module docstring).

    Parameters
    ----------
    n_train, n_test : int
        Sequences per split.
    seq_len : int
        Padded length T (``[CLS]`` included).
    min_len : int
        Shortest unpadded length (>= 2).
    seed : int
        Seed of the draws.
    """
    if not 2 <= min_len <= seq_len:
        raise OptionError(f"need 2 <= min_len <= seq_len, got min_len={min_len}, seq_len={seq_len}")
    g = torch.Generator().manual_seed(seed)
    xtr, ytr, ptr = _sample(n_train, seq_len, min_len, g)
    xte, yte, pte = _sample(n_test, seq_len, min_len, g)
    return SyntheticTask(xtr, ytr, xte, yte, ptr, pte)


class TinyTextTransformer(nn.Module):
    """A small BERT-like classifier: token and position embeddings, pre-norm encoder of
    ``nn.MultiheadAttention`` layers, classification from the final ``[CLS]`` state.

    Parameters
    ----------
    vocab_size, seq_len : int
        Vocabulary size and longest sequence.
    dim, depth, heads : int
        Width, number of layers, attention heads.
    n_classes : int
        Output logits.
    pad_id : int
        Padding id; padded keys are masked in every attention layer.
    """

    def __init__(self, vocab_size: int = len(VOCAB), seq_len: int = 16, *, dim: int = 64,
                 depth: int = 2, heads: int = 4, n_classes: int = 3, pad_id: int = PAD_ID,
                 norm_first: bool = True) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        z = self.embed(ids) + self.pos[:, : ids.shape[1]]
        h = self.encoder(z, src_key_padding_mask=ids == self.pad_id)
        return self.head(self.norm(h[:, 0]))  # type: ignore[no-any-return]


def train_synthetic_transformer(task: SyntheticTask, *, epochs: int = 8, seed: int = 0,
                                **arch: Any) -> TinyTextTransformer:
    """Train a :class:`TinyTextTransformer` on ``task`` with Adam (seconds on a CPU).

    Returns the model in eval mode with no ``.grad`` left on its parameters.
    """
    torch.manual_seed(seed)
    model = TinyTextTransformer(seq_len=task.X_train.shape[1], **arch)
    with one_thread():
        fit(model, task.X_train, task.y_train, epochs=epochs, seed=seed)
    return model


@functools.lru_cache(maxsize=2)
def synthetic_example(seed: int = 0) -> tuple[TinyTextTransformer, SyntheticTask]:
    """The default task and a model trained on it (cached per process; ~5-15 s on a CPU).

    The cached model is shared: treat it as read-only.
    """
    task = make_synthetic_task(seed=seed)
    return train_synthetic_transformer(task, seed=seed), task
