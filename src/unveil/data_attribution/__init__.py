"""Which training examples drove a decision: data attribution with its accuracy measured.

* :func:`training_influence` — scores of every training row for each explained row, by a
  method from a small table (:data:`ESTIMATORS`): ``"influence"`` (Koh & Liang 2017; exact
  Hessian, conjugate gradient, LiSSA or Arnoldi), ``"representer"`` (Yeh et al. 2018), and the
  others registered with :func:`register_estimator`. Positive scores are proponents.
* :func:`per_example_gradients` — the gradient of each row's loss (``torch.func``, chunked).
* :mod:`~unveil.data_attribution.evaluation` — leave-one-out correlation with actual
  retraining, the linear datamodeling score and mislabel detection, on one retraining
  mechanism.
"""

from __future__ import annotations

from .estimators import ESTIMATORS, Estimator, Problem, register_estimator, training_influence
from .evaluation import (
    Retrainer,
    evaluate_attribution,
    lds,
    loo_correlation,
    mislabel_auc,
    self_influence,
)
from .per_example import TrainingObjective, choose_parameters, per_example_gradients
from .result import TrainingAttribution

__all__ = ["ESTIMATORS", "Estimator", "Problem", "Retrainer", "TrainingAttribution", "TrainingObjective",
           "choose_parameters", "evaluate_attribution", "lds", "loo_correlation", "mislabel_auc",
           "per_example_gradients", "register_estimator", "self_influence", "training_influence"]
