"""The registered attention methods: ground truth on the synthetic task, references, clean-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _attn_helpers import manual_forward, tiny_bert
from torch import nn

import unveil as uv
from _util import assert_unchanged, snapshot
from unveil.attention import (
    AttentionRollout,
    attention,
    capture_attentions,
    fuse_heads,
    grad_weighted_rollout,
    rollout,
)
from unveil.errors import InputError, OptionError
from unveil.text.synthetic import PAD_ID, synthetic_example

METHODS = ("attention_raw", "attention_rollout", "attention_flow", "grad_attention_rollout")


@pytest.fixture(scope="module")
def synthetic():
    model, task = synthetic_example()
    keep = task.decisive_test >= 0  # rows with a sentiment word
    return model, task.X_test[keep], task.decisive_test[keep]


def _top1_rate(values: np.ndarray, ids: torch.Tensor, decisive: torch.Tensor) -> float:
    v = torch.as_tensor(values).clone()
    v[:, 0] = -torch.inf  # the [CLS] query itself
    v[ids == PAD_ID] = -torch.inf
    return float((v.argmax(1) == decisive).float().mean())


def _chance(ids: torch.Tensor) -> tuple[float, float]:
    """Top-1 rate of a uniform random pick among the words, and its binomial standard error."""
    p = float((1.0 / ((ids != PAD_ID).sum(1) - 1).float()).mean())
    return p, math.sqrt(p * (1 - p) / ids.shape[0])


def test_synthetic_model_learned_the_task():
    model, task = synthetic_example()
    with torch.no_grad():
        acc = float((model(task.X_test).argmax(1) == task.y_test).float().mean())
    assert acc >= 0.95


def test_grad_attention_rollout_ranks_the_decisive_token_first(synthetic, record_property):
    model, ids, decisive = synthetic
    exp = attention(model, ids, method="grad_attention_rollout", attention_mask=ids != PAD_ID)
    rate = _top1_rate(exp.values, ids, decisive)
    record_property("grad_attention_rollout_top1", rate)
    assert rate >= 0.9, f"grad-weighted rollout ranks the decisive token first on {rate:.1%}"


@pytest.mark.parametrize("method", ["attention_rollout", "attention_flow", "attention_raw"])
def test_class_agnostic_methods_beat_chance(synthetic, method, record_property):
    model, ids, decisive = synthetic
    exp = attention(model, ids, method=method, attention_mask=ids != PAD_ID)
    rate = _top1_rate(exp.values, ids, decisive)
    chance, se = _chance(ids)
    record_property(f"{method}_top1", rate)
    record_property("chance_top1", chance)
    print(f"{method}: decisive token first on {rate:.1%} (chance {chance:.1%})")
    assert rate > chance + 3 * se


def test_rollout_method_equals_rollout_of_captured_maps(synthetic):
    model, ids, _ = synthetic
    exp = uv.explain(model, ids[:8], method="attention_rollout", residual=0.3, head_fusion="max")
    maps = capture_attentions(model, ids[:8]).probs
    ref = rollout(fuse_heads(maps.double(), "max"), 0.3)
    np.testing.assert_allclose(exp.extras["rollout"], ref.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.values, ref[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.extras["attentions"], maps.numpy())
    assert exp.meta["layers"] == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]


def test_grad_rollout_gradients_equal_a_hand_written_reference(synthetic):
    model, ids, _ = synthetic
    ids = ids[:6]
    exp = uv.explain(model, ids, method="grad_attention_rollout", target=1)
    with torch.enable_grad():
        logits, maps = manual_forward(model, ids)
        grads = torch.autograd.grad(logits[:, 1].sum(), maps)
    g = torch.stack(grads, 1)
    np.testing.assert_allclose(exp.extras["gradients"], g.numpy(), rtol=1e-4, atol=1e-7)
    ref = grad_weighted_rollout(torch.stack(maps, 1).detach().double(), g.double())
    np.testing.assert_allclose(exp.values, ref[:, 0].numpy(), rtol=1e-4, atol=1e-6)
    assert float(g.abs().max()) > 1e-3  # guard: non-zero gradients


def test_grad_rollout_depends_on_the_target_and_rollout_does_not(synthetic):
    model, ids, _ = synthetic
    ids = ids[:10]
    g0 = uv.explain(model, ids, method="grad_attention_rollout", target=0).values
    g1 = uv.explain(model, ids, method="grad_attention_rollout", target=1).values
    r0 = uv.explain(model, ids, method="attention_rollout", target=0).values
    r1 = uv.explain(model, ids, method="attention_rollout", target=1).values
    assert np.abs(g0 - g1).max() > 1e-3
    np.testing.assert_array_equal(r0, r1)


def test_query_mean_and_padding(synthetic):
    model, ids, _ = synthetic
    ids = ids[:5]
    mask = ids != PAD_ID
    exp = attention(model, ids, method="attention_rollout", query="mean", attention_mask=mask)
    rel = torch.as_tensor(exp.extras["rollout"])
    w = mask.double()
    ref = (w[:, :, None] * rel).sum(1) / w.sum(1, keepdim=True) * w
    np.testing.assert_allclose(exp.values, ref.numpy(), rtol=1e-5, atol=1e-7)
    assert (exp.values[~mask.numpy()] == 0).all() and (~mask).any()


@pytest.mark.filterwarnings("ignore:the model is in training mode")
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_model_left_unchanged(synthetic, method, train):
    model, ids, _ = synthetic
    expected = uv.explain(model, ids[:3], method=method).values
    model.train(train)
    try:
        snap = snapshot(model)
        exp = uv.explain(model, ids[:3], method=method)
        assert_unchanged(model, snap)
    finally:
        model.eval()
    np.testing.assert_allclose(exp.values, expected, rtol=1e-5, atol=1e-7)  # ran in eval mode


class _RaisesAfter(nn.Module):
    """Runs the attention layers, then raises (on the second forward, after the prediction)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.inner(ids)
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("boom from inside the model")
        return out


@pytest.mark.parametrize("method", METHODS)
def test_model_left_unchanged_when_the_forward_raises(synthetic, method):
    model, ids, _ = synthetic
    wrapped = _RaisesAfter(model)
    wrapped.eval()
    snap = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        uv.explain(wrapped, ids[:3], method=method, batch_size=3)
    assert_unchanged(model, snap)
    assert torch.backends.mha.get_fastpath_enabled()


def test_hugging_face_classifier_with_padding_through_a_tokenizer_mapping():
    bert = tiny_bert("BertForSequenceClassification")
    impl = bert.config._attn_implementation
    ids = torch.tensor([[2, 11, 12, 13, 3], [2, 21, 22, 3, 0]])
    mask = (ids != 0).long()
    exp = attention(bert, {"input_ids": ids, "attention_mask": mask}, method="grad_attention_rollout")
    assert bert.config._attn_implementation == impl
    assert exp.values.shape == (2, 5) and exp.values[1, 4] == 0
    # reference: HF's own eager attentions and gradients through inputs_embeds
    eager = tiny_bert("BertForSequenceClassification", attn_implementation="eager")
    emb = eager.bert.embeddings.word_embeddings(ids).detach().requires_grad_()
    out = eager(inputs_embeds=emb, attention_mask=mask, output_attentions=True)
    t = out.logits.argmax(1)
    grads = torch.autograd.grad(out.logits.gather(1, t[:, None]).sum(), out.attentions)
    a, g = torch.stack(out.attentions, 1).detach(), torch.stack(grads, 1)
    ref = grad_weighted_rollout(a, g)[:, 0] * mask
    np.testing.assert_allclose(exp.values, ref.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(exp.extras["attentions"][1, :, :, :4, 4], 0, atol=1e-7)


@pytest.mark.parametrize("method", ["attention_rollout", "attention_flow"])
def test_padding_does_not_change_the_real_tokens_values(method):
    bert = tiny_bert("BertModel", pad_token_id=0)  # an encoder without a head
    ids = torch.tensor([[2, 11, 12, 13, 14, 3], [2, 21, 22, 3, 0, 0]])
    mask = (ids != 0).long()
    padded = attention(bert, {"input_ids": ids, "attention_mask": mask}, method=method)
    alone = attention(bert, ids[1:, :4], method=method)
    np.testing.assert_allclose(padded.values[1, :4], alone.values[0], rtol=1e-5, atol=1e-6)
    assert (padded.values[1, 4:] == 0).all()
    unmasked = attention(bert, ids[1:], method=method)  # guard: padding without a mask differs
    assert np.abs(unmasked.values[0, :4] - alone.values[0]).max() > 1e-4


def test_mask_that_is_not_padding_is_refused():
    bert = tiny_bert("BertForSequenceClassification")
    ids = torch.tensor([[2, 11, 12, 3]])
    with pytest.raises(OptionError, match="does not mark exactly the padding"):
        attention(bert, {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 0, 0]])})


def test_registry_entries():
    infos = {m.name: m for m in uv.methods()}
    for name in METHODS:
        assert infos[name].family == "attention"
        assert set(infos[name].modalities) == {"text", "image"}
    assert infos["grad_attention_rollout"].needs_gradients
    assert not infos["attention_rollout"].needs_gradients


def test_option_and_input_errors(synthetic):
    model, ids, _ = synthetic
    with pytest.raises(OptionError, match=r"query='cls' should be int \| 'mean'"):
        AttentionRollout(model, query="cls")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=r"head_fusion='sum' should be 'mean' \| 'max' \| 'min'"):
        AttentionRollout(model, head_fusion="sum")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=r"residual=1.5 is outside \[0, 1\]"):
        AttentionRollout(model, residual=1.5)
    with pytest.raises(OptionError, match=r"residual must be in \[0, 1\)"):  # 1 itself: semantic
        AttentionRollout(model, residual=1.0)
    with pytest.raises(OptionError, match="query='mean' should be int"):
        uv.explain(model, ids[:2], method="attention_flow", query="mean")
    with pytest.raises(OptionError, match="query=40 is out of range"):
        uv.explain(model, ids[:2], method="attention_rollout", query=40)
    with pytest.raises(OptionError, match="layer=5 is out of range"):
        uv.explain(model, ids[:2], method="attention_raw", layer=5)
    with pytest.raises(InputError, match="attention_mask must be"):
        uv.explain(model, ids[:2], method="attention_rollout", attention_mask=torch.ones(2, 3))
    with pytest.raises(OptionError, match="'attention_rollout' takes no option 'baseline'"):
        uv.explain(model, ids[:2], method="attention_rollout", baseline="zeros")
    with pytest.raises(OptionError, match="method must be one of"):
        attention(model, ids[:2], method="integrated_gradients")
    with pytest.raises(InputError, match="needs 'input_ids'"):
        attention(model, {"ids": ids[:2]})
