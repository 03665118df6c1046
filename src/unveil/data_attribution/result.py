"""The result of :func:`~unveil.data_attribution.training_influence`: which training rows drove
each explained decision.

Sign convention, the same for every estimator: ``scores[t, i] > 0`` makes training row ``i`` a
**proponent** of test row ``t`` — giving row ``i`` more weight in training lowers the loss of
test row ``t`` (for influence functions, ``scores[t, i] = -d loss_t / d eps_i`` when row ``i``'s
weight in the mean training loss grows by ``eps_i``; removing the row changes the test loss by
about ``+scores[t, i] / n``). Negative scores are **opponents**.

Saved as one ``.npz`` of numeric arrays plus UTF-8 JSON metadata; loading never unpickles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.result_file import read_result, write_result
from ..errors import InputError, OptionError

__all__ = ["TrainingAttribution"]

_KIND = "unveil.training_attribution/1"
_ARRAYS = ("scores", "test_targets", "train_indices", "train_labels")
_OPTIONAL = ("train_rows", "test_rows")


def _num(v: Any) -> float | int | str | None:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return v if isinstance(v, (str, type(None))) else str(v)


def _label(v: Any) -> Any:
    a = np.asarray(v)
    if a.ndim == 0:
        x = a.item()
        return int(x) if isinstance(x, (int, np.integer)) or float(x).is_integer() else float(x)
    return [float(t) for t in a.reshape(-1)]


@dataclass
class TrainingAttribution:
    """Scores of every training row for every explained (test) row, ``[n_test, n_train]``.

    Positive = proponent (up-weighting the row lowers that test row's loss), negative = opponent;
    see the module docstring. ``train_indices`` are the rows' positions in the caller's training
    set (shards and subsets keep their original numbers); ``train_rows`` (optional) holds the
    rows or images themselves for display, aligned with ``train_indices``.
    ``evaluation`` holds the measured quality figures (``loo_correlation``, ``lds``,
    ``mislabel_auc``, ...) once measured; ``timings`` the seconds spent per stage.
    """

    scores: torch.Tensor
    test_targets: np.ndarray
    train_indices: np.ndarray
    train_labels: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    train_rows: np.ndarray | None = None
    test_rows: np.ndarray | None = None
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    evaluation: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.scores, torch.Tensor):
            self.scores = torch.as_tensor(np.asarray(self.scores))
        if self.scores.ndim != 2:
            raise InputError(f"scores must be [n_test, n_train], got shape {tuple(self.scores.shape)}")
        n_test, n_train = self.scores.shape
        self.test_targets = np.asarray(self.test_targets)
        self.train_indices = np.asarray(self.train_indices, dtype=np.int64)
        self.train_labels = np.asarray(self.train_labels)
        if self.test_targets.shape[:1] != (n_test,) or self.train_indices.shape != (n_train,) \
                or self.train_labels.shape[:1] != (n_train,):
            raise InputError(
                f"scores {tuple(self.scores.shape)} disagree with {self.test_targets.shape[0]} test targets, "
                f"{self.train_indices.shape[0]} train indices or {self.train_labels.shape[0]} train labels"
            )
        for name in _OPTIONAL:
            rows = getattr(self, name)
            if rows is not None:
                rows = np.asarray(rows)
                want = n_train if name == "train_rows" else n_test
                if rows.shape[:1] != (want,):
                    raise InputError(f"{name} must have {want} rows, got shape {rows.shape}")
                setattr(self, name, rows)

    # -- reading ------------------------------------------------------------------------------
    @property
    def n_test(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_train(self) -> int:
        return int(self.scores.shape[1])

    def class_of(self, v: Any) -> str:
        """A label as its class name when the class names are known, else as text."""
        lab = _label(v)
        if isinstance(lab, int) and self.class_names and 0 <= lab < len(self.class_names):
            return self.class_names[lab]
        return str(lab)

    def top(self, test_index: int = 0, k: int = 5) -> dict[str, list[dict[str, Any]]]:
        """The ``k`` strongest proponents (highest scores) and opponents (lowest) of one test
        row: per row its position in this result, its index in the training set, its label
        (and class name) and its score. Opponents list only negative scores, proponents only
        positive ones."""
        if isinstance(test_index, bool) or not isinstance(test_index, (int, np.integer)) \
                or not -self.n_test <= int(test_index) < self.n_test:
            raise OptionError(f"test_index must be an int in 0..{self.n_test - 1}, got {test_index!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise OptionError(f"k must be an int >= 1, got {k!r}")
        s = self.scores[int(test_index)].detach().double().cpu().numpy()
        order = np.argsort(-s, kind="stable")

        def entry(p: int) -> dict[str, Any]:
            return {"position": int(p), "index": int(self.train_indices[p]), "label": _label(self.train_labels[p]),
                    "class": self.class_of(self.train_labels[p]), "score": float(s[p])}

        pro = [entry(int(p)) for p in order[:k] if s[p] > 0]
        opp = [entry(int(p)) for p in order[::-1][:k] if s[p] < 0]
        return {"proponents": pro, "opponents": opp}

    def self_scores(self) -> np.ndarray | None:
        """Diagonal scores when the explained rows are the training rows themselves (same
        indices in the same order), else ``None``."""
        ti = self.params.get("test_indices")
        if ti is None or len(ti) != self.n_test:
            return None
        pos = {int(v): i for i, v in enumerate(self.train_indices)}
        if not all(int(t) in pos for t in ti):
            return None
        s = self.scores.detach().double().cpu().numpy()
        return np.array([s[i, pos[int(t)]] for i, t in enumerate(ti)])

    def to_dict(self, k: int = 5) -> dict[str, Any]:
        """JSON-safe summary: method, parameters, evaluation, timings and per test row its
        target and top ``k`` proponents and opponents (not the full score matrix)."""
        return {
            "method": self.method,
            "params": {key: _jsonable(v) for key, v in self.params.items()},
            "n_test": self.n_test, "n_train": self.n_train,
            "evaluation": {key: _num(v) for key, v in self.evaluation.items()},
            "timings": {key: _num(v) for key, v in self.timings.items()},
            "class_names": self.class_names, "feature_names": self.feature_names,
            "rows": [{"test_index": t, "target": _label(self.test_targets[t]),
                      "class": self.class_of(self.test_targets[t]), **self.top(t, k)} for t in range(self.n_test)],
        }

    def __repr__(self) -> str:
        ev = ", ".join(f"{key}={v:.3g}" for key, v in self.evaluation.items() if isinstance(v, float))
        return (f"TrainingAttribution(method={self.method!r}, n_test={self.n_test}, n_train={self.n_train}"
                f"{', ' + ev if ev else ''})")

    # -- display -------------------------------------------------------------------------------
    def to_html(self, *, title: str | None = None, k: int = 5) -> str:
        """One self-contained page: per test row its top proponents and opponents (thumbnails
        or row values) and the evaluation figures in words."""
        from ..report.training_data import training_data_page  # the permitted upward call

        return training_data_page(self, title=title, k=k)

    def _repr_html_(self) -> str:
        from ..report.training_data import training_data_section

        return training_data_section(self, k=5, max_tests=3)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write numeric arrays and JSON metadata to one ``.npz`` (nothing pickled)."""
        meta = {"method": self.method,
                "params": {key: _jsonable(v) for key, v in self.params.items()},
                "feature_names": self.feature_names, "class_names": self.class_names,
                "evaluation": {key: _num(v) for key, v in self.evaluation.items()},
                "timings": {key: _num(v) for key, v in self.timings.items()}}
        arrays: dict[str, np.ndarray] = {"scores": self.scores.detach().cpu().numpy(),
                                         "test_targets": self.test_targets, "train_indices": self.train_indices,
                                         "train_labels": self.train_labels}
        for name in _OPTIONAL:
            rows = getattr(self, name)
            if rows is not None and np.asarray(rows).dtype.kind in "biuf":
                arrays[name] = np.asarray(rows)
        return write_result(path, _KIND, meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> TrainingAttribution:
        """Read a file written by :meth:`save`; refuses anything else with :class:`InputError`."""
        meta, arrays = read_result(path, _KIND, what="an unveil training-attribution file")
        missing = [key for key in _ARRAYS if key not in arrays]
        if missing:
            raise InputError(f"cannot load {path}: arrays missing ({missing})")
        ev = {key: (float("nan") if v is None else v) for key, v in dict(meta.get("evaluation") or {}).items()}
        return cls(scores=torch.from_numpy(arrays["scores"]), test_targets=arrays["test_targets"],
                   train_indices=arrays["train_indices"], train_labels=arrays["train_labels"],
                   method=str(meta.get("method", "")), params=dict(meta.get("params") or {}),
                   train_rows=arrays.get("train_rows"), test_rows=arrays.get("test_rows"),
                   feature_names=meta.get("feature_names"), class_names=meta.get("class_names"),
                   evaluation=ev, timings=dict(meta.get("timings") or {}))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, torch.Tensor):
        return _jsonable(v.detach().cpu().numpy())
    return _num(v)
