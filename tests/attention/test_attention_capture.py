"""Capturing attention: nn.MultiheadAttention recomputation, Hugging Face eager switch, clean-up."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _attn_helpers import manual_forward, tiny_bert
from torch import nn

from _util import assert_unchanged, snapshot
from unveil.attention import capture_attentions
from unveil.attention._mha import mha_forward
from unveil.errors import LayerNotFoundError, ModelError
from unveil.text.synthetic import TinyTextTransformer


def _mha_call(m: nn.MultiheadAttention, q, k, v, **kw):
    ref_out, ref_w = m(q, k, v, need_weights=True, average_attn_weights=False, **kw)
    out, probs = mha_forward(m, {"query": q, "key": k, "value": v, **kw})
    return ref_out, ref_w, out, probs


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 5])
def test_mha_recomputation_matches_module(batch_first, kdim):
    torch.manual_seed(0)
    m = nn.MultiheadAttention(8, 2, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    n, t, s = 3, 4, 6
    q = torch.randn(n, t, 8)
    kv = torch.randn(n, s, kdim or 8)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    kpm = torch.zeros(n, s)
    kpm[0, -2:] = float("-inf")  # float masks, both (PyTorch deprecates mixing kinds)
    attn_mask = torch.randn(t, s)
    ref_out, ref_w, out, probs = _mha_call(m, q, kv, kv, key_padding_mask=kpm, attn_mask=attn_mask)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, ref_w, atol=1e-6, rtol=1e-5)
    probs = probs.detach()
    assert float(probs[0, :, :, -2:].abs().max()) == 0.0  # padded keys get no attention
    assert float(probs[1, :, :, -2:].min()) > 0  # guard: the mask really differs per row


def test_mha_recomputation_causal_and_boolean_masks():
    torch.manual_seed(1)
    m = nn.MultiheadAttention(6, 3, batch_first=True).eval()
    x = torch.randn(2, 5, 6)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    ref_out, ref_w, out, probs = _mha_call(m, x, x, x, attn_mask=causal)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, ref_w, atol=1e-6, rtol=1e-5)
    assert float(probs.detach().triu(1).abs().max()) == 0.0
    # is_causal without a mask builds the same causal mask
    out2, probs2 = mha_forward(m, {"query": x, "key": x, "value": x, "is_causal": True})
    torch.testing.assert_close(probs2, probs)


def test_mha_unsupported_variants_raise():
    m = nn.MultiheadAttention(4, 2, add_zero_attn=True, batch_first=True).eval()
    x = torch.randn(1, 3, 4)
    with pytest.raises(ModelError, match="add_bias_kv and add_zero_attn"):
        mha_forward(m, {"query": x, "key": x, "value": x})
    m2 = nn.MultiheadAttention(4, 2).eval()
    with pytest.raises(ModelError, match="batched inputs"):
        mha_forward(m2, {"query": x[0], "key": x[0], "value": x[0]})


def _synthetic_model(seed: int = 0) -> TinyTextTransformer:
    torch.manual_seed(seed)
    return TinyTextTransformer(dim=16, heads=2).eval()


def _ids() -> torch.Tensor:
    torch.manual_seed(3)
    ids = torch.randint(4, 40, (4, 10))
    ids[:, 0] = 1
    ids[1, 7:] = 0  # padding
    return ids


def test_capture_plain_pytorch_matches_hand_written_attention():
    m, ids = _synthetic_model(), _ids()
    maps = capture_attentions(m, ids)
    _, ref = manual_forward(m, ids)
    assert maps.probs.shape == (4, 2, 2, 10, 10)
    assert maps.layers == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    torch.testing.assert_close(maps.probs, torch.stack(ref, 1).detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps.probs.sum(-1), torch.ones(4, 2, 2, 10), atol=1e-6, rtol=0)
    assert float(maps.probs[1, ..., 7:].abs().max()) == 0.0


def test_capture_switches_fastpath_off_and_restores_it():
    m, ids = _synthetic_model(), _ids()
    assert torch.backends.mha.get_fastpath_enabled()
    with torch.inference_mode():  # where the fused encoder path would otherwise run
        maps = capture_attentions(m, ids)
    assert maps.probs.shape[1] == 2
    assert torch.backends.mha.get_fastpath_enabled()


def test_capture_hugging_face_sdpa_model_and_restore():
    bert = tiny_bert()
    before = bert.config._attn_implementation
    assert before != "eager"  # guard: the switch is exercised
    ids = _ids() % 60
    bert(ids)  # first call: transformers may set itself up
    snap = snapshot(bert)
    maps = capture_attentions(bert, ids)
    assert_unchanged(bert, snap)
    assert bert.config._attn_implementation == before
    eager = tiny_bert(attn_implementation="eager")
    ref = eager(ids, output_attentions=True).attentions
    torch.testing.assert_close(maps.probs, torch.stack(ref, 1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps.probs.sum(-1), torch.ones_like(maps.probs[..., 0]))
    assert maps.layers == [f"encoder.layer.{i}.attention.self" for i in range(2)]


class _Fails(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.inner(ids)
        raise RuntimeError("boom after the encoder")


@pytest.mark.parametrize("train", [False, True])
def test_capture_restores_everything_when_the_model_raises(train):
    bert = tiny_bert()
    wrapped = _Fails(bert)
    wrapped.train(train)
    before = bert.config._attn_implementation
    snap = snapshot(wrapped)
    with pytest.raises(RuntimeError, match="boom"), pytest.warns(UserWarning) if train else _null():
        capture_attentions(wrapped, _ids() % 60)
    assert_unchanged(wrapped, snap)
    assert bert.config._attn_implementation == before
    assert torch.backends.mha.get_fastpath_enabled()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_capture_errors():
    with pytest.raises(ModelError, match="found no attention modules"):
        capture_attentions(nn.Sequential(nn.Linear(3, 2)), torch.randn(2, 3))
    with pytest.raises(ModelError, match="torch.nn.Module"):
        capture_attentions(lambda x: x.sum(1, keepdim=True), torch.randn(2, 3))
    with pytest.raises(LayerNotFoundError, match="Closest names"):
        capture_attentions(_synthetic_model(), _ids(), modules=["encoder.layers.0.self_atn"])

    class NoProbs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x)

    with pytest.raises(ModelError, match="returned no attention probabilities"):
        capture_attentions(NoProbs().eval(), torch.randn(2, 3), modules=["attn"])


def test_capture_named_module_returning_a_tuple():
    class Custom(nn.Module):
        def forward(self, x: torch.Tensor):
            p = torch.softmax(x @ x.transpose(1, 2), -1)
            return p @ x, p

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.att = Custom()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.att(x)[0].sum(1)

    x = torch.randn(2, 4, 3)
    maps = capture_attentions(Net().eval(), x, modules=["att"])
    torch.testing.assert_close(maps.probs[:, 0, 0], torch.softmax(x @ x.transpose(1, 2), -1))


def test_import_attention_and_text_does_not_import_transformers():
    code = ("import sys, unveil, unveil.attention, unveil.text; unveil.methods(); "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
