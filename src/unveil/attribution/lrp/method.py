"""The ``lrp`` method: layer-wise relevance propagation in one backward pass."""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any, Literal, Union

import torch

from ...core.batching import BatchSize, rows_located, run_chunked
from ...core.model import Model
from ...core.options import ArrayLike, Option
from ...core.prepared import by_identity, cached, tensor_key
from ...core.registry import register
from ...errors import InputError, ModelError
from .._base import Call, Partial
from .._cam_pass import PassResult, SinglePassAttributor, select_scores
from ._engine import Prepared, prepare
from .composites import PRESETS, Composite, preset

__all__ = ["LRP"]


_BOUND = Union[float, ArrayLike, None]


@register(
    "lrp", family="lrp", modalities=("image", "tabular", "sequence"), needs_gradients=True,
    display_name="LRP", signed=True,
    options=(
        Option("composite", Union[Literal[PRESETS], Composite], "epsilon_plus",
               "the rules per layer: a preset name or a Composite"),
        Option("epsilon", float, 1e-6, "ε of the ε-rule in the presets", low=0),
        Option("stabilizer", float, 1e-6, "stabiliser of the other rules' denominators in the "
               "presets", low=0),
        Option("gamma", float, 0.25, "γ of the γ-rule in 'epsilon_gamma_box'", low=0),
        Option("low", _BOUND, None, "lower box bound of the z^B rule in 'epsilon_gamma_box' "
               "(None: each row's minimum)"),
        Option("high", _BOUND, None, "upper box bound of the z^B rule in 'epsilon_gamma_box' "
               "(None: each row's maximum)"),
    ),
)
class LRP(SinglePassAttributor):
    """Layer-wise relevance propagation (Bach et al., 2015; Montavon et al., 2019).

    The target score ``f(x)`` is redistributed layer by layer onto the input with the rules of a
    composite. The model is deep-copied, canonized (batch norms folded into the preceding layer,
    residual additions given the sum rule; see :mod:`unveil.attribution.lrp.canonizers`), and one
    forward and one backward pass over the copy carry the relevance; the user's model is never
    touched. The prepared copy is kept per model object (see :mod:`unveil.core.prepared`): later
calls, and new ``LRP`` objects with the same options, reuse it while the model's parameters and
buffers stay the same.

    Parameters
    ----------
    composite : str or Composite
        ``"epsilon"``, ``"epsilon_plus"`` (default), ``"epsilon_plus_flat"``,
        ``"epsilon_gamma_box"``, ``"epsilon_alpha2_beta1"`` (see
        :mod:`unveil.attribution.lrp.composites`) or a :class:`Composite`.
    epsilon : float
        ε of the ε-rule in the presets (default ``1e-6``).
    stabilizer : float
        Stabiliser of the other rules' denominators in the presets (default ``1e-6``).
    gamma : float
        γ of the γ-rule in ``"epsilon_gamma_box"`` (default 0.25).
    low, high : float, tensor or None
        Box bounds of the z^B rule in ``"epsilon_gamma_box"``: numbers or tensors broadcastable
        to one sample; ``None`` (default) uses each row's own minimum and maximum.
    batch_size : int or "auto"
        Rows per pass.

    Notes
    -----
    ``exp.values`` has the input's shape; the relevance at the output is the target score, so
    ``exp.delta = values.sum() - f(x)`` per row measures conservation (zero for the ε-rule on a
    bias-free ReLU network up to the stabiliser; biases, ε and the z⁺/flat rules absorb or
    create relevance). ``exp.meta`` lists the rule of every layer and the canonizers' changes.
    """

    def __init__(
        self,
        model: Any,
        *,
        composite: str | Composite = "epsilon_plus",
        epsilon: float = 1e-6,
        stabilizer: float = 1e-6,
        gamma: float = 0.25,
        low: float | torch.Tensor | None = None,
        high: float | torch.Tensor | None = None,
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        if isinstance(composite, str):
            self._composite = preset(composite, epsilon=epsilon, stabilizer=stabilizer,
                                     gamma=gamma, low=low, high=high)
        else:
            self._composite = composite
        self.composite = composite if isinstance(composite, str) else composite.name
        self.epsilon = float(epsilon)
        self.stabilizer = float(stabilizer)
        self.gamma = float(gamma)
        self.low = low if low is None or isinstance(low, (int, float)) else "tensor"
        self.high = high if high is None or isinstance(high, (int, float)) else "tensor"
        self._options_key: Hashable = (
            ("preset", composite, self.epsilon, self.stabilizer, self.gamma, _bound_key(low),
             _bound_key(high))
            if isinstance(composite, str) else by_identity(composite)
        )
        self._prepared: Prepared | None = None  # the last one used

    def _prepare(self, x: torch.Tensor) -> Prepared:
        module = self.model.module
        if module is None:
            raise ModelError(
                f"'lrp' applies rules layer by layer, so it needs a torch.nn.Module; got "
                f"{type(self.model.obj).__name__}. Use 'saliency' or 'integrated_gradients'"
            )
        if not x.is_floating_point():
            raise InputError(
                f"'lrp' propagates relevance to the inputs, which are integers ({x.dtype}); "
                "explain a model that takes float inputs (e.g. embeddings)"
            )
        key = ("lrp", self._options_key, tuple(x.shape[1:]), x.dtype, x.device)
        composite, example = self._composite, x[:1]
        prep = cached(module, key, lambda: prepare(module, example, composite))
        for message in prep.warnings:  # on every call, as if the copy were prepared anew
            warnings.warn(message, UserWarning, stacklevel=5)
        self._prepared = prep
        return prep

    def _single_pass(self, x: torch.Tensor, targets_for: Any) -> tuple[torch.Tensor, PassResult]:
        prep = self._prepare(x)
        output = "logits" if self.model.output == "probs" else self.model.output
        dup = Model(prep.module, output=output)

        def run(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            xa = x[a:b].detach().contiguous(memory_format=prep.memory_format).requires_grad_(True)
            with torch.enable_grad(), prep.relevance_mode():
                out = dup.forward(xa)
                s = select_scores(out, targets_for(out, a, b))
                (rel,) = torch.autograd.grad(s, xa, grad_outputs=s.detach())
            return out.detach(), rel.contiguous(), s.detach()

        parts: dict[str, list[torch.Tensor]] = {"rel": [], "score": []}

        def consume(a: int, b: int, res: tuple[torch.Tensor, ...]) -> torch.Tensor:
            parts["rel"].append(res[1])
            parts["score"].append(res[2])
            self.model.n_evals += b - a
            return res[0]

        # the copy is what runs: its layers size the memory budget of a chunk
        outputs = run_chunked(rows_located(run, x.shape[0]), x.shape[0], consume=consume, batch_size=self.batch_size,
                              model=dup, grad=True, key=("lrp", tuple(x.shape[1:])))
        assert outputs is not None
        rows = {k: torch.cat(v) for k, v in parts.items()}
        return outputs, PassResult(rows=rows, facts={"prepared": prep})

    def _assemble(self, call: Call, result: PassResult, **kwargs: Any) -> Partial:
        rel = result.rows["rel"]
        prep: Prepared = result.facts["prepared"]
        delta = rel.reshape(rel.shape[0], -1).sum(dim=1) - result.rows["score"]
        return Partial(
            values=rel,
            delta=delta,
            meta={
                "composite": self.composite,
                "rules": dict(prep.rules),
                "canonizers": [repr(c) for c in prep.canonizers],
                "canonized": list(prep.changes),
                "no_rule": list(prep.unhandled),
                "explained": "logits" if self.model.output == "probs" else "outputs",
            },
        )


def _bound_key(v: float | torch.Tensor | None) -> Hashable:
    return tensor_key(v) if isinstance(v, torch.Tensor) else v
