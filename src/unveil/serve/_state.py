"""What the dashboard holds in memory: its models (loaded on first use), their sample inputs,
uploads and finished runs. Uploads and runs are named by random ids, never by paths, and the
oldest are dropped beyond a fixed count."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..frontends import LoadedModel

__all__ = ["ApiError", "Entry", "Store", "Upload"]

#: Most rows of a user's data the dashboard keeps (samples, reference, model-level views).
MAX_DATA_ROWS = 20_000


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
    table_names: list[str] | None = None  # the columns of ``table`` (None: ``feature_names``)
    categories: dict[str, list[str]] = field(default_factory=dict)  # words of coded columns
    kept_aside: list[str] | None = None  # columns of ``table`` the model does not read
    sample_rows: np.ndarray | None = None  # ``samples`` in ``table`` units (what-if edits)
    texts: list[str] | None = None  # the sample texts (text models)
    tokens: list[list[str]] | None = None  # their tokens
    _model: Any = None

    def n_samples(self) -> int:
        """How many sample inputs the dashboard offers for this model."""
        return 0 if self.samples is None else int(self.samples.shape[0])

    def columns(self, width: int) -> list[str]:
        """Names of the ``width`` columns of the rows for the model-level views."""
        for names in (self.table_names, self.feature_names):
            if names is not None and len(names) == width:
                return list(names)
        return [f"x{j}" for j in range(width)]

    def table_inputs(self, header: list[str] | None, cells: list[list[str]], what: str = "the upload"
                     ) -> tuple[np.ndarray, torch.Tensor]:
        """Rows of an uploaded table in the units of the model's data (columns found by name,
        text coded as the data codes it, a label column left out), and the model's inputs made
        from them (through the data's preprocess). Without a data table the rows are numbers;
        columns beyond ``feature_names`` are kept aside when the header names them."""
        from ..frontends.tables import encode_cells
        from ._data import model_inputs

        if self.table_names is None:
            for i, r in enumerate(cells):
                for j, c in enumerate(r):
                    try:
                        float(c)
                    except ValueError:
                        raise InputError(f"{what}: row {i + 1}, column {j + 1} is not a number: {c!r}; model "
                                         f"{self.name!r} takes numbers (text columns need the model's data "
                                         "and a preprocess: unveil serve --data --preprocess)") from None
            t = encode_cells(header, cells, what)
            names = self.feature_names
            shape = self.sample_shape
            if (shape is not None and len(shape) == 1 and t.X.shape[1] > shape[0] and header is not None
                    and not (names and set(names) <= set(header))):
                raise InputError(f"{what} has {t.X.shape[1]} columns; model {self.name!r} takes {shape[0]} "
                                 "and the dashboard does not know which: start it with --feature-names "
                                 "(the model's columns; the others are kept aside) or --data")
            if header is not None and names and len(names) < len(header) and set(names) <= set(header):
                idx = [header.index(n) for n in names]
                return t.X, torch.from_numpy(np.ascontiguousarray(t.X[:, idx])).to(torch.float32)
            return t.X, torch.from_numpy(t.X).to(torch.float32)
        want = list(self.table_names)
        if header is None:
            if cells and len(cells[0]) != len(want):
                raise InputError(f"{what} has {len(cells[0])} columns without a header; the model's data "
                                 f"has {len(want)}: {', '.join(want)}")
            header = want
        missing = [n for n in want if n not in header]
        if missing:
            raise InputError(f"{what} lacks the columns {', '.join(missing)}; the model's data has "
                             f"the columns {', '.join(want)}")
        idx = [header.index(n) for n in want]
        t = encode_cells(want, [[r[j] for j in idx] for r in cells], what, known=self.categories)
        for col, words in t.categories.items():  # codes must mean what they mean in the data
            if words != self.categories.get(col, words):
                raise InputError(f"{what}: column {col!r} holds text, but in the model's data it holds numbers")
        return t.X, model_inputs(self.table_preprocess, t.X)

    def preview(self, i: int, limit: int = 3) -> str:
        """A short line about sample ``i``: its text, or its first values (words for coded
        columns)."""
        if self.texts is not None:
            t = self.texts[i]
            return t if len(t) <= 80 else t[:79] + "…"
        assert self.samples is not None
        row = self.sample_rows[i] if self.sample_rows is not None else self.samples[i].numpy().reshape(-1)
        names = self.columns(row.size) if self.sample_rows is not None else (
            self.feature_names if self.feature_names and len(self.feature_names) == row.size
            else [f"x{j}" for j in range(row.size)])
        parts = []
        for j in range(min(limit, row.size)):
            words = self.categories.get(names[j])
            v = float(row[j])
            parts.append(f"{names[j]}={words[int(v)] if words and 0 <= v < len(words) else f'{v:.3g}'}")
        return ", ".join(parts) + (" …" if row.size > limit else "")


@dataclass
class Upload:
    """An uploaded batch, tied to the model it was uploaded for."""

    model: str
    x: torch.Tensor
    kind: str
    tokens: list[list[str]] | None = None
    rows: np.ndarray | None = None  # a table in the units of the model's data (``Entry.table``)


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
    from ._data import ServedModel, first_layer_modality

    if isinstance(obj, ServedModel):
        return _served_entry(name, obj, samples)
    lm = obj if isinstance(obj, LoadedModel) else LoadedModel(obj, name=name)
    x = None if samples is None else torch.as_tensor(np.asarray(samples))
    guess, width = first_layer_modality(lm.model)
    shape = lm.sample_shape or (tuple(x.shape[1:]) if x is not None else width)
    modality = lm.modality
    if modality is None and x is not None:
        from ..core.modality import infer_modality

        modality = infer_modality(x)
    modality = modality or guess
    return Entry(name, lm.description or f"model {lm.name}", modality, lambda: lm.model,
                 sample_shape=shape, class_names=lm.class_names, feature_names=lm.feature_names,
                 samples=x, is_module=isinstance(lm.model, torch.nn.Module), tokenizer=lm.tokenizer,
                 background=None if x is None else x[:32],
                 table=x.numpy() if modality == "tabular" and x is not None and x.ndim == 2 else None)


def _served_entry(name: str, served: Any, samples: Any) -> Entry:
    """An entry for a :class:`~unveil.serve.ServedModel`: its data gives the samples, the
    model-level views' rows, the reference rows and the background."""
    from ._data import N_BACKGROUND

    p = served.prepared(name)
    lm = p.loaded
    t = p.table
    x = p.samples if samples is None else torch.as_tensor(np.asarray(samples))
    desc = served.description or lm.description or f"model {lm.name}"
    if t is not None:
        desc += f" · data: {t.describe()}"
        if t.X.shape[0] > MAX_DATA_ROWS:  # the model-level views refit on every request: a sample
            keep = np.sort(np.random.default_rng(0).choice(t.X.shape[0], MAX_DATA_ROWS, replace=False))
            t = replace(t, X=t.X[keep], labels=None if t.labels is None else t.labels[keep])
            x = x[torch.from_numpy(keep)] if samples is None and x is not None else x
            p = replace(p, labels=None if p.labels is None else p.labels[keep])
            desc += f" ({MAX_DATA_ROWS} rows drawn at random are used)"
        if p.kept_aside:
            desc += f"; not read by the model: {', '.join(p.kept_aside)}"
    background = None
    if x is not None and x.is_floating_point():
        step = max(1, x.shape[0] // N_BACKGROUND)
        background = x[::step][:N_BACKGROUND]
    return Entry(name, desc, p.modality, lambda: lm.model, sample_shape=p.sample_shape,
                 class_names=p.class_names, feature_names=p.feature_names, samples=x,
                 labels=p.labels if samples is None else None,
                 is_module=isinstance(lm.model, torch.nn.Module), tokenizer=lm.tokenizer,
                 background=background,
                 reference=x if x is not None and p.modality == "tabular" else None,
                 table=None if t is None else t.X, table_labels=None if t is None else t.labels,
                 table_preprocess=p.preprocess, table_names=None if t is None else t.names,
                 categories={} if t is None else t.categories, kept_aside=p.kept_aside,
                 sample_rows=None if t is None or samples is not None else t.X,
                 texts=p.texts, tokens=p.tokens)


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
    notes: list[tuple[str, str]] = field(default_factory=list)  # (model, a whole-model result)

    @classmethod
    def build(cls, models: dict[str, Any] | None, samples: dict[str, Any] | None, *, zoo: bool,
              **kw: Any) -> Store:
        """Entries for the zoo (if ``zoo``) and for each extra model."""
        entries = {name: _extra_entry(name, obj, (samples or {}).get(name))  # the user's first
                   for name, obj in (models or {}).items()}
        for e in _zoo_entries() if zoo else []:
            entries.setdefault(e.name, e)
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
            if up.rows is not None:  # in the data's units: the model sees preprocess(rows)
                x, y, pre = up.rows, None, entry.table_preprocess
            else:
                x, y = up.x.numpy(), None
        elif entry.table is not None:
            x, y, pre = entry.table, entry.table_labels, entry.table_preprocess
        else:
            raise ApiError(422, f"the dashboard has no rows for model {entry.name!r}; upload a CSV table")
        if x.ndim != 2 or x.shape[0] < 20:
            raise ApiError(422, f"model-level views need a table of at least 20 rows, got shape "
                                f"{tuple(x.shape)}; upload a larger CSV table")
        return x.astype(np.float64), y, pre

    def in_data_units(self, upload: str | None) -> bool:
        """Whether the rows for the model-level views are in the units of the model's data (its
        own rows, or an upload read as its table), so that its coded columns keep their words."""
        return upload is None or getattr(self.uploads.get(upload), "rows", None) is not None

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

    def record_sanity(self, entry: Entry, x: torch.Tensor, method: str, res: Any) -> None:
        """Put a sanity check's verdict in the session's latest section of ``entry`` that
        explained ``x`` (its trust card), so that the downloaded report holds it."""
        from ..report.narrative import display_name

        figs = {f"{res.measure}_after_randomisation": float(res.final),
                f"{res.measure}_upper_half_randomised": float(res.upper), "threshold": float(res.threshold)}
        verdict = {"answer": None if res.verdict == "undefined" else bool(res.passed),
                   "rule": f"{res.measure} between the maps of the model and of copies with "
                           f"randomised layers below {res.threshold}", "figures": figs}
        text = (f"Sanity check of {display_name(method)} (run in the dashboard): {res.verdict}; "
                f"{res.measure} {float(res.final):.3g} after randomising {len(res.layers)} layers "
                f"(threshold {float(res.threshold):.3g})" + (f". {res.reason}" if res.reason else "."))
        a = x.detach().cpu().numpy()
        with self.lock:
            for rep in reversed(self.runs.values()):
                for sec in rep.sections:
                    if sec.model_name == entry.name and sec.inputs.shape == a.shape and np.allclose(sec.inputs, a):
                        if method in sec.explanations:
                            sec.trust.verdicts.setdefault(method, {})["sanity"] = verdict
                        sec.trust.notes.append(text)
                        return
            self.notes.append((entry.name, text))

    def record(self, entry: Entry, text: str) -> None:
        """Keep a line about a whole-model result (a surrogate, an audit) for the report."""
        with self.lock:
            self.notes.append((entry.name, text))

    def session_report(self) -> Any:
        """One report of everything the session computed: every explained input still kept
        (with the sanity checks run on it) and the whole-model results, under their model."""
        import copy

        from ..report import Report

        with self.lock:
            sections = [copy.copy(sec) for rep in self.runs.values() for sec in rep.sections]
            notes = list(self.notes)
        if not sections:
            raise ApiError(404, "nothing explained yet: explain an input first, then download the report")
        for model, text in notes:
            mine = [s for s in sections if s.model_name == model]
            target = mine[-1] if mine else sections[-1]
            target.global_facts = copy.copy(target.global_facts)
            prefix = "" if mine else f"{model}: "
            target.global_facts.note = "\n".join(
                t for t in (target.global_facts.note, prefix + text) if t)
        return Report(sections, title="unveil · dashboard session", max_samples=8)

    def run(self, run_id: str) -> Any:
        """A finished report (404 once expired)."""
        rep = self.runs.get(run_id)
        if rep is None:
            raise ApiError(404, f"no run {run_id!r} (runs expire after {self.max_runs} newer ones)")
        return rep
