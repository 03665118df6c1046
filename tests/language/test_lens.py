"""Logit lens and tuned lens; the hooks' hygiene (no-op hooks, restored state on errors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unveil.errors import InputError, ModelError, OptionError
from unveil.language._residual import DecoderParts, capture, find_parts
from unveil.language.lens import TunedLens, logit_lens, train_tuned_lens
from unveil.zoo.induction import InductionTransformer, repeated_tokens


def _ids(n: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 50, (1, n), generator=torch.Generator().manual_seed(seed))


def test_the_lens_at_the_last_layer_is_the_models_logits(tiny_lm: nn.Module) -> None:
    ids = _ids()
    with torch.no_grad():
        want = tiny_lm(ids).logits[0]
    lens = logit_lens(tiny_lm, ids)
    assert lens.rows == ["embed", *map(str, range(find_parts(tiny_lm).n_layers))]
    torch.testing.assert_close(lens.logits[-1], want)
    # earlier rows are different predictions (not a copy of the last one)
    assert not torch.allclose(lens.logits[0], want, atol=1e-3)
    # the default target is the model's own top token, whose probability is largest at the end
    assert lens.target_ids == want.argmax(-1).tolist()
    torch.testing.assert_close(torch.as_tensor(lens.target_prob[-1]), want.softmax(-1).max(-1).values.double())


def test_the_lens_on_the_induction_model(induction: InductionTransformer) -> None:
    ids = repeated_tokens(1, 10, seed=3)
    lens = logit_lens(induction, ids, target=int(ids[0, 5]), top_k=3)
    torch.testing.assert_close(lens.logits[-1], induction(ids)[0].detach())
    assert lens.top_probs.shape == (3, ids.shape[1], 3) and lens.target_prob.shape == (3, ids.shape[1])
    assert (lens.top_probs[..., 0] >= lens.top_probs[..., 1]).all()


def test_no_op_hooks_leave_the_outputs_identical(tiny_lm: nn.Module) -> None:
    ids = _ids()
    with torch.no_grad():
        want = tiny_lm(ids).logits
    parts = find_parts(tiny_lm)
    logits, store = capture(tiny_lm, parts, ids, sites=("embed", "resid", "z", "mlp"))
    assert torch.equal(logits, want)
    assert all(t is not None for site in ("resid", "z", "mlp") for t in store[site])
    # attention patterns need eager attention: the same function up to float rounding
    implementation = tiny_lm.config._attn_implementation
    logits, store = capture(tiny_lm, parts, ids, sites=("attn",))
    torch.testing.assert_close(logits, want)
    a = store["attn"][0]
    assert a is not None and torch.allclose(a.sum(-1), torch.ones(()))  # rows of a softmax
    assert tiny_lm.config._attn_implementation == implementation
    with torch.no_grad():
        assert torch.equal(tiny_lm(ids).logits, want)  # nothing left behind


class _Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_an_error_inside_the_model_restores_hooks_mode_and_requires_grad(tiny_lm: nn.Module) -> None:
    parts = find_parts(tiny_lm)
    tiny_lm.train()
    params = list(tiny_lm.parameters())
    params[0].requires_grad_(False)
    flags = [p.requires_grad for p in params]
    mlp = parts.mlp[-1]
    assert mlp is not None
    handle = mlp.register_forward_pre_hook(lambda m, a: _Boom()(a[0]))
    try:
        with pytest.warns(UserWarning, match="training mode"), pytest.raises(RuntimeError, match="boom"):
            capture(tiny_lm, parts, _ids(), sites=("resid", "z", "mlp", "attn"), grad=True)
    finally:
        handle.remove()
    assert all(m.training for m in tiny_lm.modules())
    assert [p.requires_grad for p in params] == flags
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny_lm.modules())
    assert tiny_lm.config._attn_implementation != "eager"


def test_an_untrained_tuned_lens_is_the_logit_lens(induction: InductionTransformer) -> None:
    ids = repeated_tokens(1, 8, seed=1)
    plain = logit_lens(induction, ids)
    tuned = logit_lens(induction, ids, tuned=TunedLens(64, 2))
    torch.testing.assert_close(tuned.logits, plain.logits)
    assert tuned.kind == "tuned"


def _kl_to_final(lens_logits: torch.Tensor) -> torch.Tensor:
    final = lens_logits[-1].log_softmax(-1)
    return torch.stack([F.kl_div(row.log_softmax(-1), final, log_target=True, reduction="batchmean")
                        for row in lens_logits[:-1]])


def test_the_tuned_lens_is_closer_to_the_final_distribution(induction: InductionTransformer) -> None:
    # layer 1 cannot know the copied token yet, so the gain is partial; held-out sequences
    texts = list(repeated_tokens(128, 12, seed=4))
    held_out = list(repeated_tokens(8, 12, seed=5))
    lens = train_tuned_lens(induction, texts, steps=200, lr=3e-3)
    before = torch.stack([_kl_to_final(logit_lens(induction, t).logits) for t in held_out]).mean(0)
    after = torch.stack([_kl_to_final(logit_lens(induction, t, tuned=lens).logits) for t in held_out]).mean(0)
    assert before.min() > 0.1  # the logit lens is off at early layers: not a trivial case
    assert (after < 0.9 * before).all(), (before, after)
    assert all(p.grad is None for p in induction.parameters())
    assert all(p.requires_grad for p in induction.parameters())


def test_results_render_html_and_tables(induction: InductionTransformer, tmp_path: Path) -> None:
    ids = repeated_tokens(1, 6, seed=2)
    lens = logit_lens(induction, ids)
    html = lens._repr_html_()
    assert "<table" in html and "<script" not in html and not re.search(r"(src|href)=", html)
    out = lens.save(tmp_path / "lens.html")
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    df = lens.to_pandas()
    assert len(df) == 3 * ids.shape[1] and {"layer", "position", "top_token", "target_prob"} <= set(df)
    assert lens.grid().to_pandas().shape == (3, ids.shape[1])


def test_bad_inputs_have_one_clear_error_each(tiny_lm: nn.Module) -> None:
    with pytest.raises(InputError, match="pass tokenizer="):
        logit_lens(tiny_lm, "hello")
    with pytest.raises(InputError, match="integer token ids"):
        logit_lens(tiny_lm, torch.rand(1, 4))
    with pytest.raises(InputError, match="not a token id of this vocabulary"):
        logit_lens(tiny_lm, _ids(), target=10_000)
    with pytest.raises(OptionError, match="top_k"):
        logit_lens(tiny_lm, _ids(), top_k=0)
    with pytest.raises(InputError, match="texts is empty"):
        train_tuned_lens(tiny_lm, [])


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.lin(x))


class _Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.stack = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(4, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)
        for m in self.stack:
            x = m(x)
        return self.head(x)  # type: ignore[no-any-return]


def test_an_unknown_architecture_is_a_clear_error_and_layers_or_parts_describe_it() -> None:
    model = _Unknown().eval()
    with pytest.raises(ModelError, match=r"cannot find the decoder layers of _Unknown.*layers="):
        logit_lens(model, [1, 2, 3])
    with pytest.raises(ModelError, match="cannot find the unembedding"):
        logit_lens(model, [1, 2, 3], layers=model.stack)
    parts = DecoderParts(layers=list(model.stack), final_norm=nn.Identity(), unembed=model.head,
                         embed=model.embedding)
    lens = logit_lens(model, [1, 2, 3], parts=parts)
    torch.testing.assert_close(lens.logits[-1], model(torch.tensor([[1, 2, 3]]))[0].detach())
