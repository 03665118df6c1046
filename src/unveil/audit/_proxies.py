"""Proxies: input columns from which the sensitive attribute can be predicted.

A column is a proxy when a small tree on that column alone predicts the attribute with a
cross-validated ROC AUC of at least the stated threshold (one-vs-rest macro AUC for more
than two groups). The normalised mutual information ``I(column; attribute) / H(attribute)``
(Kraskov et al., 2004, estimator of scikit-learn's ``mutual_info_classif``) is reported beside
it, and the AUC of a tree on all other columns says how well the attribute can be
reconstructed from the inputs as a whole (Feldman et al., 2015, "Certifying and removing
disparate impact").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["ProxyInfo", "find_proxies"]


@dataclass
class ProxyInfo:
    """How well one column predicts the sensitive attribute, and the attribution it carries."""

    feature: str
    index: int
    auc: float
    mutual_information: float
    is_proxy: bool
    attribution_share: float | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form."""
        return dict(self.__dict__)


def _cv_auc(X: np.ndarray, s: np.ndarray, depth: int, seed: int) -> float:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=20, random_state=seed)
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    proba = cross_val_predict(tree, X, s, cv=cv, method="predict_proba")
    classes = np.unique(s)
    if classes.size == 2:
        return float(roc_auc_score(s == classes[1], proba[:, 1]))
    return float(roc_auc_score(s, proba, multi_class="ovr", average="macro", labels=classes))


def find_proxies(
    X: np.ndarray, s: np.ndarray, names: list[str], columns: list[int], *, auc_threshold: float,
    seed: int, max_rows: int = 5000,
) -> tuple[list[ProxyInfo], float]:
    """Proxy strength of each of ``columns`` (sorted by AUC, strongest first) and the AUC of
    reconstructing the attribute from all of them."""
    from sklearn.feature_selection import mutual_info_classif

    _, codes, counts = np.unique(s, return_inverse=True, return_counts=True)
    s = codes.astype(np.int64)  # group codes: the values may be floats (a standardised column) or text
    if counts.min() < 3:
        raise InputError(f"every group needs at least 3 rows to look for proxies; the smallest has {counts.min()}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(X.shape[0], size=max_rows, replace=False)) if X.shape[0] > max_rows else slice(None)
    Xs, ss = X[rows], s[rows]
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    mi = mutual_info_classif(Xs[:, columns], ss, random_state=seed) / entropy if columns else np.zeros(0)
    out = []
    for k, j in enumerate(columns):
        auc = _cv_auc(Xs[:, [j]], ss, 3, seed)
        out.append(ProxyInfo(names[j], j, auc, float(mi[k]), auc >= auc_threshold))
    recon = _cv_auc(Xs[:, columns], ss, 5, seed) if columns else 0.5
    out.sort(key=lambda pi: -pi.auc)
    return out, recon
