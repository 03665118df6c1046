"""The zoo's induction transformer forms the known circuit, and the inside views find it.

Olsson et al. (2022): in a 2-layer attention-only model trained on repeated sequences, a head of
layer 1 (index 0) attends to the previous token, and a head of layer 2 (index 1) attends to the
token after the earlier copy of the current one and copies it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from unveil.language.heads import HeadScores, head_scores
from unveil.language.patching import activation_patching, attribution_patching
from unveil.zoo._cache import INFO_KEY, resolve_cache_dir
from unveil.zoo.induction import (
    INDUCTION,
    InductionTransformer,
    induction_transformer,
    repeated_tokens,
)


@pytest.fixture(scope="module")
def scores(induction: InductionTransformer) -> HeadScores:
    return head_scores(induction, half=20, n_sequences=16, seed=1)


def test_cached_and_reloaded_identically(induction: InductionTransformer) -> None:
    again = induction_transformer()
    assert again is not induction
    for (k, a), (_, b) in zip(induction.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert not any(m.training for m in again.modules())
    path = resolve_cache_dir() / "induction_transformer.safetensors"
    with safe_open(str(path), framework="pt") as f:
        info = json.loads((f.metadata() or {})[INFO_KEY])
    assert info["second_half_accuracy"] > 0.9


def test_it_predicts_the_repeated_half(induction: InductionTransformer) -> None:
    ids = repeated_tokens(32, 16, seed=123)
    with torch.no_grad():
        pred = induction(ids[:, :-1]).argmax(-1)
    first = (pred[:, 1:16] == ids[:, 2:17]).float().mean()  # the first half is unpredictable
    second = (pred[:, 17:] == ids[:, 18:]).float().mean()
    assert second > 0.9 and first < 0.2


def test_its_layer_2_has_induction_heads(scores: HeadScores) -> None:
    assert scores.induction[1].max() > 0.5  # asserted before the detectors are trusted below
    assert scores.induction[1].max() > 3 * scores.induction[0].max()


def test_detectors_single_out_previous_token_and_induction_heads(scores: HeadScores) -> None:
    layer, _, value = scores.top("previous_token", 1)[0]
    assert layer == 0 and value > 0.3
    assert scores.previous_token[0].max() > 2 * scores.previous_token[1].max()
    assert all(layer == 1 for layer, _, _ in scores.top("induction", 2))
    # the induction heads are not duplicate-token heads
    assert scores.duplicate_token[1].max() < 0.2


def _induction_pair(seed: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Clean ``[BOS] r r[:k+1]`` (next: r[k+1]); corrupted: r[k] in the first half replaced, so
    nothing tells the model what followed the last token before."""
    half, k = 12, 6
    ids = repeated_tokens(1, half, seed=seed)[0]
    clean = ids[: 1 + half + k + 1]
    unused = [i for i in range(1, INDUCTION.vocab_size) if i not in set(ids.tolist())]
    corrupted = clean.clone()
    corrupted[1 + k] = unused[0]
    return clean, corrupted, int(ids[1 + k + 1]), unused[1]


def test_activation_patching_singles_out_the_same_heads(induction: InductionTransformer,
                                                        scores: HeadScores) -> None:
    shares = []
    for seed in range(3):
        clean, corrupted, target, foil = _induction_pair(seed)
        res = activation_patching(induction, clean, corrupted, target=target, foil=foil,
                                  sites=("heads", "resid"))
        assert res.clean_diff - res.corrupted_diff > 2  # the corruption breaks the induction
        assert res.heads is not None and res.resid is not None
        shares.append(res.heads)
        # the residual stream: the corrupted position's successor after layer 1 (where the
        # previous-token head wrote), and the last position after layer 2
        assert res.resid[1, -1] == pytest.approx(1.0, abs=1e-4)
        assert int(np.argmax(res.resid[0])) == 1 + 6 + 1
    heads = np.mean(shares, axis=0)
    top0, top1 = int(np.argmax(heads[0])), int(np.argmax(heads[1]))
    assert top0 == int(np.argmax(scores.previous_token[0]))  # the previous-token head
    assert scores.induction[1, top1] > 0.5  # an induction head
    assert heads[0, top0] > 0.5 and heads[1, top1] > 0.5


def test_attribution_patching_reports_how_far_off_it_is(induction: InductionTransformer) -> None:
    # attention softmaxes make the metric far from linear here: the check must say so
    clean, corrupted, target, foil = _induction_pair(0)
    approx = attribution_patching(induction, clean, corrupted, target=target, foil=foil, check=24)
    assert approx.heads is not None and approx.mlp is None  # every site the model has
    assert approx.faithfulness is not None and -1 <= approx.faithfulness <= 1
    errors = [abs(a - e) for _, a, e in approx.checked]
    assert approx.faithfulness < 0.99 and max(errors) > 0.05
