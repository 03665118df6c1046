"""The result of :func:`unveil.concepts.tcav`: scores, tests and the CAVs, with save and HTML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.result_file import read_result, write_result

if TYPE_CHECKING:
    from .tcav import CAV

__all__ = ["FORMAT", "TCAVResult"]

FORMAT = "unveil.tcav/1"
_ARRAYS = ("scores", "run_scores", "random_scores", "control_scores", "p_values", "p_corrected",
           "p_scores", "p_separation", "separation", "magnitudes",
           "cav_accuracy")


@dataclass
class TCAVResult:
    """TCAV scores of concepts for one class at one layer, each tested against random concepts.

    Attributes
    ----------
    concepts : list of str
        The concepts, in the order given.
    scores : ndarray
        ``(m,)`` mean TCAV score over the random runs: the fraction of the class's inputs whose
        class score rises along the concept's CAV.
    run_scores : ndarray
        ``(m, n_random)`` the score of each run (concept against random set ``i``).
    random_scores : ndarray
        ``(n_random,)`` scores of random concepts (a random set against random set ``i``): what
        chance looks like at this layer and class.
    control_scores, control_p : ndarray, float
        A negative control: a second, independent random concept per run, tested against
        ``random_scores`` like a concept. Its scores should sit near the random ones and its
        p-value should not be small (if it is, the random runs are too few or the pool too
        small).
    p_values, p_corrected : ndarray
        ``(m,)`` the concept's p-value, and Bonferroni-corrected over the ``m`` concepts. A
        concept must pass two tests (an intersection-union test: ``p = max`` of the two, a valid
        level): ``p_scores``, a two-sided t-test of ``run_scores[c]`` against
        ``random_scores`` (TCAV's own test); and ``p_separation``, a one-sided t prediction
        test that the concept's examples separate from random sets better (lower balanced
        log-loss ``separation``) than random concepts do (``random_separation``). The second
        keeps a fixed set of random examples — whose TCAV scores are consistent by chance of
        its composition — from being called a concept.
    magnitudes : ndarray
        ``(m,)`` mean over runs of the positive share of the directional derivatives' total size.
    cav_accuracy : ndarray
        ``(m,)`` mean balanced training accuracy of the concept's classifiers.
    random_accuracy : float
        The same for the random concepts (high with wide layers: few examples are separable).
    layer, target, target_name : str, int, str
        Where and for which class.
    n_random, n_random_mode, power, min_effect, alpha : int, str, float, float, float
        Random runs used, whether ``"auto"`` (chosen for power) or ``"given"``, the test's power
        to detect a difference of ``min_effect`` at the corrected level, and that level's
        ``alpha``.
    cavs : dict of str to CAV
        The concept activation vectors, reusable on new inputs (not saved with :meth:`save`
        beyond their vectors).
    """

    concepts: list[str]
    scores: np.ndarray
    run_scores: np.ndarray
    random_scores: np.ndarray
    control_scores: np.ndarray
    control_p: float
    p_values: np.ndarray
    p_corrected: np.ndarray
    p_scores: np.ndarray
    p_separation: np.ndarray
    separation: np.ndarray
    random_separation: float
    magnitudes: np.ndarray
    cav_accuracy: np.ndarray
    random_accuracy: float
    layer: str
    target: int
    target_name: str
    n_random: int
    n_random_mode: str
    power: float
    min_effect: float
    alpha: float
    n_inputs: int
    n_examples: dict[str, int]
    random_size: int
    pool: str
    seed: int
    cavs: dict[str, CAV] = field(default_factory=dict, repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    # -- reading -------------------------------------------------------------------------
    @property
    def significant(self) -> np.ndarray:
        """``(m,)`` whether each concept's corrected p-value is below ``alpha``."""
        return np.asarray(self.p_corrected < self.alpha)

    @property
    def score_std(self) -> np.ndarray:
        """``(m,)`` standard deviation of the run scores."""
        return np.asarray(self.run_scores.std(axis=1, ddof=1)) if self.n_random > 1 else \
            np.zeros(len(self.concepts))

    def verdict(self, concept: str) -> str:
        """Plain words for one concept: significant (and in which direction) or not."""
        i = self.concepts.index(concept)
        if not self.significant[i]:
            return "not distinguishable from random"
        more = self.scores[i] > self.random_scores.mean()
        return ("significant: the concept raises the class score" if more else
                "significant: the concept lowers the class score")

    def __getitem__(self, concept: str) -> dict[str, Any]:
        i = self.concepts.index(concept)
        return {"score": float(self.scores[i]), "p_value": float(self.p_values[i]),
                "p_corrected": float(self.p_corrected[i]),
                "significant": bool(self.significant[i]), "verdict": self.verdict(concept)}

    def __repr__(self) -> str:
        rows = ", ".join(f"{c}={s:.2f} (p={p:.2g})" for c, s, p in
                         zip(self.concepts, self.scores, self.p_corrected))
        return (f"TCAVResult(layer={self.layer!r}, target={self.target_name!r}, "
                f"n_random={self.n_random}, {rows})")

    # -- output --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: everything but the CAV vectors."""
        def fl(a: np.ndarray) -> Any:
            return np.asarray(a, dtype=np.float64).tolist()

        return {
            "format": FORMAT,
            "concepts": list(self.concepts),
            **{k: fl(getattr(self, k)) for k in _ARRAYS},
            "significant": [bool(s) for s in self.significant],
            "verdicts": [self.verdict(c) for c in self.concepts],
            "score_std": fl(self.score_std),
            "random_mean": float(self.random_scores.mean()),
            "random_std": float(self.random_scores.std(ddof=1)) if self.n_random > 1 else 0.0,
            "random_accuracy": float(self.random_accuracy),
            "random_separation": float(self.random_separation),
            "control_mean": float(self.control_scores.mean()),
            "control_p": float(self.control_p),
            "control_std": (float(self.control_scores.std(ddof=1)) if self.n_random > 1
                            else 0.0),
            "layer": self.layer, "target": int(self.target), "target_name": self.target_name,
            "n_random": int(self.n_random), "n_random_mode": self.n_random_mode,
            "power": float(self.power), "min_effect": float(self.min_effect),
            "alpha": float(self.alpha), "n_inputs": int(self.n_inputs),
            "n_examples": {k: int(v) for k, v in self.n_examples.items()},
            "random_size": int(self.random_size), "pool": self.pool, "seed": int(self.seed),
            "params": dict(self.params), "timings": dict(self.timings),
        }

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (arrays, the CAV vectors) with the JSON of :meth:`to_dict` inside."""
        arrays = {k: np.asarray(getattr(self, k), dtype=np.float64) for k in _ARRAYS}
        for i, c in enumerate(self.concepts):
            if c in self.cavs:
                cav = self.cavs[c]
                arrays[f"cav{i}_weights"] = np.asarray(cav.weights, dtype=np.float64)
                arrays[f"cav{i}_intercepts"] = np.asarray(cav.intercepts, dtype=np.float64)
                arrays[f"cav{i}_accuracy"] = np.asarray(cav.accuracy, dtype=np.float64)
        return write_result(path, FORMAT, self.to_dict(), arrays)

    @classmethod
    def load(cls, path: str | Path) -> TCAVResult:
        """Read what :meth:`save` wrote (the CAVs come back without a model: pass ``model=``
        to their methods)."""
        from .tcav import CAV

        d, arrays = read_result(path, FORMAT, what="a saved TCAV result")
        cavs = {}
        for i, c in enumerate(d["concepts"]):
            if f"cav{i}_weights" in arrays:
                w = arrays[f"cav{i}_weights"]
                norms = np.linalg.norm(w, axis=1, keepdims=True)
                cavs[c] = CAV(c, d["layer"], w / np.maximum(norms, 1e-300), w,
                              arrays[f"cav{i}_intercepts"], arrays[f"cav{i}_accuracy"], d["pool"])
        return cls(
            concepts=list(d["concepts"]), **{k: arrays[k] for k in _ARRAYS},
            random_accuracy=d["random_accuracy"], control_p=d["control_p"],
            random_separation=d["random_separation"], layer=d["layer"], target=d["target"],
            target_name=d["target_name"], n_random=d["n_random"],
            n_random_mode=d["n_random_mode"], power=d["power"], min_effect=d["min_effect"],
            alpha=d["alpha"], n_inputs=d["n_inputs"], n_examples=dict(d["n_examples"]),
            random_size=d["random_size"], pool=d["pool"], seed=d["seed"], cavs=cavs,
            params=dict(d["params"]), timings=dict(d["timings"]),
        )

    def to_html(self) -> str:
        """A self-contained HTML fragment: a bar chart with error bars and a table."""
        from ._html import tcav_html

        return tcav_html(self.to_dict())

    def to_svg(self) -> str:
        """The bar chart alone: inline SVG (mean score ± sd per concept, the random band)."""
        from ._html import tcav_svg

        return tcav_svg(self.to_dict())

    def _repr_html_(self) -> str:
        return self.to_html()
