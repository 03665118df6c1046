"""The one result type of every method: :class:`Explanation`.

It carries the attributions and everything needed to reproduce, judge and show them. It saves
to a pair of files, ``.npz`` for arrays and JSON (inside the npz) for the rest — never pickle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ._archive import DEFAULT_MAX_BYTES, check_meta_text, read_archive

__all__ = ["Explanation", "jsonable", "load"]

_ARRAY_FIELDS = ("values", "inputs", "targets", "outputs", "baseline_outputs", "stderr", "delta")
_FORMAT = "unveil.explanation/1"


def _np(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def jsonable(obj: Any) -> Any:
    """Make method parameters JSON-safe (tensors become short descriptions)."""
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return f"<{type(obj).__name__} shape={tuple(obj.shape)}>"
    return repr(obj)


@dataclass(repr=False)
class Explanation:
    """Attributions for a batch, with their provenance.

    Attributes
    ----------
    values : ndarray
        Attributions, shaped like ``inputs`` (or ``(N, n_groups)`` for group methods whose maps
        are kept at group level; ``groups`` then says how to expand them).
    inputs : ndarray
        The explained inputs, (N, ...).
    targets : ndarray or None
        The explained class per row, (N,); ``None`` for models with one output.
    outputs, baseline_outputs : ndarray or None
        The target score at the input and at the baseline, (N,).
    method : str
        Registry name of the method; ``params`` its options.
    stderr : ndarray or None
        Standard error of stochastic estimates, shaped like ``values``.
    delta : ndarray or None
        Completeness gap per row: ``sum(values) - (f(x) - f(baseline))`` for methods that
        promise completeness.
    n_evals : int
        Model rows evaluated. ``timings`` holds seconds per phase. ``quality`` is filled by
        :func:`unveil.evaluate`. ``extras`` holds method-specific arrays (e.g. the layer-level
        CAM) and ``meta`` method-specific JSON facts (e.g. the chosen layer).
    """

    values: np.ndarray
    inputs: np.ndarray
    method: str
    targets: np.ndarray | None = None
    outputs: np.ndarray | None = None
    baseline_outputs: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    stderr: np.ndarray | None = None
    delta: np.ndarray | None = None
    n_evals: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    modality: str = "tabular"
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    _fingerprint: str | None = field(default=None, repr=False)
    _fingerprint_fn: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _ARRAY_FIELDS:
            setattr(self, name, _np(getattr(self, name)))
        self.extras = {k: np.asarray(_np(v)) for k, v in self.extras.items()}

    # -- basics ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        """One line: method, shapes, targets and cost (the arrays are in the attributes)."""
        parts = [f"method={self.method!r}", f"values={_shape_text(self.values)}"]
        if self.targets is not None:
            t = np.asarray(self.targets).ravel()
            parts.append(f"targets={t[:6].tolist()}{'...' if t.size > 6 else ''}")
        if self.delta is not None:
            parts.append(f"max|delta|={float(np.nanmax(np.abs(np.asarray(self.delta)))):.3g}")
        if self.n_evals:
            parts.append(f"n_evals={self.n_evals}")
        if self.quality:
            parts.append(f"quality={sorted(self.quality)}")
        return f"Explanation({', '.join(parts)})"

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def fingerprint(self) -> str | None:
        """SHA-256 prefix of the model's parameters, computed on first access."""
        if self._fingerprint is None and self._fingerprint_fn is not None:
            self._fingerprint = self._fingerprint_fn()
            self._fingerprint_fn = None
        return self._fingerprint

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> Explanation:
        """The explanation of a subset of samples (an int keeps the batch axis)."""
        idx: Any = [index] if isinstance(index, (int, np.integer)) else index
        n = len(self)

        def take(a: Any) -> Any:
            return a[idx] if isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[0] == n else a

        kw = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        for name in _ARRAY_FIELDS:
            kw[name] = take(kw[name])
        kw["extras"] = {k: take(v) for k, v in self.extras.items()}
        kw["params"] = dict(self.params)
        toks = self.meta.get("tokens")
        if isinstance(toks, list) and len(toks) == n and all(isinstance(t, list) for t in toks):
            kw["meta"] = {**self.meta, "tokens": [toks[int(j)] for j in np.arange(n)[idx]]}
        kw["quality"] = {}
        kw["_fingerprint"] = self.fingerprint
        kw["_fingerprint_fn"] = None
        if self.groups is not None:
            kw["groups"] = {
                k: (take(v) if k == "labels" and np.asarray(v).shape[0] == n else v)
                for k, v in self.groups.items()
            }
        return Explanation(**kw)

    def summary(self) -> dict[str, Any]:
        """A JSON-safe dict of the scalar facts (no arrays)."""
        return {
            "method": self.method,
            "n_samples": len(self),
            "shape": list(self.values.shape),
            "modality": self.modality,
            "params": jsonable(self.params),
            "seed": self.seed,
            "n_evals": self.n_evals,
            "timings": self.timings,
            "fingerprint": self.fingerprint,
            "quality": jsonable(self.quality),
            "meta": jsonable(self.meta),
        }

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write arrays and metadata to one ``.npz`` file (no pickle); returns the path."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        arrays: dict[str, np.ndarray] = {}
        for name in _ARRAY_FIELDS:
            a = getattr(self, name)
            if a is not None:
                arrays[name] = a
        for k, v in self.extras.items():
            arrays[f"extras.{k}"] = v
        groups_meta: dict[str, Any] | None = None
        if self.groups is not None:
            groups_meta = {}
            for k, v in self.groups.items():
                if isinstance(v, (np.ndarray, torch.Tensor)):
                    arrays[f"groups.{k}"] = np.asarray(_np(v))
                else:
                    groups_meta[k] = v
        for k, a in arrays.items():
            if a.dtype.kind not in "biuf":
                raise InputError(f"cannot save array {k!r} of dtype {a.dtype}: only bool, integer "
                                 "and float arrays are saved (nothing is pickled)")
        meta = {
            "format": _FORMAT,
            "method": self.method,
            "params": jsonable(self.params),
            "seed": self.seed,
            "n_evals": self.n_evals,
            "timings": self.timings,
            "quality": jsonable(self.quality),
            "groups": groups_meta,
            "meta": jsonable(self.meta),
            "modality": self.modality,
            "feature_names": self.feature_names,
            "class_names": self.class_names,
            "fingerprint": self.fingerprint,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "extras": sorted(self.extras),
            "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()},
        }
        text = json.dumps(meta)
        why = check_meta_text(text)
        if why is not None:
            raise InputError(f"cannot save {path}: {why} (simplify params, meta or quality)")
        arrays["__meta__"] = np.frombuffer(text.encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs
        return path

    @classmethod
    def load(cls, path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Explanation:
        """Read an Explanation written by :meth:`save`, trusting nothing in the file.

        Nothing is unpickled; the archive is refused with :class:`~unveil.errors.InputError`
        when it is not a zip, would decompress to more than ``max_bytes`` (default 2 GiB;
        checked before decompressing), holds a non-numeric array, or its metadata is not
        UTF-8 JSON of the expected shape and types, or disagrees with the arrays. See
        :mod:`unveil.core._archive` for every check.
        """
        meta, arrays = read_archive(path, fmt=_FORMAT, max_bytes=max_bytes, fields=_ARRAY_FIELDS)
        kw: dict[str, Any] = {name: arrays.get(name) for name in _ARRAY_FIELDS}
        kw["extras"] = {k[7:]: v for k, v in arrays.items() if k.startswith("extras.")}
        groups = meta.get("groups")
        garr = {k[7:]: v for k, v in arrays.items() if k.startswith("groups.")}
        if groups is not None or garr:
            groups = {**(groups or {}), **garr}
        return cls(
            method=meta["method"],
            params=meta["params"],
            seed=meta["seed"],
            n_evals=meta["n_evals"],
            timings=meta["timings"],
            quality=meta["quality"],
            groups=groups,
            meta=meta.get("meta", {}),
            modality=meta["modality"],
            feature_names=meta["feature_names"],
            class_names=meta["class_names"],
            _fingerprint=meta["fingerprint"],
            **kw,
        )

    def with_names(
        self,
        *,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        tokens: Sequence[Sequence[str]] | None = None,
    ) -> Explanation:
        """A copy (arrays shared) with names replaced: ``feature_names`` (one per column),
        ``class_names`` (one per output) and ``tokens`` (token strings per row, stored in
        ``meta["tokens"]``); ``None`` keeps what the explanation has."""
        meta = dict(self.meta)
        if tokens is not None:
            meta["tokens"] = [[str(t) for t in row] for row in tokens]
        return replace(
            self,
            feature_names=self.feature_names if feature_names is None else [str(n) for n in feature_names],
            class_names=self.class_names if class_names is None else [str(n) for n in class_names],
            meta=meta,
            _fingerprint=self.fingerprint,
            _fingerprint_fn=None,
        )

    # -- display (the one permitted upward import) ----------------------------------------
    def plot(
        self, index: int = 0, *, ax: Any = None, feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None, **kwargs: Any,
    ) -> Any:
        """Draw sample ``index``: a heatmap for images, bars for tables, highlighted words for
        text (subwords merged); ``kind=`` picks another drawing (``"waterfall"``,
        ``"beeswarm"``, ``"dependence"`` for tables; ``"heatmap"``, ``"blended"``,
        ``"overlay"`` with ``sign=`` for images), see :func:`unveil.report.plot_explanation`.
        Returns the matplotlib Axes. ``feature_names`` / ``class_names`` name columns and
        classes for this drawing only (see :meth:`with_names`)."""
        from ..report import plotting

        exp = self.with_names(feature_names=feature_names, class_names=class_names)
        return plotting.plot_explanation(exp, index=index, ax=ax, **kwargs)

    def to_html(
        self, *, feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None, **kwargs: Any,
    ) -> str:
        """A self-contained HTML fragment showing the explanation (names as in :meth:`plot`)."""
        from ..report import html

        exp = self.with_names(feature_names=feature_names, class_names=class_names)
        return html.explanation_html(exp, **kwargs)

    def _repr_html_(self) -> str:
        return self.to_html(max_samples=4)


def load(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Explanation:
    """Load an :class:`Explanation` saved with :meth:`Explanation.save`.

    Raises :class:`~unveil.errors.InputError` for a malformed or oversized file (more than
    ``max_bytes`` uncompressed, default 2 GiB); see :meth:`Explanation.load`.
    """
    return Explanation.load(path, max_bytes=max_bytes)


def _shape_text(a: Any) -> str:
    shape = getattr(a, "shape", None)
    return "x".join(str(int(d)) for d in shape) if shape is not None else type(a).__name__
