"""The decision a counterfactual must reach, read off a model's scores.

For a model with K >= 2 outputs the decision is the argmax and the margin of a desired class is
its score minus the best other score; for one output per row the decision is
``score > threshold`` and the margin is the signed distance to the threshold. A row reaches the
desired class exactly when its margin is positive, so one function serves the gradient search
(which pushes the margin up), the model-agnostic search and the final verification. The bias
audit's counterfactual flips score their rows through :func:`decide` too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..core.batching import BatchSize
from ..core.model import Model
from ..errors import OptionError
from ..surrogate.blackbox import Preprocess, class_labels, evaluate_rows, model_rows

__all__ = ["Decision", "decide", "score_rows"]


@dataclass(frozen=True)
class Decision:
    """How labels and margins are read off scores: ``n_outputs`` columns (1: thresholded)."""

    n_outputs: int
    threshold: float | None = None

    @classmethod
    def of(cls, scores: np.ndarray, threshold: float | None) -> Decision:
        """The decision rule for a model whose scores on some rows are ``scores``."""
        k = 1 if scores.ndim == 1 else int(scores.shape[1])
        if k == 1 and threshold is None:
            class_labels(scores.reshape(-1), None, what="the model")  # raises unless integral outputs
            threshold = 0.5
        return cls(k, threshold)

    @property
    def n_classes(self) -> int:
        """Classes a row can be given (2 for one thresholded output)."""
        return 2 if self.n_outputs == 1 else self.n_outputs

    def labels(self, scores: np.ndarray) -> np.ndarray:
        """Class labels (int64) of scores (M,) or (M, K)."""
        s = scores.reshape(scores.shape[0], -1)
        if self.n_outputs == 1:
            return (s[:, 0] > float(self.threshold or 0.0)).astype(np.int64)
        return np.asarray(s.argmax(axis=1), dtype=np.int64)

    def margin(self, scores: torch.Tensor, desired: torch.Tensor) -> torch.Tensor:
        """Positive exactly when a row is given its ``desired`` class (differentiable)."""
        s = scores.reshape(scores.shape[0], -1)
        if self.n_outputs == 1:
            d = s[:, 0] - float(self.threshold or 0.0)
            return torch.where(desired == 1, d, -d)
        own = s.gather(1, desired.view(-1, 1)).squeeze(1)
        others = s.scatter(1, desired.view(-1, 1), float("-inf"))
        return own - others.max(dim=1).values

    def desired_of(self, labels: np.ndarray, desired: int | str | None, class_names: list[str] | None) -> np.ndarray:
        """The class each row should reach: the other class (two classes), the given one, or
        for several classes the runner-up is left to the caller (``desired`` required)."""
        if desired is None:
            if self.n_classes != 2:
                raise OptionError(f"the model has {self.n_classes} classes: pass desired= the class to reach")
            return 1 - labels
        if isinstance(desired, str):
            if not class_names or desired not in class_names:
                raise OptionError(f"desired={desired!r} is not a class name; the classes are {class_names}")
            desired = class_names.index(desired)
        if not 0 <= int(desired) < self.n_classes:
            raise OptionError(f"desired={desired} is not a class of a model with {self.n_classes} classes")
        return np.full(labels.shape, int(desired), dtype=np.int64)


def score_rows(model: Model, total: int, build: Callable[[int, int], torch.Tensor], *,
               batch_size: BatchSize = "auto", key: tuple[object, ...] = ()) -> np.ndarray:
    """Scores (M,) or (M, K) of ``total`` candidate rows built chunk by chunk (many per call)."""
    out = evaluate_rows(model, total, build, batch_size=batch_size, key=("counterfactual", *key)).numpy()
    return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out


def decide(model: Model, rows: np.ndarray, *, preprocess: Preprocess | None = None,
           batch_size: BatchSize = "auto") -> np.ndarray:
    """The model's scores on table rows (float64, in the table's units)."""
    xt = model.prepare(torch.from_numpy(model_rows(rows, preprocess)))
    return score_rows(model, xt.shape[0], lambda a, b: xt[a:b], batch_size=batch_size, key=(rows.shape[1],))
