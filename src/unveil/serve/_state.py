"""What the dashboard holds in memory: its models (loaded on first use), their sample inputs,
uploads and finished runs. Uploads and runs are named by random ids, never by paths, and the
oldest are dropped beyond a fixed count."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..frontends import LoadedModel

__all__ = ["ApiError", "Entry", "Store", "Upload"]


class ApiError(Exception):
    """An error the API reports with an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Entry:
    """A model offered by the dashboard."""

    name: str
    description: str
    modality: str | None
    loader: Callable[[], Any]
    sample_shape: tuple[int, ...] | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    samples: torch.Tensor | None = None
    labels: np.ndarray | None = None
    is_module: bool | None = None
    tokenizer: Any = None
    background: torch.Tensor | None = None  # rows for the methods that ask for background=
    reference: torch.Tensor | None = None  # the model's data: inputs outside it are flagged
    table: np.ndarray | None = None  # rows for model-level views (surrogates, audits): tables only
    table_labels: np.ndarray | None = None
    table_preprocess: Callable[[np.ndarray], Any] | None = None  # ``table`` units -> model inputs
    _model: Any = None

    def n_samples(self) -> int:
        """How many sample inputs the dashboard offers for this model."""
        return 0 if self.samples is None else int(self.samples.shape[0])


@dataclass
class Upload:
    """An uploaded batch, tied to the model it was uploaded for."""

    model: str
    x: torch.Tensor
    kind: str
    tokens: list[list[str]] | None = None


def _zoo_entries() -> list[Entry]:
    from ..zoo import ZOO, load_dataset

    out = []
    for name, z in sorted(ZOO.items()):
        data = load_dataset(name)
        tabular = z.modality == "tabular"
        out.append(Entry(name, z.description, z.modality, z.factory,
                         sample_shape=tuple(data.X_test.shape[1:]),
                         class_names=list(data.class_names), feature_names=data.feature_names,
                         samples=data.X_test, labels=data.y_test.numpy(), is_module=True,
                         background=data.X_train[:32], reference=data.X_train,
                         table=torch.cat([data.X_train, data.X_test]).numpy() if tabular else None,
                         table_labels=torch.cat([data.y_train, data.y_test]).numpy() if tabular else None))
    return out


def _extra_entry(name: str, obj: Any, samples: Any) -> Entry:
    lm = obj if isinstance(obj, LoadedModel) else LoadedModel(obj, name=name)
    x = None if samples is None else torch.as_tensor(np.asarray(samples))
    shape = lm.sample_shape or (tuple(x.shape[1:]) if x is not None else None)
    modality = lm.modality
    if modality is None and x is not None:
        from ..core.modality import infer_modality

        modality = infer_modality(x)
    return Entry(name, lm.description or f"model {lm.name}", modality, lambda: lm.model,
                 sample_shape=shape, class_names=lm.class_names, feature_names=lm.feature_names,
                 samples=x, is_module=isinstance(lm.model, torch.nn.Module), tokenizer=lm.tokenizer,
                 background=None if x is None else x[:32],
                 table=x.numpy() if modality == "tabular" and x is not None and x.ndim == 2 else None)


@dataclass
class Store:
    """Models, uploads and runs of one app; ``lock`` serialises work on the models."""

    entries: dict[str, Entry]
    budget: dict[str, Any]
    max_upload_bytes: int
    max_rows: int = 64
    max_table_rows: int = 20_000
    max_uploads: int = 32
    max_runs: int = 16
    lock: threading.RLock = field(default_factory=threading.RLock)
    uploads: OrderedDict[str, Upload] = field(default_factory=OrderedDict)
    runs: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    pages: OrderedDict[str, str] = field(default_factory=OrderedDict)  # audit pages (HTML)

    @classmethod
    def build(cls, models: dict[str, Any] | None, samples: dict[str, Any] | None, *, zoo: bool,
              **kw: Any) -> Store:
        """Entries for the zoo (if ``zoo``) and for each extra model."""
        entries = {e.name: e for e in (_zoo_entries() if zoo else [])}
        for name, obj in (models or {}).items():
            entries[name] = _extra_entry(name, obj, (samples or {}).get(name))
        return cls(entries, **kw)

    def entry(self, name: str) -> Entry:
        """The model ``name`` (404 if the dashboard does not offer it)."""
        if name not in self.entries:
            raise ApiError(404, f"no model named {name!r}; available: {', '.join(self.entries)}")
        return self.entries[name]

    def model(self, entry: Entry) -> Any:
        """The model object, loaded (and for the zoo, possibly trained) on first use."""
        with self.lock:
            if entry._model is None:
                entry._model = entry.loader()
                entry.is_module = isinstance(entry._model, torch.nn.Module)
        return entry._model

    def explainable(self, entry: Entry) -> Any:
        """The model wrapped with its data (``uv.Model(reference=)``) when the data is known, so
        that explanations flag inputs far from it; the model itself otherwise."""
        from ..core.model import Model, as_model

        model = self.model(entry)
        if entry.reference is None or isinstance(model, Model):
            return model
        return as_model(model).with_data(entry.reference, feature_names=entry.feature_names,
                                         class_names=entry.class_names)

    def input(self, entry: Entry, sample: int | None, upload: str | None, row: int
              ) -> tuple[torch.Tensor, int | None, list[list[str]] | None]:
        """One input row (batch of 1), its true label if known, and its tokens."""
        if (sample is None) == (upload is None):
            raise ApiError(422, "give exactly one of 'sample' (an index) or 'upload' (an id)")
        if sample is not None:
            n = entry.n_samples()
            if entry.samples is None or sample >= n:
                raise ApiError(404, f"model {entry.name!r} has {n} samples; index {sample} is out of range")
            label = None if entry.labels is None else int(entry.labels[sample])
            return entry.samples[sample:sample + 1], label, None
        assert upload is not None
        up = self.uploads.get(upload)
        if up is None or up.model != entry.name:
            raise ApiError(404, f"no upload {upload!r} for model {entry.name!r} (uploads expire)")
        if row >= up.x.shape[0]:
            raise ApiError(404, f"the upload has {up.x.shape[0]} rows; row {row} is out of range")
        toks = None if up.tokens is None else [up.tokens[row]]
        return up.x[row:row + 1], None, toks

    def table(self, entry: Entry, upload: str | None
              ) -> tuple[np.ndarray, np.ndarray | None, Callable[[np.ndarray], Any] | None]:
        """Rows for the model-level views: an uploaded table (in the model's units), or the rows
        the dashboard has for the model (maybe in the data set's own units); their true labels
        when known; and the function that turns them into model inputs (``None``: as they
        are). Tables only; at least 20 rows."""
        if entry.modality != "tabular":
            raise ApiError(422, f"model {entry.name!r} takes {entry.modality} inputs; surrogates and "
                                "audits work on tables")
        pre = None
        if upload is not None:
            up = self.uploads.get(upload)
            if up is None or up.model != entry.name:
                raise ApiError(404, f"no upload {upload!r} for model {entry.name!r} (uploads expire)")
            x, y = up.x.numpy(), None
        elif entry.table is not None:
            x, y, pre = entry.table, entry.table_labels, entry.table_preprocess
        else:
            raise ApiError(422, f"the dashboard has no rows for model {entry.name!r}; upload a CSV table")
        if x.ndim != 2 or x.shape[0] < 20:
            raise ApiError(422, f"model-level views need a table of at least 20 rows, got shape "
                                f"{tuple(x.shape)}; upload a larger CSV table")
        return x.astype(np.float64), y, pre

    def _add(self, store: OrderedDict[str, Any], item: Any, limit: int) -> str:
        key = secrets.token_hex(8)
        with self.lock:
            store[key] = item
            while len(store) > limit:
                store.popitem(last=False)
        return key

    def add_upload(self, up: Upload) -> str:
        """Keep an upload; returns its id."""
        return self._add(self.uploads, up, self.max_uploads)

    def add_run(self, report: Any) -> str:
        """Keep a finished report for download; returns its id."""
        return self._add(self.runs, report, self.max_runs)

    def add_page(self, html: str) -> str:
        """Keep an HTML page (an audit) for download; returns its id."""
        return self._add(self.pages, html, self.max_runs)

    def page(self, page_id: str) -> str:
        """A kept page (404 once expired)."""
        html = self.pages.get(page_id)
        if html is None:
            raise ApiError(404, f"no page {page_id!r} (pages expire after {self.max_runs} newer ones)")
        return html

    def run(self, run_id: str) -> Any:
        """A finished report (404 once expired)."""
        rep = self.runs.get(run_id)
        if rep is None:
            raise ApiError(404, f"no run {run_id!r} (runs expire after {self.max_runs} newer ones)")
        return rep

