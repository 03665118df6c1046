"""Rules read off a fitted scikit-learn decision tree.

Each leaf of a tree is a rule: the conjunction of the tests on its path, simplified to the
tightest bound per feature and direction. Splits whose two sides predict the same class change
no prediction and are collapsed first, so the rules of a classifier are the fewest leaves that
give the same answers. A *rule list* additionally drops the rules of one class (the one with the
most rules) into a closing ``ELSE`` rule; since the leaves are disjoint, the list answers every
row exactly as the tree does. Coverage and fidelity of each rule are counted on held-out rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

__all__ = ["Condition", "Rule", "RuleList", "TreeRules", "read_tree"]


def fmt_number(v: float) -> str:
    """A threshold or value with four significant digits."""
    return f"{v:.4g}"


@dataclass(frozen=True)
class Condition:
    """One test ``feature <= threshold`` or ``feature > threshold`` on column ``feature``."""

    feature: int
    name: str
    op: Literal["<=", ">"]
    threshold: float

    def holds(self, X: np.ndarray) -> np.ndarray:
        """Boolean (N,): which rows pass the test."""
        col = X[:, self.feature]
        return col <= self.threshold if self.op == "<=" else col > self.threshold

    def __str__(self) -> str:
        return f"{self.name} {self.op} {fmt_number(self.threshold)}"


def _describe(conds: Sequence[Condition]) -> str:
    """Conditions joined with AND, a feature bounded on both sides written as ``a < f <= b``."""
    parts: list[str] = []
    done: set[int] = set()
    for c in conds:
        if c.feature in done:
            continue
        same = [d for d in conds if d.feature == c.feature]
        if len(same) == 2:
            lo = next(d for d in same if d.op == ">")
            hi = next(d for d in same if d.op == "<=")
            parts.append(f"{fmt_number(lo.threshold)} < {c.name} <= {fmt_number(hi.threshold)}")
        else:
            parts.append(str(c))
        done.add(c.feature)
    return " AND ".join(parts)


@dataclass(frozen=True)
class Rule:
    """A rule of a surrogate, with its figures on held-out rows.

    Attributes
    ----------
    conditions : tuple of Condition
        Tests that must all hold (empty for the closing ``ELSE`` rule of a rule list).
    prediction : int or float
        The class index (classification) or the value (regression) the rule answers.
    label : str
        Readable form of ``prediction`` (the class name, or the value).
    coverage : float
        Share of held-out rows the rule answers.
    n_covered : int
        Number of held-out rows it answers.
    fidelity : float or None
        Classification: share of its held-out rows where the black box agrees with the rule
        (``None`` when it answers no held-out row).
    error : float or None
        Regression: mean absolute difference between rule value and black box on its rows.
    support : int
        Number of rows the rule answered when the surrogate was fitted.
    is_default : bool
        Whether this is the ``ELSE`` rule of a rule list (answers rows no other rule covers).
    """

    conditions: tuple[Condition, ...]
    prediction: float
    label: str
    support: int
    coverage: float = 0.0
    n_covered: int = 0
    fidelity: float | None = None
    error: float | None = None
    is_default: bool = False

    def applies(self, X: np.ndarray) -> np.ndarray:
        """Boolean (N,): rows meeting every condition (all rows for the ``ELSE`` rule; use
        :meth:`Surrogate.rule_index` for the rows a rule actually answers)."""
        mask = np.ones(X.shape[0], dtype=bool)
        for c in self.conditions:
            mask &= c.holds(X)
        return mask

    def __str__(self) -> str:
        if self.is_default:
            head = f"ELSE {self.label}"
        elif self.conditions:
            head = f"IF {_describe(self.conditions)} THEN {self.label}"
        else:
            head = f"ALWAYS {self.label}"
        if self.n_covered == 0:
            return f"{head} — covers 0% of held-out rows"
        if self.error is not None:
            return f"{head} — covers {self.coverage:.0%}, mean |error| {fmt_number(self.error)}"
        return f"{head} — covers {self.coverage:.0%}, fidelity {self.fidelity:.0%}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "text": str(self),
            "conditions": [
                {"feature": c.name, "index": c.feature, "op": c.op, "threshold": float(c.threshold)}
                for c in self.conditions
            ],
            "prediction": self.prediction, "label": self.label, "support": self.support,
            "coverage": self.coverage, "n_covered": self.n_covered, "fidelity": self.fidelity,
            "error": self.error, "is_default": self.is_default,
        }


class RuleList(list[Rule]):
    """A list of :class:`Rule` that prints as one rule per line."""

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self)

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON-safe form."""
        return [r.to_dict() for r in self]


@dataclass
class TreeRules:
    """Rules of a tree and the map from each of the tree's leaves to the rule answering it."""

    rules: list[Rule]
    leaf_to_rule: np.ndarray = field(repr=False)  # node id -> rule index (-1 for inner nodes)

    def rule_index(self, leaves: np.ndarray) -> np.ndarray:
        """Rule index answering each row, from the tree leaves the rows fall in."""
        return np.asarray(self.leaf_to_rule[leaves], dtype=np.int64)


def _node_predictions(tree: Any, classification: bool) -> np.ndarray:
    value = np.asarray(tree.value[:, 0, :], dtype=np.float64)
    return np.asarray(value.argmax(axis=1) if classification else value[:, 0], dtype=np.float64)


def _collapsed(tree: Any, pred: np.ndarray, classification: bool) -> np.ndarray:
    """Boolean per node: is it a leaf of the collapsed tree's subtree (one class below it)?"""
    left, right = tree.children_left, tree.children_right
    uniform = np.zeros(tree.node_count, dtype=bool)  # every leaf below predicts pred[node]
    for node in range(tree.node_count - 1, -1, -1):  # children have larger ids than parents
        if left[node] < 0:
            uniform[node] = True
        elif classification:
            uniform[node] = bool(uniform[left[node]] and uniform[right[node]]
                                 and pred[left[node]] == pred[right[node]])
            if uniform[node]:
                pred[node] = pred[left[node]]
    return uniform


def read_tree(
    estimator: Any, names: Sequence[str], labels: Sequence[str] | None, *, as_list: bool
) -> TreeRules:
    """Rules of a fitted ``DecisionTreeClassifier`` / ``DecisionTreeRegressor``.

    ``labels[c]`` names class value ``c`` (``None`` for a regressor);
    ``as_list`` folds the rules of the class with the most rules into a closing ``ELSE`` rule.
    Rules come sorted by their support on the fit rows, largest first.
    """
    tree = estimator.tree_
    classification = labels is not None
    pred = _node_predictions(tree, classification)
    uniform = _collapsed(tree, pred, classification)
    classes = np.asarray(getattr(estimator, "classes_", []))
    leaves: list[tuple[int, tuple[Condition, ...]]] = []
    stack: list[tuple[int, tuple[Condition, ...]]] = [(0, ())]
    while stack:
        node, conds = stack.pop()
        if uniform[node]:
            leaves.append((node, conds))
            continue
        f, t = int(tree.feature[node]), float(tree.threshold[node])
        stack.append((int(tree.children_right[node]), _tighten(conds, Condition(f, names[f], ">", t))))
        stack.append((int(tree.children_left[node]), _tighten(conds, Condition(f, names[f], "<=", t))))
    rules = []
    for node, conds in leaves:
        p = float(classes[int(pred[node])]) if classification else float(pred[node])
        label = labels[int(p)] if labels is not None else f"≈ {fmt_number(p)}"
        rules.append((node, Rule(conds, p, label, int(tree.n_node_samples[node]))))
    rules.sort(key=lambda nr: -nr[1].support)
    node_rule = {node: k for k, (node, _) in enumerate(rules)}
    out = [r for _, r in rules]
    if as_list and classification and len(out) > 1:
        out, node_rule = _fold_default(out, rules, node_rule)
    return TreeRules(out, _leaf_map(tree, uniform, node_rule))


def _fold_default(
    out: list[Rule], rules: list[tuple[int, Rule]], node_rule: dict[int, int]
) -> tuple[list[Rule], dict[int, int]]:
    """Move the rules of the class with the most rules into one closing ELSE rule."""
    preds = [r.prediction for r in out]
    default = max(set(preds), key=lambda p: (preds.count(p), sum(r.support for r in out if r.prediction == p)))
    kept = [(node, r) for node, r in rules if r.prediction != default]
    first = next(r for r in out if r.prediction == default)
    support = sum(r.support for r in out if r.prediction == default)
    final = [r for _, r in kept] + [replace(first, conditions=(), support=support, is_default=True)]
    k_default = len(final) - 1
    mapping = {node: k for k, (node, _) in enumerate(kept)}
    return final, {node: mapping.get(node, k_default) for node in node_rule}


def _leaf_map(tree: Any, uniform: np.ndarray, node_rule: dict[int, int]) -> np.ndarray:
    """Map every original leaf to the rule of its collapsed ancestor."""
    out = np.full(tree.node_count, -1, dtype=np.int64)
    owner = np.full(tree.node_count, -1, dtype=np.int64)
    for node in range(tree.node_count):  # parents come before children
        if node in node_rule:
            owner[node] = node_rule[node]
        for child in (tree.children_left[node], tree.children_right[node]):
            if child >= 0 and owner[node] >= 0:
                owner[child] = owner[node]
        if tree.children_left[node] < 0:
            out[node] = owner[node]
    return out


def _tighten(conds: tuple[Condition, ...], new: Condition) -> tuple[Condition, ...]:
    """Add ``new``, keeping only the tightest bound per feature and direction."""
    for k, c in enumerate(conds):
        if c.feature == new.feature and c.op == new.op:
            tighter = new.threshold < c.threshold if new.op == "<=" else new.threshold > c.threshold
            return conds[:k] + ((new,) if tighter else (c,)) + conds[k + 1:]
    return (*conds, new)


def score_rules(
    rules: list[Rule], index: np.ndarray, reference: np.ndarray, classification: bool
) -> RuleList:
    """Rules with coverage and fidelity (or error) counted on held-out rows.

    ``index`` is the rule answering each held-out row, ``reference`` the black box's labels or
    values on those rows.
    """
    n = index.shape[0]
    out = RuleList()
    for k, r in enumerate(rules):
        mask = index == k
        m = int(mask.sum())
        fid = err = None
        if m and classification:
            fid = float((reference[mask] == r.prediction).mean())
        elif m:
            err = float(np.abs(reference[mask] - r.prediction).mean())
        out.append(replace(r, coverage=m / n, n_covered=m, fidelity=fid, error=err))
    return out
