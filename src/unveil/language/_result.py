"""The result of :func:`unveil.language.explain_generation`: who made each generated token."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OptionError

__all__ = ["GenerationExplanation", "Source"]


@dataclass(frozen=True)
class Source:
    """One source unit of a generated token: its text, kind, index and attribution."""

    text: str
    kind: str
    unit: int
    value: float


def _array(v: Any) -> list[Any]:
    return [None if x is None or not np.isfinite(x) else float(x) for x in np.asarray(v).ravel()]


@dataclass
class GenerationExplanation:
    """Attributions of each generated token to the prompt and the tokens generated before it.

    Attributes
    ----------
    tokens : list of str
        The text of every position: the prompt's tokens (chat template included), then the
        generated ones (leading spaces kept).
    kinds : list of str
        Per position: ``"prompt"`` (the user's text), ``"template"`` (chat template and special
        tokens) or ``"generated"``.
    ids : ndarray
        (P + G,) token ids; ``n_prompt`` is P.
    units : list of (int, int)
        ``(start, stop)`` positions of each source unit (a token, word or sentence; see
        ``params["spans"]``).
    values : ndarray
        (G, U) attribution of generated token ``g`` to unit ``u``; NaN where ``u`` comes at or
        after token ``g`` (not visible to it). Positive values raise the explained score.
    scores : dict of ndarray
        Per generated token (G,): ``prob``, ``log_prob``, ``entropy`` (nats, of the next-token
        distribution) and, with a contrast, ``foil_prob`` and ``prob_diff`` (``prob -
        foil_prob``).
    objective : str
        What was attributed: ``"log_prob"`` (log p(token)) or ``"log_prob_diff"`` (log p(token)
        - log p(foil)).
    outputs, baseline_outputs, delta : ndarray or None
        (G,) the objective at the input and at the baseline, and the completeness gap
        ``sum(values) - (outputs - baseline_outputs)`` (path methods).
    alternatives : list of list of (str, float)
        The most probable next tokens at each step with their probabilities.
    """

    tokens: list[str]
    kinds: list[str]
    ids: np.ndarray
    n_prompt: int
    units: list[tuple[int, int]]
    values: np.ndarray
    method: str
    objective: str
    scores: dict[str, np.ndarray]
    foils: list[str] | None = None
    outputs: np.ndarray | None = None
    baseline_outputs: np.ndarray | None = None
    delta: np.ndarray | None = None
    alternatives: list[list[tuple[str, float]]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""
    n_evals: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    # -- reading -------------------------------------------------------------------------
    @property
    def generated(self) -> list[str]:
        """The generated tokens' texts."""
        return self.tokens[self.n_prompt:]

    @property
    def text(self) -> str:
        """The generated text."""
        return "".join(self.generated)

    def unit_text(self, u: int) -> str:
        """The text of source unit ``u``."""
        a, b = self.units[u]
        return "".join(self.tokens[a:b])

    def unit_kind(self, u: int) -> str:
        """``"prompt"``, ``"template"`` or ``"generated"`` for unit ``u``."""
        return self.kinds[self.units[u][0]]

    def top_sources(self, step: int, k: int = 3, *, by: str = "abs") -> list[Source]:
        """The ``k`` units with the largest attribution to generated token ``step`` (``by="abs"``:
        magnitude; ``"positive"``: largest values first)."""
        if not -len(self.values) <= step < len(self.values):
            raise InputError(f"step {step} is out of range: {len(self.values)} tokens were "
                             "generated")
        if by not in ("abs", "positive"):
            raise OptionError(f"by must be 'abs' or 'positive', got {by!r}")
        row = self.values[step]
        seen = np.flatnonzero(np.isfinite(row))
        key = np.abs(row[seen]) if by == "abs" else row[seen]
        order = seen[np.argsort(-key, kind="stable")][:k]
        return [Source(self.unit_text(int(u)), self.unit_kind(int(u)), int(u), float(row[u]))
                for u in order]

    def __repr__(self) -> str:
        return (f"GenerationExplanation(method={self.method!r}, prompt={self.n_prompt} tokens, "
                f"generated={self.text!r}, objective={self.objective!r})")

    # -- output --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN written as null): what a front end needs to draw the heat map."""
        return {
            "format": "unveil.generation/1",
            "prompt": self.prompt, "tokens": list(self.tokens), "kinds": list(self.kinds),
            "ids": [int(i) for i in self.ids], "n_prompt": int(self.n_prompt),
            "units": [list(u) for u in self.units],
            "unit_texts": [self.unit_text(u) for u in range(len(self.units))],
            "values": [_array(r) for r in self.values],
            "method": self.method, "objective": self.objective, "foils": self.foils,
            "scores": {k: _array(v) for k, v in self.scores.items()},
            "outputs": None if self.outputs is None else _array(self.outputs),
            "baseline_outputs": (None if self.baseline_outputs is None
                                 else _array(self.baseline_outputs)),
            "delta": None if self.delta is None else _array(self.delta),
            "alternatives": [[[t, float(p)] for t, p in a] for a in self.alternatives],
            "params": self.params, "n_evals": int(self.n_evals), "timings": dict(self.timings),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationExplanation:
        """The result :meth:`to_dict` wrote."""
        if d.get("format") != "unveil.generation/1":
            raise InputError("not a saved generation explanation (format "
                             f"{d.get('format')!r}, expected 'unveil.generation/1')")

        def arr(v: Any) -> np.ndarray | None:
            return None if v is None else np.array([np.nan if x is None else x for x in v],
                                                   dtype=np.float64)

        values = np.array([[np.nan if x is None else x for x in r] for r in d["values"]],
                          dtype=np.float64).reshape(len(d["values"]), len(d["units"]))
        return cls(
            tokens=list(d["tokens"]), kinds=list(d["kinds"]), ids=np.asarray(d["ids"], np.int64),
            n_prompt=int(d["n_prompt"]), units=[(int(a), int(b)) for a, b in d["units"]],
            values=values, method=d["method"], objective=d["objective"],
            scores={k: arr(v) for k, v in d["scores"].items()},  # type: ignore[misc]  # never None
            foils=d.get("foils"), outputs=arr(d.get("outputs")),
            baseline_outputs=arr(d.get("baseline_outputs")), delta=arr(d.get("delta")),
            alternatives=[[(str(t), float(p)) for t, p in a] for a in d.get("alternatives", [])],
            params=dict(d.get("params", {})), prompt=str(d.get("prompt", "")),
            n_evals=int(d.get("n_evals", 0)), timings=dict(d.get("timings", {})),
        )

    def to_html(self, *, full: bool = False, title: str = "Where each generated token came from"
                ) -> str:
        """The prompt x generated heat map with a table of each token's top sources:
        an embeddable fragment, or a complete page with ``full=True``. Self-contained."""
        from ._html import generation_html

        return generation_html(self, full=full, title=title)

    def _repr_html_(self) -> str:
        return self.to_html()

    def save(self, path: str | Path) -> Path:
        """Write ``.html`` (a self-contained page) or ``.json`` (:meth:`to_dict`)."""
        p = Path(path)
        if p.suffix == ".html":
            p.write_text(self.to_html(full=True), encoding="utf-8")
        elif p.suffix == ".json":
            p.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        else:
            raise OptionError(f"save writes .html or .json files, got {p.name!r}")
        return p


def load_generation(path: str | Path) -> GenerationExplanation:
    """Read a result saved as ``.json`` by :meth:`GenerationExplanation.save`."""
    return GenerationExplanation.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
