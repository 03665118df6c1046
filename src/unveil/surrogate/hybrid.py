"""A hybrid classifier: readable rules where they are faithful, the network elsewhere.

The rules of a tree or rule-list surrogate are trusted one by one: a rule answers for the
network only if, on held-out rows it was not fitted on, it agreed with the network on at least
``min_fidelity`` of at least ``min_support`` rows. Rows no trusted rule covers are deferred to the
network. This is the "interpretable where possible" pattern of hybrid rule sets (Wang, 2019,
"Gaining free or low-cost interpretability with interpretable partial substitute"): the answer
for a covered row comes with a rule a person can read and check, and the network is only run
on the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import OptionError
from ._rules import RuleList
from .blackbox import as_table, class_labels, query, true_labels
from .distill import Kind, Surrogate, distill

__all__ = ["HybridModel", "HybridReport", "hybrid"]


@dataclass
class HybridReport:
    """How the hybrid model did on labelled rows, by part.

    Attributes
    ----------
    coverage : share of rows answered by trusted rules (``n_rule_rows / n_rows``)
    rules_accuracy : accuracy on the rows the rules answered (``None`` if none)
    network_accuracy : accuracy on the rows deferred to the network (``None`` if none)
    accuracy : accuracy of the hybrid on all rows
    surrogate_accuracy, model_accuracy : the surrogate alone and the network alone, all rows
    rules_agreement : share of rule-answered rows where the network gives the same answer
    per_rule : for each trusted rule: its text, rows answered here, accuracy on them
    """

    n_rows: int
    n_rule_rows: int
    coverage: float
    rules_accuracy: float | None
    network_accuracy: float | None
    accuracy: float
    surrogate_accuracy: float
    model_accuracy: float
    rules_agreement: float | None
    per_rule: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return dict(self.__dict__)

    def __str__(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.1%}"

        return (f"hybrid: {self.coverage:.1%} of {self.n_rows} rows answered by rules "
                f"(accuracy {pct(self.rules_accuracy)}, agreement with the network "
                f"{pct(self.rules_agreement)}), the rest by the network (accuracy "
                f"{pct(self.network_accuracy)}); overall {pct(self.accuracy)} vs surrogate alone "
                f"{pct(self.surrogate_accuracy)} and network alone {pct(self.model_accuracy)}")


def _trusted_fidelity(fidelity: float | None, n: int, confidence: float | None) -> float | None:
    """The point estimate, or the lower end of the one-sided Wilson score interval."""
    if fidelity is None or confidence is None or n == 0:
        return fidelity
    z = NormalDist().inv_cdf(confidence)
    centre = fidelity + z * z / (2 * n)
    spread = z * math.sqrt(fidelity * (1 - fidelity) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


class HybridModel:
    """Answers with trusted surrogate rules where they apply, with the network elsewhere.

    Parameters
    ----------
    surrogate : Surrogate
        A classification surrogate of kind ``"tree"`` or ``"rules"`` (from :func:`distill`).
    min_fidelity : float
        Trust a rule whose held-out fidelity is at least this (default 0.95).
    min_support : int
        ... and that answered at least this many held-out rows (default 10).
    confidence : float or None
        If given (e.g. 0.95), the rule's fidelity must reach ``min_fidelity`` at the lower end of
        its one-sided Wilson score interval at this confidence, not just as a point estimate:
        10 agreements out of 10 held-out rows then prove no more than 0.79 at 95%.
    """

    def __init__(self, surrogate: Surrogate, *, min_fidelity: float = 0.95, min_support: int = 10,
                 confidence: float | None = None) -> None:
        if surrogate.kind == "linear" or surrogate.task != "classification":
            raise OptionError("a hybrid model needs a classification surrogate of kind 'tree' or 'rules'")
        if not 0.0 <= min_fidelity <= 1.0:
            raise OptionError(f"min_fidelity must be in [0, 1], got {min_fidelity!r}")
        if isinstance(min_support, bool) or not isinstance(min_support, int) or min_support < 1:
            raise OptionError(f"min_support must be an int >= 1, got {min_support!r}")
        if confidence is not None and not 0.5 <= confidence < 1.0:
            raise OptionError(f"confidence must be in [0.5, 1) or None, got {confidence!r}")
        self.surrogate = surrogate
        self.min_fidelity, self.min_support, self.confidence = float(min_fidelity), min_support, confidence
        self.fidelity_bounds = [_trusted_fidelity(r.fidelity, r.n_covered, confidence) for r in surrogate.rules()]
        self.trusted = [k for k, (r, f) in enumerate(zip(surrogate.rules(), self.fidelity_bounds))
                        if f is not None and f >= min_fidelity and r.n_covered >= min_support]
        self.n_model_rows = 0  # rows sent to the network by predict()

    def trusted_rules(self) -> RuleList:
        """The rules the hybrid answers with (their figures are on the surrogate's held-out rows)."""
        rules = self.surrogate.rules()
        return RuleList(rules[k] for k in self.trusted)

    def covered(self, X: Any) -> np.ndarray:
        """Boolean (N,): rows a trusted rule answers."""
        return np.isin(self.surrogate.rule_index(X), self.trusted)

    def _network(self, Xa: np.ndarray) -> np.ndarray:
        s = self.surrogate
        return class_labels(query(s.model, Xa, batch_size=s.batch_size), s.threshold)

    def predict(self, X: Any, *, return_source: bool = False) -> Any:
        """Class index per row; with ``return_source`` also a boolean mask (True = a rule answered).

        The network is evaluated only on the rows no trusted rule covers.
        """
        Xa, _ = as_table(X, self.surrogate.feature_names)
        cov = self.covered(Xa)
        pred = np.empty(Xa.shape[0], dtype=np.int64)
        if cov.any():
            pred[cov] = self.surrogate.predict(Xa[cov])
        if (~cov).any():
            pred[~cov] = self._network(Xa[~cov])
            self.n_model_rows += int((~cov).sum())
        return (pred, cov) if return_source else pred

    def report(self, X: Any, y: Any) -> HybridReport:
        """Coverage and the accuracy of each part on labelled rows ``X, y``.

        Use rows that neither the surrogate nor the rule selection saw (a test set): the rules
        were chosen on the surrogate's held-out rows.
        """
        Xa, _ = as_table(X, self.surrogate.feature_names)
        ya = true_labels(y, Xa.shape[0], self.surrogate.model)
        pred, cov = self.predict(Xa, return_source=True)
        net = self._network(Xa)
        idx = self.surrogate.rule_index(Xa)
        rules = self.surrogate.rules()
        per_rule = [{"rule": str(rules[k]), "n_rows": int((idx == k).sum()),
                     "accuracy": float((pred[idx == k] == ya[idx == k]).mean()) if (idx == k).any() else None}
                    for k in self.trusted]

        def acc(mask: np.ndarray) -> float | None:
            return float((pred[mask] == ya[mask]).mean()) if mask.any() else None

        return HybridReport(
            n_rows=int(Xa.shape[0]), n_rule_rows=int(cov.sum()), coverage=float(cov.mean()),
            rules_accuracy=acc(cov), network_accuracy=acc(~cov), accuracy=float((pred == ya).mean()),
            surrogate_accuracy=float((self.surrogate.predict(Xa) == ya).mean()),
            model_accuracy=float((net == ya).mean()),
            rules_agreement=float((pred[cov] == net[cov]).mean()) if cov.any() else None,
            per_rule=per_rule,
        )

    def __repr__(self) -> str:
        return (f"HybridModel({len(self.trusted)} trusted of {len(self.surrogate.rules())} rules, "
                f"min_fidelity={self.min_fidelity}, min_support={self.min_support})")


def hybrid(
    model: Any, X: Any, *, kind: Kind = "rules", max_depth: int | None = 4, min_fidelity: float = 0.95,
    min_support: int = 10, confidence: float | None = None, **options: Any,
) -> HybridModel:
    """Distill ``model`` on ``X`` into rules and wrap them in a :class:`HybridModel`.

    ``options`` go to :func:`distill` (``X_val=``, ``y=``, ``feature_names=``, ``class_names=``,
    ``threshold=``, ``seed=`` ...); rules are trusted by their fidelity on its held-out rows.
    """
    sur = distill(model, X, kind=kind, max_depth=max_depth, **options)
    return HybridModel(sur, min_fidelity=min_fidelity, min_support=min_support, confidence=confidence)
